//! opsplane's metric store: everything opsplane observes (node reports, service checks,
//! ingested request events) kept as aggregates that the monitoring API of seed 001 reads.
//!
//! The model follows GeoNode's monitoring (seed 001): a *series* is one metric × service ×
//! resource × label × event type; its samples are folded into 1-minute buckets holding
//! samples_count, sum, min and max, and rolled up into 1-hour buckets that also keep the
//! minimum and maximum of the per-minute sums and how many minutes had data (metric_count).
//! Registries give services, hosts, resources, labels, event types and metrics stable numeric
//! ids; exceptions are kept as records with ids.
//!
//! One trait, [`Store`], two backends: [`redis::RedisStore`] (shared by every API replica;
//! atomic updates through Lua scripts, pipelined reads) and [`embedded::EmbeddedStore`] (an
//! on-disk redb database, the default when no Redis URL is configured). The conformance suite
//! in `tests/conformance.rs` runs the same cases on both.

pub mod breaker;
pub mod catalog;
pub mod documents;
pub mod embedded;
pub mod model;
pub mod query;
pub mod redis;
pub mod supervisors;
pub mod testing;

use async_trait::async_trait;

pub use documents::{Document, Documents, Expect, LogEntry, Written};
pub use model::{
    Agg, BucketRow, ExceptionFilter, ExceptionRecord, Kind, RegistryEntry, Resolution, Retention,
    Sample, SeriesFilter, SeriesKey,
};

/// Errors of a store backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The Redis server failed or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The embedded database failed.
    #[error("embedded store: {0}")]
    Embedded(String),
    /// A stored record could not be read back (corruption or a foreign writer).
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// Where.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The caller passed something the store cannot hold.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The backend was unreachable for the last calls: this one failed at once
    /// ([`breaker::Breaker`]) rather than waiting for its own timeout.
    #[error("the store is unreachable; the next try in {} ms", retry_in.as_millis())]
    Unavailable {
        /// How long until the breaker lets a call through again.
        retry_in: std::time::Duration,
    },
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Embedded(e.to_string())
    }
}

macro_rules! redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Embedded(e.to_string())
            }
        }
    )*};
}
redb_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Now, in seconds since the epoch.
pub(crate) fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The store interface shared by the Redis and embedded backends (documents and logs of the
/// resource API included, through [`Documents`]).
///
/// Every write is atomic per call: a batch of samples is either folded in whole or not at all
/// (Redis: one Lua script per batch; embedded: one transaction).
#[async_trait]
pub trait Store: Documents + Send + Sync + 'static {
    /// Returns the stable id of each `(kind, name)`, creating missing entries. Ids start at 1
    /// and never change or get reused.
    async fn ids(&self, kind: Kind, names: &[&str]) -> Result<Vec<u32>> {
        self.ids_with(kind, names, None).await
    }

    /// As [`Store::ids`], giving the entries it creates the attributes `created` (a JSON
    /// object; entries that exist keep theirs), in the same atomic step: the recorder marks
    /// which service brought a label in (the per-service label limit).
    async fn ids_with(
        &self,
        kind: Kind,
        names: &[&str],
        created: Option<&serde_json::Value>,
    ) -> Result<Vec<u32>>;

    /// Merges `attrs` (a JSON object) into the entry's attributes, creating the entry if needed;
    /// returns its id.
    async fn upsert(&self, kind: Kind, name: &str, attrs: &serde_json::Value) -> Result<u32>;

    /// The entry called `name`, if registered (does not create it).
    async fn entry(&self, kind: Kind, name: &str) -> Result<Option<RegistryEntry>>;

    /// Every entry of a registry, by id.
    async fn entries(&self, kind: Kind) -> Result<Vec<RegistryEntry>>;

    /// Removes the entries called `names` from the registry `kind`, with their first/last
    /// seen records, in one atomic step (the maintain API's stale-instance clean). Ids are
    /// never reused: a name registered again gets a new id. The series written under a removed
    /// id stay until the retention drops them. Returns how many entries existed.
    async fn remove(&self, kind: Kind, names: &[&str]) -> Result<usize>;

    /// How long this store keeps what it is given.
    fn retention(&self) -> Retention;

    /// Folds samples into their 1-minute buckets and marks the hours they fall in for roll-up.
    /// Also records, per metric, when each resource and label was first and last seen.
    async fn ingest(&self, samples: &[Sample]) -> Result<()>;

    /// Recomputes every hour bucket marked by [`Store::ingest`] from its minute buckets.
    /// Idempotent; safe to run from several replicas at once. Returns how many hours it rolled.
    async fn rollup(&self) -> Result<usize>;

    /// Buckets of `metric` with `from <= start < to` at `resolution`, filtered.
    async fn buckets(
        &self,
        metric: u32,
        resolution: Resolution,
        from: i64,
        to: i64,
        filter: &SeriesFilter,
    ) -> Result<Vec<BucketRow>>;

    /// Ids of `kind` (resources or labels) seen for `metric` (any metric when `None`) with
    /// last-seen ≥ `from` and first-seen ≤ `to` (seconds).
    async fn seen(
        &self,
        kind: Kind,
        metric: Option<u32>,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<u32>>;

    /// Stores an exception record, giving it the next id.
    async fn add_exception(&self, record: &ExceptionRecord) -> Result<u64>;

    /// Exceptions newest first, at most `limit`, created within `[from, to]` when given.
    async fn exceptions(
        &self,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ExceptionRecord>> {
        self.exceptions_where(from, to, limit, &ExceptionFilter::default())
            .await
    }

    /// Exceptions newest first that pass `filter`, at most `limit`, created within
    /// `[from, to]` when given.
    async fn exceptions_where(
        &self,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
        filter: &ExceptionFilter,
    ) -> Result<Vec<ExceptionRecord>>;

    /// One exception by id.
    async fn exception(&self, id: u64) -> Result<Option<ExceptionRecord>>;

    /// Deletes the exceptions with these ids in one atomic step (all of them or, when the
    /// store fails, none); ids that do not exist are skipped. Returns how many were deleted.
    /// Ids are never reused.
    async fn delete_exceptions(&self, ids: &[u64]) -> Result<usize>;

    /// Drops buckets and exceptions older than the retention, relative to `now` (seconds).
    async fn prune(&self, now: i64) -> Result<()>;

    /// Checks that the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// Counts one request against the fixed window of `window_secs` that `now` (seconds) falls
    /// in, under `key`; returns the count in that window so far (this request included) and
    /// when the window ends. Atomic and shared by every process using the store (Redis: one
    /// round trip). The embedded backend counts in memory: it serves one process, and a
    /// counter that survives a restart is not worth a disk write per request.
    async fn rate_hit(&self, key: &str, window_secs: u64, now: i64) -> Result<RateHit>;
}

/// One request counted by [`Store::rate_hit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHit {
    /// Requests in the window so far, this one included.
    pub count: u64,
    /// When the window ends (seconds since the epoch).
    pub reset: i64,
}

/// The window `now` falls in: `(start, end)` in seconds, windows aligned to the epoch.
pub fn rate_window(window_secs: u64, now: i64) -> (i64, i64) {
    let w = window_secs.max(1) as i64;
    let start = now.div_euclid(w) * w;
    (start, start + w)
}

/// Opens the store the configuration asks for: Redis when `redis_url` is set, else the embedded
/// database at `path`.
pub async fn open(
    redis_url: Option<&str>,
    path: &std::path::Path,
    retention: Retention,
) -> Result<std::sync::Arc<dyn Store>> {
    open_with(redis_url, path, retention, redis::DEFAULT_TIMEOUT).await
}

/// [`open`], with the longest a Redis connect or command may take.
pub async fn open_with(
    redis_url: Option<&str>,
    path: &std::path::Path,
    retention: Retention,
    redis_timeout: std::time::Duration,
) -> Result<std::sync::Arc<dyn Store>> {
    match redis_url {
        Some(url) => Ok(std::sync::Arc::new(
            redis::RedisStore::connect_with(url, "opsplane:", retention, redis_timeout).await?,
        )),
        None => Ok(std::sync::Arc::new(embedded::EmbeddedStore::open(
            path, retention,
        )?)),
    }
}
