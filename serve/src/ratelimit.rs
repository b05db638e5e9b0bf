//! Rate limits per client and method (seed 004 "Rate limiting", Eve's `RATE_LIMIT_<METHOD>`):
//! each method has its own limit and window, configurable per role; the client is the
//! principal when the request authenticated, else its IP (`X-Forwarded-For` believed only from
//! trusted proxies). Counting is one atomic [`Counter::hit`] per request — in the shared store,
//! so every replica enforces one limit.
//!
//! Failed authentications are limited per IP as well: past the limit a client's credentials are
//! not even checked until the window ends, so guessing gains nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method};
use futures::future::BoxFuture;
use ipnet::IpNet;

use crate::auth::Role;

/// One limit: `count` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests allowed per window.
    pub count: u64,
    /// The window.
    pub window: Duration,
}

/// One request counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Requests in the window so far, this one included.
    pub count: u64,
    /// When the window ends (seconds since the epoch).
    pub reset: i64,
}

/// Where requests are counted: the metric store (Redis shared by replicas, or the embedded
/// store's in-memory counters) or [`MemoryCounter`].
pub trait Counter: Send + Sync {
    /// Counts one request under `key` in the `window_secs` window containing `now`.
    fn hit<'a>(
        &'a self,
        key: &'a str,
        window_secs: u64,
        now: i64,
    ) -> BoxFuture<'a, Result<Hit, String>>;
}

/// Counting in this process only (the node-daemon; tests).
#[derive(Default)]
pub struct MemoryCounter {
    windows: Mutex<HashMap<String, (i64, u64)>>,
}

impl Counter for MemoryCounter {
    fn hit<'a>(
        &'a self,
        key: &'a str,
        window_secs: u64,
        now: i64,
    ) -> BoxFuture<'a, Result<Hit, String>> {
        let w = window_secs.max(1) as i64;
        let start = now.div_euclid(w) * w;
        let result = self
            .windows
            .lock()
            .map_err(|_| "rate-limit counters poisoned".to_owned())
            .map(|mut windows| {
                if windows.len() > 100_000 {
                    windows.retain(|_, (s, _)| *s >= start);
                }
                let slot = windows.entry(key.to_owned()).or_insert((start, 0));
                if slot.0 != start {
                    *slot = (start, 0);
                }
                slot.1 += 1;
                Hit {
                    count: slot.1,
                    reset: start + w,
                }
            });
        Box::pin(std::future::ready(result))
    }
}

/// What to do when the counter cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Serve the request unlimited (and count the error).
    #[default]
    Open,
    /// Refuse the request with 503.
    Closed,
}

/// The limits of one binary.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// `(role, method)` → limit; `None` role is every role's default. A method with no entry is
    /// not limited.
    rules: HashMap<(Option<Role>, Method), Limit>,
    /// Failed authentications per client IP.
    pub auth_failures: Limit,
    /// What an unreachable counter means.
    pub on_error: OnError,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// Why a `--rate-limit` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate limit {rule:?}: {reason} (expected [role:]METHOD=COUNT/WINDOW, e.g. GET=1200/1m or viewer:POST=0/1m, or off)"
)]
pub struct LimitError {
    /// The rule as written.
    pub rule: String,
    /// What is wrong.
    pub reason: String,
}

/// The default limits: generous for people and dashboards, tight enough that one client cannot
/// take the API for itself. Documented in docs/auth.md.
pub const DEFAULT_RULES: &str =
    "GET=1200/1m,HEAD=1200/1m,POST=600/1m,PUT=300/1m,PATCH=300/1m,DELETE=120/1m";

fn parse_limit(text: &str) -> Result<Limit, String> {
    let (count, window) = text
        .split_once('/')
        .ok_or_else(|| "missing /WINDOW".to_owned())?;
    let count = count
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{count:?} is not a count"))?;
    let window = humantime::parse_duration(window.trim()).map_err(|e| e.to_string())?;
    if window < Duration::from_secs(1) {
        return Err("the window must be at least 1s".into());
    }
    Ok(Limit { count, window })
}

impl Limits {
    /// Parses the comma-separated rules of `--rate-limit` (`off`: no limits).
    pub fn parse(rules: &str) -> Result<Limits, LimitError> {
        let mut limits = Limits {
            rules: HashMap::new(),
            auth_failures: Limit {
                count: 20,
                window: Duration::from_secs(60),
            },
            on_error: OnError::Open,
            trusted_proxies: Vec::new(),
        };
        if rules.trim() == "off" {
            return Ok(limits);
        }
        for rule in rules.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let err = |reason: String| LimitError {
                rule: rule.to_owned(),
                reason,
            };
            let (target, limit) = rule
                .split_once('=')
                .ok_or_else(|| err("missing =".into()))?;
            let (role, method) = match target.split_once(':') {
                Some((role, method)) => (Some(role.parse::<Role>().map_err(err)?), method),
                None => (None, target),
            };
            let method = method.trim().to_ascii_uppercase();
            let method = match method.as_str() {
                "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => {
                    Method::from_bytes(method.as_bytes()).map_err(|e| err(e.to_string()))?
                }
                other => return Err(err(format!("{other:?} is not an HTTP method"))),
            };
            limits
                .rules
                .insert((role, method), parse_limit(limit).map_err(err)?);
        }
        Ok(limits)
    }

    /// Sets the failed-authentication limit from `COUNT/WINDOW`.
    pub fn with_auth_failures(mut self, text: &str) -> Result<Limits, LimitError> {
        self.auth_failures = parse_limit(text).map_err(|reason| LimitError {
            rule: text.to_owned(),
            reason,
        })?;
        Ok(self)
    }

    /// The limit of `method` for `role` (`None`: unauthenticated).
    pub fn limit(&self, role: Option<Role>, method: &Method) -> Option<Limit> {
        role.and_then(|r| self.rules.get(&(Some(r), method.clone())))
            .or_else(|| self.rules.get(&(None, method.clone())))
            .copied()
    }

    /// Whether any request is limited.
    pub fn is_off(&self) -> bool {
        self.rules.is_empty()
    }

    /// The client's address: the peer, or — when the peer is a trusted proxy — the last
    /// address in `X-Forwarded-For` that is not a trusted proxy itself.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        let peer = peer?;
        if !trusted(&peer) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|ip| !trusted(ip))
                .unwrap_or(peer),
        )
    }
}

/// Clients over their failed-authentication limit, remembered in this process until their
/// window ends, so the check costs nothing while they are not blocked.
#[derive(Default)]
pub struct Blocked {
    until: Mutex<HashMap<IpAddr, i64>>,
}

impl Blocked {
    /// Whether `ip` is blocked at `now`; returns the end of the block.
    pub fn until(&self, ip: IpAddr, now: i64) -> Option<i64> {
        let mut map = self.until.lock().ok()?;
        match map.get(&ip) {
            Some(end) if *end > now => Some(*end),
            Some(_) => {
                map.remove(&ip);
                None
            }
            None => None,
        }
    }

    /// Blocks `ip` until `end`.
    pub fn block(&self, ip: IpAddr, end: i64) {
        if let Ok(mut map) = self.until.lock() {
            if map.len() > 100_000 {
                map.clear();
            }
            map.insert(ip, end);
        }
    }
}

/// Logs an unreachable counter at most once per minute.
#[derive(Default)]
pub struct WarnOnce {
    last: Mutex<Option<Instant>>,
}

impl WarnOnce {
    /// Whether a warning is due now.
    pub fn due(&self) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_per_method_and_role() {
        let limits = Limits::parse("GET=10/1m, viewer:post=0/30s,PATCH=5/1h").unwrap();
        let minute = Duration::from_secs(60);
        assert_eq!(
            limits.limit(None, &Method::GET),
            Some(Limit {
                count: 10,
                window: minute
            })
        );
        assert_eq!(
            limits.limit(Some(Role::Viewer), &Method::POST),
            Some(Limit {
                count: 0,
                window: Duration::from_secs(30)
            })
        );
        assert_eq!(limits.limit(Some(Role::Admin), &Method::POST), None);
        assert_eq!(
            limits.limit(Some(Role::Admin), &Method::GET).unwrap().count,
            10
        );
        assert!(Limits::parse("off").unwrap().is_off());
        assert!(!Limits::parse(DEFAULT_RULES).unwrap().is_off());
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (rule, needle) in [
            ("GET", "missing ="),
            ("GET=10", "missing /WINDOW"),
            ("GET=x/1m", "is not a count"),
            ("FETCH=1/1m", "is not an HTTP method"),
            ("boss:GET=1/1m", "unknown role"),
            ("GET=1/1ms", "at least 1s"),
        ] {
            let e = Limits::parse(rule).unwrap_err().to_string();
            assert!(e.contains(needle), "{rule}: {e}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut limits = Limits::parse("off").unwrap();
        limits.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9, 10.1.1.1".parse().unwrap());
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            limits.client_ip(Some(proxy), &headers),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(limits.client_ip(Some(stranger), &headers), Some(stranger));
        assert_eq!(
            limits.client_ip(Some(proxy), &HeaderMap::new()),
            Some(proxy)
        );
    }

    #[tokio::test]
    async fn the_memory_counter_counts_per_window() {
        let c = MemoryCounter::default();
        assert_eq!(
            c.hit("k", 60, 120).await.unwrap(),
            Hit {
                count: 1,
                reset: 180
            }
        );
        assert_eq!(c.hit("k", 60, 179).await.unwrap().count, 2);
        assert_eq!(
            c.hit("k", 60, 180).await.unwrap(),
            Hit {
                count: 1,
                reset: 240
            }
        );
    }

    #[test]
    fn blocks_end_with_their_window() {
        let b = Blocked::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        b.block(ip, 100);
        assert_eq!(b.until(ip, 99), Some(100));
        assert_eq!(b.until(ip, 100), None);
    }
}
