//! The embedded backend: one redb database file, the default when no Redis URL is configured
//! (standalone mode), so a single host keeps its history across restarts.
//!
//! Tables: minute and hour buckets keyed `(metric, start, service, resource, label, event_type)`
//! so a query is one range scan; hours to roll up; registries in both directions; first/last
//! seen per metric; exceptions by id. Every call is one transaction, run on the blocking pool.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::documents::{Document, Documents, Expect, LogEntry, Written, holds};
use crate::model::{
    Agg, BucketRow, ExceptionRecord, HOUR, Kind, RegistryEntry, Resolution, Retention, Sample,
    SeriesFilter, SeriesKey, dirty_hours, fold_minutes, seen_spans, validate,
};
use crate::{Result, Store, StoreError};

type BucketKey = (u32, i64, u32, u32, u32, u32);
type MinuteValue = (u64, f64, f64, f64);
type HourValue = (u64, f64, f64, f64, f64, f64, u64);

const MINUTES: TableDefinition<BucketKey, MinuteValue> = TableDefinition::new("minutes");
const HOURS: TableDefinition<BucketKey, HourValue> = TableDefinition::new("hours");
/// `(metric, hour start)` of hours whose minutes changed since their last roll-up.
const DIRTY: TableDefinition<(u32, i64), ()> = TableDefinition::new("dirty_hours");
const NAMES: TableDefinition<(u8, &str), u32> = TableDefinition::new("registry_names");
const ENTRIES: TableDefinition<(u8, u32), &str> = TableDefinition::new("registry_entries");
const SEQUENCES: TableDefinition<u8, u64> = TableDefinition::new("sequences");
/// `(kind, metric or 0 for any, id)` → `(first seen, last seen)`.
const SEEN: TableDefinition<(u8, u32, u32), (i64, i64)> = TableDefinition::new("seen");
const EXCEPTIONS: TableDefinition<u64, &str> = TableDefinition::new("exceptions");

const EXCEPTION_SEQUENCE: u8 = 255;
/// The store-wide revision counter of documents.
const REVISION_SEQUENCE: u8 = 254;
/// `(collection, id)` → `(revision, JSON)`.
const DOCUMENTS: TableDefinition<(&str, &str), (u64, &str)> = TableDefinition::new("documents");
/// `(log, seq)` → JSON.
const LOGS: TableDefinition<(&str, u64), &str> = TableDefinition::new("logs");

fn key_of(k: &SeriesKey, start: i64) -> BucketKey {
    (
        k.metric,
        start,
        k.service,
        k.resource,
        k.label,
        k.event_type,
    )
}

fn series_of(k: &BucketKey) -> SeriesKey {
    SeriesKey {
        metric: k.0,
        service: k.2,
        resource: k.3,
        label: k.4,
        event_type: k.5,
    }
}

fn minute_agg(v: MinuteValue) -> Agg {
    Agg {
        samples: v.0,
        sum: v.1,
        min: v.2,
        max: v.3,
        minute_min: v.1,
        minute_max: v.1,
        metric_count: 1,
    }
}

fn hour_agg(v: HourValue) -> Agg {
    Agg {
        samples: v.0,
        sum: v.1,
        min: v.2,
        max: v.3,
        minute_min: v.4,
        minute_max: v.5,
        metric_count: v.6,
    }
}

/// Appends the rows of `table` in `range` that pass `filter`, decoding values with `agg`.
fn scan<V: redb::Value + 'static>(
    table: &redb::ReadOnlyTable<BucketKey, V>,
    range: std::ops::Range<BucketKey>,
    filter: &SeriesFilter,
    agg: impl Fn(V::SelfType<'_>) -> Agg,
    out: &mut Vec<BucketRow>,
) -> Result<()> {
    for row in table.range(range)? {
        let (k, v) = row?;
        let k = k.value();
        let key = series_of(&k);
        if filter.matches(&key) {
            out.push(BucketRow {
                start: k.1,
                key,
                agg: agg(v.value()),
            });
        }
    }
    Ok(())
}

/// The embedded store.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    retention: Retention,
    /// Rate-limit windows: key → (window start, count). In memory: see [`Store::rate_hit`].
    rates: Arc<std::sync::Mutex<std::collections::HashMap<String, (i64, u64)>>>,
}

/// Creates the database file readable by its owner only (0600, like the token beside it: it
/// holds the oplog and every document), or takes the group's and others' rights from an
/// existing one.
fn restrict_to_owner(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed =
        |e: std::io::Error| StoreError::Embedded(format!("cannot open {}: {e}", path.display()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)
                .map_err(failed)?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
                    .map_err(failed)?;
            }
            Ok(())
        }
        Err(e) => Err(failed(e)),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database file at `path`, creating its directory. The file is
    /// readable by its owner only (0600).
    pub fn open(path: &Path, retention: Retention) -> Result<EmbeddedStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Embedded(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        restrict_to_owner(path)?;
        let db = Database::create(path)
            .map_err(|e| StoreError::Embedded(format!("cannot open {}: {e}", path.display())))?;
        // Create every table once so readers never meet a missing one.
        let txn = db.begin_write()?;
        {
            txn.open_table(MINUTES)?;
            txn.open_table(HOURS)?;
            txn.open_table(DIRTY)?;
            txn.open_table(NAMES)?;
            txn.open_table(ENTRIES)?;
            txn.open_table(SEQUENCES)?;
            txn.open_table(SEEN)?;
            txn.open_table(EXCEPTIONS)?;
            txn.open_table(DOCUMENTS)?;
            txn.open_table(LOGS)?;
        }
        txn.commit()?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            retention,
            rates: Default::default(),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Embedded(format!("store task failed: {e}")))?
    }
}

fn next_sequence(seq: &mut redb::Table<u8, u64>, which: u8) -> Result<u64> {
    let next = seq.get(which)?.map(|v| v.value()).unwrap_or(0) + 1;
    seq.insert(which, next)?;
    Ok(next)
}

fn get_or_create(
    names: &mut redb::Table<(u8, &str), u32>,
    entries: &mut redb::Table<(u8, u32), &str>,
    seq: &mut redb::Table<u8, u64>,
    kind: Kind,
    name: &str,
) -> Result<(u32, bool)> {
    if let Some(id) = names.get((kind.code(), name))? {
        return Ok((id.value(), false));
    }
    let id = u32::try_from(next_sequence(seq, kind.code())?)
        .map_err(|_| StoreError::Invalid(format!("{} registry is full", kind.as_str())))?;
    names.insert((kind.code(), name), id)?;
    let entry = RegistryEntry {
        id,
        name: name.to_string(),
        attrs: serde_json::json!({}),
    };
    let text = serde_json::to_string(&entry).map_err(|e| StoreError::Invalid(e.to_string()))?;
    entries.insert((kind.code(), id), text.as_str())?;
    Ok((id, true))
}

fn decode_entry(text: &str) -> Result<RegistryEntry> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        key: "registry entry".into(),
        reason: e.to_string(),
    })
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn ids_with(
        &self,
        kind: Kind,
        names: &[&str],
        created: Option<&serde_json::Value>,
    ) -> Result<Vec<u32>> {
        if created.is_some_and(|a| !a.is_object()) {
            return Err(StoreError::Invalid(
                "attributes must be a JSON object".into(),
            ));
        }
        let created = created.cloned();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        self.blocking(move |db| {
            // Fast path: everything already registered.
            {
                let txn = db.begin_read()?;
                let table = txn.open_table(NAMES)?;
                let mut ids = Vec::with_capacity(names.len());
                for n in &names {
                    match table.get((kind.code(), n.as_str()))? {
                        Some(id) => ids.push(id.value()),
                        None => break,
                    }
                }
                if ids.len() == names.len() {
                    return Ok(ids);
                }
            }
            let txn = db.begin_write()?;
            let mut ids = Vec::with_capacity(names.len());
            {
                let mut t_names = txn.open_table(NAMES)?;
                let mut t_entries = txn.open_table(ENTRIES)?;
                let mut t_seq = txn.open_table(SEQUENCES)?;
                for n in &names {
                    let (id, made) =
                        get_or_create(&mut t_names, &mut t_entries, &mut t_seq, kind, n)?;
                    if made && let Some(attrs) = &created {
                        let entry = RegistryEntry {
                            id,
                            name: n.clone(),
                            attrs: attrs.clone(),
                        };
                        let text = serde_json::to_string(&entry)
                            .map_err(|e| StoreError::Invalid(e.to_string()))?;
                        t_entries.insert((kind.code(), id), text.as_str())?;
                    }
                    ids.push(id);
                }
            }
            txn.commit()?;
            Ok(ids)
        })
        .await
    }

    async fn upsert(&self, kind: Kind, name: &str, attrs: &serde_json::Value) -> Result<u32> {
        if !attrs.is_object() {
            return Err(StoreError::Invalid(
                "attributes must be a JSON object".into(),
            ));
        }
        let name = name.to_string();
        let attrs = attrs.clone();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let id;
            {
                let mut t_names = txn.open_table(NAMES)?;
                let mut t_entries = txn.open_table(ENTRIES)?;
                let mut t_seq = txn.open_table(SEQUENCES)?;
                id = get_or_create(&mut t_names, &mut t_entries, &mut t_seq, kind, &name)?.0;
                let text = t_entries
                    .get((kind.code(), id))?
                    .map(|v| v.value().to_string())
                    .unwrap_or_default();
                let mut entry = decode_entry(&text)?;
                merge_attrs(&mut entry.attrs, &attrs);
                let text = serde_json::to_string(&entry)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                t_entries.insert((kind.code(), id), text.as_str())?;
            }
            txn.commit()?;
            Ok(id)
        })
        .await
    }

    async fn entry(&self, kind: Kind, name: &str) -> Result<Option<RegistryEntry>> {
        let name = name.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let Some(id) = txn.open_table(NAMES)?.get((kind.code(), name.as_str()))? else {
                return Ok(None);
            };
            let id = id.value();
            match txn.open_table(ENTRIES)?.get((kind.code(), id))? {
                Some(text) => Ok(Some(decode_entry(text.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn entries(&self, kind: Kind) -> Result<Vec<RegistryEntry>> {
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            let mut out = Vec::new();
            for row in table.range((kind.code(), 0)..=(kind.code(), u32::MAX))? {
                let (_, v) = row?;
                out.push(decode_entry(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn remove(&self, kind: Kind, names: &[&str]) -> Result<usize> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let mut removed = 0;
            {
                let mut t_names = txn.open_table(NAMES)?;
                let mut t_entries = txn.open_table(ENTRIES)?;
                let mut t_seen = txn.open_table(SEEN)?;
                let mut ids = Vec::new();
                for n in &names {
                    let id = t_names
                        .remove((kind.code(), n.as_str()))?
                        .map(|v| v.value());
                    if let Some(id) = id {
                        t_entries.remove((kind.code(), id))?;
                        ids.push(id);
                        removed += 1;
                    }
                }
                if !ids.is_empty() {
                    let code = kind.code();
                    t_seen.retain_in((code, 0, 0)..=(code, u32::MAX, u32::MAX), |k, _| {
                        !ids.contains(&k.2)
                    })?;
                }
            }
            txn.commit()?;
            Ok(removed)
        })
        .await
    }

    fn retention(&self) -> Retention {
        self.retention
    }

    async fn ingest(&self, samples: &[Sample]) -> Result<()> {
        validate(samples, &self.retention, crate::now_secs()).map_err(StoreError::Invalid)?;
        if samples.is_empty() {
            return Ok(());
        }
        let folded = fold_minutes(samples);
        self.blocking(move |db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| StoreError::Embedded(e.to_string()))?;
            {
                let mut minutes = txn.open_table(MINUTES)?;
                let mut dirty = txn.open_table(DIRTY)?;
                let mut seen = txn.open_table(SEEN)?;
                for ((key, minute), agg) in &folded {
                    let k = key_of(key, *minute);
                    let mut merged = *agg;
                    if let Some(old) = minutes.get(k)? {
                        let mut stored = minute_agg(old.value());
                        stored.merge_same_minute(agg);
                        merged = stored;
                    }
                    minutes.insert(k, (merged.samples, merged.sum, merged.min, merged.max))?;
                }
                for hour in dirty_hours(&folded) {
                    dirty.insert(hour, ())?;
                }
                for ((kind, metric, id), (first, last)) in seen_spans(&folded) {
                    let k = (kind.code(), metric, id);
                    let value = match seen.get(k)? {
                        Some(old) => {
                            let (f, l) = old.value();
                            (f.min(first), l.max(last))
                        }
                        None => (first, last),
                    };
                    seen.insert(k, value)?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn rollup(&self) -> Result<usize> {
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let rolled;
            {
                let mut dirty = txn.open_table(DIRTY)?;
                let minutes = txn.open_table(MINUTES)?;
                let mut hours = txn.open_table(HOURS)?;
                let marked: Vec<(u32, i64)> = dirty
                    .iter()?
                    .map(|r| r.map(|(k, _)| k.value()))
                    .collect::<std::result::Result<_, _>>()?;
                rolled = marked.len();
                for (metric, hour) in marked {
                    let mut per_series: HashMap<SeriesKey, Agg> = HashMap::new();
                    for row in minutes
                        .range((metric, hour, 0, 0, 0, 0)..(metric, hour + HOUR, 0, 0, 0, 0))?
                    {
                        let (k, v) = row?;
                        let agg = minute_agg(v.value());
                        per_series
                            .entry(series_of(&k.value()))
                            .and_modify(|a| a.merge(&agg))
                            .or_insert(agg);
                    }
                    hours.retain_in(
                        (metric, hour, 0, 0, 0, 0)
                            ..=(metric, hour, u32::MAX, u32::MAX, u32::MAX, u32::MAX),
                        |_, _| false,
                    )?;
                    for (key, a) in per_series {
                        hours.insert(
                            key_of(&key, hour),
                            (
                                a.samples,
                                a.sum,
                                a.min,
                                a.max,
                                a.minute_min,
                                a.minute_max,
                                a.metric_count,
                            ),
                        )?;
                    }
                    dirty.remove((metric, hour))?;
                }
            }
            txn.commit()?;
            Ok(rolled)
        })
        .await
    }

    async fn buckets(
        &self,
        metric: u32,
        resolution: Resolution,
        from: i64,
        to: i64,
        filter: &SeriesFilter,
    ) -> Result<Vec<BucketRow>> {
        let filter = filter.clone();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let mut out = Vec::new();
            if from >= to {
                return Ok(out);
            }
            let range = (metric, from, 0, 0, 0, 0)..(metric, to, 0, 0, 0, 0);
            match resolution {
                Resolution::Minute => scan(
                    &txn.open_table(MINUTES)?,
                    range,
                    &filter,
                    minute_agg,
                    &mut out,
                )?,
                Resolution::Hour => {
                    scan(&txn.open_table(HOURS)?, range, &filter, hour_agg, &mut out)?
                }
            }
            Ok(out)
        })
        .await
    }

    async fn seen(
        &self,
        kind: Kind,
        metric: Option<u32>,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<u32>> {
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(SEEN)?;
            let m = metric.unwrap_or(0);
            let mut out = Vec::new();
            for row in table.range((kind.code(), m, 0)..=(kind.code(), m, u32::MAX))? {
                let (k, v) = row?;
                let (first, last) = v.value();
                if from.is_none_or(|f| last >= f) && to.is_none_or(|t| first <= t) {
                    out.push(k.value().2);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn add_exception(&self, record: &ExceptionRecord) -> Result<u64> {
        let mut record = record.clone();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let id;
            {
                let mut seq = txn.open_table(SEQUENCES)?;
                id = next_sequence(&mut seq, EXCEPTION_SEQUENCE)?;
                record.id = id;
                let text = serde_json::to_string(&record)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                txn.open_table(EXCEPTIONS)?.insert(id, text.as_str())?;
            }
            txn.commit()?;
            Ok(id)
        })
        .await
    }

    async fn exceptions_where(
        &self,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
        filter: &crate::ExceptionFilter,
    ) -> Result<Vec<ExceptionRecord>> {
        let filter = filter.clone();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(EXCEPTIONS)?;
            let mut out = Vec::new();
            for row in table.iter()?.rev() {
                if out.len() >= limit {
                    break;
                }
                let (_, v) = row?;
                let record: ExceptionRecord =
                    serde_json::from_str(v.value()).map_err(|e| StoreError::Corrupt {
                        key: "exception".into(),
                        reason: e.to_string(),
                    })?;
                let secs = record.created_ms.div_euclid(1000);
                if from.is_none_or(|f| secs >= f)
                    && to.is_none_or(|t| secs <= t)
                    && filter.matches(&record)
                {
                    out.push(record);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn exception(&self, id: u64) -> Result<Option<ExceptionRecord>> {
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(EXCEPTIONS)?;
            match table.get(id)? {
                None => Ok(None),
                Some(v) => {
                    serde_json::from_str(v.value())
                        .map(Some)
                        .map_err(|e| StoreError::Corrupt {
                            key: format!("exception {id}"),
                            reason: e.to_string(),
                        })
                }
            }
        })
        .await
    }

    async fn delete_exceptions(&self, ids: &[u64]) -> Result<usize> {
        let ids = ids.to_vec();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let mut deleted = 0;
            {
                let mut table = txn.open_table(EXCEPTIONS)?;
                for id in ids {
                    if table.remove(id)?.is_some() {
                        deleted += 1;
                    }
                }
            }
            txn.commit()?;
            Ok(deleted)
        })
        .await
    }

    async fn prune(&self, now: i64) -> Result<()> {
        let retention = self.retention;
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            {
                let minute_cut = now - retention.minutes;
                let hour_cut = now - retention.hours;
                let mut minutes = txn.open_table(MINUTES)?;
                minutes.retain(|k, _| k.1 >= minute_cut)?;
                let mut hours = txn.open_table(HOURS)?;
                hours.retain(|k, _| k.1 + HOUR > hour_cut)?;
                let exception_cut_ms = (now - retention.exceptions) * 1000;
                let mut exceptions = txn.open_table(EXCEPTIONS)?;
                exceptions.retain(|_, v| {
                    serde_json::from_str::<ExceptionRecord>(v)
                        .map(|r| r.created_ms >= exception_cut_ms)
                        .unwrap_or(false)
                })?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.blocking(|db| {
            db.begin_read()?;
            Ok(())
        })
        .await
    }

    async fn rate_hit(&self, key: &str, window_secs: u64, now: i64) -> Result<crate::RateHit> {
        let (start, reset) = crate::rate_window(window_secs, now);
        let mut rates = self
            .rates
            .lock()
            .map_err(|_| StoreError::Embedded("rate-limit counters poisoned".into()))?;
        // Windows that ended are dropped once the map grows, so it stays as big as the number
        // of clients active in one window.
        if rates.len() > 100_000 {
            rates.retain(|_, (s, _)| *s >= start);
        }
        let slot = rates.entry(key.to_owned()).or_insert((start, 0));
        if slot.0 != start {
            *slot = (start, 0);
        }
        slot.1 += 1;
        Ok(crate::RateHit {
            count: slot.1,
            reset,
        })
    }
}

/// Merges the keys of `update` (a JSON object) into `target`.
pub(crate) fn merge_attrs(target: &mut serde_json::Value, update: &serde_json::Value) {
    if !target.is_object() {
        *target = serde_json::json!({});
    }
    if let (Some(t), Some(u)) = (target.as_object_mut(), update.as_object()) {
        for (k, v) in u {
            t.insert(k.clone(), v.clone());
        }
    }
}

fn decode_json(what: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        key: what.to_string(),
        reason: e.to_string(),
    })
}

fn encode_json(value: &serde_json::Value) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(e.to_string()))
}

#[async_trait]
impl Documents for EmbeddedStore {
    async fn put_document(
        &self,
        collection: &str,
        id: &str,
        body: &serde_json::Value,
        expect: Expect,
    ) -> Result<Written> {
        let (collection, id, text) = (collection.to_string(), id.to_string(), encode_json(body)?);
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let written;
            {
                let mut docs = txn.open_table(DOCUMENTS)?;
                let current = docs
                    .get((collection.as_str(), id.as_str()))?
                    .map(|v| v.value().0);
                if !holds(expect, current) {
                    return Ok(Written::Conflict(current));
                }
                let mut seq = txn.open_table(SEQUENCES)?;
                let revision = next_sequence(&mut seq, REVISION_SEQUENCE)?;
                docs.insert(
                    (collection.as_str(), id.as_str()),
                    (revision, text.as_str()),
                )?;
                written = Written::Done(revision);
            }
            txn.commit()?;
            Ok(written)
        })
        .await
    }

    async fn delete_document(&self, collection: &str, id: &str, expect: Expect) -> Result<Written> {
        let (collection, id) = (collection.to_string(), id.to_string());
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let written;
            {
                let mut docs = txn.open_table(DOCUMENTS)?;
                let current = docs
                    .get((collection.as_str(), id.as_str()))?
                    .map(|v| v.value().0);
                match current {
                    Some(revision) if holds(expect, current) => {
                        docs.remove((collection.as_str(), id.as_str()))?;
                        written = Written::Done(revision);
                    }
                    _ => return Ok(Written::Conflict(current)),
                }
            }
            txn.commit()?;
            Ok(written)
        })
        .await
    }

    async fn document(&self, collection: &str, id: &str) -> Result<Option<Document>> {
        let (collection, id) = (collection.to_string(), id.to_string());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let docs = txn.open_table(DOCUMENTS)?;
            let Some(row) = docs.get((collection.as_str(), id.as_str()))? else {
                return Ok(None);
            };
            let (revision, text) = row.value();
            Ok(Some(Document {
                body: decode_json(&format!("{collection}/{id}"), text)?,
                id,
                revision,
            }))
        })
        .await
    }

    async fn documents(&self, collection: &str) -> Result<Vec<Document>> {
        let collection = collection.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let docs = txn.open_table(DOCUMENTS)?;
            let mut out = Vec::new();
            // Ids sort after "" and before the collection name followed by the next char.
            for row in docs.range((collection.as_str(), "")..)? {
                let (k, v) = row?;
                let (c, id) = k.value();
                if c != collection {
                    break;
                }
                let (revision, text) = v.value();
                out.push(Document {
                    id: id.to_string(),
                    revision,
                    body: decode_json(&format!("{c}/{id}"), text)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn append(&self, log: &str, entry: &serde_json::Value) -> Result<u64> {
        let (log, text) = (log.to_string(), encode_json(entry)?);
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let seq;
            {
                let mut logs = txn.open_table(LOGS)?;
                let last = logs
                    .range((log.as_str(), 0)..=(log.as_str(), u64::MAX))?
                    .next_back()
                    .transpose()?
                    .map(|(k, _)| k.value().1)
                    .unwrap_or(0);
                seq = last + 1;
                logs.insert((log.as_str(), seq), text.as_str())?;
            }
            txn.commit()?;
            Ok(seq)
        })
        .await
    }

    async fn append_all(&self, entries: &[(String, serde_json::Value)]) -> Result<Vec<u64>> {
        let entries: Vec<(String, String)> = entries
            .iter()
            .map(|(log, e)| Ok((log.clone(), encode_json(e)?)))
            .collect::<Result<_>>()?;
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let mut seqs = Vec::with_capacity(entries.len());
            {
                let mut logs = txn.open_table(LOGS)?;
                for (log, text) in &entries {
                    let last = logs
                        .range((log.as_str(), 0)..=(log.as_str(), u64::MAX))?
                        .next_back()
                        .transpose()?
                        .map(|(k, _)| k.value().1)
                        .unwrap_or(0);
                    logs.insert((log.as_str(), last + 1), text.as_str())?;
                    seqs.push(last + 1);
                }
            }
            txn.commit()?;
            Ok(seqs)
        })
        .await
    }

    async fn log(&self, log: &str, after: u64, limit: usize) -> Result<Vec<LogEntry>> {
        let log = log.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let logs = txn.open_table(LOGS)?;
            let mut out = Vec::new();
            if after == u64::MAX {
                return Ok(out);
            }
            for row in logs.range((log.as_str(), after + 1)..=(log.as_str(), u64::MAX))? {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = row?;
                out.push(LogEntry {
                    seq: k.value().1,
                    body: decode_json(&log, v.value())?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn log_len(&self, log: &str) -> Result<u64> {
        let log = log.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let logs = txn.open_table(LOGS)?;
            let last = logs
                .range((log.as_str(), 0)..=(log.as_str(), u64::MAX))?
                .next_back()
                .transpose()?
                .map(|(k, _)| k.value().1)
                .unwrap_or(0);
            Ok(last)
        })
        .await
    }
}
