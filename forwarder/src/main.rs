//! `forwarder`: `ssh -N -L` for reaching databases through a bastion.
#![forbid(unsafe_code)]

fn main() {
    refuse_a_cpu_it_was_not_built_for();
    let code = forwarder::app::run(std::env::args_os().skip(1).collect());
    std::process::exit(code);
}

/// A build for x86-64-v3 (`RUSTFLAGS="-C target-cpu=x86-64-v3"`, the Dockerfile's
/// `TARGET_CPU`) uses AVX2 anywhere, so on a CPU without it the process would die on an illegal
/// instruction, at a moment nobody can predict. Said now, in words, instead.
fn refuse_a_cpu_it_was_not_built_for() {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if !std::is_x86_feature_detected!("avx2") {
        eprintln!(
            "forwarder: this build is for CPUs with AVX2 (target-cpu=x86-64-v3) and this CPU \
             has none: build it without RUSTFLAGS=\"-C target-cpu=...\" (the Dockerfile's \
             TARGET_CPU=x86-64)"
        );
        std::process::exit(1);
    }
}
