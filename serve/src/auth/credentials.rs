//! The credentials a binary accepts: bearer tokens (kept as SHA-256 digests, compared in
//! constant time), htpasswd users (bcrypt), HMAC secrets — and a short-lived cache of what
//! bcrypt and the Kubernetes API already answered.
//!
//! Files (each optional; formats in docs/auth.md):
//! - tokens: YAML list of `{name, role, token}` or `{name, role, sha256}`;
//! - users: htpasswd lines `user:$2y$...` (bcrypt, as `htpasswd -B` writes), optionally
//!   followed by `:role` (viewer when absent);
//! - HMAC: YAML list of `{user, role, secret}`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::htpasswd::{self, User};
use super::{Access, Grant, Principal, Role, Scheme};

/// Why a credentials file was refused at start; each names the file and line or entry.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file's content is wrong.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, naming the entry.
        message: String,
    },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HmacEntry {
    user: String,
    role: Role,
    secret: String,
}

struct Token {
    name: String,
    role: Role,
    digest: [u8; 32],
}

struct HmacUser {
    role: Role,
    secret: Vec<u8>,
}

/// Every credential a binary accepts besides the Kubernetes API's.
#[derive(Default)]
pub struct Credentials {
    tokens: Vec<Token>,
    users: HashMap<String, User>,
    hmac: HashMap<String, HmacUser>,
    /// bcrypt is slow on purpose; a verified user:password is remembered for a minute.
    verified: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn read(path: &Path) -> Result<String, CredentialsError> {
    std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn invalid(path: &Path, message: impl Into<String>) -> CredentialsError {
    CredentialsError::Invalid {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// How long a verified Basic password is remembered.
const BASIC_CACHE: Duration = Duration::from_secs(60);

impl Credentials {
    /// Adds a bearer token named `name` with `role` (e.g. `OPSPLANE_TOKEN` as `admin`).
    pub fn add_token(&mut self, name: &str, role: Role, token: &str) {
        self.tokens.push(Token {
            name: name.to_owned(),
            role,
            digest: digest(token),
        });
    }

    /// Adds the tokens of a tokens file.
    pub fn load_tokens(&mut self, path: &Path) -> Result<(), CredentialsError> {
        let text = read(path)?;
        let entries: Vec<TokenEntry> =
            serde_yaml::from_str(&text).map_err(|e| invalid(path, e.to_string()))?;
        for (i, e) in entries.into_iter().enumerate() {
            let digest = match (e.token.as_deref().map(str::trim), e.sha256.as_deref()) {
                (Some(t), None) if !t.is_empty() => digest(t),
                (None, Some(h)) => {
                    let bytes = hex::decode(h.trim()).ok().filter(|b| b.len() == 32);
                    let bytes = bytes.ok_or_else(|| {
                        invalid(
                            path,
                            format!("entry {i} ({}): sha256 is not 64 hex digits", e.name),
                        )
                    })?;
                    let mut d = [0u8; 32];
                    d.copy_from_slice(&bytes);
                    d
                }
                _ => {
                    return Err(invalid(
                        path,
                        format!(
                            "entry {i} ({}): give exactly one of token and sha256",
                            e.name
                        ),
                    ));
                }
            };
            if e.name.trim().is_empty() {
                return Err(invalid(path, format!("entry {i}: name is empty")));
            }
            self.tokens.push(Token {
                name: e.name,
                role: e.role,
                digest,
            });
        }
        Ok(())
    }

    /// Adds the users of an htpasswd file.
    pub fn load_users(&mut self, path: &Path) -> Result<(), CredentialsError> {
        let text = read(path)?;
        for user in htpasswd::parse(&text).map_err(|e| invalid(path, e))? {
            self.users.insert(user.name.clone(), user);
        }
        Ok(())
    }

    /// Adds the users of an HMAC secrets file.
    pub fn load_hmac(&mut self, path: &Path) -> Result<(), CredentialsError> {
        let text = read(path)?;
        let entries: Vec<HmacEntry> =
            serde_yaml::from_str(&text).map_err(|e| invalid(path, e.to_string()))?;
        for e in entries {
            if e.secret.is_empty() {
                return Err(invalid(path, format!("{}: the secret is empty", e.user)));
            }
            self.hmac.insert(
                e.user,
                HmacUser {
                    role: e.role,
                    secret: e.secret.into_bytes(),
                },
            );
        }
        Ok(())
    }

    /// Whether Basic users are configured.
    pub fn has_basic(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether HMAC users are configured.
    pub fn has_hmac(&self) -> bool {
        !self.hmac.is_empty()
    }

    /// Whether no credential at all is configured.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.users.is_empty() && self.hmac.is_empty()
    }

    /// The principal of a configured bearer token. Every configured token is compared, in
    /// constant time each, so the time taken does not say which one (if any) matched.
    pub fn bearer(&self, presented: &str) -> Option<Principal> {
        let d = digest(presented);
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.digest.ct_eq(&d)) && found.is_none() {
                found = Some(t);
            }
        }
        found.map(|t| Principal {
            name: t.name.clone(),
            scheme: Scheme::Bearer,
            grant: Grant::Role(t.role),
        })
    }

    /// The principal of a Basic user:password.
    pub fn basic(&self, user: &str, password: &str) -> Option<Principal> {
        let key = digest(&format!("{user}\u{0}{password}"));
        if let Ok(verified) = self.verified.lock()
            && let Some((p, at)) = verified.get(&key)
            && at.elapsed() < BASIC_CACHE
        {
            return Some(p.clone());
        }
        let entry = self.users.get(user)?;
        if !entry.verify(password) {
            return None;
        }
        let principal = Principal {
            name: user.to_owned(),
            scheme: Scheme::Basic,
            grant: Grant::Role(entry.role),
        };
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() > 10_000 {
                verified.clear();
            }
            verified.insert(key, (principal.clone(), Instant::now()));
        }
        Some(principal)
    }

    /// The principal of an HMAC-signed request: `mac` must be the hex HMAC-SHA1 of `body`
    /// with the user's secret (Eve's `HMACAuth` example). No timestamp or nonce is signed, so a
    /// captured request can be replayed (docs/auth.md says what to prefer).
    pub fn hmac(&self, user: &str, mac: &str, body: &[u8]) -> Option<Principal> {
        let entry = self.hmac.get(user)?;
        let expected = hex::decode(mac).ok()?;
        let mut hmac = Hmac::<sha1::Sha1>::new_from_slice(&entry.secret).ok()?;
        hmac.update(body);
        hmac.verify_slice(&expected).ok()?;
        Some(Principal {
            name: user.to_owned(),
            scheme: Scheme::Hmac,
            grant: Grant::Role(entry.role),
        })
    }
}

/// How long the Kubernetes API's answers are remembered.
const REVIEW_CACHE: Duration = Duration::from_secs(10);
/// Most answers remembered; the cache is emptied beyond (a bound, not an eviction policy).
const REVIEW_CACHE_ENTRIES: usize = 10_000;

/// TokenReview and SubjectAccessReview answers, kept for [`REVIEW_CACHE`] per token digest and
/// per principal and request attributes.
#[derive(Default)]
pub struct DecisionCache {
    principals: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    allowed: Mutex<HashMap<(String, Access), (bool, Instant)>>,
}

fn fresh<K: std::hash::Hash + Eq, V: Clone>(
    map: &Mutex<HashMap<K, (V, Instant)>>,
    key: &K,
) -> Option<V> {
    let map = map.lock().ok()?;
    map.get(key)
        .filter(|(_, at)| at.elapsed() < REVIEW_CACHE)
        .map(|(v, _)| v.clone())
}

fn keep<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, (V, Instant)>>, key: K, value: V) {
    if let Ok(mut map) = map.lock() {
        if map.len() >= REVIEW_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, (value, Instant::now()));
    }
}

impl DecisionCache {
    pub(crate) fn principal(&self, token: &str) -> Option<Principal> {
        fresh(&self.principals, &digest(token))
    }

    pub(crate) fn remember_principal(&self, token: &str, principal: &Principal) {
        keep(&self.principals, digest(token), principal.clone());
    }

    pub(crate) fn allowed(&self, principal: &Principal, access: &Access) -> Option<bool> {
        fresh(&self.allowed, &(principal.name.clone(), access.clone()))
    }

    pub(crate) fn remember_allowed(&self, principal: &Principal, access: &Access, allowed: bool) {
        keep(
            &self.allowed,
            (principal.name.clone(), access.clone()),
            allowed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn tokens_are_found_by_value_or_by_digest() {
        let mut c = Credentials::default();
        let sha = hex::encode(Sha256::digest(b"hashed-token"));
        let f = file(&format!(
            "- {{name: ci, role: operator, token: plain-token}}\n- {{name: dash, role: viewer, sha256: {sha}}}\n"
        ));
        c.load_tokens(f.path()).unwrap();
        c.add_token("admin", Role::Admin, "admin-token");
        let p = c.bearer("plain-token").unwrap();
        assert_eq!(
            (p.name.as_str(), p.grant),
            ("ci", Grant::Role(Role::Operator))
        );
        assert_eq!(c.bearer("hashed-token").unwrap().name, "dash");
        assert_eq!(
            c.bearer("admin-token").unwrap().grant,
            Grant::Role(Role::Admin)
        );
        assert!(c.bearer("nope").is_none());
    }

    #[test]
    fn a_bad_tokens_file_names_the_entry() {
        let mut c = Credentials::default();
        for (text, needle) in [
            ("- {name: a, role: boss, token: x}", "unknown variant"),
            ("- {name: a, role: viewer}", "entry 0 (a): give exactly one"),
            ("- {name: a, role: viewer, sha256: abc}", "64 hex digits"),
            (
                "- {name: a, role: viewer, token: x, extra: 1}",
                "unknown field",
            ),
        ] {
            let f = file(text);
            let e = c.load_tokens(f.path()).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn hmac_is_checked_over_the_body_with_the_users_secret() {
        let mut c = Credentials::default();
        let f = file("- {user: eve, role: operator, secret: s3cret}\n");
        c.load_hmac(f.path()).unwrap();
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"{\"a\": 1}");
        let good = hex::encode(mac.finalize().into_bytes());
        assert_eq!(c.hmac("eve", &good, b"{\"a\": 1}").unwrap().name, "eve");
        assert!(c.hmac("eve", &good, b"{\"a\": 2}").is_none());
        assert!(c.hmac("mallory", &good, b"{\"a\": 1}").is_none());
        assert!(c.hmac("eve", "zz", b"").is_none());
    }
}
