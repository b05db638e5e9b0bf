//! The UtilMeta platform's credentials on the ops API (seed 000; how UtilMeta 2.8.1's
//! `OperationsAPI.handle_token` checks them: reference/utilmeta-ops.md §3):
//!
//! - a **signed token**: `Authorization: Bearer <JWS>` (the scheme word may be left out) with
//!   the node id in `X-Node-ID` / `X-UtilMeta-Node-ID` / `?node=`, an RSA JWS (RS256, or
//!   another RSA algorithm) verified with the supervisor's public key (`--ops-supervisor-key`).
//!   Then, in UtilMeta's order: `nid` must be the node id (409), `iss` a prefix of the
//!   supervisor's base URL (409), `exp` present (422) and in the future (400 `token_expired`),
//!   `jti` present and not revoked (400 `token_expired`); `scope` (space- or comma-separated)
//!   gives the scopes each route checks (403 "insufficient scope"). Unlike 2.8.1, a malformed
//!   JWS or a bad signature is a 400, never a 500.
//! - the **local node** (only with `--ops-local`): no credential, the client is `127.0.0.1` and
//!   ops_api is on `127.0.0.1`/`localhost`: every scope.
//!
//! A request without either is left to opsplane's own schemes (bearer, Basic, HMAC,
//! Kubernetes; role-checked by the guard). A Kubernetes ServiceAccount token is a JWS too: a
//! token is taken for the platform's only when a node id comes with it or its payload has `nid`.
//! The decisions here are pure ([`verify`], [`claims_request`]); the token book (first and last
//! use, revocation) is in [`super::tokens`].

use std::net::IpAddr;
use std::path::Path;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};

/// The platform's default supervisor (UtilMeta's API servers; `--ops-supervisor-url`'s default).
#[cfg(test)]
pub const DEFAULT_SUPERVISOR_URL: &str = "https://api.utilmeta.com/spv";

/// The scope that stands for every scope.
pub const ALL_SCOPES: &str = "*";

/// A supervisor key that cannot be used; the message names the flag.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The key file cannot be read.
    #[error("--ops-supervisor-key {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no RSA public key in PEM.
    #[error("--ops-supervisor-key {path}: not an RSA public key in PEM ({source})")]
    Key {
        /// The file.
        path: String,
        /// What the parser said.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// A key without the node id its tokens carry.
    #[error(
        "--ops-supervisor-key needs --ops-node-id (the node id the platform gave this service)"
    )]
    NoNodeId,
}

/// The platform side this service is connected to (UtilMeta's `Supervisor` row): the node id
/// it gave this service, its base URL, the public key its tokens are signed with.
#[derive(Clone)]
pub struct Supervisor {
    /// The node id (`nid` of its tokens).
    pub node_id: String,
    /// Its base URL; a token's `iss` must be a prefix of it.
    pub base_url: String,
    key: DecodingKey,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("node_id", &self.node_id)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor whose public key is the PEM `pem` (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC
    /// KEY`).
    pub fn from_pem(
        node_id: &str,
        base_url: &str,
        pem: &[u8],
        path: &str,
    ) -> Result<Supervisor, SupervisorError> {
        let key = DecodingKey::from_rsa_pem(pem).map_err(|source| SupervisorError::Key {
            path: path.to_owned(),
            source,
        })?;
        Ok(Supervisor {
            node_id: node_id.to_owned(),
            base_url: base_url.to_owned(),
            key,
        })
    }

    /// A connected supervisor of the store: its public key is the JSON JWK `jwk` (RSA `n`,
    /// `e`); `None` when that is not one.
    pub fn from_jwk(node_id: &str, base_url: &str, jwk: &str) -> Option<Supervisor> {
        let jwk: Value = serde_json::from_str(jwk).ok()?;
        if jwk["kty"] != "RSA" {
            return None;
        }
        let key = DecodingKey::from_rsa_components(jwk["n"].as_str()?, jwk["e"].as_str()?).ok()?;
        Some(Supervisor {
            node_id: node_id.to_owned(),
            base_url: base_url.to_owned(),
            key,
        })
    }

    /// Reads `--ops-supervisor-key` (and its `--ops-node-id`, `--ops-supervisor-url`).
    pub fn load(
        key: &Path,
        node_id: Option<&str>,
        base_url: &str,
    ) -> Result<Supervisor, SupervisorError> {
        let node_id = node_id
            .filter(|n| !n.trim().is_empty())
            .ok_or(SupervisorError::NoNodeId)?;
        let path = key.display().to_string();
        let pem = std::fs::read(key).map_err(|source| SupervisorError::Read {
            path: path.clone(),
            source,
        })?;
        Supervisor::from_pem(node_id, base_url, &pem, &path)
    }
}

/// The local node's connection key (`--ops-connection-key-file`,
/// `OPSPLANE_OPS_CONNECTION_KEY`): a secret, never printed (its `Debug` says so).
#[derive(Clone)]
pub struct ConnectionKey(std::sync::Arc<str>);

impl std::fmt::Debug for ConnectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionKey(<redacted>)")
    }
}

impl ConnectionKey {
    /// The key `raw` (trimmed: a file's final newline is not part of it); `None` when empty.
    pub fn new(raw: &str) -> Option<ConnectionKey> {
        let key = raw.trim();
        (!key.is_empty()).then(|| ConnectionKey(key.into()))
    }

    /// Checks the `X-UtilMeta-Connection-Key` of `headers`, in constant time: 401
    /// `connection_key_missing` / `connection_key_wrong`, as UtilMeta.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        use subtle::ConstantTimeEq;
        let Some(given) = headers.get("x-utilmeta-connection-key") else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                json!("connection_key_missing"),
                "connection key required",
            ));
        };
        if bool::from(given.as_bytes().ct_eq(self.0.as_bytes())) {
            Ok(())
        } else {
            Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                json!("connection_key_wrong"),
                "invalid connection key",
            ))
        }
    }
}

/// Why a platform credential is refused: UtilMeta's status, `state` code and message.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// The envelope's `state`: a code string, or 0.
    pub state: Value,
    /// The message (without the class prefix the envelope adds).
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, state: Value, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            state,
            message: message.into(),
        }
    }

    fn token(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, json!("token_expired"), message)
    }

    /// 403 "insufficient scope".
    pub fn insufficient_scope() -> Refusal {
        Refusal::new(StatusCode::FORBIDDEN, json!(0), "insufficient scope")
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// `jti`.
    pub token_id: String,
    /// `sub`.
    pub subject: Option<String>,
    /// `iat`, seconds since the epoch.
    pub issued_at: Option<i64>,
    /// `exp`, seconds since the epoch.
    pub expires: i64,
    /// The scopes of `scope`.
    pub scopes: Vec<String>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    nid: Option<Value>,
    #[serde(default)]
    iss: Option<Value>,
    #[serde(default)]
    sub: Option<Value>,
    #[serde(default)]
    iat: Option<Value>,
    #[serde(default)]
    exp: Option<Value>,
    #[serde(default)]
    jti: Option<Value>,
    #[serde(default)]
    scope: Option<Value>,
}

/// The scopes of a `scope` claim: space-separated, or comma-separated when it has no space (a
/// list of strings is taken as it is); `name:resource` counts as `name`.
pub fn scopes_of(claim: Option<&Value>) -> Vec<String> {
    let entries: Vec<String> = match claim {
        Some(Value::String(s)) if s.contains(' ') => {
            s.split_whitespace().map(str::to_owned).collect()
        }
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let mut scopes: Vec<String> = Vec::new();
    for entry in entries {
        let name = entry.split_once(':').map(|(n, _)| n).unwrap_or(&entry);
        if !name.is_empty() && !scopes.iter().any(|s| s == name) {
            scopes.push(name.to_owned());
        }
    }
    scopes
}

/// Whether `scopes` grant `scope` (`None`: any authenticated caller).
pub fn grants(scopes: &[String], scope: Option<&str>) -> bool {
    match scope {
        None => true,
        Some(scope) => scopes.iter().any(|s| s == scope || s == ALL_SCOPES),
    }
}

fn seconds(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The RSA JWS algorithms accepted (jwcrypto, which UtilMeta uses, takes any of them).
const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Checks `token`, presented for node `node`, against `supervisor` at `now` (seconds), in
/// UtilMeta's order. `Ok` says what the token grants; it is not yet checked against revocation.
pub fn verify(
    supervisor: Option<&Supervisor>,
    node: Option<&str>,
    token: &str,
    now: i64,
) -> Result<Verified, Refusal> {
    let node = node.filter(|n| !n.is_empty()).ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            json!("node_required"),
            "Node ID required",
        )
    })?;
    let supervisor = supervisor.filter(|s| s.node_id == node).ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            json!("supervisor_not_found"),
            "Supervisor not found",
        )
    })?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.algorithms = RSA_ALGORITHMS.to_vec();
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = match jsonwebtoken::decode::<Claims>(token, &supervisor.key, &validation) {
        Ok(data) => data.claims,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind;
            return Err(Refusal::token(match e.kind() {
                ErrorKind::InvalidSignature => "Invalid token: signature verification failed",
                ErrorKind::InvalidAlgorithm => "Invalid token: not signed with an RSA algorithm",
                _ => "Invalid token format",
            }));
        }
    };
    if text(claims.nid.as_ref()).as_deref() != Some(node) {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            json!(0),
            "Invalid node id",
        ));
    }
    let issuer = text(claims.iss.as_ref()).unwrap_or_default();
    if issuer.is_empty() || !supervisor.base_url.starts_with(&issuer) {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            json!(0),
            format!("Invalid token issuer: {issuer:?}"),
        ));
    }
    let expires = seconds(claims.exp.as_ref()).ok_or_else(|| {
        Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!(0),
            "Invalid token: no expires",
        )
    })?;
    if expires <= now {
        return Err(Refusal::token("Invalid token: expired"));
    }
    let token_id = text(claims.jti.as_ref())
        .filter(|j| !j.is_empty())
        .ok_or_else(|| Refusal::token("Invalid token: no jti"))?;
    Ok(Verified {
        token_id,
        subject: text(claims.sub.as_ref()),
        issued_at: seconds(claims.iat.as_ref()),
        expires,
        scopes: scopes_of(claims.scope.as_ref()),
    })
}

/// The node id a request names: `X-UtilMeta-Node-ID`, `X-Node-ID`, else `?node=`.
pub fn node_of(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    for name in ["x-utilmeta-node-id", "x-node-id"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            return Some(v.trim().to_owned());
        }
    }
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "node")
        .map(|(_, v)| v.into_owned())
}

/// The token of `Authorization`: `Bearer <t>`, or a bare `<t>` (UtilMeta ignores the scheme
/// word).
pub fn token_of(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let value = value.trim();
    let token = match value.split_once(' ') {
        Some((_, rest)) => rest.trim(),
        None => value,
    };
    (!token.is_empty()).then_some(token)
}

/// Whether `token` looks like a platform token: three dot-separated parts whose payload, read
/// without any check, is a JSON object with `nid`.
fn has_node_claim(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .is_some_and(|claims| claims.get("nid").is_some())
}

/// How a request is to be authenticated on the ops API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim<'r> {
    /// A platform token (with the node id it names, if any).
    Token {
        /// The token.
        token: &'r str,
        /// The node id of the request.
        node: Option<String>,
    },
    /// The local node: no credential from 127.0.0.1 to a localhost ops_api.
    Local,
    /// Not the platform's: opsplane's own schemes decide.
    Opsplane,
}

/// Decides which scheme a request is for: a token with a node id, or one with an `nid` claim,
/// is the platform's; no credential at all from `127.0.0.1` when `local` (the local-node rule
/// is on and ops_api is on localhost) is the local node; anything else is opsplane's.
pub fn claims_request<'r>(
    headers: &'r HeaderMap,
    query: Option<&str>,
    peer: Option<IpAddr>,
    local: bool,
) -> Claim<'r> {
    let node = node_of(headers, query);
    match token_of(headers) {
        Some(token) if node.is_some() || has_node_claim(token) => Claim::Token { token, node },
        Some(_) => Claim::Opsplane,
        None if local
            && peer == Some(IpAddr::from([127, 0, 0, 1]))
            && !headers.contains_key(opsplane_serve::auth::POLARIS_TOKEN) =>
        {
            Claim::Local
        }
        None => Claim::Opsplane,
    }
}

/// Whether `ops_api`'s host is `127.0.0.1` or `localhost` (UtilMeta's `is_local`).
pub fn is_localhost(ops_api: &str) -> bool {
    url::Url::parse(ops_api)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .is_some_and(|h| h == "127.0.0.1" || h == "localhost")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// An RSA key pair made by the `openssl` CLI: (private PKCS#8 PEM, public SPKI PEM).
    pub(crate) fn key_pair() -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("key.pem");
        let status = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&private)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let public = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .output()
            .unwrap();
        assert!(public.status.success());
        (std::fs::read(&private).unwrap(), public.stdout)
    }

    fn sign(private: &[u8], claims: &Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::RS256),
            claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(private).unwrap(),
        )
        .unwrap()
    }

    const NOW: i64 = 1_800_000_000;

    fn claims() -> Value {
        json!({"iss": "https://api.utilmeta.com/spv", "nid": "node-1", "sub": "user:alice",
               "iat": NOW - 10, "exp": NOW + 600, "jti": "j-1", "scope": "api.view log.view"})
    }

    #[test]
    fn tokens_are_checked_in_utilmetas_order_with_its_codes() {
        let (private, public) = key_pair();
        let (other, _) = key_pair();
        let s = Supervisor::from_pem("node-1", DEFAULT_SUPERVISOR_URL, &public, "k").unwrap();
        let good = sign(&private, &claims());
        let ok = verify(Some(&s), Some("node-1"), &good, NOW).unwrap();
        assert_eq!(ok.token_id, "j-1");
        assert_eq!(ok.scopes, ["api.view", "log.view"]);
        assert_eq!(ok.subject.as_deref(), Some("user:alice"));

        let refused =
            |token: &str, node: Option<&str>| verify(Some(&s), node, token, NOW).unwrap_err();
        let with = |key: &str, value: Value| {
            let mut c = claims();
            c[key] = value;
            sign(&private, &c)
        };
        let without = |key: &str| {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(key);
            sign(&private, &c)
        };
        for (token, node, status, state, message) in [
            (
                good.clone(),
                None,
                400,
                json!("node_required"),
                "Node ID required",
            ),
            (
                good.clone(),
                Some("node-2"),
                400,
                json!("supervisor_not_found"),
                "Supervisor not found",
            ),
            (
                "not-a-jwt".to_owned(),
                Some("node-1"),
                400,
                json!("token_expired"),
                "Invalid token format",
            ),
            (
                "a.b.c".to_owned(),
                Some("node-1"),
                400,
                json!("token_expired"),
                "Invalid token format",
            ),
            (
                sign(&other, &claims()),
                Some("node-1"),
                400,
                json!("token_expired"),
                "Invalid token: signature verification failed",
            ),
            (
                with("nid", json!("node-2")),
                Some("node-1"),
                409,
                json!(0),
                "Invalid node id",
            ),
            (
                with("iss", json!("https://evil.example.com")),
                Some("node-1"),
                409,
                json!(0),
                "Invalid token issuer: \"https://evil.example.com\"",
            ),
            (
                without("exp"),
                Some("node-1"),
                422,
                json!(0),
                "Invalid token: no expires",
            ),
            (
                with("exp", json!(NOW - 1)),
                Some("node-1"),
                400,
                json!("token_expired"),
                "Invalid token: expired",
            ),
            (
                without("jti"),
                Some("node-1"),
                400,
                json!("token_expired"),
                "Invalid token: no jti",
            ),
        ] {
            let r = refused(&token, node);
            assert_eq!(
                (r.status.as_u16(), &r.state, r.message.as_str()),
                (status, &state, message),
                "{token}"
            );
        }
        // A shorter issuer that is a prefix of the supervisor's URL passes (UtilMeta's rule).
        assert!(
            verify(
                Some(&s),
                Some("node-1"),
                &with("iss", json!("https://api.utilmeta.com")),
                NOW
            )
            .is_ok()
        );
        // A tampered payload fails the signature.
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"nid": "node-1", "iss": DEFAULT_SUPERVISOR_URL, "exp": NOW + 60, "jti": "x", "scope": "*"}).to_string());
        parts[1] = &forged;
        let r = refused(&parts.join("."), Some("node-1"));
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        // HS256 signed with the public key as the secret (the classic confusion) is refused.
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert_eq!(refused(&hs, Some("node-1")).status, StatusCode::BAD_REQUEST);
        // No supervisor configured: not found.
        assert_eq!(
            verify(None, Some("node-1"), &good, NOW).unwrap_err().state,
            json!("supervisor_not_found")
        );
    }

    #[test]
    fn the_connection_key_is_required_and_compared_whole() {
        let key = ConnectionKey::new("s3cret\n").unwrap();
        assert!(ConnectionKey::new(" \n").is_none());
        assert!(!format!("{key:?}").contains("s3cret"));
        let mut h = HeaderMap::new();
        assert_eq!(
            key.check(&h).unwrap_err().state,
            json!("connection_key_missing")
        );
        for wrong in ["s3cre", "s3cret2", "S3CRET", ""] {
            h.insert(
                "x-utilmeta-connection-key",
                HeaderValue::from_str(wrong).unwrap(),
            );
            let r = key.check(&h).unwrap_err();
            assert_eq!(
                (r.status, r.state),
                (StatusCode::UNAUTHORIZED, json!("connection_key_wrong")),
                "{wrong}"
            );
        }
        h.insert(
            "x-utilmeta-connection-key",
            HeaderValue::from_static("s3cret"),
        );
        assert!(key.check(&h).is_ok());
    }

    #[test]
    fn a_stored_supervisors_jwk_verifies_its_tokens() {
        let (private, _) = key_pair();
        let rsa = {
            use rsa::pkcs8::DecodePrivateKey;
            rsa::PrivateKey::from_pkcs8_pem(std::str::from_utf8(&private).unwrap()).unwrap()
        };
        use rsa::traits::PublicKeyParts;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwk = json!({"kty": "RSA", "n": b64.encode(rsa.n_bytes()),
                         "e": b64.encode(rsa.e_bytes())})
        .to_string();
        let s = Supervisor::from_jwk("node-1", DEFAULT_SUPERVISOR_URL, &jwk).unwrap();
        assert!(verify(Some(&s), Some("node-1"), &sign(&private, &claims()), NOW).is_ok());
        let (other, _) = key_pair();
        assert!(verify(Some(&s), Some("node-1"), &sign(&other, &claims()), NOW).is_err());
        assert!(Supervisor::from_jwk("n", "u", "{}").is_none());
        assert!(Supervisor::from_jwk("n", "u", "nope").is_none());
    }

    #[test]
    fn scopes_split_on_spaces_or_commas_and_drop_resources() {
        assert_eq!(scopes_of(Some(&json!("a b  c"))), ["a", "b", "c"]);
        assert_eq!(scopes_of(Some(&json!("a,b"))), ["a", "b"]);
        assert_eq!(
            scopes_of(Some(&json!("data.view:users data.view"))),
            ["data.view"]
        );
        assert_eq!(scopes_of(Some(&json!(["x", 1, "y"]))), ["x", "y"]);
        assert!(scopes_of(None).is_empty());
        assert!(grants(&["*".into()], Some("log.view")));
        assert!(grants(&[], None));
        assert!(!grants(&["api.view".into()], Some("log.view")));
    }

    #[test]
    fn a_request_is_the_platforms_with_a_node_id_or_an_nid_claim() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer opsplane-token"),
        );
        assert_eq!(claims_request(&h, None, None, false), Claim::Opsplane);
        assert_eq!(
            claims_request(&h, Some("node=n1"), None, false),
            Claim::Token {
                token: "opsplane-token",
                node: Some("n1".into())
            }
        );
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"nid":"n1"}"#);
        let jws = format!("e30.{payload}.sig");
        h.insert("authorization", HeaderValue::from_str(&jws).unwrap());
        assert_eq!(
            claims_request(&h, None, None, false),
            Claim::Token {
                token: &jws,
                node: None
            }
        );
        // A Kubernetes ServiceAccount token (a JWS without nid) stays opsplane's.
        let sa = format!(
            "e30.{}.sig",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"iss":"kubernetes"}"#)
        );
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {sa}")).unwrap(),
        );
        assert_eq!(claims_request(&h, None, None, false), Claim::Opsplane);
        let none = HeaderMap::new();
        let lo = Some(IpAddr::from([127, 0, 0, 1]));
        assert_eq!(claims_request(&none, None, lo, true), Claim::Local);
        assert_eq!(claims_request(&none, None, lo, false), Claim::Opsplane);
        assert_eq!(
            claims_request(&none, None, Some("::1".parse().unwrap()), true),
            Claim::Opsplane
        );
        assert!(is_localhost("http://127.0.0.1:8080/ops") && is_localhost("http://localhost/ops"));
        assert!(!is_localhost("https://blog.mysite.com/api/ops"));
    }
}
