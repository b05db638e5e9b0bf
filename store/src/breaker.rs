//! A circuit breaker in front of a [`Store`]: while the backend is unreachable, calls fail at
//! once with [`StoreError::Unavailable`] instead of each waiting for its own connect or command
//! timeout (issue 16: every store-backed request of a Redis outage took 7–11 s to its 503).
//!
//! Closed: calls go through; [`Settings::threshold`] consecutive unavailability errors (I/O,
//! refused or dropped connections — not script or data errors) open it, and so does a single
//! timeout: a call that waited its whole bound says every call now would wait as long, so the
//! request that met it gets one wait, not one per store call it makes. Open: calls
//! fail at once for [`Settings::cooldown`]. Then one call goes through as a probe (the others
//! keep failing fast until it ends): success closes the breaker, failure opens it again.
//! Every failed call — the backend's errors and the fast failures — is reported to the
//! `on_failure` hook by operation name, so every store failure can be counted.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;

use crate::documents::{Document, Documents, Expect, LogEntry, Written};
use crate::{
    BucketRow, ExceptionFilter, ExceptionRecord, Kind, RateHit, RegistryEntry, Resolution, Result,
    Retention, Sample, SeriesFilter, Store, StoreError,
};

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Consecutive unavailability errors that open the breaker.
    pub threshold: u32,
    /// How long an open breaker fails calls at once before it lets a probe through.
    pub cooldown: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            threshold: 3,
            cooldown: Duration::from_secs(2),
        }
    }
}

/// Called with the operation's name for every failed call.
pub type OnFailure = Arc<dyn Fn(&'static str) + Send + Sync>;

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// A [`Store`] behind a circuit breaker.
pub struct Breaker {
    inner: Arc<dyn Store>,
    settings: Settings,
    state: Mutex<State>,
    on_failure: Option<OnFailure>,
}

/// Whether `e` says the backend cannot be reached (as opposed to refusing this call).
pub fn is_unavailability(e: &StoreError) -> bool {
    match e {
        StoreError::Redis(e) => {
            e.is_io_error()
                || e.is_timeout()
                || e.is_connection_refusal()
                || e.is_connection_dropped()
        }
        StoreError::Unavailable { .. } => true,
        _ => false,
    }
}

/// Whether `e` is a call that waited its whole bound (a hung backend).
fn is_timeout(e: &StoreError) -> bool {
    matches!(e, StoreError::Redis(e) if e.is_timeout())
}

/// How a call ended, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The backend answered (even if it refused this call).
    Answered,
    /// The backend could not be reached.
    Unreachable,
    /// The call waited its whole bound.
    TimedOut,
}

/// What a call may do now.
enum Admit {
    /// Go through (as a probe when `true`).
    Go(bool),
    /// Fail at once; the breaker stays open this much longer.
    Refuse(Duration),
}

impl Breaker {
    /// `inner` behind a breaker; `on_failure` hears of every failed call.
    pub fn new(inner: Arc<dyn Store>, settings: Settings, on_failure: Option<OnFailure>) -> Self {
        Breaker {
            inner,
            settings,
            state: Mutex::new(State::default()),
            on_failure,
        }
    }

    /// Whether the breaker is closed (the backend answered the last calls, or too few failed
    /// to tell). `false` while it is open or probing.
    pub fn is_closed(&self) -> bool {
        let state = self.lock();
        state.open_until.is_none() && !state.probing
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(&self) -> Admit {
        let mut state = self.lock();
        match state.open_until {
            None => Admit::Go(false),
            Some(until) => {
                let now = Instant::now();
                if now < until || state.probing {
                    Admit::Refuse(until.saturating_duration_since(now))
                } else {
                    state.probing = true;
                    Admit::Go(true)
                }
            }
        }
    }

    fn settle(&self, probe: bool, outcome: Outcome) {
        let mut state = self.lock();
        if probe {
            state.probing = false;
        }
        match outcome {
            // Any answer from the backend (even a refusal of this call) shows it is reachable.
            Outcome::Answered => {
                state.failures = 0;
                state.open_until = None;
            }
            Outcome::Unreachable | Outcome::TimedOut => {
                state.failures = state.failures.saturating_add(1);
                if probe
                    || outcome == Outcome::TimedOut
                    || state.failures >= self.settings.threshold
                {
                    state.open_until = Some(Instant::now() + self.settings.cooldown);
                }
            }
        }
    }

    async fn call<T, F>(&self, operation: &'static str, f: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let probe = match self.admit() {
            Admit::Go(probe) => probe,
            Admit::Refuse(wait) => {
                self.failed(operation);
                return Err(StoreError::Unavailable {
                    retry_in: wait.max(Duration::from_millis(1)),
                });
            }
        };
        // A probe dropped before it ends (its request was cancelled) must not leave the
        // breaker probing for ever.
        let mut pending = Pending {
            breaker: self,
            probe,
            done: false,
        };
        let result = f.await;
        pending.done = true;
        match &result {
            Ok(_) => self.settle(probe, Outcome::Answered),
            Err(e) => {
                let outcome = if is_timeout(e) {
                    Outcome::TimedOut
                } else if is_unavailability(e) {
                    Outcome::Unreachable
                } else {
                    Outcome::Answered
                };
                self.settle(probe, outcome);
                self.failed(operation);
            }
        }
        result
    }

    fn failed(&self, operation: &'static str) {
        if let Some(hook) = &self.on_failure {
            hook(operation);
        }
    }
}

struct Pending<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.probe && !self.done {
            self.breaker.lock().probing = false;
        }
    }
}

#[async_trait]
impl Documents for Breaker {
    async fn put_document(
        &self,
        collection: &str,
        id: &str,
        body: &Value,
        expect: Expect,
    ) -> Result<Written> {
        self.call(
            "put_document",
            self.inner.put_document(collection, id, body, expect),
        )
        .await
    }

    async fn delete_document(&self, collection: &str, id: &str, expect: Expect) -> Result<Written> {
        self.call(
            "delete_document",
            self.inner.delete_document(collection, id, expect),
        )
        .await
    }

    async fn document(&self, collection: &str, id: &str) -> Result<Option<Document>> {
        self.call("document", self.inner.document(collection, id))
            .await
    }

    async fn documents(&self, collection: &str) -> Result<Vec<Document>> {
        self.call("documents", self.inner.documents(collection))
            .await
    }

    async fn append(&self, log: &str, entry: &Value) -> Result<u64> {
        self.call("append", self.inner.append(log, entry)).await
    }

    async fn append_all(&self, entries: &[(String, Value)]) -> Result<Vec<u64>> {
        self.call("append_all", self.inner.append_all(entries))
            .await
    }

    async fn log(&self, log: &str, after: u64, limit: usize) -> Result<Vec<LogEntry>> {
        self.call("log", self.inner.log(log, after, limit)).await
    }

    async fn log_len(&self, log: &str) -> Result<u64> {
        self.call("log_len", self.inner.log_len(log)).await
    }
}

#[async_trait]
impl Store for Breaker {
    async fn ids_with(
        &self,
        kind: Kind,
        names: &[&str],
        created: Option<&Value>,
    ) -> Result<Vec<u32>> {
        self.call("ids", self.inner.ids_with(kind, names, created))
            .await
    }

    async fn upsert(&self, kind: Kind, name: &str, attrs: &Value) -> Result<u32> {
        self.call("upsert", self.inner.upsert(kind, name, attrs))
            .await
    }

    async fn entry(&self, kind: Kind, name: &str) -> Result<Option<RegistryEntry>> {
        self.call("entry", self.inner.entry(kind, name)).await
    }

    async fn entries(&self, kind: Kind) -> Result<Vec<RegistryEntry>> {
        self.call("entries", self.inner.entries(kind)).await
    }

    async fn remove(&self, kind: Kind, names: &[&str]) -> Result<usize> {
        self.call("remove", self.inner.remove(kind, names)).await
    }

    fn retention(&self) -> Retention {
        self.inner.retention()
    }

    async fn ingest(&self, samples: &[Sample]) -> Result<()> {
        self.call("ingest", self.inner.ingest(samples)).await
    }

    async fn rollup(&self) -> Result<usize> {
        self.call("rollup", self.inner.rollup()).await
    }

    async fn buckets(
        &self,
        metric: u32,
        resolution: Resolution,
        from: i64,
        to: i64,
        filter: &SeriesFilter,
    ) -> Result<Vec<BucketRow>> {
        self.call(
            "buckets",
            self.inner.buckets(metric, resolution, from, to, filter),
        )
        .await
    }

    async fn seen(
        &self,
        kind: Kind,
        metric: Option<u32>,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<u32>> {
        self.call("seen", self.inner.seen(kind, metric, from, to))
            .await
    }

    async fn add_exception(&self, record: &ExceptionRecord) -> Result<u64> {
        self.call("add_exception", self.inner.add_exception(record))
            .await
    }

    async fn exceptions_where(
        &self,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
        filter: &ExceptionFilter,
    ) -> Result<Vec<ExceptionRecord>> {
        self.call(
            "exceptions",
            self.inner.exceptions_where(from, to, limit, filter),
        )
        .await
    }

    async fn exception(&self, id: u64) -> Result<Option<ExceptionRecord>> {
        self.call("exception", self.inner.exception(id)).await
    }

    async fn delete_exceptions(&self, ids: &[u64]) -> Result<usize> {
        self.call("delete_exceptions", self.inner.delete_exceptions(ids))
            .await
    }

    async fn prune(&self, now: i64) -> Result<()> {
        self.call("prune", self.inner.prune(now)).await
    }

    async fn ping(&self) -> Result<()> {
        self.call("ping", self.inner.ping()).await
    }

    async fn rate_hit(&self, key: &str, window_secs: u64, now: i64) -> Result<RateHit> {
        self.call("rate_hit", self.inner.rate_hit(key, window_secs, now))
            .await
    }
}
