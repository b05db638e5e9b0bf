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
    /// Why it failed.
    pub error: Option<String>,
}

impl InstanceResult {
    /// Why the check failed, as a stable reason (`unexpected_response`, `timeout`,
    /// `unreachable`), or `None` when it passed.
    pub fn error_reason(&self) -> Option<&'static str> {
        if self.healthy {
            return None;
        }
        Some(match (&self.status, &self.error) {
            (Some(_), _) => "unexpected_response",
            (None, Some(e)) if e.contains("timed out") => "timeout",
            _ => "unreachable",
        })
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
    let outcome = tokio::time::timeout(timeout, probe(&target.probe, timeout, clients)).await;
    let latency = started.elapsed();
    let (healthy, status, error) = match outcome {
        Err(_) => (
            false,
            None,
            Some(format!("timed out after {}ms", timeout.as_millis())),
        ),
        Ok(Ok((status, None))) => (true, status, None),
        Ok(Ok((status, Some(why)))) => (false, status, Some(why)),
        Ok(Err(why)) => (false, None, Some(why)),
    };
    InstanceResult {
        address: target.address.clone(),
        ready: target.ready,
        healthy,
        latency,
        status,
        error,
    }
}

/// `Ok((status, None))` when up, `Ok((status, Some(reason)))` when the target answered wrongly,
/// `Err(reason)` when it could not be reached.
async fn probe(
    probe: &Probe,
    timeout: Duration,
    clients: &Clients,
) -> Result<(Option<u16>, Option<String>), String> {
    match probe {
        Probe::Tcp { address } => tokio::net::TcpStream::connect(address.as_str())
            .await
            .map(|_| (None, None))
            .map_err(|e| format!("tcp connect to {address} failed: {e}")),
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
                .map_err(|e| describe_request_error(url, &e))?;
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
                return Ok((
                    Some(status),
                    Some(format!("HTTP {status}, expected {expected}")),
                ));
            }
            if let Some(needle) = &http.body_contains {
                let body = response
                    .text()
                    .await
                    .map_err(|e| format!("reading the body of {url} failed: {e}"))?;
                if !body.contains(needle.as_str()) {
                    return Ok((
                        Some(status),
                        Some(format!("response body does not contain {needle:?}")),
                    ));
                }
            }
            Ok((Some(status), None))
        }
    }
}

fn describe_request_error(url: &str, e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The innermost cause says the most (e.g. "Connection refused").
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("request to {url}: {kind}: {cause}")
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
