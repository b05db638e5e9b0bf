//! The metric frames of `GET <ops_api>/servers/...` (seed 000; UtilMeta's `ServersAPI`
//! `metrics`, `instance/metrics`, `workers`, `worker/metrics`, `database/metrics`,
//! `cache/metrics`, reference/utilmeta-ops.md §4), read from what opsplane stores:
//!
//! - a server is a node; its rows are the minute buckets (or hour roll-ups) of the series its
//!   node-daemon's reports became (service `host:<node>`: `cpu.usage`, `mem.*`, `storage.*`);
//! - an instance is an address a MonitoredService checks; its rows are the check series
//!   (`check.up`: requests and errors, `response.time`: avg_time) of that address;
//! - workers: opsplane sees no processes of a checked instance (an empty list); its own
//!   instance, `operator`, has one worker, this process, measured from `/proc/self` when asked;
//! - the database or cache is the metric store, measured (a ping) when asked.
//!
//! A column opsplane has no source for is `null` (docs/ops.md lists them). The frames
//! themselves are [`super::frames`].

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Response;
use opsplane_store::model::resource_key;
use opsplane_store::{Kind, SeriesFilter};
use serde_json::{Value, json};

use super::frames::{self, Column, FrameQuery, Rows, Source, col, required};
use super::servers::StoreInfo;
use super::{OpsError, answer, schemas};
use crate::api::AppState;

/// The id of the operator's own instance (the service answering this ops API).
pub const OPERATOR_INSTANCE: &str = "operator";

use Source::{Count, CountRate, Difference, Mean, Null, Percent, Share, Start, Time, Zeros};

/// `/servers/metrics`: UtilMeta's `ServerMonitor` columns from the node's reports.
pub const SERVER_COLUMNS: [Column; 15] = [
    col("used_memory", Difference("mem.total", "mem.available")),
    col("cpu_percent", Mean("cpu.usage")),
    col("memory_percent", Mean("mem.usage")),
    col("disk_percent", Percent("storage.used", "storage.total")),
    col("file_descriptors", Null),
    col("active_net_connections", Null),
    col("total_net_connections", Null),
    col("net_connections_info", Null),
    col("open_files", Null),
    col("id", Start),
    col("time", Time),
    col("load_avg_1", Null),
    col("load_avg_5", Null),
    col("load_avg_15", Null),
    col("metrics", Null),
];

/// The store metrics [`SERVER_COLUMNS`] read.
const SERVER_METRICS: [&str; 6] = [
    "cpu.usage",
    "mem.usage",
    "mem.total",
    "mem.available",
    "storage.used",
    "storage.total",
];

/// The system columns of an instance or worker UtilMeta measures with psutil; opsplane
/// measures no process of a checked instance.
const SYSTEM_NULLS: [Column; 8] = [
    col("cpu_percent", Null),
    col("memory_percent", Null),
    col("used_memory", Null),
    col("file_descriptors", Null),
    col("open_files", Null),
    col("active_net_connections", Null),
    col("total_net_connections", Null),
    col("net_connections_info", Null),
];

/// `/servers/instance/metrics`: UtilMeta's `InstanceMonitor` columns from the instance's
/// checks (a check is a request opsplane made to it).
pub const INSTANCE_COLUMNS: [Column; 23] = [
    col("in_traffic", Null),
    col("out_traffic", Null),
    col("outbound_requests", Null),
    col("outbound_rps", Null),
    col("outbound_timeouts", Null),
    col("outbound_errors", Null),
    col("outbound_avg_time", Null),
    col("queries_num", Null),
    col("query_avg_time", Null),
    col("qps", Null),
    col("requests", Count("check.up")),
    col("rps", CountRate("check.up")),
    col("errors", Zeros("check.up")),
    col("avg_time", Mean("response.time")),
    col("threads", Null),
    col("current_workers", Null),
    col("avg_worker_lifetime", Null),
    col("new_spawned_workers", Null),
    col("avg_workers", Null),
    col("id", Start),
    col("time", Time),
    // Opsplane's own: the share of passing checks, percent.
    col("availability", Share("check.up")),
    col("metrics", Null),
];

/// `/servers/worker/metrics`: this process measured now.
pub const WORKER_COLUMNS: [Column; 24] = [
    col("cpu_percent", Mean("cpu_percent")),
    col("memory_percent", Mean("memory_percent")),
    col("used_memory", Mean("rss")),
    col("file_descriptors", Mean("fds")),
    col("open_files", Null),
    col("active_net_connections", Null),
    col("total_net_connections", Null),
    col("net_connections_info", Null),
    col("in_traffic", Null),
    col("out_traffic", Null),
    col("outbound_requests", Null),
    col("outbound_rps", Null),
    col("outbound_timeouts", Null),
    col("outbound_errors", Null),
    col("outbound_avg_time", Null),
    col("requests", Null),
    col("rps", Null),
    col("errors", Null),
    col("avg_time", Null),
    col("memory_info", Null),
    col("threads", Mean("threads")),
    col("metrics", Null),
    col("id", Start),
    col("time", Time),
];

/// `/servers/database/metrics`: the embedded store, pinged now.
pub const DATABASE_COLUMNS: [Column; 13] = [
    col("id", Start),
    col("time", Source::IsoTime),
    col("used_space", Null),
    col("server_used_space", Null),
    col("active_connections", Null),
    col("current_connections", Null),
    col("server_connections", Null),
    col("new_transactions", Null),
    col("metrics", Null),
    col("queries_num", Null),
    col("qps", Null),
    col("query_avg_time", Mean("ping")),
    col("operations", Null),
];

/// `/servers/cache/metrics`: Redis, pinged now.
pub const CACHE_COLUMNS: [Column; 11] = [
    col("id", Start),
    col("time", Source::IsoTime),
    col("cpu_percent", Null),
    col("memory_percent", Null),
    col("used_memory", Null),
    col("file_descriptors", Null),
    col("open_files", Null),
    col("current_connections", Null),
    col("total_connections", Null),
    col("qps", Null),
    // Opsplane's own: the ping's round trip, ms.
    col("ping_time", Mean("ping")),
];

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The rows of `metrics` of the series `filter` selects (every matching series of a metric
/// folded into its row).
async fn stored_rows(
    state: &AppState,
    metrics: &[&'static str],
    filter: &SeriesFilter,
    q: &FrameQuery,
) -> Result<Rows, OpsError> {
    let mut rows = Rows::new();
    let store = state.recorder.store();
    for metric in metrics {
        let Some(id) = state.recorder.existing_id(Kind::Metric, metric).await? else {
            continue;
        };
        for row in store
            .buckets(id, q.resolution, q.from, q.to, filter)
            .await?
        {
            frames::add(&mut rows, row.start, metric, &row.agg);
        }
    }
    Ok(rows)
}

/// `GET <ops_api>/servers/metrics?server_id=<node>` (alias `server`): the node's reported
/// measurements as UtilMeta's server frame.
#[utoipa::path(get, path = "/ops/servers/metrics", tag = "ops", params(schemas::ServerMetricsQuery, schemas::FrameParams),
    responses((status = 200, description = "the server's frame: `{column: [values, oldest first]}`", body = schemas::FrameAnswer),
              (status = "default", description = "an error, in the ops envelope: 400 bad or missing parameter, 404 server not found", body = schemas::OpsEnvelope)))]
pub async fn server(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    let remote = super::servers::remote_ids(&state).await?;
    let given = required(&query, &["server_id", "server"])?;
    let server = super::servers::local_ident(&remote, "server", given).to_owned();
    let q = FrameQuery::parse(&query, now(), state.recorder.store().retention())?;
    let known = crate::api::resources::views::node_items(&state)
        .await?
        .iter()
        .any(|n| n["_id"].as_str() == Some(server.as_str()))
        || state
            .recorder
            .existing_id(Kind::Host, &server)
            .await?
            .is_some();
    if !known {
        return Err(OpsError::NotFound("server not found".into()));
    }
    let service = state
        .recorder
        .existing_id(Kind::Service, &crate::recorder::host_service(&server))
        .await?;
    let rows = match service {
        Some(id) => {
            let filter = SeriesFilter {
                services: Some(vec![id]),
                ..Default::default()
            };
            stored_rows(&state, &SERVER_METRICS, &filter, &q).await?
        }
        None => Rows::new(),
    };
    Ok(answer(frames::frame(&SERVER_COLUMNS, rows, &q), 0))
}

/// The checked instance `id` (`<namespace>/<name>/<address>`, the Instance view's id, or the
/// platform's `remote_id` of its address): `(MonitoredService key, address)`.
async fn checked_instance(
    state: &AppState,
    id: &str,
) -> Result<Option<(String, String)>, OpsError> {
    let remote = super::servers::remote_ids(state).await?;
    let address = super::servers::local_ident(&remote, "instance", id);
    let by_remote = address != id;
    Ok(super::views::gather(state)
        .await?
        .instances
        .iter()
        .find(|i| {
            i["id"].as_str() == Some(id) || (by_remote && i["address"].as_str() == Some(address))
        })
        .map(|i| {
            (
                i["monitored_service"].as_str().unwrap_or("").to_owned(),
                i["address"].as_str().unwrap_or("").to_owned(),
            )
        }))
}

/// `GET <ops_api>/servers/instance/metrics?instance_id=<id>`: the instance's checks as
/// UtilMeta's instance frame.
#[utoipa::path(get, path = "/ops/servers/instance/metrics", tag = "ops", params(schemas::InstanceIdQuery, schemas::FrameParams),
    responses((status = 200, description = "the instance's frame: `{column: [values, oldest first]}`", body = schemas::FrameAnswer),
              (status = "default", description = "an error, in the ops envelope: 400 bad or missing parameter, 404 instance not found", body = schemas::OpsEnvelope)))]
pub async fn instance(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    let id = required(&query, &["instance_id"])?.to_owned();
    let q = FrameQuery::parse(&query, now(), state.recorder.store().retention())?;
    if id == OPERATOR_INSTANCE {
        return Ok(answer(operator_instance_frame(&q), 0));
    }
    let mut columns: Vec<Column> = SYSTEM_NULLS.to_vec();
    columns.extend(INSTANCE_COLUMNS);
    let (service, address) = checked_instance(&state, &id)
        .await?
        .ok_or_else(|| OpsError::NotFound("instance not found".into()))?;
    let ids = (
        state.recorder.existing_id(Kind::Service, &service).await?,
        state
            .recorder
            .existing_id(Kind::Resource, &resource_key("instance", &address))
            .await?,
    );
    let rows = match ids {
        (Some(service), Some(resource)) => {
            let filter = SeriesFilter {
                services: Some(vec![service]),
                resources: Some(vec![resource]),
                ..Default::default()
            };
            stored_rows(&state, &["check.up", "response.time"], &filter, &q).await?
        }
        _ => Rows::new(),
    };
    Ok(answer(frames::frame(&columns, rows, &q), 0))
}

/// The operator's own instance: its one worker, this process, measured now (UtilMeta sums an
/// instance's workers); opsplane keeps no request series of its own process, so the service
/// columns stay `null`.
fn operator_instance_frame(q: &FrameQuery) -> Value {
    let columns: Vec<Column> = SYSTEM_NULLS
        .iter()
        .chain(INSTANCE_COLUMNS.iter())
        .map(|c| match c.name {
            "cpu_percent" => col(c.name, Mean("cpu_percent")),
            "memory_percent" => col(c.name, Mean("memory_percent")),
            "used_memory" => col(c.name, Mean("rss")),
            "file_descriptors" => col(c.name, Mean("fds")),
            "threads" => col(c.name, Mean("threads")),
            "current_workers" => col(c.name, Mean("workers")),
            "requests" | "rps" | "errors" | "avg_time" | "availability" => col(c.name, Null),
            _ => *c,
        })
        .collect();
    let now = now();
    if q.limit == 0 || q.from > now || q.to <= now {
        return frames::frame(&columns, Rows::new(), q);
    }
    let mut measured = ProcessSample::of_self(now).measured();
    measured.push(("workers", 1.0));
    frames::frame_of_now(&columns, now, &measured)
}

/// What `/proc` says of this process now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessSample {
    /// The pid.
    pub pid: u32,
    /// Resident memory, bytes.
    pub rss: Option<u64>,
    /// Virtual memory, bytes.
    pub vms: Option<u64>,
    /// Threads.
    pub threads: Option<u64>,
    /// Open file descriptors.
    pub fds: Option<u64>,
    /// Started, epoch seconds.
    pub start_time: Option<i64>,
    /// CPU time over wall time since the start, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Resident memory over the host's memory, percent.
    pub memory_percent: Option<f64>,
}

/// `/proc` counts CPU time in USER_HZ ticks, 100 per second on every architecture Linux
/// runs opsplane on (the kernel's ABI, whatever its own HZ).
const USER_HZ: f64 = 100.0;

fn kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|k| k * 1024)
}

impl ProcessSample {
    /// Reads `/proc/self/status` (`status`), `/proc/self/stat` (`stat`), `/proc/stat`
    /// (`system`), `/proc/meminfo` (`meminfo`) and the number of `/proc/self/fd` entries.
    pub fn parse(
        pid: u32,
        status: &str,
        stat: &str,
        system: &str,
        meminfo: &str,
        fds: Option<u64>,
        now: i64,
    ) -> ProcessSample {
        let threads = status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok());
        let rss = kib(status, "VmRSS:");
        // Fields after the command's closing parenthesis, from field 3 (`state`).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let btime = system
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<i64>().ok());
        let start_time = btime
            .zip(field(22))
            .map(|(boot, ticks)| boot + (ticks / USER_HZ) as i64);
        let cpu_percent = field(14)
            .zip(field(15))
            .zip(start_time)
            .filter(|(_, start)| now > *start)
            .map(|((user, system), start)| {
                100.0 * (user + system) / USER_HZ / (now - start) as f64
            });
        let memory_percent = rss
            .zip(kib(meminfo, "MemTotal:"))
            .filter(|(_, total)| *total > 0)
            .map(|(rss, total)| 100.0 * rss as f64 / total as f64);
        ProcessSample {
            pid,
            rss,
            vms: kib(status, "VmSize:"),
            threads,
            fds,
            start_time,
            cpu_percent,
            memory_percent,
        }
    }

    /// This process, now.
    pub fn of_self(now: i64) -> ProcessSample {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        ProcessSample::parse(
            std::process::id(),
            &read("/proc/self/status"),
            &read("/proc/self/stat"),
            &read("/proc/stat"),
            &read("/proc/meminfo"),
            fds,
            now,
        )
    }

    /// The measurements as frame inputs.
    fn measured(&self) -> Vec<(&'static str, f64)> {
        [
            ("cpu_percent", self.cpu_percent),
            ("memory_percent", self.memory_percent),
            ("rss", self.rss.map(|v| v as f64)),
            ("fds", self.fds.map(|v| v as f64)),
            ("threads", self.threads.map(|v| v as f64)),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
    }

    fn memory_info(&self) -> Value {
        json!({"rss": self.rss, "vms": self.vms})
    }
}

/// The operator process as UtilMeta's worker of the instance `operator` on the host it runs on.
fn worker_of(state: &AppState, p: &ProcessSample, now: i64) -> Value {
    json!({
        "id": p.pid,
        "server_id": &*state.hostname,
        "server_remote_id": null,
        "instance_id": OPERATOR_INSTANCE,
        "instance_remote_id": null,
        "pid": p.pid,
        "master_id": null,
        "master_pid": null,
        "memory_info": p.memory_info(),
        "threads": p.threads,
        "start_time": p.start_time,
        "connected": true,
        "time": now,
        "status": "running",
        "cpu_percent": p.cpu_percent,
        "memory_percent": p.memory_percent,
        "used_memory": p.rss,
        "file_descriptors": p.fds,
        "open_files": null,
        "active_net_connections": null,
        "total_net_connections": null,
        "net_connections_info": null,
        "requests": null, "rps": null, "errors": null, "avg_time": null,
        "in_traffic": null, "out_traffic": null,
    })
}

/// `GET <ops_api>/servers/workers?instance_id=<id>`: the processes opsplane knows of the
/// instance: none of a checked one, this process of `operator`.
#[utoipa::path(get, path = "/ops/servers/workers", tag = "ops", params(schemas::WorkersQuery),
    responses((status = 200, description = "the workers", body = schemas::ViewAnswer),
              (status = "default", description = "an error, in the ops envelope: 400 missing instance_id, 404 instance not found", body = schemas::OpsEnvelope)))]
pub async fn workers(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    let id = required(&query, &["instance_id"])?.to_owned();
    let connected = match query.get("connected").map(String::as_str) {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(_) => return Err(frames::bad("connected", "true or false")),
    };
    let pid: Option<u32> = query
        .get("pid")
        .map(|p| p.parse().map_err(|_| frames::bad("pid", "not an integer")))
        .transpose()?;
    if id != OPERATOR_INSTANCE {
        checked_instance(&state, &id)
            .await?
            .ok_or_else(|| OpsError::NotFound("instance not found".into()))?;
        return Ok(answer(Vec::<Value>::new(), 0));
    }
    let now = now();
    let p = ProcessSample::of_self(now);
    let keep = connected
        && pid.is_none_or(|want| want == p.pid)
        && query.get("status").is_none_or(|s| s == "running");
    let found: Vec<Value> = if keep {
        vec![worker_of(&state, &p, now)]
    } else {
        Vec::new()
    };
    let count = found.len() as u64;
    Ok(answer(found, count))
}

/// `GET <ops_api>/servers/worker/metrics?worker_id=<id>`: one row, the worker measured now
/// (opsplane keeps no series of its own process).
#[utoipa::path(get, path = "/ops/servers/worker/metrics", tag = "ops", params(schemas::WorkerIdQuery, schemas::FrameParams),
    responses((status = 200, description = "the worker's frame, one row measured now", body = schemas::FrameAnswer),
              (status = "default", description = "an error, in the ops envelope: 400 bad or missing parameter, 404 worker not found", body = schemas::OpsEnvelope)))]
pub async fn worker(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    let id = required(&query, &["worker_id"])?;
    let id: u32 = id
        .parse()
        .map_err(|_| frames::bad("worker_id", "not an integer"))?;
    let now = now();
    let q = FrameQuery::parse(&query, now, state.recorder.store().retention())?;
    if id != std::process::id() {
        return Err(OpsError::NotFound("worker not found".into()));
    }
    let p = ProcessSample::of_self(now);
    let mut frame = if q.limit == 0 || q.from > now || q.to <= now {
        frames::frame(&WORKER_COLUMNS, Rows::new(), &q)
    } else {
        frames::frame_of_now(&WORKER_COLUMNS, now, &p.measured())
    };
    if let Some(list) = frame.get_mut("memory_info").and_then(Value::as_array_mut)
        && let Some(first) = list.first_mut()
    {
        *first = p.memory_info();
    }
    Ok(answer(frame, 0))
}

/// The store's frame: one row with a ping's round trip, ms, when `wanted` names it.
async fn store_frame(
    state: &AppState,
    query: &HashMap<String, String>,
    param: &str,
    embedded: bool,
    columns: &[Column],
    missing: &str,
) -> Result<Response, OpsError> {
    let id = required(query, &[param])?.to_owned();
    let now = now();
    let q = FrameQuery::parse(query, now, state.recorder.store().retention())?;
    let is_it = (state.ops.platform.store == StoreInfo::Embedded) == embedded;
    if !is_it || id != "store" {
        return Err(OpsError::NotFound(missing.into()));
    }
    if q.limit == 0 || q.from > now || q.to <= now {
        return Ok(answer(frames::frame(columns, Rows::new(), &q), 0));
    }
    let started = std::time::Instant::now();
    let measured: Vec<(&'static str, f64)> = match state.recorder.store().ping().await {
        Ok(()) => vec![("ping", started.elapsed().as_secs_f64() * 1000.0)],
        Err(_) => Vec::new(),
    };
    Ok(answer(frames::frame_of_now(columns, now, &measured), 0))
}

/// `GET <ops_api>/servers/database/metrics?database_id=store`: the embedded metric store.
#[utoipa::path(get, path = "/ops/servers/database/metrics", tag = "ops", params(schemas::DatabaseIdQuery, schemas::FrameParams),
    responses((status = 200, description = "the database's frame, one row measured now", body = schemas::FrameAnswer),
              (status = "default", description = "an error, in the ops envelope: 400 bad or missing parameter, 404 database not found", body = schemas::OpsEnvelope)))]
pub async fn database(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    store_frame(
        &state,
        &query,
        "database_id",
        true,
        &DATABASE_COLUMNS,
        "database not found",
    )
    .await
}

/// `GET <ops_api>/servers/cache/metrics?cache_id=store`: Redis, when it is the metric store.
#[utoipa::path(get, path = "/ops/servers/cache/metrics", tag = "ops", params(schemas::CacheIdQuery, schemas::FrameParams),
    responses((status = 200, description = "the cache's frame, one row measured now", body = schemas::FrameAnswer),
              (status = "default", description = "an error, in the ops envelope: 400 bad or missing parameter, 404 cache not found", body = schemas::OpsEnvelope)))]
pub async fn cache(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    store_frame(
        &state,
        &query,
        "cache_id",
        false,
        &CACHE_COLUMNS,
        "cache not found",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_read_from_proc_status_stat_and_meminfo() {
        let status = "Name:\topsplane\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\nThreads:\t7\n";
        // comm with a space and a parenthesis; utime 300, stime 100, starttime 5000 ticks.
        let stat = "42 (ops (x) y) S 1 42 42 0 -1 4194560 1 0 0 0 300 100 0 0 20 0 7 0 5000 1 1";
        let system = "cpu  1 2 3\nbtime 1000\n";
        let meminfo = "MemTotal:        1024000 kB\n";
        let p = ProcessSample::parse(42, status, stat, system, meminfo, Some(9), 1100);
        assert_eq!(p.rss, Some(10240 * 1024));
        assert_eq!(p.vms, Some(204800 * 1024));
        assert_eq!(p.threads, Some(7));
        assert_eq!(p.fds, Some(9));
        assert_eq!(p.start_time, Some(1050), "boot + 5000 ticks / 100");
        // 4 s of CPU over the 50 s since the start.
        assert_eq!(p.cpu_percent, Some(8.0));
        assert_eq!(p.memory_percent, Some(1.0));
        // Nothing readable: every measurement absent, never made up.
        let none = ProcessSample::parse(1, "", "", "", "", None, 5);
        assert_eq!(
            none,
            ProcessSample {
                pid: 1,
                ..Default::default()
            }
        );
        assert!(none.measured().is_empty());
    }

    #[test]
    fn this_process_measures_itself() {
        let p = ProcessSample::of_self(jiff::Timestamp::now().as_second());
        assert_eq!(p.pid, std::process::id());
        assert!(p.rss.is_some_and(|r| r > 0), "{p:?}");
        assert!(p.threads.is_some_and(|t| t >= 1), "{p:?}");
        assert!(p.start_time.is_some(), "{p:?}");
    }

    #[test]
    fn every_frame_names_its_columns_once() {
        for columns in [
            &SERVER_COLUMNS[..],
            &INSTANCE_COLUMNS[..],
            &WORKER_COLUMNS[..],
            &DATABASE_COLUMNS[..],
            &CACHE_COLUMNS[..],
        ] {
            let mut names: Vec<&str> = columns.iter().map(|c| c.name).collect();
            names.sort_unstable();
            let n = names.len();
            names.dedup();
            assert_eq!(names.len(), n, "{names:?}");
        }
        let mut instance: Vec<&str> = SYSTEM_NULLS.iter().map(|c| c.name).collect();
        instance.extend(INSTANCE_COLUMNS.iter().map(|c| c.name));
        let n = instance.len();
        instance.sort_unstable();
        instance.dedup();
        assert_eq!(instance.len(), n);
    }
}
