//! The UtilMeta platform's side of the ops API (reference/utilmeta-ops.md §3): an RSA key pair
//! made by the `openssl` CLI, and tokens signed with it as the platform signs with its
//! supervisor key.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};

/// The node id the tests' operators are given (`--ops-node-id`).
pub const NODE: &str = "node-test-0001";
/// The supervisor's base URL (`--ops-supervisor-url`); tokens' `iss`.
pub const SUPERVISOR: &str = "http://127.0.0.1:8899/spv";

/// An RSA key pair in `dir`: (private PKCS#8 PEM, public PEM path).
pub fn key_pair(dir: &Path, name: &str) -> (Vec<u8>, PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey");
    let ok = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl pkey -pubout");
    (std::fs::read(&private).unwrap(), public)
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A platform token: RS256, the claims the platform puts in (`nid` [`NODE`], `iss`
/// [`SUPERVISOR`], ten minutes), with `jti` and the space-separated `scope`.
pub fn token(private: &[u8], jti: &str, scope: &str) -> String {
    let claims: Value = json!({"iss": SUPERVISOR, "aud": "http://127.0.0.1/ops", "sub": "user:alice",
        "nid": NODE, "iat": now() - 5, "exp": now() + 600, "jti": jti, "scope": scope});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(private).unwrap(),
    )
    .unwrap()
}

/// The flags that make an operator trust the key at `public` for [`NODE`].
pub fn supervisor_args(public: &Path) -> Vec<String> {
    vec![
        "--ops-supervisor-key".into(),
        public.display().to_string(),
        "--ops-node-id".into(),
        NODE.into(),
        "--ops-supervisor-url".into(),
        SUPERVISOR.into(),
    ]
}
