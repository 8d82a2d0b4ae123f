//! Writes the CellApp CRD as YAML: `cargo run -p cello-operator --bin crdgen > crds/cellapp.yaml`,
//! or `crdgen --write` to update `crds/cellapp.yaml` (the drift test compares against it).

use std::io::Write;

fn main() -> anyhow::Result<()> {
    let yaml = cello_operator::crd_yaml()?;
    if std::env::args().any(|a| a == "--write") {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/cellapp.yaml");
        std::fs::write(&path, yaml)?;
        eprintln!("wrote {}", path.display());
    } else {
        std::io::stdout().write_all(yaml.as_bytes())?;
    }
    Ok(())
}
