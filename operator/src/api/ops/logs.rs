//! `GET <ops_api>/logs/service`, `/logs?id=`, `/logs/realtime` (seed 000; UtilMeta's `LogAPI`,
//! reference/utilmeta-ops.md §4). UtilMeta stores a log row per request; opsplane keeps every
//! request as aggregates and the failed ones (failed checks, ingested requests that errored)
//! as exception records. The log list and detail are those records in UtilMeta's keys (a
//! log's `id` is the exception's); the realtime figures come from the request aggregates of
//! the ingestion endpoint (minute buckets). `/logs/service/values` counts the records that
//! pass the filters and `DELETE /logs` deletes them (one atomic store call).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Response;
use opsplane_store::model::split_resource_key;
use opsplane_store::{ExceptionRecord, Kind};
use serde_json::{Value, json};

use super::{OpsError, answer, schemas};
use crate::api::AppState;

/// Most records a log list reads.
const MAX_RECORDS: usize = 10_000;

/// UtilMeta's level of a request by its status: INFO below 400, WARN for 4xx, ERROR for 5xx
/// or no status.
pub fn level_of(status: Option<u64>) -> &'static str {
    match status {
        Some(s) if s < 400 => "INFO",
        Some(s) if s < 500 => "WARN",
        _ => "ERROR",
    }
}

/// A record as a UtilMeta log row (`GET /logs/service`).
pub fn log_row(r: &ExceptionRecord, node_id: Option<&str>) -> Value {
    let req = &r.request;
    let status = req["response"]["status"].as_u64();
    let path = req["request"]["path"].as_str().unwrap_or("");
    let (scheme, path) = match path.split_once("://") {
        Some((scheme, rest)) => (
            Some(scheme.to_owned()),
            rest.find('/').map(|i| &rest[i..]).unwrap_or("/").to_owned(),
        ),
        None => (None, path.to_owned()),
    };
    json!({
        "id": r.id,
        "service": r.service,
        "node_id": node_id,
        "instance_id": null,
        "endpoint_id": null,
        "endpoint_ident": req["resources"][0]["name"],
        "level": level_of(status),
        "time": r.created_ms as f64 / 1000.0,
        "duration": req["response"]["time"],
        "user_id": null,
        "ip": req["client"]["ip"],
        "scheme": scheme,
        "method": req["request"]["method"].as_str().map(str::to_lowercase),
        "status": status,
        "length": req["response"]["size"],
        "path": path,
    })
}

/// A record as a whole UtilMeta log (`GET /logs?id=`): the row, the request's details, and
/// the error as the log's trace and message.
pub fn log_detail(r: &ExceptionRecord, node_id: Option<&str>) -> Value {
    let req = &r.request;
    let mut log = log_row(r, node_id);
    let extra = json!({
        "request_type": null,
        "response_type": req["response"]["type"],
        "request_headers": {},
        "response_headers": {},
        "user_agent": {"browser": req["client"]["user_agent_family"], "os": null, "mobile": null,
                       "bot": null, "device": null, "string": req["client"]["user_agent"]},
        "query": {},
        "data": null,
        "result": null,
        "full_url": req["request"]["path"],
        "endpoint_remote_id": null,
        "endpoint_ref": req["resources"][0]["type"],
        "worker_id": null,
        "worker_pid": null,
        "thread_id": null,
        "trace": [{"type": r.error_type, "message": r.error_message, "data": r.error_data}],
        "messages": [r.error_message],
        "access_token_id": null,
        "in_traffic": null,
        "out_traffic": req["response"]["size"],
        "public": false,
        "service_type": r.service_type,
        "host": req["request"]["host"],
        "resources": req["resources"],
    });
    if let (Value::Object(log), Value::Object(extra)) = (&mut log, extra) {
        log.extend(extra);
    }
    log
}

/// The filters of `GET /logs/service` (UtilMeta's `LogQuery`, the parts opsplane's records
/// carry).
#[derive(Debug, Default, PartialEq)]
pub struct LogQuery {
    rows: usize,
    offset: usize,
    method: Option<String>,
    level: Option<String>,
    ip: Option<String>,
    status: Option<u64>,
    status_gte: Option<u64>,
    status_lte: Option<u64>,
    endpoint_like: Option<String>,
    time_gte: Option<f64>,
    time_lte: Option<f64>,
    order: (String, bool),
}

fn bad(name: &str, why: &str) -> OpsError {
    OpsError::BadRequest(format!("parse item: ['query'] failed: {name}: {why}"))
}

fn number<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    names: &[&str],
) -> Result<Option<T>, OpsError> {
    for name in names {
        if let Some(v) = q.get(*name) {
            return v.parse().map(Some).map_err(|_| bad(name, "not a number"));
        }
    }
    Ok(None)
}

impl LogQuery {
    /// Parses the query: `rows` (alias `limit`, 1..100, default 20), `page`, `offset`,
    /// `method`, `level`, `ip`, `status`, `status_gte`, `status_lte`, `endpoint_like`,
    /// `time_gte`/`time>=`, `time_lte`/`time<=` (epoch seconds), `order`.
    pub fn parse(q: &HashMap<String, String>) -> Result<LogQuery, OpsError> {
        let rows: usize = number(q, &["rows", "limit"])?.unwrap_or(20);
        if !(1..=100).contains(&rows) {
            return Err(bad("rows", "must be 1 to 100"));
        }
        let page: Option<usize> = number(q, &["page"])?;
        if page == Some(0) {
            return Err(bad("page", "starts at 1"));
        }
        let offset: usize = match (number::<usize>(q, &["offset"])?, page) {
            (Some(o), _) => o,
            (None, Some(p)) => (p - 1).saturating_mul(rows),
            (None, None) => 0,
        };
        let order = q.get("order").map(String::as_str).unwrap_or("-time");
        let (desc, field) = match order.strip_prefix('-') {
            Some(f) => (true, f),
            None => (false, order),
        };
        if !["time", "duration", "length", "out_traffic", "in_traffic"].contains(&field) {
            return Err(bad(
                "order",
                "one of time, duration, length, in_traffic, out_traffic (- for descending)",
            ));
        }
        Ok(LogQuery {
            rows,
            offset,
            method: q.get("method").map(|m| m.to_lowercase()),
            level: q.get("level").map(|l| l.to_uppercase()),
            ip: q.get("ip").cloned(),
            status: number(q, &["status"])?,
            status_gte: number(q, &["status_gte"])?,
            status_lte: number(q, &["status_lte"])?,
            endpoint_like: q.get("endpoint_like").map(|e| e.to_lowercase()),
            time_gte: number(q, &["time_gte", "time>="])?,
            time_lte: number(q, &["time_lte", "time<="])?,
            order: (
                if field == "length" || field == "out_traffic" {
                    "length".into()
                } else {
                    field.into()
                },
                desc,
            ),
        })
    }

    fn keeps(&self, row: &Value) -> bool {
        let status = row["status"].as_u64();
        let time = row["time"].as_f64().unwrap_or(0.0);
        self.method
            .as_ref()
            .is_none_or(|m| row["method"].as_str() == Some(m))
            && self
                .level
                .as_ref()
                .is_none_or(|l| row["level"].as_str() == Some(l))
            && self
                .ip
                .as_ref()
                .is_none_or(|ip| row["ip"].as_str() == Some(ip))
            && self.status.is_none_or(|s| status == Some(s))
            && self
                .status_gte
                .is_none_or(|s| status.is_some_and(|v| v >= s))
            && self
                .status_lte
                .is_none_or(|s| status.is_some_and(|v| v <= s))
            && self.time_gte.is_none_or(|t| time >= t)
            && self.time_lte.is_none_or(|t| time <= t)
            && self.endpoint_like.as_ref().is_none_or(|e| {
                ["endpoint_ident", "path"].iter().any(|k| {
                    row[*k]
                        .as_str()
                        .is_some_and(|v| v.to_lowercase().contains(e))
                })
            })
    }

    /// Every row of `rows` that passes the filters (no order, no page).
    pub fn matching(&self, rows: Vec<Value>) -> Vec<Value> {
        rows.into_iter().filter(|r| self.keeps(r)).collect()
    }

    /// The page of `rows` that pass, and how many pass.
    pub fn apply(&self, rows: Vec<Value>) -> (Vec<Value>, u64) {
        let mut kept = self.matching(rows);
        let (field, desc) = (&self.order.0, self.order.1);
        kept.sort_by(|a, b| {
            let (x, y) = (
                a[field].as_f64().unwrap_or(0.0),
                b[field].as_f64().unwrap_or(0.0),
            );
            let o = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
            if desc { o.reverse() } else { o }
        });
        let total = kept.len() as u64;
        let page = kept.into_iter().skip(self.offset).take(self.rows).collect();
        (page, total)
    }
}

fn node_id(state: &AppState) -> Option<&str> {
    state
        .ops
        .platform
        .supervisor
        .as_ref()
        .map(|s| s.node_id.as_str())
}

/// `GET <ops_api>/logs/service`: the failed requests and checks opsplane recorded, newest first,
/// `count` the total that pass the filters.
#[utoipa::path(get, path = "/ops/logs/service", tag = "ops", params(schemas::LogsQuery),
    responses((status = 200, description = "a page of logs", body = schemas::LogsAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn service(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    let filter = LogQuery::parse(&query)?;
    let records = state
        .recorder
        .store()
        .exceptions(None, None, MAX_RECORDS)
        .await?;
    let rows = records
        .iter()
        .map(|r| log_row(r, node_id(&state)))
        .collect();
    let (page, total) = filter.apply(rows);
    Ok(answer(page, total))
}

/// `GET <ops_api>/logs?id=<id>`: one log whole; 404 "not found" when there is none.
#[utoipa::path(get, path = "/ops/logs", tag = "ops", params(schemas::LogQuery),
    responses((status = 200, description = "the log", body = schemas::LogAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn one(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    let id = query
        .get("id")
        .ok_or_else(|| bad("id", "required item: 'id' is absence"))?;
    let id: u64 = id.parse().map_err(|_| bad("id", "not an integer"))?;
    let record = state
        .recorder
        .store()
        .exception(id)
        .await?
        .ok_or_else(|| OpsError::NotFound("not found".into()))?;
    Ok(answer(log_detail(&record, node_id(&state)), 0))
}

/// The keys `GET /logs/service/values` counts the values of.
pub const VALUE_KEYS: [&str; 6] = [
    "method",
    "level",
    "status",
    "endpoint_ident",
    "ip",
    "scheme",
];

/// How many of `rows` have each value of each of [`VALUE_KEYS`] (`{"level": {"ERROR": 2}}`);
/// rows without the key are not counted under it.
pub fn value_counts(rows: &[Value]) -> Value {
    let mut out = serde_json::Map::new();
    for key in VALUE_KEYS {
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for row in rows {
            let value = match &row[key] {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            *counts.entry(value).or_default() += 1;
        }
        out.insert(key.to_owned(), json!(counts));
    }
    Value::Object(out)
}

/// Most records `DELETE /logs` and `/logs/service/values` read: every record the retention
/// keeps, in practice.
const MAX_MATCHED: usize = 1_000_000;

/// The log rows of every record that passes `filter`.
async fn matching_rows(state: &AppState, filter: &LogQuery) -> Result<Vec<Value>, OpsError> {
    let records = state
        .recorder
        .store()
        .exceptions(None, None, MAX_MATCHED)
        .await?;
    let rows = records.iter().map(|r| log_row(r, node_id(state))).collect();
    Ok(filter.matching(rows))
}

/// `GET <ops_api>/logs/service/values`: how many logs that pass the filters have each
/// `method`, `level`, `status`, `endpoint_ident`, `ip`, `scheme` (`count`: how many pass).
#[utoipa::path(get, path = "/ops/logs/service/values", tag = "ops", params(schemas::LogsQuery),
    responses((status = 200, description = "the counts per key and value", body = schemas::LogValuesAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn values(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    let filter = LogQuery::parse(&query)?;
    let rows = matching_rows(&state, &filter).await?;
    Ok(answer(value_counts(&rows), rows.len() as u64))
}

/// `DELETE <ops_api>/logs`: deletes every log that passes the filters (the page parameters
/// are checked but select nothing), in one atomic store call; the number deleted.
#[utoipa::path(delete, path = "/ops/logs", tag = "ops", params(schemas::LogsQuery),
    responses((status = 200, description = "how many logs were deleted", body = schemas::CountAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn delete(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    let filter = LogQuery::parse(&query)?;
    let ids: Vec<u64> = matching_rows(&state, &filter)
        .await?
        .iter()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    let deleted = state.recorder.store().delete_exceptions(&ids).await?;
    Ok(answer(deleted, 0))
}

/// The `n` keys with the most counts, most first (ties by key), as `{key: count}`.
pub fn top(counts: HashMap<String, u64>, n: usize) -> Value {
    let mut list: Vec<(String, u64)> = counts.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list.truncate(n);
    Value::Object(list.into_iter().map(|(k, v)| (k, json!(v))).collect())
}

/// `GET <ops_api>/logs/realtime?within=<s>`: requests, errors, mean time, distinct client
/// addresses and users over the last `within` seconds (1..7200, default 3600), per minute in
/// `time_dist`, from the ingested requests' minute aggregates; with `ips`, `users`,
/// `endpoints` (top-N, 0..1000) also `ip_dist`, `users`, `endpoints` (requests per address,
/// user, resource name); with `apis` (endpoint idents) only those endpoints' requests.
#[utoipa::path(get, path = "/ops/logs/realtime", tag = "ops", params(schemas::RealtimeQuery),
    responses((status = 200, description = "the figures", body = schemas::RealtimeAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn realtime(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    let within: i64 = number(&query, &["within"])?.unwrap_or(3600);
    if !(1..=7200).contains(&within) {
        return Err(bad("within", "must be 1 to 7200"));
    }
    let mut wanted = [0usize; 3];
    for (slot, name) in wanted.iter_mut().zip(["ips", "users", "endpoints"]) {
        *slot = match number::<i64>(&query, &[name])? {
            None => 0,
            Some(n) if (0..=1000).contains(&n) => n as usize,
            Some(_) => return Err(bad(name, "must be 0 to 1000")),
        };
    }
    let [top_ips, top_users, top_endpoints] = wanted;
    let store = state.recorder.store();
    let now = jiff::Timestamp::now().as_second();
    let from = (now - within).div_euclid(60) * 60;
    let minutes = ((now - from) / 60 + 1) as usize;
    use super::aggregate::Metric;
    let folded = super::aggregate::fold(
        &**store,
        from,
        now + 1,
        &[
            Metric::Count,
            Metric::Errors,
            Metric::Time,
            Metric::Ip,
            Metric::Users,
        ],
    )
    .await?;
    // With `apis`, the requests of those endpoints (a request that touched two counts twice).
    let apis: Vec<&str> = query
        .get("apis")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut resources: HashMap<u32, &super::aggregate::Stats> =
        folded.resources.iter().map(|(id, s)| (*id, s)).collect();
    let selected;
    let service = if apis.is_empty() {
        &folded.service
    } else {
        let remote = super::servers::remote_ids(&state).await?;
        let names = super::aggregate::names(&**store, Kind::Resource).await?;
        resources.retain(|id, _| {
            names.get(id).is_some_and(|name| {
                let (kind, short) = split_resource_key(name);
                let key = super::connect::endpoint_key(name, &remote);
                apis.iter()
                    .any(|a| *a == key || *a == short || *a == format!("{kind}/{short}"))
            })
        });
        let mut merged = super::aggregate::Stats::default();
        for stats in resources.values() {
            merged.merge(stats);
        }
        selected = merged;
        &selected
    };
    let slot = |start: i64| ((start - from) / 60).clamp(0, minutes as i64 - 1) as usize;
    let mut per_minute = vec![0u64; minutes];
    for (start, n) in &service.per_minute {
        per_minute[slot(*start)] += n;
    }
    let distinct = |sets: &std::collections::BTreeMap<i64, std::collections::HashSet<u32>>| {
        let mut counts = vec![0usize; minutes];
        for (start, set) in sets {
            counts[slot(*start)] += set.len();
        }
        counts
    };
    let avg_time = if service.time_n == 0 {
        0.0
    } else {
        service.time_sum / service.time_n as f64
    };
    let mut figures = json!({
        "time_dist": {
            "min": per_minute,
            "uv": distinct(&service.minute_users),
            "ip": distinct(&service.minute_ips),
        },
        "avg_time": avg_time,
        "requests": service.requests,
        "errors": service.errors,
        "uv": service.users.len(),
        "ip": service.ips.len(),
    });
    // Requests per client address, user and resource (ids until named below).
    let per_ip = service.ips.clone();
    let per_user = service.users.clone();
    let per_resource: HashMap<u32, u64> = resources
        .iter()
        .map(|(id, stats)| (*id, stats.requests))
        .collect();
    if top_ips > 0 || top_users > 0 {
        let labels = super::aggregate::names(&**store, Kind::Label).await?;
        if top_ips > 0 {
            figures["ip_dist"] = top(named(per_ip, &labels), top_ips);
        }
        if top_users > 0 {
            figures["users"] = top(named(per_user, &labels), top_users);
        }
    }
    if top_endpoints > 0 {
        let resources: HashMap<u32, String> = store
            .entries(Kind::Resource)
            .await?
            .into_iter()
            .map(|e| (e.id, split_resource_key(&e.name).1.to_owned()))
            .collect();
        figures["endpoints"] = top(named(per_resource, &resources), top_endpoints);
    }
    Ok(answer(figures, 0))
}

/// Counts by id as counts by name (ids no longer registered are left out; two ids of one
/// name add up).
fn named(counts: HashMap<u32, u64>, names: &HashMap<u32, String>) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = HashMap::new();
    for (id, n) in counts {
        if let Some(name) = names.get(&id) {
            *out.entry(name.clone()).or_default() += n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, status: u16, path: &str, ms: i64) -> ExceptionRecord {
        ExceptionRecord {
            id,
            error_type: "http.500".into(),
            error_message: "boom".into(),
            error_data: String::new(),
            service: "shop".into(),
            service_type: "application".into(),
            created_ms: ms,
            request: json!({"client": {"ip": "10.0.0.1"}, "request": {"path": path, "method": "POST"},
                            "response": {"status": status, "time": 12.5, "size": 10},
                            "resources": [{"type": "url", "name": path}]}),
        }
    }

    #[test]
    fn values_count_each_key_over_the_rows_that_pass_the_filters_without_paging() {
        let rows: Vec<Value> = [
            record(1, 500, "/pay", 1_000),
            record(2, 404, "http://shop:8080/health", 2_000),
            record(3, 503, "/pay", 3_000),
        ]
        .iter()
        .map(|r| log_row(r, None))
        .collect();
        let all = value_counts(&rows);
        assert_eq!(all["level"], json!({"ERROR": 2, "WARN": 1}));
        assert_eq!(all["status"], json!({"404": 1, "500": 1, "503": 1}));
        assert_eq!(all["method"], json!({"post": 3}));
        assert_eq!(
            all["endpoint_ident"],
            json!({"/pay": 2, "http://shop:8080/health": 1})
        );
        assert_eq!(
            all["scheme"],
            json!({"http": 1}),
            "rows without one are not counted"
        );
        let q: HashMap<String, String> = [
            ("level".to_string(), "error".to_string()),
            ("rows".to_string(), "1".to_string()),
        ]
        .into();
        let matching = LogQuery::parse(&q).unwrap().matching(rows);
        assert_eq!(matching.len(), 2, "rows does not page the values");
        assert_eq!(
            value_counts(&matching)["status"],
            json!({"500": 1, "503": 1})
        );
    }

    #[test]
    fn top_keeps_the_n_largest_counts_ties_by_name() {
        let counts: HashMap<String, u64> = [("a", 1), ("b", 5), ("c", 5), ("d", 2)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(top(counts.clone(), 3), json!({"b": 5, "c": 5, "d": 2}));
        assert_eq!(top(counts.clone(), 10).as_object().unwrap().len(), 4);
        assert_eq!(top(counts, 0), json!({}));
        let names: HashMap<u32, String> = [(1, "x".to_string()), (2, "x".to_string())].into();
        let by_id: HashMap<u32, u64> = [(1, 2), (2, 3), (9, 7)].into();
        assert_eq!(
            named(by_id, &names),
            HashMap::from([("x".to_string(), 5)]),
            "one name adds up, an unregistered id is left out"
        );
    }

    #[test]
    fn records_become_log_rows_filtered_paged_newest_first() {
        let rows: Vec<Value> = [
            record(1, 500, "/pay", 1_000),
            record(2, 404, "http://shop:8080/health", 2_000),
            record(3, 503, "/pay", 3_000),
        ]
        .iter()
        .map(|r| log_row(r, None))
        .collect();
        assert_eq!(rows[1]["path"], "/health");
        assert_eq!(rows[1]["scheme"], "http");
        assert_eq!(rows[1]["level"], "WARN");
        assert_eq!(rows[0]["method"], "post");
        assert_eq!(rows[0]["time"], 1.0);
        let q = |pairs: &[(&str, &str)]| {
            LogQuery::parse(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
            .unwrap()
        };
        let (page, total) = q(&[]).apply(rows.clone());
        assert_eq!(total, 3);
        assert_eq!(page[0]["id"], 3);
        let (page, total) = q(&[("level", "error"), ("rows", "1")]).apply(rows.clone());
        assert_eq!((total, page.len(), &page[0]["id"]), (2, 1, &json!(3)));
        let (page, _) = q(&[("level", "error"), ("rows", "1"), ("page", "2")]).apply(rows.clone());
        assert_eq!(page[0]["id"], 1);
        let (_, total) = q(&[("endpoint_like", "HEALTH")]).apply(rows.clone());
        assert_eq!(total, 1);
        let (_, total) = q(&[("status_gte", "500"), ("time>=", "2.5")]).apply(rows);
        assert_eq!(total, 1);
        for bad in [
            ("rows", "101"),
            ("rows", "x"),
            ("page", "0"),
            ("order", "path"),
        ] {
            let q: HashMap<String, String> = [(bad.0.to_string(), bad.1.to_string())].into();
            assert!(LogQuery::parse(&q).is_err(), "{bad:?}");
        }
    }
}
