//! Bearer tokens (RFC 6750): what a client presents and the configured token it is compared
//! with. The comparison is constant-time (`subtle`), so a wrong token's timing does not say how
//! much of it was right.

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// The credential of an `Authorization: Bearer <token>` header, without surrounding white space.
/// The scheme name is case-insensitive (RFC 7235 §2.1); `None` when there is no such header.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
        .filter(|c| !c.is_empty())
}

/// A configured token refused at start: it is empty once white space is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmptyToken;

impl std::fmt::Display for EmptyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the token is empty")
    }
}

impl std::error::Error for EmptyToken {}

/// A configured bearer token.
#[derive(Clone)]
pub struct BearerToken {
    token: std::sync::Arc<str>,
    trimmed: bool,
}

impl BearerToken {
    /// The token as configured (an environment variable, a file, a Secret), without the white
    /// space around it: a Secret made from a file with a trailing newline must still match what
    /// clients send. [`BearerToken::was_trimmed`] says whether anything was removed, so the
    /// caller can warn.
    pub fn from_config(raw: &str) -> Result<BearerToken, EmptyToken> {
        let token = raw.trim();
        if token.is_empty() {
            return Err(EmptyToken);
        }
        Ok(BearerToken {
            token: token.into(),
            trimmed: token.len() != raw.len(),
        })
    }

    /// Whether white space was removed from the configured value.
    pub fn was_trimmed(&self) -> bool {
        self.trimmed
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        bool::from(presented.as_bytes().ct_eq(self.token.as_bytes()))
    }

    /// Whether the request's `Authorization: Bearer` header carries this token.
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        presented(headers).is_some_and(|p| self.matches(p))
    }

    /// The token itself, to hand to a client that must present it.
    pub fn expose(&self) -> &str {
        &self.token
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, not even in a debug dump.
        f.write_str("BearerToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_credential_trimmed() {
        assert_eq!(presented(&headers("Bearer abc")), Some("abc"));
        assert_eq!(presented(&headers("bearer abc ")), Some("abc"));
        assert_eq!(presented(&headers("BEARER  abc")), Some("abc"));
        assert_eq!(presented(&headers("Basic abc")), None);
        assert_eq!(presented(&headers("Bearer")), None);
        assert_eq!(presented(&headers("Bearer   ")), None);
        assert_eq!(presented(&HeaderMap::new()), None);
    }

    #[test]
    fn configured_tokens_are_trimmed_and_empty_ones_refused() {
        let token = BearerToken::from_config("s3cret\n").unwrap();
        assert!(token.was_trimmed());
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cret\n"));
        assert!(!BearerToken::from_config("s3cret").unwrap().was_trimmed());
        assert_eq!(BearerToken::from_config(" \n").unwrap_err(), EmptyToken);
    }

    #[test]
    fn a_token_matches_only_itself() {
        let token = BearerToken::from_config("abc").unwrap();
        assert!(token.accepts(&headers("Bearer abc")));
        assert!(!token.accepts(&headers("Bearer abd")));
        assert!(!token.accepts(&headers("Bearer ab")));
        assert!(!token.accepts(&headers("Bearer abcd")));
        assert!(!token.accepts(&HeaderMap::new()));
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
    }
}
