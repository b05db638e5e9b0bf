//! The operator's OpenAPI document against the real server: a standalone operator on loopback
//! inside a network namespace of the test's own (so nothing the fuzzer creates — a
//! MonitoredService URL to check — can reach another host), its `/openapi.json` validated by
//! openapi-spec-validator, then every operation run by schemathesis with bounded examples:
//! no 5xx, every status, content type and body as documented. Both tools come from PyPI into
//! the venv `scripts/openapi-tools.sh` makes (pinned in `scripts/openapi/requirements.txt`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The venv with openapi-spec-validator and schemathesis (made once per requirements).
fn venv() -> PathBuf {
    let output = Command::new("bash")
        .arg(repo().join("scripts/openapi-tools.sh"))
        .output()
        .expect("run scripts/openapi-tools.sh");
    assert!(
        output.status.success(),
        "openapi-tools.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

#[test]
fn every_operation_of_the_document_answers_as_documented_under_schemathesis() {
    let venv = venv();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new("unshare")
        .args(["--net", "--", "bash"])
        .arg(repo().join("scripts/openapi/conformance.sh"))
        .arg(env!("CARGO_BIN_EXE_opsplane-operator"))
        .arg(&venv)
        .arg(dir.path())
        .arg("40")
        .output()
        .expect("run unshare (util-linux; the test needs root for a network namespace)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let log = std::fs::read_to_string(dir.path().join("operator.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}\noperator log (tail):\n{}",
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    assert!(
        stdout.contains(": OK"),
        "the validator did not pass: {stdout}"
    );
    // Every operation of the document was run, none failed.
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("openapi.json")).unwrap()).unwrap();
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert!(
        stdout.contains(&format!("Tested: {operations}")),
        "not all {operations} operations were tested:\n{stdout}"
    );
    assert!(!stdout.contains("failure"), "{stdout}");
    assert!(!log.contains("panicked"), "the operator panicked:\n{log}");
}
