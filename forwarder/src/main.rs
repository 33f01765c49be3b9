//! `forwarder`: `ssh -N -L` for reaching databases through a bastion.
#![forbid(unsafe_code)]

fn main() {
    let code = forwarder::app::run(std::env::args_os().skip(1).collect());
    std::process::exit(code);
}
