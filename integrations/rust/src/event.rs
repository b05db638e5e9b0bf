//! One request as opsplane's ingestion endpoint takes it (`POST /monitoring/api/ingest/`,
//! docs/monitoring.md "Ingesting request events"), and the rules shared with the Python
//! package: text fields cut to what opsplane accepts, the client address behind trusted proxies.

use std::net::IpAddr;

use serde::Serialize;

/// Longest text opsplane takes in a field that becomes a label (path, user agent, ...).
pub const MAX_NAME_BYTES: usize = 1024;

/// Longest error message or detail sent.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// One request event, serialized with the ingestion endpoint's field names; `None` fields are
/// left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Event {
    /// Name of the service that handled the request.
    pub service: String,
    /// Its type (opsplane's default: `application`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    /// Host the service runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// When the request arrived, in seconds since the epoch.
    pub time: f64,
    /// HTTP method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request path, without the query string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Response status code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Time from the request to the end of its response body, in milliseconds.
    pub duration_ms: f64,
    /// Bytes of response body sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Client address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Client user agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// User tracking id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The user's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// What went wrong, when something did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

/// The `error` of an event: becomes an exception in opsplane (`/monitoring/api/exceptions/`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErrorInfo {
    /// The kind of error (an exception class, an error enum's variant).
    #[serde(rename = "type")]
    pub error_type: String,
    /// Its message.
    pub message: String,
    /// Details, such as a backtrace.
    pub data: String,
}

impl ErrorInfo {
    /// An error of `error_type` with `message`, cut to what opsplane takes.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> ErrorInfo {
        ErrorInfo {
            error_type: cut(error_type.into(), MAX_NAME_BYTES),
            message: cut(message.into(), MAX_ERROR_BYTES),
            data: String::new(),
        }
    }

    /// The same error with `data` (a backtrace, a cause chain).
    pub fn with_data(mut self, data: impl Into<String>) -> ErrorInfo {
        self.data = cut(data.into(), MAX_ERROR_BYTES);
        self
    }
}

/// `text` shortened to at most `limit` bytes, on a character boundary.
pub fn cut(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The proxies whose `X-Forwarded-For` is believed (addresses and networks). Without any,
/// the socket's peer is the client.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Trusts each of `proxies` (`"10.0.0.1"`, `"10.0.0.0/8"`, `"::1"`).
    pub fn new<I, S>(proxies: I) -> Result<TrustedProxies, crate::ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        proxies
            .into_iter()
            .map(|p| {
                let p = p.as_ref().trim();
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| crate::ConfigError::TrustedProxy(p.to_string()))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    /// Whether `address` is a trusted proxy.
    pub fn trusts(&self, address: &str) -> bool {
        address
            .trim()
            .parse::<IpAddr>()
            .is_ok_and(|ip| self.0.iter().any(|n| n.contains(&ip)))
    }

    /// The client: `peer`, unless it is a trusted proxy; then the right-most address of
    /// `forwarded_for` that is not one.
    pub fn client(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<String> {
        let peer_text = peer.map(|p| p.to_string());
        let (Some(peer), Some(forwarded)) = (peer, forwarded_for) else {
            return peer_text;
        };
        if !self.0.iter().any(|n| n.contains(&peer)) {
            return peer_text;
        }
        let hops: Vec<&str> = forwarded
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        hops.iter()
            .rev()
            .find(|h| !self.trusts(h))
            .or(hops.first())
            .map(|h| h.to_string())
            .or(peer_text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("héllo".into(), 2), "h");
        assert_eq!(cut("héllo".into(), 3), "hé");
        assert_eq!(cut("abc".into(), 10), "abc");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let p = TrustedProxies::new(["10.0.0.0/8", "::1"]).unwrap();
        let ten: IpAddr = "10.1.1.1".parse().unwrap();
        assert_eq!(
            p.client(Some(ten), Some("1.2.3.4, 5.6.7.8, 10.2.2.2")),
            Some("5.6.7.8".into())
        );
        assert_eq!(
            p.client(Some("::1".parse().unwrap()), Some("1.2.3.4")),
            Some("1.2.3.4".into())
        );
        assert_eq!(
            p.client(Some("8.8.8.8".parse().unwrap()), Some("1.2.3.4")),
            Some("8.8.8.8".into())
        );
        assert_eq!(
            TrustedProxies::default().client(Some(ten), Some("1.2.3.4")),
            Some("10.1.1.1".into())
        );
        assert!(TrustedProxies::new(["not an address"]).is_err());
    }

    #[test]
    fn none_fields_are_left_out_of_the_json() {
        let e = Event {
            service: "shop".into(),
            time: 1.5,
            status: Some(200),
            error: Some(ErrorInfo::new("Timeout", "too slow")),
            ..Event::default()
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"service": "shop", "time": 1.5, "status": 200, "duration_ms": 0.0,
                "error": {"type": "Timeout", "message": "too slow", "data": ""}})
        );
    }
}
