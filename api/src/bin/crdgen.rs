//! Writes the CRDs to `deploy/crds/` (or the directory given as the only argument).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds")));
    std::fs::create_dir_all(&dir)?;
    for (name, text) in volpool_api::crd::rendered()? {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
