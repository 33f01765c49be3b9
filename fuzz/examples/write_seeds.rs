//! Writes the checked-in seed corpora: `fuzz/seeds/<target>/<name>` for every seed that
//! `ssh_fuzz::seeds::all` builds. Run it after changing a message format or the generator:
//! `cargo run --manifest-path fuzz/Cargo.toml --example write_seeds`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let seeds = ssh_fuzz::seeds::all();
    for (target, _) in ssh_fuzz::TARGETS {
        let dir = root.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    for seed in &seeds {
        let dir = root.join(seed.target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(&seed.name), &seed.data)?;
    }
    println!("wrote {} seeds under {}", seeds.len(), root.display());
    Ok(())
}
