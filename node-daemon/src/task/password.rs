//! verify_password (seed 002 §二.15): checks an OS user's password against the host's shadow
//! file (`<host-root>/etc/shadow`). Supports the hashes current distributions write: yescrypt
//! (`$y$`, Debian 11+, Fedora, Ubuntu 22.04+) and SHA-crypt (`$6$` sha512, `$5$` sha256), with
//! RustCrypto's `yescrypt` and `sha-crypt` crates, whose verifiers compare in constant time.
//! Answers: 0 match, 10001 wrong password or no usable password (locked `!`, disabled `*`,
//! empty), 10002 no such user, 30004 a hash scheme not supported.
//!
//! Off unless `--password-check`; limited to `--password-attempts` per client IP per
//! `--password-window` (99999 beyond, "retry later"). The password is never logged, audited or
//! echoed in a message: parse errors name fields, never values, and [`PasswordCheck`]'s `Debug`
//! redacts it.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha_crypt::ShaCrypt;
use yescrypt::{PasswordVerifier, Yescrypt, password_hash};

use super::{HandlerRequest, TaskError, TaskSettings, clip};

/// Longest password accepted (SHA-crypt's cost grows with the length).
pub const MAX_PASSWORD: usize = 1024;

/// A verify_password request.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordCheck {
    /// The OS user.
    pub user: String,
    password: String,
}

impl std::fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordCheck")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl HandlerRequest for PasswordCheck {
    fn handler(&self) -> &'static str {
        "PasswordHandler"
    }

    fn command(&self) -> &'static str {
        "verify_password"
    }

    /// The user only, never the password.
    fn audit_data(&self) -> Value {
        json!({"user": self.user})
    }

    fn permission(&self, settings: &TaskSettings) -> Result<(), TaskError> {
        if !settings.password_check {
            return Err(TaskError::Refused(
                "verify_password is off; start the node-daemon with --password-check (OPSPLANE_PASSWORD_CHECK=true) to allow it".into(),
            ));
        }
        Ok(())
    }
}

impl PasswordCheck {
    /// Parses `{"user", "password"}`.
    pub fn parse(body: &Value) -> Result<Self, TaskError> {
        let user = match body.get("user") {
            Some(Value::String(s)) => s,
            Some(_) => return Err(TaskError::Invalid("user must be a string".into())),
            None => return Err(TaskError::Invalid("user is required".into())),
        };
        if user.is_empty()
            || user.len() > 256
            || user
                .chars()
                .any(|c| c == ':' || c.is_control() || c.is_whitespace())
        {
            return Err(TaskError::Invalid(format!(
                "user {:?} is not a user name",
                clip(user)
            )));
        }
        let password = match body.get("password") {
            Some(Value::String(s)) => s,
            Some(_) => return Err(TaskError::Invalid("password must be a string".into())),
            None => return Err(TaskError::Invalid("password is required".into())),
        };
        if password.len() > MAX_PASSWORD {
            return Err(TaskError::Invalid(format!(
                "password is longer than {MAX_PASSWORD} bytes"
            )));
        }
        Ok(Self {
            user: user.clone(),
            password: password.clone(),
        })
    }

    /// A check for `user` and `password` (for callers that have them typed).
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }
}

/// Verifies the password against the shadow file. Blocking (yescrypt is CPU- and memory-hard):
/// run it off the async threads.
pub fn verify(shadow: &Path, check: &PasswordCheck) -> Result<(), TaskError> {
    let text = std::fs::read_to_string(shadow).map_err(|e| {
        TaskError::Failed(format!(
            "cannot read the shadow file {}: {e}",
            shadow.display()
        ))
    })?;
    let hash = text
        .lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            (fields.next() == Some(check.user.as_str())).then(|| fields.next().unwrap_or(""))
        })
        .ok_or_else(|| TaskError::UnknownUser(format!("no user {:?} on this node", check.user)))?;
    if hash.is_empty() || hash.starts_with('!') || hash.starts_with('*') {
        return Err(TaskError::LoginFailed(format!(
            "user {:?} has no usable password (locked, disabled or empty)",
            check.user
        )));
    }
    let password = check.password.as_bytes();
    let result = if hash.starts_with("$y$") {
        Yescrypt::default().verify_password(password, hash)
    } else if hash.starts_with("$6$") || hash.starts_with("$5$") {
        ShaCrypt::SHA512.verify_password(password, hash)
    } else {
        let scheme = match hash.split('$').nth(1) {
            Some(id) if hash.starts_with('$') => format!("${}$", clip(id)),
            _ => "DES (no $id$)".to_owned(),
        };
        return Err(TaskError::Unsupported(format!(
            "the password hash of user {:?} uses scheme {scheme:?}; this node-daemon verifies yescrypt ($y$) and SHA-crypt ($6$, $5$)",
            check.user
        )));
    };
    match result {
        Ok(()) => Ok(()),
        Err(password_hash::Error::PasswordInvalid) => Err(TaskError::LoginFailed(format!(
            "wrong password for user {:?}",
            check.user
        ))),
        Err(error) => Err(TaskError::Failed(format!(
            "the shadow entry of user {:?} cannot be read as a password hash: {error}",
            check.user
        ))),
    }
}

/// Password checks per client within a sliding window.
pub struct RateLimiter {
    attempts: u32,
    window: Duration,
    clients: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// Clients remembered at most; beyond, those with no attempt in the window are forgotten.
const MAX_CLIENTS: usize = 4096;

impl RateLimiter {
    /// `attempts` per `window` per client.
    pub fn new(attempts: u32, window: Duration) -> Self {
        Self {
            attempts,
            window,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt by `client` at `now`, or refuses it.
    pub fn admit(&self, client: &str, now: Instant) -> Result<(), TaskError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.window;
        let fresh = |t: &Instant| now.saturating_duration_since(*t) < window;
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(client) {
            clients.retain(|_, times| times.back().is_some_and(fresh));
        }
        let times = clients.entry(client.to_owned()).or_default();
        while times.front().is_some_and(|t| !fresh(t)) {
            times.pop_front();
        }
        if times.len() >= self.attempts as usize {
            let retry = times
                .front()
                .map(|t| window.saturating_sub(now.saturating_duration_since(*t)))
                .unwrap_or(window);
            return Err(TaskError::RateLimited(format!(
                "too many password checks from {client} ({} per {}s); retry in {}s",
                self.attempts,
                window.as_secs(),
                retry.as_secs().max(1)
            )));
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Generated with libxcrypt (python3 crypt.crypt) for the password "s3cret pass".
    const YESCRYPT: &str =
        "$y$j9T$3Hh5OY8XZ5bwCnYSm4HoZ/$NuLqjtxFc.mhsU425wJgSl3Quo6JJ.SiJSBak28kXZA";

    const SHA512: &str = "$6$qx70bJ1m53302hjE$o4podTb/SV9tpIb1BXn1LiCc6QyOs8Ge9nKm06fG3ZhPjtLEs87.GFaulChilqxNECXrftVGKb7wP8VAUQe7a0";

    #[test]
    fn libxcrypt_hashes_verify_and_a_wrong_password_is_10001() {
        let dir = tempfile::tempdir().unwrap();
        let shadow = dir.path().join("shadow");
        std::fs::write(
            &shadow,
            format!("y:{YESCRYPT}:1::::::\ns:{SHA512}:1::::::\n"),
        )
        .unwrap();
        for user in ["y", "s"] {
            assert!(
                verify(&shadow, &PasswordCheck::new(user, "s3cret pass")).is_ok(),
                "{user}"
            );
            let e = verify(&shadow, &PasswordCheck::new(user, "s3cret pasS")).unwrap_err();
            assert_eq!(e.code(), 10001, "{user}: {e}");
        }
    }

    #[test]
    fn parse_requires_strings_and_redacts_debug() {
        let c = PasswordCheck::parse(&json!({"user": "root", "password": "hunter2"})).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        for bad in [
            json!({"user": "root"}),
            json!({"password": "x"}),
            json!({"user": "a:b", "password": "x"}),
            json!({"user": "", "password": "x"}),
            json!({"user": "root", "password": 123456}),
        ] {
            let e = PasswordCheck::parse(&bad).unwrap_err();
            assert_eq!(e.code(), 30006);
            assert!(!e.to_string().contains("123456"));
        }
    }

    #[test]
    fn rate_limit_is_per_client_and_slides() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(limiter.admit("a", t0).is_ok());
        assert!(limiter.admit("a", t0 + Duration::from_secs(1)).is_ok());
        let e = limiter.admit("a", t0 + Duration::from_secs(2)).unwrap_err();
        assert_eq!(e.code(), 99999);
        assert!(e.to_string().contains("retry in 58s"), "{e}");
        assert!(limiter.admit("b", t0 + Duration::from_secs(2)).is_ok());
        assert!(limiter.admit("a", t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn locked_unknown_and_unsupported_entries() {
        let dir = tempfile::tempdir().unwrap();
        let shadow = dir.path().join("shadow");
        std::fs::write(&shadow, format!(
            "root:{YESCRYPT}:20000:0:99999:7:::\nlocked:!{YESCRYPT}:20000::::::\nnologin:*:20000::::::\nold:$1$abc$def:1::::::\n"
        )).unwrap();
        let check = |u: &str| verify(&shadow, &PasswordCheck::new(u, "s3cret pass"));
        assert_eq!(check("nobody").unwrap_err().code(), 10002);
        assert_eq!(check("locked").unwrap_err().code(), 10001);
        assert_eq!(check("nologin").unwrap_err().code(), 10001);
        assert_eq!(check("old").unwrap_err().code(), 30004);
    }
}
