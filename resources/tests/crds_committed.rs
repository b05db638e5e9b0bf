//! The CRDs in `crds/` and `charts/opsplane/crds/` must be exactly what the Rust types render.
//! Regenerate with `cargo run -p opsplane-operator -- crds --out-dir crds --out-dir charts/opsplane/crds`.

use std::path::Path;

#[test]
fn committed_crds_match_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = opsplane_resources::crd::files().expect("CRDs render");
    assert_eq!(files.len(), 2);
    for dir in ["crds", "charts/opsplane/crds"] {
        for (name, rendered) in &files {
            let path = root.join(dir).join(name);
            let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!("{} is missing ({e}); regenerate the CRDs", path.display())
            });
            assert!(
                committed == *rendered,
                "{} differs from the Rust types; regenerate with `cargo run -p opsplane-operator -- crds --out-dir crds --out-dir charts/opsplane/crds`",
                path.display()
            );
        }
        let on_disk = std::fs::read_dir(root.join(dir)).expect("crd dir").count();
        assert_eq!(
            on_disk,
            files.len(),
            "{dir} holds files that no Rust type renders"
        );
    }
}
