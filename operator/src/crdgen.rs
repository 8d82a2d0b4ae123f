//! Generated files of the operator: the CellApp CRD (`crds/` and the chart's `crds/`), the
//! chart's `values.schema.json`, its RBAC rules, and the reference docs `docs/config.md` and
//! `docs/env.md` (from `cello-config`).
//!
//! - `crdgen`: print the CRD YAML to stdout.
//! - `crdgen --write`: write every generated file.
//! - `crdgen --check`: exit 1 when a committed file differs from its generated content.

use std::io::Write;
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let arg = std::env::args().nth(1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match arg.as_deref() {
        None => std::io::stdout().write_all(cello_operator::crd_yaml()?.as_bytes())?,
        Some("--write") => {
            for (rel, content) in cello_operator::chart::generated_files()? {
                let path = root.join(rel);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&path, content)?;
                eprintln!("wrote {rel}");
            }
        }
        Some("--check") => {
            let mut stale = Vec::new();
            for (rel, content) in cello_operator::chart::generated_files()? {
                if std::fs::read_to_string(root.join(rel)).ok().as_deref() != Some(content.as_str()) {
                    stale.push(rel);
                }
            }
            if !stale.is_empty() {
                anyhow::bail!(
                    "stale generated files {stale:?}: run `cargo run -p cello-operator --bin crdgen -- --write`"
                );
            }
        }
        Some(other) => anyhow::bail!("unknown argument `{other}` (expected --write or --check)"),
    }
    Ok(())
}
