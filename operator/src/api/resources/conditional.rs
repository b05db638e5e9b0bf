//! Conditional requests (seed 004 "Conditional Requests", "Data Integrity and Concurrency
//! Control"): each item's `_etag` is the SHA-1 of its uid and `resourceVersion`, so an
//! `If-Match` names one revision of the object and the write carries that revision as its
//! precondition (the Kubernetes API server or the local store refuses it atomically when the
//! object moved on). `Last-Modified`, `If-None-Match` and `If-Modified-Since` give 304s.

use axum::http::{HeaderMap, header};
use sha1::{Digest, Sha1};

/// The `_etag` of revision `revision` of the object `uid`.
pub fn etag(uid: &str, revision: &str) -> String {
    let mut hash = Sha1::new();
    hash.update(uid.as_bytes());
    hash.update(b"\0");
    hash.update(revision.as_bytes());
    hex(&hash.finalize())
}

/// The SHA-1 of `bytes` in hex (oplog entries' `_etag`).
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex(&Sha1::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The entity tags a header lists (`"a", W/"b"`, `*`), unquoted.
fn tags(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|t| {
            t.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// What `If-Match` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No `If-Match`: Eve's `ENFORCE_IF_MATCH` answers 428.
    Missing,
    /// `*`: any current revision.
    Any,
    /// These tags.
    Tags(Vec<String>),
}

impl IfMatch {
    /// From the request headers.
    pub fn from_headers(headers: &HeaderMap) -> IfMatch {
        match headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
            None => IfMatch::Missing,
            Some(v) if v.trim() == "*" => IfMatch::Any,
            Some(v) => IfMatch::Tags(tags(v)),
        }
    }

    /// Whether it names `etag`.
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            IfMatch::Missing => false,
            IfMatch::Any => true,
            IfMatch::Tags(t) => t.iter().any(|t| t == etag),
        }
    }
}

/// RFC 1123 (`Tue, 15 Nov 1994 08:12:31 GMT`) of `secs` since the epoch.
pub fn http_date(secs: i64) -> String {
    let secs = u64::try_from(secs).unwrap_or(0);
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// Whether a GET of an item with `etag` last modified at `modified` (seconds) is answered 304:
/// `If-None-Match` naming it, else `If-Modified-Since` not before it (Eve adds a second).
pub fn not_modified(headers: &HeaderMap, etag: &str, modified: i64) -> bool {
    if let Some(v) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        let tags = tags(v);
        return tags.iter().any(|t| t == etag || t == "*");
    }
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(super::query::date_of)
        .is_some_and(|since| modified <= since + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn etags_name_one_revision_of_one_object() {
        let a = etag("uid-1", "10");
        assert_eq!(a.len(), 40);
        assert_eq!(a, etag("uid-1", "10"));
        assert_ne!(a, etag("uid-1", "11"));
        assert_ne!(a, etag("uid-2", "10"));
    }

    #[test]
    fn if_match_reads_quoted_weak_and_star() {
        assert_eq!(IfMatch::from_headers(&HeaderMap::new()), IfMatch::Missing);
        let m = IfMatch::from_headers(&headers(header::IF_MATCH, "\"abc\", W/\"def\""));
        assert!(m.matches("abc") && m.matches("def") && !m.matches("x"));
        assert!(IfMatch::from_headers(&headers(header::IF_MATCH, "abc")).matches("abc"));
        assert!(IfMatch::from_headers(&headers(header::IF_MATCH, "*")).matches("anything"));
    }

    #[test]
    fn not_modified_by_tag_or_by_date_with_a_second_of_slack() {
        assert!(not_modified(
            &headers(header::IF_NONE_MATCH, "\"e\""),
            "e",
            100
        ));
        assert!(!not_modified(
            &headers(header::IF_NONE_MATCH, "\"x\""),
            "e",
            100
        ));
        let since = http_date(1_000_000);
        assert!(not_modified(
            &headers(header::IF_MODIFIED_SINCE, &since),
            "e",
            1_000_001
        ));
        assert!(!not_modified(
            &headers(header::IF_MODIFIED_SINCE, &since),
            "e",
            1_000_002
        ));
        assert!(!not_modified(
            &headers(header::IF_MODIFIED_SINCE, "yesterday"),
            "e",
            1
        ));
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
