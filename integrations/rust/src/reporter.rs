//! The reporter: a bounded queue of events and one tokio task posting them in batches to
//! opsplane's ingestion endpoint, off the request path. The same contract as the Python
//! package's reporter: [`Reporter::report`] never blocks and never fails the caller; a full
//! queue drops and counts; what can pass later (no connection, timeout, 408, 429, 5xx) is
//! retried with a capped exponential backoff; what opsplane refuses as invalid (another 4xx)
//! is dropped, counted and logged once — when opsplane names the bad event
//! (`errors: {"events[3].status": ...}`) only that one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::ConfigError;
use crate::event::Event;

/// The path of opsplane's ingestion endpoint.
pub const INGEST_PATH: &str = "/monitoring/api/ingest/";

/// Most events opsplane takes in one request.
pub const MAX_BATCH: usize = 10_000;

/// How a [`Reporter`] posts: where, with which token, and its queue, batch and retry bounds.
#[derive(Debug, Clone)]
pub struct Config {
    /// opsplane's base URL (`http://opsplane:8080`) or its ingestion endpoint.
    pub url: String,
    /// A bearer token with the operator role (docs/auth.md).
    pub token: String,
    /// Most events held in memory; beyond, new events are dropped and counted.
    pub queue_size: usize,
    /// Most events in one post.
    pub batch_size: usize,
    /// How long a batch waits for more events after its first.
    pub interval: Duration,
    /// Bound of one post.
    pub timeout: Duration,
    /// Longest wait between two tries of a failed post (they start at 500 ms and double).
    pub max_backoff: Duration,
    /// Added to every event that has none.
    pub service_type: Option<String>,
    /// Added to every event that has none.
    pub host: Option<String>,
}

impl Config {
    /// The defaults (10,000 queued, batches of 500 after at most 1 s, 5 s per post, backoff
    /// up to 30 s) for `url` and `token`.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Config {
        Config {
            url: url.into(),
            token: token.into(),
            queue_size: 10_000,
            batch_size: 500,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
            service_type: None,
            host: None,
        }
    }

    /// `OPSPLANE_URL` and `OPSPLANE_TOKEN` from the environment, with the defaults.
    pub fn from_env() -> Result<Config, ConfigError> {
        let url = std::env::var("OPSPLANE_URL").map_err(|_| ConfigError::Url(String::new()))?;
        let token = std::env::var("OPSPLANE_TOKEN").map_err(|_| ConfigError::Token)?;
        Ok(Config::new(url, token))
    }

    /// The ingestion endpoint of `url`; an error unless it is an absolute http(s) URL.
    pub fn ingest_url(&self) -> Result<reqwest::Url, ConfigError> {
        let bad = || ConfigError::Url(self.url.clone());
        let mut url = reqwest::Url::parse(&self.url).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad());
        }
        let path = url.path().trim_end_matches('/').to_string();
        if path.ends_with(INGEST_PATH.trim_end_matches('/')) {
            url.set_path(&format!("{path}/"));
        } else {
            url.set_path(&format!("{path}{INGEST_PATH}"));
        }
        Ok(url)
    }

    fn check(&self) -> Result<reqwest::Url, ConfigError> {
        let url = self.ingest_url()?;
        if self.token.trim().is_empty() {
            return Err(ConfigError::Token);
        }
        if self.queue_size == 0 {
            return Err(ConfigError::Bound(
                "queue_size",
                "must be at least 1".into(),
            ));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return Err(ConfigError::Bound(
                "batch_size",
                format!("must be 1 to {MAX_BATCH}"),
            ));
        }
        Ok(url)
    }
}

/// What a reporter has done with the events it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events opsplane acknowledged.
    pub sent: u64,
    /// Events dropped here: the queue was full, or they were unsent at shutdown.
    pub dropped: u64,
    /// Events opsplane refused as invalid.
    pub refused: u64,
    /// Posts that failed and were retried.
    pub failed_posts: u64,
    /// Events waiting in the queue or in the batch being sent.
    pub queued: u64,
}

#[derive(Default)]
struct Shared {
    sent: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    failed_posts: AtomicU64,
    queued: AtomicU64,
    /// Flushes waiting: batches go without waiting for `interval`.
    flushing: AtomicUsize,
    closing: AtomicBool,
    wake: Notify,
    logged: Mutex<HashSet<String>>,
}

impl Shared {
    fn log_once(&self, key: &str, message: impl FnOnce() -> String) {
        let first = self
            .logged
            .lock()
            .map(|mut l| l.insert(key.to_string()))
            .unwrap_or(false);
        if first {
            tracing::warn!("opsplane-integrate: {}", message());
        } else {
            tracing::debug!("opsplane-integrate: {}", message());
        }
    }

    fn forget(&self, key: &str) {
        if let Ok(mut l) = self.logged.lock() {
            l.remove(key);
        }
    }

    fn settle(&self, counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
        self.queued.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

/// Queues events and posts them to opsplane in batches from a background task. Cheap to
/// clone: clones share the queue and the counters.
#[derive(Clone)]
pub struct Reporter {
    queue: mpsc::Sender<Event>,
    shared: Arc<Shared>,
    defaults: Arc<(Option<String>, Option<String>)>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// Checks `config` and starts the posting task on the current tokio runtime.
    pub fn new(config: Config) -> Result<Reporter, ConfigError> {
        let url = config.check()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!(
                "opsplane-integrate-rust/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        let (queue, events) = mpsc::channel(config.queue_size);
        let shared = Arc::new(Shared::default());
        let poster = Poster {
            client,
            url,
            token: config.token.clone(),
            batch_size: config.batch_size,
            interval: config.interval,
            max_backoff: config.max_backoff,
            shared: shared.clone(),
        };
        let task = runtime.spawn(poster.run(events));
        Ok(Reporter {
            queue,
            shared,
            defaults: Arc::new((config.service_type, config.host)),
            task: Arc::new(Mutex::new(Some(task))),
        })
    }

    /// Queues `event`. Never blocks; false when it was dropped (the queue is full, or the
    /// reporter shut down).
    pub fn report(&self, mut event: Event) -> bool {
        let (service_type, host) = &*self.defaults;
        if event.service_type.is_none() {
            event.service_type.clone_from(service_type);
        }
        if event.host.is_none() {
            event.host.clone_from(host);
        }
        if self.shared.closing.load(Ordering::Relaxed) {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // Counted before it can be taken, so `queued` never goes below zero.
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(event) {
            Ok(()) => true,
            Err(_) => {
                self.shared.settle(&self.shared.dropped, 1);
                self.shared.log_once("full", || {
                    "the queue is full: dropping new events until opsplane takes them".into()
                });
                false
            }
        }
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        let s = &self.shared;
        Counters {
            sent: s.sent.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            failed_posts: s.failed_posts.load(Ordering::Relaxed),
            queued: s.queued.load(Ordering::Relaxed),
        }
    }

    /// Waits until every queued event was sent, dropped or refused, at most `timeout`; true
    /// when nothing is left.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        self.shared.flushing.fetch_add(1, Ordering::SeqCst);
        self.shared.wake.notify_one();
        let done = loop {
            if self.shared.queued.load(Ordering::SeqCst) == 0 {
                break true;
            }
            if Instant::now() >= end {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        self.shared.flushing.fetch_sub(1, Ordering::SeqCst);
        done
    }

    /// Sends what is queued (at most `timeout`), then stops the task; what is left is dropped
    /// and counted, and so are later events. Call it when the service shuts down.
    pub async fn shutdown(&self, timeout: Duration) {
        self.flush(timeout).await;
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        let left = self.shared.queued.swap(0, Ordering::SeqCst);
        self.shared.dropped.fetch_add(left, Ordering::SeqCst);
    }
}

/// How one post ended.
enum Outcome {
    Sent,
    /// Will not pass: the index of the event opsplane named, if it named one.
    Refused(u16, Option<usize>, String),
    Retry(String, Option<Duration>),
}

struct Poster {
    client: reqwest::Client,
    url: reqwest::Url,
    token: String,
    batch_size: usize,
    interval: Duration,
    max_backoff: Duration,
    shared: Arc<Shared>,
}

impl Poster {
    async fn run(self, mut events: mpsc::Receiver<Event>) {
        loop {
            let Some(first) = events.recv().await else {
                return;
            };
            let mut batch = vec![first];
            let due = Instant::now() + self.interval;
            while batch.len() < self.batch_size {
                if self.shared.flushing.load(Ordering::SeqCst) > 0 {
                    while batch.len() < self.batch_size {
                        match events.try_recv() {
                            Ok(e) => batch.push(e),
                            Err(_) => break,
                        }
                    }
                    break;
                }
                tokio::select! {
                    biased;
                    event = events.recv() => match event {
                        Some(e) => batch.push(e),
                        None => break,
                    },
                    _ = self.shared.wake.notified() => {}
                    _ = tokio::time::sleep_until(due) => break,
                }
            }
            self.send(batch).await;
        }
    }

    async fn send(&self, mut batch: Vec<Event>) {
        let mut backoff = Duration::from_millis(500).min(self.max_backoff);
        let mut down = false;
        let mut index_drops = 0;
        while !batch.is_empty() {
            match self.post(&batch).await {
                Outcome::Sent => {
                    self.shared.settle(&self.shared.sent, batch.len());
                    if down {
                        self.shared.forget("down");
                        tracing::info!("opsplane-integrate: posting to {} again", self.url);
                    }
                    return;
                }
                Outcome::Refused(status, index, body) => {
                    self.shared.log_once(&format!("refused-{status}"), || {
                        format!(
                            "opsplane refused events with HTTP {status} (dropped, counted): {body}"
                        )
                    });
                    // One bad event refuses the batch: drop that one, send the rest (a few
                    // times per batch; each costs a round trip).
                    if let Some(i) = index.filter(|i| *i < batch.len() && index_drops < 5) {
                        index_drops += 1;
                        batch.remove(i);
                        self.shared.settle(&self.shared.refused, 1);
                        continue;
                    }
                    self.shared.settle(&self.shared.refused, batch.len());
                    return;
                }
                Outcome::Retry(reason, retry_after) => {
                    self.shared.failed_posts.fetch_add(1, Ordering::Relaxed);
                    if !down {
                        down = true;
                        self.shared.log_once("down", || {
                            format!("cannot post to {} ({reason}); retrying, events queue up and are dropped beyond", self.url)
                        });
                    }
                    let wait = retry_after.unwrap_or(backoff).min(self.max_backoff);
                    backoff = (backoff * 2).min(self.max_backoff);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn post(&self, batch: &[Event]) -> Outcome {
        let response = self
            .client
            .post(self.url.clone())
            .bearer_auth(&self.token)
            .json(batch)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(e.to_string(), None),
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Sent;
        }
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
            return Outcome::Retry(format!("HTTP {status}"), retry_after);
        }
        let body = response.text().await.unwrap_or_default();
        let index = (status == http::StatusCode::BAD_REQUEST)
            .then(|| bad_event_index(&body))
            .flatten();
        Outcome::Refused(status.as_u16(), index, crate::event::cut(body, 500))
    }
}

/// The index of the event opsplane's 400 names (`errors: {"events[3].status": [...]}`).
fn bad_event_index(body: &str) -> Option<usize> {
    let answer: serde_json::Value = serde_json::from_str(body).ok()?;
    answer["errors"].as_object()?.keys().find_map(|key| {
        let rest = key.strip_prefix("events[")?;
        rest[..rest.find(']')?].parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_gets_the_ingestion_path_and_the_endpoint_stays() {
        let url = |u: &str| Config::new(u, "t").ingest_url().map(|u| u.to_string());
        assert_eq!(
            url("http://h:8080").unwrap(),
            "http://h:8080/monitoring/api/ingest/"
        );
        assert_eq!(
            url("https://h/ops/").unwrap(),
            "https://h/ops/monitoring/api/ingest/"
        );
        assert_eq!(
            url("http://h/monitoring/api/ingest").unwrap(),
            "http://h/monitoring/api/ingest/"
        );
        for bad in ["opsplane:8080/x", "/monitoring", "ftp://h/", ""] {
            assert!(url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_named_bad_event_is_found_in_the_error_envelope() {
        let body =
            r#"{"status":"error","success":false,"errors":{"events[3].status":["no"]},"data":{}}"#;
        assert_eq!(bad_event_index(body), Some(3));
        assert_eq!(
            bad_event_index(r#"{"errors":{"events[12]":["old"]}}"#),
            Some(12)
        );
        assert_eq!(
            bad_event_index(r#"{"errors":{"body":["no events"]}}"#),
            None
        );
        assert_eq!(bad_event_index("not json"), None);
    }

    #[test]
    fn a_reporter_needs_a_runtime_a_token_and_bounds() {
        assert!(matches!(
            Reporter::new(Config::new("http://127.0.0.1:1", "t")),
            Err(ConfigError::NoRuntime)
        ));
        assert!(matches!(
            Config::new("http://127.0.0.1:1", " ").check(),
            Err(ConfigError::Token)
        ));
        let mut c = Config::new("http://127.0.0.1:1", "t");
        c.batch_size = 20_000;
        assert!(matches!(
            c.check(),
            Err(ConfigError::Bound("batch_size", _))
        ));
    }
}
