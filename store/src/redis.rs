//! The Redis backend, shared by every API replica.
//!
//! Layout (every key under the configurable prefix, `opsplane:` by default):
//! - `m:<metric>:<minute>` hash, field `<service>:<resource>:<label>:<event_type>` →
//!   `samples,sum,min,max`; expires when the minute leaves the retention.
//! - `h:<metric>:<hour>` hash, same fields → `samples,sum,min,max,minute_min,minute_max,
//!   metric_count`; rebuilt from the minutes by the roll-up.
//! - `dirty` sorted set of `<metric>:<hour>` scored by the last time a minute of it changed.
//! - `reg:<kind>` (name → id), `ent:<kind>` (id → JSON entry), `seq:<kind>` counters.
//! - `first:<kind>:<metric>` / `last:<kind>:<metric>` sorted sets (metric 0 = any).
//! - `exc` (id → JSON), `exc:created` (sorted by creation), `seq:exc`.
//! - `doc:<collection>` (id → JSON) and `docrev:<collection>` (id → revision) hashes of the
//!   resource API's documents, `seq:docrev` the store-wide revision counter; `log:<name>` lists
//!   (the oplog, document versions), a list's length being its last sequence number.
//!
//! Every write that must be atomic is one Lua script: a whole ingested batch, one hour's
//! roll-up (which only clears its dirty mark if no newer minute arrived meanwhile), a
//! registry get-or-create.

use std::collections::{BTreeSet, HashMap};

use ::redis::aio::ConnectionManager;
use ::redis::{AsyncCommands, Script};
use async_trait::async_trait;

use crate::documents::{Document, Documents, Expect, LogEntry, Written};
use crate::model::{
    Agg, BucketRow, ExceptionRecord, HOUR, Kind, MINUTE, RegistryEntry, Resolution, Retention,
    Sample, SeriesFilter, SeriesKey, dirty_hours, fold_minutes, seen_spans, validate,
};
use crate::{Result, Store, StoreError};

const INGEST: &str = r#"
local minute_expire_after = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local dirty = ARGV[3]
local updates = tonumber(ARGV[4])
local i = 5
for _ = 1, updates do
  local key, field = ARGV[i], ARGV[i + 1]
  local s, sum = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local mn, mx = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  local start = tonumber(ARGV[i + 6])
  local old = redis.call('HGET', key, field)
  if old then
    local a, b, c, d = string.match(old, '^([^,]+),([^,]+),([^,]+),([^,]+)$')
    if not a then return redis.error_reply('corrupt minute bucket ' .. key .. ' ' .. field) end
    s = s + tonumber(a)
    sum = sum + tonumber(b)
    mn = math.min(mn, tonumber(c))
    mx = math.max(mx, tonumber(d))
  end
  redis.call('HSET', key, field, string.format('%d,%.17g,%.17g,%.17g', s, sum, mn, mx))
  redis.call('EXPIREAT', key, start + minute_expire_after)
  i = i + 7
end
local marks = tonumber(ARGV[i])
i = i + 1
for _ = 1, marks do
  redis.call('ZADD', dirty, now, ARGV[i])
  i = i + 1
end
local seen = tonumber(ARGV[i])
i = i + 1
for _ = 1, seen do
  -- LT/GT also add missing members.
  redis.call('ZADD', ARGV[i], 'LT', ARGV[i + 3], ARGV[i + 2])
  redis.call('ZADD', ARGV[i + 1], 'GT', ARGV[i + 4], ARGV[i + 2])
  i = i + 5
end
return updates
"#;

const ROLLUP: &str = r#"
local hour_key, dirty, member = KEYS[1], KEYS[2], ARGV[1]
local expected = ARGV[2]
local expire_at = tonumber(ARGV[3])
local acc = {}
local order = {}
for m = 4, #ARGV do
  local flat = redis.call('HGETALL', ARGV[m])
  for j = 1, #flat, 2 do
    local field = flat[j]
    local a, b, c, d = string.match(flat[j + 1], '^([^,]+),([^,]+),([^,]+),([^,]+)$')
    if a then
      local s, sum, mn, mx = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
      local t = acc[field]
      if t then
        t[1] = t[1] + s
        t[2] = t[2] + sum
        t[3] = math.min(t[3], mn)
        t[4] = math.max(t[4], mx)
        t[5] = math.min(t[5], sum)
        t[6] = math.max(t[6], sum)
        t[7] = t[7] + 1
      else
        acc[field] = {s, sum, mn, mx, sum, sum, 1}
        order[#order + 1] = field
      end
    end
  end
end
redis.call('DEL', hour_key)
for _, field in ipairs(order) do
  local t = acc[field]
  redis.call('HSET', hour_key, field, string.format('%d,%.17g,%.17g,%.17g,%.17g,%.17g,%d',
    t[1], t[2], t[3], t[4], t[5], t[6], t[7]))
end
if #order > 0 then redis.call('EXPIREAT', hour_key, expire_at) end
if redis.call('ZSCORE', dirty, member) == expected then
  redis.call('ZREM', dirty, member)
end
return #order
"#;

/// Removes registry entries and their seen records. KEYS: reg, ent, reg:metric; ARGV: the key
/// prefix, the kind, then the names.
const REMOVE: &str = r#"
local reg, ent, metrics = KEYS[1], KEYS[2], KEYS[3]
local prefix, kind = ARGV[1], ARGV[2]
local ms = redis.call('HVALS', metrics)
table.insert(ms, '0')
local removed = 0
for i = 3, #ARGV do
  local id = redis.call('HGET', reg, ARGV[i])
  if id then
    redis.call('HDEL', reg, ARGV[i])
    redis.call('HDEL', ent, id)
    for _, m in ipairs(ms) do
      redis.call('ZREM', prefix .. 'first:' .. kind .. ':' .. m, id)
      redis.call('ZREM', prefix .. 'last:' .. kind .. ':' .. m, id)
    end
    removed = removed + 1
  end
end
return removed
"#;

/// KEYS: the registry's names, entries and sequence; ARGV[1] the attributes of created
/// entries as JSON ('' for none), then the names.
const IDS: &str = r#"
local out = {}
local attrs = nil
if ARGV[1] ~= '' then attrs = cjson.decode(ARGV[1]) end
for i = 2, #ARGV do
  local name = ARGV[i]
  local id = redis.call('HGET', KEYS[1], name)
  if not id then
    id = redis.call('INCR', KEYS[3])
    redis.call('HSET', KEYS[1], name, id)
    redis.call('HSET', KEYS[2], id, cjson.encode({id = tonumber(id), name = name, attrs = attrs}))
  end
  out[i - 1] = tonumber(id)
end
return out
"#;

const UPSERT: &str = r#"
local name = ARGV[1]
local id = redis.call('HGET', KEYS[1], name)
if not id then
  id = redis.call('INCR', KEYS[3])
  redis.call('HSET', KEYS[1], name, id)
end
local entry = {id = tonumber(id), name = name, attrs = {}}
local old = redis.call('HGET', KEYS[2], id)
if old then
  local decoded = cjson.decode(old)
  if type(decoded.attrs) == 'table' then entry.attrs = decoded.attrs end
end
local update = cjson.decode(ARGV[2])
for k, v in pairs(update) do entry.attrs[k] = v end
if next(entry.attrs) == nil then entry.attrs = nil end
redis.call('HSET', KEYS[2], id, cjson.encode(entry))
return tonumber(id)
"#;

/// The Redis store.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    retention: Retention,
    ingest: std::sync::Arc<Script>,
    rollup: std::sync::Arc<Script>,
    ids: std::sync::Arc<Script>,
    upsert: std::sync::Arc<Script>,
    rate: RateBatcher,
    remove: std::sync::Arc<Script>,
    put_document: std::sync::Arc<Script>,
}

/// Requests against fixed rate-limit windows, a batch at once: KEYS[i] a window's counter,
/// ARGV[i] its lifetime in seconds (set when the window's first request creates it). Answers
/// each counter's value after its INCR, in order. One script, so each INCR and its EXPIRE are
/// one atomic step (no key is left without an expiry if the process dies between the two).
const RATE: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, ARGV[i]) end
  out[i] = n
end
return out
";

/// Most rate-limit hits one script call carries.
const RATE_BATCH: usize = 256;

/// One rate-limit hit waiting for its batch.
struct PendingHit {
    key: String,
    ttl: u64,
    done: tokio::sync::oneshot::Sender<Result<u64>>,
}

/// Sends the rate limiter's hits to Redis in batches (issue 18): the hits that arrive while a
/// batch is on its way go together in the next one, as one `EVALSHA` with a key each. A lone
/// hit goes at once (no waiting to fill a batch), so at a low rate this is one round trip a
/// request as before; under load it is one round trip and one script run for many requests,
/// which is what lets one process count its limits at the rate it serves. Counting stays exact
/// across replicas: every hit is still its own atomic INCR in Redis.
#[derive(Clone)]
struct RateBatcher {
    queue: tokio::sync::mpsc::UnboundedSender<PendingHit>,
}

impl RateBatcher {
    /// Starts the task sending the batches on `conn`; it ends when the last sender is dropped.
    fn start(conn: ConnectionManager) -> RateBatcher {
        let (queue, hits) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(Self::run(hits, conn, Script::new(RATE)));
        RateBatcher { queue }
    }

    async fn run(
        mut hits: tokio::sync::mpsc::UnboundedReceiver<PendingHit>,
        mut conn: ConnectionManager,
        script: Script,
    ) {
        let mut batch = Vec::with_capacity(RATE_BATCH);
        while hits.recv_many(&mut batch, RATE_BATCH).await > 0 {
            let mut invocation = script.prepare_invoke();
            for hit in &batch {
                invocation.key(&hit.key);
            }
            for hit in &batch {
                invocation.arg(hit.ttl);
            }
            // The connection's response timeout bounds this: a hung Redis fails the batch.
            let answered: std::result::Result<Vec<u64>, ::redis::RedisError> =
                invocation.invoke_async(&mut conn).await;
            match answered {
                Ok(counts) if counts.len() == batch.len() => {
                    for (hit, count) in batch.drain(..).zip(counts) {
                        let _ = hit.done.send(Ok(count));
                    }
                }
                Ok(counts) => {
                    let reason = format!("{} counts for {} keys", counts.len(), batch.len());
                    for hit in batch.drain(..) {
                        let _ = hit.done.send(Err(StoreError::Corrupt {
                            key: "rate-limit batch".into(),
                            reason: reason.clone(),
                        }));
                    }
                }
                Err(error) => {
                    for hit in batch.drain(..) {
                        let _ = hit.done.send(Err(StoreError::Redis(error.clone())));
                    }
                }
            }
        }
    }

    /// Counts one hit on `key` (created with a lifetime of `ttl` seconds); its count after.
    async fn hit(&self, key: String, ttl: u64) -> Result<u64> {
        let stopped = || StoreError::Invalid("the rate-limit batcher has stopped".into());
        let (done, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send(PendingHit { key, ttl, done })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Longest a Redis connect or command may take, unless configured otherwise.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);
/// A conditional document write or delete: KEYS[1] the collection's bodies, KEYS[2] its
/// revisions, KEYS[3] the revision counter; ARGV id, body ('' for a delete), mode (any, absent,
/// rev) and the expected revision. Answers `{1, revision}` or `{0, current or -1}`.
const PUT_DOCUMENT: &str = r"
local cur = redis.call('HGET', KEYS[2], ARGV[1])
local mode = ARGV[3]
local refused = (mode == 'absent' and cur) or (mode == 'rev' and cur ~= ARGV[4])
local deleting = ARGV[5] == 'delete'
if deleting and not cur then refused = true end
if refused then
  if cur then return {0, tonumber(cur)} else return {0, -1} end
end
if deleting then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return {1, tonumber(cur)}
end
local rev = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], rev)
return {1, rev}
";

use crate::now_secs;

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`, `rediss://` for TLS) with the default key
    /// prefix `opsplane:`.
    pub async fn connect(url: &str, retention: Retention) -> Result<RedisStore> {
        Self::connect_with_prefix(url, "opsplane:", retention).await
    }

    /// Connects with an explicit key prefix (tests use one per case).
    pub async fn connect_with_prefix(
        url: &str,
        prefix: &str,
        retention: Retention,
    ) -> Result<RedisStore> {
        Self::connect_with(url, prefix, retention, DEFAULT_TIMEOUT).await
    }

    /// Connects with a key prefix and the longest a connect or command may take.
    pub async fn connect_with(
        url: &str,
        prefix: &str,
        retention: Retention,
        timeout: std::time::Duration,
    ) -> Result<RedisStore> {
        let client = ::redis::Client::open(url)?;
        // Bounded waits: while Redis is down a request fails within `timeout` instead of
        // waiting on reconnects (callers answer 503 and the rate limiter applies its policy).
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(std::time::Duration::from_millis(200));
        let conn = client.get_connection_manager_with_config(config).await?;
        let rate = RateBatcher::start(conn.clone());
        Ok(RedisStore {
            conn,
            prefix: prefix.to_string(),
            retention,
            ingest: std::sync::Arc::new(Script::new(INGEST)),
            rollup: std::sync::Arc::new(Script::new(ROLLUP)),
            ids: std::sync::Arc::new(Script::new(IDS)),
            upsert: std::sync::Arc::new(Script::new(UPSERT)),
            rate,
            remove: std::sync::Arc::new(Script::new(REMOVE)),
            put_document: std::sync::Arc::new(Script::new(PUT_DOCUMENT)),
        })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{}", self.prefix, rest)
    }

    fn bucket_key(&self, resolution: Resolution, metric: u32, start: i64) -> String {
        let r = match resolution {
            Resolution::Minute => "m",
            Resolution::Hour => "h",
        };
        format!("{}{r}:{metric}:{start}", self.prefix)
    }

    fn decode_entry(text: &str) -> Result<RegistryEntry> {
        let mut entry: RegistryEntry =
            serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
                key: "registry entry".into(),
                reason: e.to_string(),
            })?;
        if !entry.attrs.is_object() {
            entry.attrs = serde_json::json!({});
        }
        Ok(entry)
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn ids_with(
        &self,
        kind: Kind,
        names: &[&str],
        created: Option<&serde_json::Value>,
    ) -> Result<Vec<u32>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let created = match created {
            Some(a) if a.as_object().is_some_and(|o| !o.is_empty()) => a.to_string(),
            Some(a) if !a.is_object() => {
                return Err(StoreError::Invalid(
                    "attributes must be a JSON object".into(),
                ));
            }
            _ => String::new(),
        };
        let mut conn = self.conn.clone();
        let mut inv = self.ids.prepare_invoke();
        inv.key(self.key(&format!("reg:{}", kind.as_str())))
            .key(self.key(&format!("ent:{}", kind.as_str())))
            .key(self.key(&format!("seq:{}", kind.as_str())))
            .arg(created);
        for n in names {
            inv.arg(*n);
        }
        Ok(inv.invoke_async(&mut conn).await?)
    }

    async fn upsert(&self, kind: Kind, name: &str, attrs: &serde_json::Value) -> Result<u32> {
        if !attrs.is_object() {
            return Err(StoreError::Invalid(
                "attributes must be a JSON object".into(),
            ));
        }
        let mut conn = self.conn.clone();
        Ok(self
            .upsert
            .key(self.key(&format!("reg:{}", kind.as_str())))
            .key(self.key(&format!("ent:{}", kind.as_str())))
            .key(self.key(&format!("seq:{}", kind.as_str())))
            .arg(name)
            .arg(attrs.to_string())
            .invoke_async(&mut conn)
            .await?)
    }

    async fn entry(&self, kind: Kind, name: &str) -> Result<Option<RegistryEntry>> {
        let mut conn = self.conn.clone();
        let id: Option<u32> = conn
            .hget(self.key(&format!("reg:{}", kind.as_str())), name)
            .await?;
        let Some(id) = id else { return Ok(None) };
        let text: Option<String> = conn
            .hget(self.key(&format!("ent:{}", kind.as_str())), id)
            .await?;
        text.map(|t| Self::decode_entry(&t)).transpose()
    }

    async fn entries(&self, kind: Kind) -> Result<Vec<RegistryEntry>> {
        let mut conn = self.conn.clone();
        let all: HashMap<u32, String> = conn
            .hgetall(self.key(&format!("ent:{}", kind.as_str())))
            .await?;
        let mut out = all
            .values()
            .map(|t| Self::decode_entry(t))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    async fn remove(&self, kind: Kind, names: &[&str]) -> Result<usize> {
        if names.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        let mut inv = self.remove.prepare_invoke();
        inv.key(self.key(&format!("reg:{}", kind.as_str())))
            .key(self.key(&format!("ent:{}", kind.as_str())))
            .key(self.key(&format!("reg:{}", Kind::Metric.as_str())))
            .arg(&self.prefix)
            .arg(kind.as_str());
        for n in names {
            inv.arg(*n);
        }
        Ok(inv.invoke_async(&mut conn).await?)
    }

    fn retention(&self) -> Retention {
        self.retention
    }

    async fn ingest(&self, samples: &[Sample]) -> Result<()> {
        validate(samples, &self.retention, now_secs()).map_err(StoreError::Invalid)?;
        if samples.is_empty() {
            return Ok(());
        }
        let folded = fold_minutes(samples);
        let marks = dirty_hours(&folded);
        let seen = seen_spans(&folded);
        let mut inv = self.ingest.prepare_invoke();
        inv.arg(self.retention.minutes + MINUTE)
            .arg(now_secs())
            .arg(self.key("dirty"))
            .arg(folded.len());
        for ((key, minute), agg) in &folded {
            inv.arg(self.bucket_key(Resolution::Minute, key.metric, *minute))
                .arg(key.field())
                .arg(agg.samples)
                .arg(format!("{}", agg.sum))
                .arg(format!("{}", agg.min))
                .arg(format!("{}", agg.max))
                .arg(*minute);
        }
        inv.arg(marks.len());
        for (metric, hour) in &marks {
            inv.arg(format!("{metric}:{hour}"));
        }
        inv.arg(seen.len());
        for ((kind, metric, id), (first, last)) in &seen {
            inv.arg(self.key(&format!("first:{}:{metric}", kind.as_str())))
                .arg(self.key(&format!("last:{}:{metric}", kind.as_str())))
                .arg(*id)
                .arg(*first)
                .arg(*last);
        }
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await?;
        Ok(())
    }

    async fn rollup(&self) -> Result<usize> {
        let mut conn = self.conn.clone();
        let dirty_key = self.key("dirty");
        let marked: Vec<(String, String)> = ::redis::cmd("ZRANGE")
            .arg(&dirty_key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let mut rolled = 0;
        for (member, score) in marked {
            let Some((metric, hour)) = member
                .split_once(':')
                .and_then(|(m, h)| Some((m.parse::<u32>().ok()?, h.parse::<i64>().ok()?)))
            else {
                let _: () = conn.zrem(&dirty_key, &member).await?;
                continue;
            };
            let mut inv = self.rollup.prepare_invoke();
            inv.key(self.bucket_key(Resolution::Hour, metric, hour))
                .key(&dirty_key)
                .arg(&member)
                .arg(&score)
                .arg(hour + HOUR + self.retention.hours);
            for m in 0..60 {
                inv.arg(self.bucket_key(Resolution::Minute, metric, hour + m * MINUTE));
            }
            let _: i64 = inv.invoke_async(&mut conn).await?;
            rolled += 1;
        }
        Ok(rolled)
    }

    async fn buckets(
        &self,
        metric: u32,
        resolution: Resolution,
        from: i64,
        to: i64,
        filter: &SeriesFilter,
    ) -> Result<Vec<BucketRow>> {
        let step = resolution.seconds();
        let first = from.div_euclid(step) * step;
        let first = if first < from { first + step } else { first };
        let mut starts = Vec::new();
        let mut t = first;
        while t < to {
            starts.push(t);
            t += step;
        }
        let mut out = Vec::new();
        let mut conn = self.conn.clone();
        for chunk in starts.chunks(512) {
            let mut pipe = ::redis::pipe();
            for s in chunk {
                pipe.hgetall(self.bucket_key(resolution, metric, *s));
            }
            let maps: Vec<Vec<(String, String)>> = pipe.query_async(&mut conn).await?;
            for (start, map) in chunk.iter().zip(maps) {
                for (field, value) in map {
                    let key = SeriesKey::from_field(metric, &field).ok_or_else(|| {
                        StoreError::Corrupt {
                            key: format!("bucket {metric}:{start}"),
                            reason: format!("bad field {field:?}"),
                        }
                    })?;
                    if !filter.matches(&key) {
                        continue;
                    }
                    let agg = match resolution {
                        Resolution::Minute => Agg::decode_minute(&value),
                        Resolution::Hour => Agg::decode_hour(&value),
                    }
                    .ok_or_else(|| StoreError::Corrupt {
                        key: format!("bucket {metric}:{start} {field}"),
                        reason: format!("bad value {value:?}"),
                    })?;
                    out.push(BucketRow {
                        start: *start,
                        key,
                        agg,
                    });
                }
            }
        }
        out.sort_by_key(|r| (r.start, r.key));
        Ok(out)
    }

    async fn seen(
        &self,
        kind: Kind,
        metric: Option<u32>,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<u32>> {
        let m = metric.unwrap_or(0);
        let mut conn = self.conn.clone();
        let first_key = self.key(&format!("first:{}:{m}", kind.as_str()));
        let last_key = self.key(&format!("last:{}:{m}", kind.as_str()));
        let early: Vec<u32> = match to {
            Some(t) => conn.zrangebyscore(&first_key, "-inf", t).await?,
            None => conn.zrange(&first_key, 0, -1).await?,
        };
        let late: BTreeSet<u32> = match from {
            Some(f) => conn
                .zrangebyscore::<_, _, _, Vec<u32>>(&last_key, f, "+inf")
                .await?
                .into_iter()
                .collect(),
            None => conn
                .zrange::<_, Vec<u32>>(&last_key, 0, -1)
                .await?
                .into_iter()
                .collect(),
        };
        let mut out: Vec<u32> = early.into_iter().filter(|id| late.contains(id)).collect();
        out.sort_unstable();
        Ok(out)
    }

    async fn add_exception(&self, record: &ExceptionRecord) -> Result<u64> {
        let mut conn = self.conn.clone();
        let id: u64 = conn.incr(self.key("seq:exc"), 1).await?;
        let mut record = record.clone();
        record.id = id;
        let text =
            serde_json::to_string(&record).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let _: () = ::redis::pipe()
            .atomic()
            .hset(self.key("exc"), id, text)
            .ignore()
            .zadd(self.key("exc:created"), id, record.created_ms)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(id)
    }

    async fn exceptions_where(
        &self,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
        filter: &crate::ExceptionFilter,
    ) -> Result<Vec<ExceptionRecord>> {
        let mut conn = self.conn.clone();
        let max = to
            .map(|t| (t * 1000 + 999).to_string())
            .unwrap_or("+inf".into());
        let min = from
            .map(|f| (f * 1000).to_string())
            .unwrap_or("-inf".into());
        // Unfiltered: one page of `limit`. Filtered: pages until `limit` pass or none is left.
        let page = if filter.is_empty() {
            limit
        } else {
            limit.max(500)
        };
        let mut out: Vec<ExceptionRecord> = Vec::new();
        let mut offset = 0usize;
        while out.len() < limit {
            let ids: Vec<u64> = ::redis::cmd("ZRANGE")
                .arg(self.key("exc:created"))
                .arg(&max)
                .arg(&min)
                .arg("BYSCORE")
                .arg("REV")
                .arg("LIMIT")
                .arg(offset)
                .arg(page)
                .query_async(&mut conn)
                .await?;
            if ids.is_empty() {
                break;
            }
            offset += ids.len();
            let texts: Vec<Option<String>> = ::redis::cmd("HMGET")
                .arg(self.key("exc"))
                .arg(&ids)
                .query_async(&mut conn)
                .await?;
            for t in texts.into_iter().flatten() {
                let record: ExceptionRecord =
                    serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
                        key: "exception".into(),
                        reason: e.to_string(),
                    })?;
                if filter.matches(&record) {
                    out.push(record);
                }
            }
            if ids.len() < page {
                break;
            }
        }
        out.sort_by_key(|e: &ExceptionRecord| std::cmp::Reverse((e.created_ms, e.id)));
        out.truncate(limit);
        Ok(out)
    }

    async fn exception(&self, id: u64) -> Result<Option<ExceptionRecord>> {
        let mut conn = self.conn.clone();
        let text: Option<String> = conn.hget(self.key("exc"), id).await?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
                key: format!("exception {id}"),
                reason: e.to_string(),
            })
        })
        .transpose()
    }

    async fn delete_exceptions(&self, ids: &[u64]) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        // One MULTI: the records and their place in the time index go together.
        let (deleted, _): (usize, usize) = ::redis::pipe()
            .atomic()
            .hdel(self.key("exc"), ids)
            .zrem(self.key("exc:created"), ids)
            .query_async(&mut conn)
            .await?;
        Ok(deleted)
    }

    async fn prune(&self, now: i64) -> Result<()> {
        // Buckets expire by themselves (EXPIREAT at write); exceptions are trimmed here.
        let mut conn = self.conn.clone();
        let cut = (now - self.retention.exceptions) * 1000;
        let old: Vec<u64> = conn
            .zrangebyscore(self.key("exc:created"), "-inf", format!("({cut}"))
            .await?;
        if old.is_empty() {
            return Ok(());
        }
        let _: () = ::redis::pipe()
            .atomic()
            .hdel(self.key("exc"), &old)
            .ignore()
            .zrem(self.key("exc:created"), &old)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: String = ::redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    async fn rate_hit(&self, key: &str, window_secs: u64, now: i64) -> Result<crate::RateHit> {
        let (start, reset) = crate::rate_window(window_secs, now);
        let count = self
            .rate
            .hit(
                format!("{}rl:{key}:{start}", self.prefix),
                window_secs.max(1) + 1,
            )
            .await?;
        Ok(crate::RateHit { count, reset })
    }
}

impl RedisStore {
    async fn write_document(
        &self,
        collection: &str,
        id: &str,
        body: &str,
        expect: Expect,
        delete: bool,
    ) -> Result<Written> {
        let (mode, revision) = match expect {
            Expect::Any => ("any", 0),
            Expect::Absent => ("absent", 0),
            Expect::Revision(r) => ("rev", r),
        };
        let mut conn = self.conn.clone();
        let (done, revision): (i64, i64) = self
            .put_document
            .key(self.key(&format!("doc:{collection}")))
            .key(self.key(&format!("docrev:{collection}")))
            .key(self.key("seq:docrev"))
            .arg(id)
            .arg(body)
            .arg(mode)
            .arg(revision.to_string())
            .arg(if delete { "delete" } else { "put" })
            .invoke_async(&mut conn)
            .await?;
        let revision = u64::try_from(revision).ok();
        Ok(match (done, revision) {
            (1, Some(r)) => Written::Done(r),
            (_, current) => Written::Conflict(current),
        })
    }
}

fn decode_document(collection: &str, id: String, revision: u64, text: &str) -> Result<Document> {
    let body = serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        key: format!("doc:{collection} {id}"),
        reason: e.to_string(),
    })?;
    Ok(Document { id, revision, body })
}

#[async_trait]
impl Documents for RedisStore {
    async fn put_document(
        &self,
        collection: &str,
        id: &str,
        body: &serde_json::Value,
        expect: Expect,
    ) -> Result<Written> {
        let text = serde_json::to_string(body).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.write_document(collection, id, &text, expect, false)
            .await
    }

    async fn delete_document(&self, collection: &str, id: &str, expect: Expect) -> Result<Written> {
        self.write_document(collection, id, "", expect, true).await
    }

    async fn document(&self, collection: &str, id: &str) -> Result<Option<Document>> {
        let mut conn = self.conn.clone();
        let (text, revision): (Option<String>, Option<u64>) = ::redis::pipe()
            .atomic()
            .hget(self.key(&format!("doc:{collection}")), id)
            .hget(self.key(&format!("docrev:{collection}")), id)
            .query_async(&mut conn)
            .await?;
        match (text, revision) {
            (Some(text), Some(revision)) => Ok(Some(decode_document(
                collection,
                id.to_string(),
                revision,
                &text,
            )?)),
            _ => Ok(None),
        }
    }

    async fn documents(&self, collection: &str) -> Result<Vec<Document>> {
        let mut conn = self.conn.clone();
        let (bodies, revisions): (HashMap<String, String>, HashMap<String, u64>) = ::redis::pipe()
            .atomic()
            .hgetall(self.key(&format!("doc:{collection}")))
            .hgetall(self.key(&format!("docrev:{collection}")))
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::with_capacity(bodies.len());
        for (id, text) in bodies {
            let revision = revisions
                .get(&id)
                .copied()
                .ok_or_else(|| StoreError::Corrupt {
                    key: format!("docrev:{collection}"),
                    reason: format!("{id} has no revision"),
                })?;
            out.push(decode_document(collection, id, revision, &text)?);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn append(&self, log: &str, entry: &serde_json::Value) -> Result<u64> {
        let text = serde_json::to_string(entry).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut conn = self.conn.clone();
        let len: u64 = conn.rpush(self.key(&format!("log:{log}")), text).await?;
        Ok(len)
    }

    async fn append_all(&self, entries: &[(String, serde_json::Value)]) -> Result<Vec<u64>> {
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        for (log, entry) in entries {
            let text =
                serde_json::to_string(entry).map_err(|e| StoreError::Invalid(e.to_string()))?;
            pipe.rpush(self.key(&format!("log:{log}")), text);
        }
        let mut conn = self.conn.clone();
        Ok(pipe.query_async(&mut conn).await?)
    }

    async fn log(&self, log: &str, after: u64, limit: usize) -> Result<Vec<LogEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (Ok(start), Ok(count)) = (isize::try_from(after), isize::try_from(limit)) else {
            return Ok(Vec::new());
        };
        let mut conn = self.conn.clone();
        let texts: Vec<String> = conn
            .lrange(
                self.key(&format!("log:{log}")),
                start,
                start.saturating_add(count - 1),
            )
            .await?;
        texts
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                let body = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                    key: format!("log:{log}"),
                    reason: e.to_string(),
                })?;
                Ok(LogEntry {
                    seq: after + i as u64 + 1,
                    body,
                })
            })
            .collect()
    }

    async fn log_len(&self, log: &str) -> Result<u64> {
        let mut conn = self.conn.clone();
        Ok(conn.llen(self.key(&format!("log:{log}"))).await?)
    }
}
