//! Running one check of one instance: an HTTP request or a TCP connect, bounded by the service's
//! timeout. The result is data ([`InstanceResult`]); what it means for status is decided in
//! `controller::monitored_service::decide_status`.

use std::time::{Duration, Instant};

use opsplane_resources::{HttpCheck, HttpMethod, MonitoredServiceSpec};
use reqwest::Client;

/// How one instance is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// Request `url` and judge the answer by `http`.
    Http {
        /// Absolute http(s) URL.
        url: String,
        /// Method, expected status, body match, TLS verification.
        http: HttpCheck,
    },
    /// Connect to `host:port`.
    Tcp {
        /// `host:port`.
        address: String,
    },
}

/// Which kind of check a [`Probe`] is, as the metric store names it (`check:http`, `check:tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// An HTTP(S) request.
    Http,
    /// A TCP connect.
    Tcp,
}

impl ProbeKind {
    /// The store's name of the kind: `http` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Http => "http",
            ProbeKind::Tcp => "tcp",
        }
    }
}

impl Probe {
    /// Whether this is an HTTP or a TCP check.
    pub fn kind(&self) -> ProbeKind {
        match self {
            Probe::Http { .. } => ProbeKind::Http,
            Probe::Tcp { .. } => ProbeKind::Tcp,
        }
    }
}

/// One instance to check: its address for status, its readiness from discovery, and the probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// `host:port` shown in status.
    pub address: String,
    /// Ready according to discovery (always true for a plain url).
    pub ready: bool,
    /// What to do.
    pub probe: Probe,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceResult {
    /// `host:port` of the instance.
    pub address: String,
    /// Ready according to discovery.
    pub ready: bool,
    /// Whether the check passed.
    pub healthy: bool,
    /// How long it took.
    pub latency: Duration,
    /// HTTP status, for HTTP checks that got an answer.
    pub status: Option<u16>,
    /// Why it failed, for people (status, exceptions).
    pub error: Option<String>,
    /// Why it failed, for machines (metric labels, exception types); `None` when it passed.
    pub failure: Option<Failure>,
}

/// The kind of a failed check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The target answered, but not as the check expects (status, body).
    UnexpectedResponse,
    /// No answer within the timeout.
    Timeout,
    /// The target could not be reached (connection refused, DNS, TLS, reset).
    Unreachable,
}

impl Failure {
    /// The stable name of the kind: `unexpected_response`, `timeout` or `unreachable`.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::UnexpectedResponse => "unexpected_response",
            Failure::Timeout => "timeout",
            Failure::Unreachable => "unreachable",
        }
    }
}

/// Why a probe failed: its kind, the HTTP status when there was an answer, and a message.
#[derive(Debug, Clone, PartialEq)]
struct ProbeError {
    failure: Failure,
    status: Option<u16>,
    message: String,
}

impl ProbeError {
    fn unreachable(message: String) -> Self {
        Self {
            failure: Failure::Unreachable,
            status: None,
            message,
        }
    }

    fn unexpected(status: u16, message: String) -> Self {
        Self {
            failure: Failure::UnexpectedResponse,
            status: Some(status),
            message,
        }
    }

    /// A request that failed in reqwest: a timeout when reqwest says so, else unreachable.
    fn request(what: &str, url: &str, e: &reqwest::Error) -> Self {
        let (failure, kind) = if e.is_timeout() {
            (Failure::Timeout, "timed out")
        } else if e.is_connect() {
            (Failure::Unreachable, "connection failed")
        } else {
            (Failure::Unreachable, "request failed")
        };
        // The innermost cause says the most (e.g. "Connection refused").
        let mut cause: &dyn std::error::Error = e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        Self {
            failure,
            status: None,
            message: format!("{what} {url}: {kind}: {cause}"),
        }
    }
}

impl InstanceResult {
    /// Why the check failed, as a stable reason (`unexpected_response`, `timeout`,
    /// `unreachable`), or `None` when it passed.
    pub fn error_reason(&self) -> Option<&'static str> {
        if self.healthy {
            return None;
        }
        Some(self.failure.unwrap_or(Failure::Unreachable).reason())
    }
}

/// Builds the target of a `url` spec. `None` for serviceRef specs (their targets come from
/// discovery).
pub fn url_target(spec: &MonitoredServiceSpec) -> Option<Target> {
    let url = spec.url.as_ref()?;
    if let Some(address) = url.strip_prefix("tcp://") {
        let address = address.trim_end_matches('/').to_string();
        return Some(Target {
            address: address.clone(),
            ready: true,
            probe: Probe::Tcp { address },
        });
    }
    Some(Target {
        address: authority(url),
        ready: true,
        probe: Probe::Http {
            url: url.clone(),
            http: spec.http.clone().unwrap_or_default(),
        },
    })
}

/// `host:port` of an absolute URL, with the scheme's default port when none is written.
pub fn authority(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let has_port = match host.rfind(']') {
        Some(bracket) => host[bracket..].contains(':'),
        None => host.contains(':'),
    };
    if has_port {
        host.to_string()
    } else {
        let port = if scheme == "https" { 443 } else { 80 };
        format!("{host}:{port}")
    }
}

/// HTTP clients shared by all checks: one verifying TLS, one not (per-service opt-out).
#[derive(Clone)]
pub struct Clients {
    verifying: Client,
    insecure: Client,
}

impl Clients {
    /// Builds both clients. Redirects are not followed: a check reports what the target answers.
    pub fn new() -> Result<Self, reqwest::Error> {
        let base = || {
            Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("opsplane-check/", env!("CARGO_PKG_VERSION")))
                .pool_max_idle_per_host(2)
        };
        Ok(Self {
            verifying: base().build()?,
            insecure: base().danger_accept_invalid_certs(true).build()?,
        })
    }
}

/// Runs one check; never panics and never takes much longer than `timeout`.
pub async fn run(target: &Target, timeout: Duration, clients: &Clients) -> InstanceResult {
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, probe(&target.probe, timeout, clients))
        .await
        .unwrap_or_else(|_| {
            Err(ProbeError {
                failure: Failure::Timeout,
                status: None,
                message: format!("timed out after {}ms", timeout.as_millis()),
            })
        });
    let latency = started.elapsed();
    let (status, error, failure) = match outcome {
        Ok(status) => (status, None, None),
        Err(e) => (e.status, Some(e.message), Some(e.failure)),
    };
    InstanceResult {
        address: target.address.clone(),
        ready: target.ready,
        healthy: failure.is_none(),
        latency,
        status,
        error,
        failure,
    }
}

/// The HTTP status (for HTTP checks) when the target is up, else why not.
async fn probe(
    probe: &Probe,
    timeout: Duration,
    clients: &Clients,
) -> Result<Option<u16>, ProbeError> {
    match probe {
        Probe::Tcp { address } => tokio::net::TcpStream::connect(address.as_str())
            .await
            .map(|_| None)
            .map_err(|e| ProbeError::unreachable(format!("tcp connect to {address} failed: {e}"))),
        Probe::Http { url, http } => {
            let client = if http.insecure_skip_verify {
                &clients.insecure
            } else {
                &clients.verifying
            };
            let method = match http.method {
                HttpMethod::Get => reqwest::Method::GET,
                HttpMethod::Head => reqwest::Method::HEAD,
                HttpMethod::Post => reqwest::Method::POST,
                HttpMethod::Options => reqwest::Method::OPTIONS,
            };
            let response = client
                .request(method, url)
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| ProbeError::request("request to", url, &e))?;
            let status = response.status().as_u16();
            let status_ok = if http.expected_status.is_empty() {
                (200..300).contains(&status)
            } else {
                http.expected_status.contains(&status)
            };
            if !status_ok {
                let expected = if http.expected_status.is_empty() {
                    "2xx".to_string()
                } else {
                    format!("{:?}", http.expected_status)
                };
                return Err(ProbeError::unexpected(
                    status,
                    format!("HTTP {status}, expected {expected}"),
                ));
            }
            if let Some(needle) = &http.body_contains {
                // A body that cannot be read is judged like a request that failed (no status).
                let body = response
                    .text()
                    .await
                    .map_err(|e| ProbeError::request("reading the body of", url, &e))?;
                if !body.contains(needle.as_str()) {
                    return Err(ProbeError::unexpected(
                        status,
                        format!("response body does not contain {needle:?}"),
                    ));
                }
            }
            Ok(Some(status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn authority_fills_default_ports() {
        assert_eq!(authority("http://a.example/x"), "a.example:80");
        assert_eq!(authority("https://a.example"), "a.example:443");
        assert_eq!(authority("http://10.0.0.7:8000/health"), "10.0.0.7:8000");
        assert_eq!(authority("http://[::1]:81/"), "[::1]:81");
        assert_eq!(authority("http://[::1]/"), "[::1]:80");
        assert_eq!(authority("http://u:p@h:9/"), "h:9");
    }

    async fn one_shot_server(response: &'static str) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(response.as_bytes()).await;
            }
        });
        addr
    }

    fn http_target(addr: std::net::SocketAddr, http: HttpCheck) -> Target {
        Target {
            address: addr.to_string(),
            ready: true,
            probe: Probe::Http {
                url: format!("http://{addr}/health"),
                http,
            },
        }
    }

    #[tokio::test]
    async fn http_check_judges_status_and_body() {
        let clients = Clients::new().unwrap();
        let ok =
            one_shot_server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        let r = run(
            &http_target(ok, HttpCheck::default()),
            Duration::from_secs(2),
            &clients,
        )
        .await;
        assert!(r.healthy, "{r:?}");
        assert_eq!(r.status, Some(200));

        let body_check = HttpCheck {
            body_contains: Some("ready".into()),
            ..HttpCheck::default()
        };
        let r = run(
            &http_target(ok, body_check),
            Duration::from_secs(2),
            &clients,
        )
        .await;
        assert!(!r.healthy);
        assert!(r.error.unwrap().contains("does not contain"));

        let bad = one_shot_server(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        let r = run(
            &http_target(bad, HttpCheck::default()),
            Duration::from_secs(2),
            &clients,
        )
        .await;
        assert!(!r.healthy);
        assert_eq!(r.status, Some(503));
        let expect_503 = HttpCheck {
            expected_status: vec![503],
            ..HttpCheck::default()
        };
        let r = run(
            &http_target(bad, expect_503),
            Duration::from_secs(2),
            &clients,
        )
        .await;
        assert!(r.healthy);
    }

    #[tokio::test]
    async fn failures_carry_their_kind_whatever_the_message_says() {
        let clients = Clients::new().unwrap();
        let bad = one_shot_server(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let quiet = silent.local_addr().unwrap();
        let tcp_closed = Target {
            address: closed.to_string(),
            ready: true,
            probe: Probe::Tcp {
                address: closed.to_string(),
            },
        };
        let cases = [
            (
                "an answer with the wrong status is an unexpected response",
                http_target(bad, HttpCheck::default()),
                Failure::UnexpectedResponse,
            ),
            (
                "a closed port is unreachable over HTTP",
                http_target(closed, HttpCheck::default()),
                Failure::Unreachable,
            ),
            (
                "a closed port is unreachable over TCP",
                tcp_closed,
                Failure::Unreachable,
            ),
            (
                "a server that never answers times out",
                http_target(quiet, HttpCheck::default()),
                Failure::Timeout,
            ),
        ];
        for (why, target, failure) in cases {
            let r = run(&target, Duration::from_millis(300), &clients).await;
            assert!(!r.healthy, "{why}: {r:?}");
            assert_eq!(r.failure, Some(failure), "{why}: {r:?}");
            assert_eq!(r.error_reason(), Some(failure.reason()), "{why}");
        }
        drop(silent);
    }

    #[test]
    fn error_reason_follows_the_failure_kind_not_the_message() {
        let result = |failure: Option<Failure>, error: &str| InstanceResult {
            address: "a:1".into(),
            ready: true,
            healthy: failure.is_none(),
            latency: Duration::from_millis(1),
            status: None,
            error: failure.map(|_| error.to_string()),
            failure,
        };
        let cases = [
            (None, "", None),
            (Some(Failure::Timeout), "deadline exceeded", Some("timeout")),
            (
                Some(Failure::Unreachable),
                "timed out resolving the name? no: refused",
                Some("unreachable"),
            ),
            (
                Some(Failure::UnexpectedResponse),
                "HTTP 503, expected 2xx",
                Some("unexpected_response"),
            ),
        ];
        for (failure, error, reason) in cases {
            assert_eq!(result(failure, error).error_reason(), reason, "{failure:?}");
        }
    }

    #[test]
    fn a_probe_names_its_kind() {
        let http = Probe::Http {
            url: "tcp://looks-like-tcp:1".into(),
            http: HttpCheck::default(),
        };
        assert_eq!(http.kind(), ProbeKind::Http);
        assert_eq!(http.kind().as_str(), "http");
        let tcp = Probe::Tcp {
            address: "a:1".into(),
        };
        assert_eq!(tcp.kind().as_str(), "tcp");
    }

    #[tokio::test]
    async fn unreachable_and_silent_targets_fail_within_the_timeout() {
        let clients = Clients::new().unwrap();
        // A port nobody listens on: bind, learn the port, close.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let r = run(
            &http_target(closed, HttpCheck::default()),
            Duration::from_secs(2),
            &clients,
        )
        .await;
        assert!(!r.healthy);
        assert!(
            r.error
                .as_deref()
                .unwrap_or("")
                .contains("connection failed"),
            "{r:?}"
        );

        // A server that accepts and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let started = Instant::now();
        let r = run(
            &http_target(addr, HttpCheck::default()),
            Duration::from_millis(300),
            &clients,
        )
        .await;
        assert!(!r.healthy);
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(silent);

        let tcp = Target {
            address: closed.to_string(),
            ready: true,
            probe: Probe::Tcp {
                address: closed.to_string(),
            },
        };
        let r = run(&tcp, Duration::from_secs(1), &clients).await;
        assert!(!r.healthy);
    }
}
