//! `GET <ops_api>/data/tables` and `POST <ops_api>/data/query?model=<ref>` (seed 000;
//! UtilMeta's `DataAPI`, reference/utilmeta-ops.md §4). UtilMeta lists and queries a service's
//! Django models; opsplane's tables are its own resources — `opsplane.services`
//! (MonitoredServices), `opsplane.tasks` (NodeTasks), `opsplane.nodes`, `opsplane.exceptions` —
//! the first two writable through `POST /data/create|update|delete` on the Eve API's write
//! path ([`crate::api::resources::writes::data_write`]: the same validation, versions and
//! oplog), the others read-only (400). A query is UtilMeta's body
//! (`query` with Django-style lookups on dotted field paths, `orders`, `rows`, `page`,
//! `fields`); values under a secret name (UtilMeta's list: `password`, `secret`, `token`
//! parts, ...) are masked as `********`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{OpsError, answer, schemas};
use crate::api::AppState;
use crate::api::resources::objects::Kind;
use crate::api::resources::views::node_items;

/// What a masked value reads.
pub const MASK: &str = "********";

/// UtilMeta's default `secret_names`: a key whose lowercase name contains one is masked.
pub const SECRET_NAMES: [&str; 10] = [
    "password",
    "secret",
    "dsn",
    "sessionid",
    "pwd",
    "passphrase",
    "cookie",
    "authorization",
    "_token",
    "_key",
];

/// Whether `key` names a secret.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_lowercase();
    SECRET_NAMES.iter().any(|s| key.contains(s)) || key == "token"
}

/// `value` with every secret-named key's value masked, at any depth.
pub fn mask(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret(k) && !v.is_null() {
                    *v = json!(MASK);
                } else {
                    mask(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

/// One of opsplane's tables.
struct Table {
    /// What `?model=` takes.
    reference: &'static str,
    /// The resource's name.
    name: &'static str,
    /// What it holds.
    description: &'static str,
    /// The primary key's field.
    pk: &'static str,
    /// The top-level fields and their JSON schema types.
    fields: &'static [(&'static str, &'static str)],
}

/// The tables.
const TABLES: [Table; 4] = [
    Table {
        reference: "opsplane.services",
        name: "monitoredservices",
        description: "MonitoredServices (seed 000's services; /api/v1/services)",
        pk: "_id",
        fields: &[
            ("_id", "string"),
            ("metadata", "object"),
            ("spec", "object"),
            ("status", "object"),
        ],
    },
    Table {
        reference: "opsplane.tasks",
        name: "nodetasks",
        description: "NodeTasks (/api/v1/tasks)",
        pk: "_id",
        fields: &[
            ("_id", "string"),
            ("metadata", "object"),
            ("spec", "object"),
            ("status", "object"),
        ],
    },
    Table {
        reference: "opsplane.nodes",
        name: "nodes",
        description: "nodes with their node-daemon's last report (/api/v1/nodes)",
        pk: "_id",
        fields: &[
            ("_id", "string"),
            ("metadata", "object"),
            ("status", "object"),
            ("report", "object"),
        ],
    },
    Table {
        reference: "opsplane.exceptions",
        name: "exceptions",
        description: "exceptions: failed checks and failed ingested requests (/api/v1/exceptions)",
        pk: "id",
        fields: &[
            ("id", "integer"),
            ("error_type", "string"),
            ("error_message", "string"),
            ("error_data", "string"),
            ("service", "string"),
            ("service_type", "string"),
            ("created_ms", "integer"),
            ("request", "object"),
        ],
    },
];

/// `GET <ops_api>/data/tables`: opsplane's resources as UtilMeta tables.
#[utoipa::path(get, path = "/ops/data/tables", tag = "ops",
    responses((status = 200, description = "the tables", body = schemas::TablesAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn tables(State(state): State<AppState>) -> Response {
    answer(table_list(&state), 0)
}

/// The tables as `GET /data/tables` lists them (and the resources push sends them).
pub fn table_list(state: &AppState) -> Vec<Value> {
    let database = if state.resources.is_local() {
        "standalone"
    } else {
        "kubernetes"
    };
    TABLES
        .iter()
        .map(|table| {
            let (reference, pk) = (table.reference, table.pk);
            let fields: Map<String, Value> = table
                .fields
                .iter()
                .map(|(f, t)| {
                    let readonly =
                        writable(reference).is_err() || !matches!(*f, "metadata" | "spec");
                    let mut field =
                        json!({"schema": {"type": t}, "category": t, "readonly": readonly});
                    if *f == pk {
                        field["primary_key"] = json!(true);
                        field["unique"] = json!(true);
                    }
                    (f.to_string(), field)
                })
                .collect();
            let model = reference.trim_start_matches("opsplane.");
            json!({
                "model_name": model, "model_backend": "opsplane", "name": table.name, "ref": reference,
                "ident": reference, "base": null, "database": database, "fields": fields,
                "description": table.description, "deprecated": false, "tags": ["opsplane"],
                "metadata": {"app_label": "opsplane"},
            })
        })
        .collect()
}

/// UtilMeta's query body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// `{<field path>[__<lookup>]: value}`; lookups `exact`, `iexact`, `contains`,
    /// `icontains`, `startswith`, `in`, `gt`, `gte`, `lt`, `lte`, `isnull`.
    #[serde(default)]
    pub query: Map<String, Value>,
    /// Field paths, `-` first for descending; `pk` is the primary key.
    #[serde(default)]
    pub orders: Vec<String>,
    /// Rows per page, 1..100 (default 10).
    #[serde(default)]
    pub rows: Option<u64>,
    /// The page, from 1.
    #[serde(default)]
    pub page: Option<u64>,
    /// The fields to return (default: all).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Longest string value returned (longer ones are cut).
    #[serde(default)]
    pub max_length: Option<u64>,
}

fn at<'v>(row: &'v Value, path: &str) -> &'v Value {
    path.split('.').fold(row, |v, k| &v[k])
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One lookup of `query`: whether `row` passes `key` = `expected`.
fn passes(row: &Value, key: &str, expected: &Value, pk: &str) -> Result<bool, OpsError> {
    let (path, lookup) = match key.rsplit_once("__") {
        Some((p, l)) => (p, l),
        None => (key, "exact"),
    };
    let path = if path == "pk" { pk } else { path };
    if path.is_empty() {
        return Err(OpsError::BadRequest(format!(
            "Invalid query field: {key:?}"
        )));
    }
    let v = at(row, path);
    let text = || as_text(v);
    Ok(match lookup {
        "exact" => v == expected,
        "iexact" => text().to_lowercase() == as_text(expected).to_lowercase(),
        "contains" => text().contains(&as_text(expected)),
        "icontains" => text()
            .to_lowercase()
            .contains(&as_text(expected).to_lowercase()),
        "startswith" => text().starts_with(&as_text(expected)),
        "in" => match expected {
            Value::Array(items) => items.contains(v),
            _ => return Err(OpsError::BadRequest(format!("{key}: 'in' needs a list"))),
        },
        "gt" => compare(v, expected).is_some_and(|o| o.is_gt()),
        "gte" => compare(v, expected).is_some_and(|o| o.is_ge()),
        "lt" => compare(v, expected).is_some_and(|o| o.is_lt()),
        "lte" => compare(v, expected).is_some_and(|o| o.is_le()),
        "isnull" => v.is_null() == (expected == &json!(true)),
        other => {
            return Err(OpsError::BadRequest(format!(
                "Unsupported lookup {other:?} in {key:?}"
            )));
        }
    })
}

/// Runs `body` over `rows` of a table whose primary key is `pk`: the page, and the total.
pub fn run(
    mut rows: Vec<Value>,
    body: &QueryBody,
    pk: &str,
) -> Result<(Vec<Value>, u64), OpsError> {
    let per_page = body.rows.unwrap_or(10);
    if !(1..=100).contains(&per_page) {
        return Err(OpsError::BadRequest("rows must be 1 to 100".into()));
    }
    let page = body.page.unwrap_or(1);
    if page == 0 {
        return Err(OpsError::BadRequest("page starts at 1".into()));
    }
    let mut kept = Vec::new();
    for row in rows.drain(..) {
        let mut ok = true;
        for (key, expected) in &body.query {
            if !passes(&row, key, expected, pk)? {
                ok = false;
                break;
            }
        }
        if ok {
            kept.push(row);
        }
    }
    let orders: Vec<(String, bool)> = body
        .orders
        .iter()
        .map(|o| {
            let (desc, f) = match o.strip_prefix('-') {
                Some(f) => (true, f),
                None => (false, o.as_str()),
            };
            (
                if f == "pk" {
                    pk.to_owned()
                } else {
                    f.to_owned()
                },
                desc,
            )
        })
        .collect();
    kept.sort_by(|a, b| {
        for (f, desc) in &orders {
            let o = compare(at(a, f), at(b, f)).unwrap_or(std::cmp::Ordering::Equal);
            if o.is_ne() {
                return if *desc { o.reverse() } else { o };
            }
        }
        std::cmp::Ordering::Equal
    });
    let total = kept.len() as u64;
    let skip = (page - 1).saturating_mul(per_page);
    let page: Vec<Value> = kept
        .into_iter()
        .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        .take(per_page as usize)
        .map(|row| {
            let mut out = if body.fields.is_empty() {
                row.clone()
            } else {
                let mut m = Map::new();
                for f in &body.fields {
                    m.insert(f.clone(), at(&row, f).clone());
                }
                Value::Object(m)
            };
            out["pk"] = at(&row, pk).clone();
            mask(&mut out);
            if let Some(max) = body.max_length {
                cut(&mut out, max as usize);
            }
            out
        })
        .collect();
    Ok((page, total))
}

fn cut(value: &mut Value, max: usize) {
    match value {
        Value::String(s) if s.chars().count() > max => *s = s.chars().take(max).collect(),
        Value::Object(m) => m.values_mut().for_each(|v| cut(v, max)),
        Value::Array(a) => a.iter_mut().for_each(|v| cut(v, max)),
        _ => {}
    }
}

async fn rows_of(state: &AppState, model: &str) -> Result<Vec<Value>, OpsError> {
    Ok(match model {
        "opsplane.services" => state
            .resources
            .items(Kind::Services)
            .await
            .map_err(crate::api::ApiError::from)?
            .iter()
            .map(|v| Value::clone(v))
            .collect(),
        "opsplane.tasks" => state
            .resources
            .items(Kind::Tasks)
            .await
            .map_err(crate::api::ApiError::from)?
            .iter()
            .map(|v| Value::clone(v))
            .collect(),
        "opsplane.nodes" => node_items(state).await?,
        _ => state
            .recorder
            .store()
            .exceptions(None, None, 10_000)
            .await?
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect(),
    })
}

/// `POST <ops_api>/data/query?model=<ref>`: rows of one table, `count` the total that match.
#[utoipa::path(post, path = "/ops/data/query", tag = "ops", params(schemas::ModelQuery),
    request_body(content = schemas::DataQueryBody, content_type = "application/json"),
    responses((status = 200, description = "a page of rows, secrets masked", body = schemas::RowsAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn query(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Response, OpsError> {
    let model = params.get("model").map(String::as_str).unwrap_or("");
    let Some(Table { pk, .. }) = TABLES.iter().find(|t| t.reference == model) else {
        return Err(OpsError::BadRequest(format!("Invalid model: {model}")));
    };
    let body: QueryBody = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_str("{}").map_err(|e| OpsError::BadRequest(e.to_string()))?
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| OpsError::BadRequest(format!("invalid query body: {e}")))?
    };
    let rows = rows_of(&state, model).await?;
    let (page, total) = run(rows, &body, pk)?;
    Ok(answer(page, total))
}

/// The resource a table's writes go to: services and tasks; the others are read-only.
pub fn writable(model: &str) -> Result<Kind, OpsError> {
    match model {
        "opsplane.services" => Ok(Kind::Services),
        "opsplane.tasks" => Ok(Kind::Tasks),
        m if TABLES.iter().any(|t| t.reference == m) => Err(OpsError::BadRequest(format!(
            "{m} is read-only: only opsplane.services and opsplane.tasks take writes"
        ))),
        m => Err(OpsError::BadRequest(format!("Invalid model: {m}"))),
    }
}

/// An Eve write's refusal in the ops envelope: validation is UtilMeta's 400, a lost race 409.
fn write_error(e: crate::api::ApiError) -> OpsError {
    use crate::api::ApiError as E;
    use axum::http::StatusCode;
    let refused = |status, message: String| OpsError::Refused { status, message };
    match e {
        E::Invalid(issues) => refused(
            StatusCode::BAD_REQUEST,
            format!("invalid: {}", Value::Object(issues.into_iter().collect())),
        ),
        E::BulkInvalid(items) => {
            let issues: Vec<Value> = items
                .iter()
                .enumerate()
                .filter(|(_, i)| i.get("_issues").is_some())
                .map(|(n, i)| json!({"index": n, "issues": i["_issues"]}))
                .collect();
            refused(
                StatusCode::BAD_REQUEST,
                format!("invalid: {}", Value::Array(issues)),
            )
        }
        E::BadBody(m) => refused(StatusCode::BAD_REQUEST, m),
        E::NoItem(m) => refused(StatusCode::NOT_FOUND, format!("not found: {m}")),
        E::PreconditionFailed => refused(
            StatusCode::CONFLICT,
            "the object changed under every attempt; try again".into(),
        ),
        E::Conflict(m) => refused(StatusCode::CONFLICT, m),
        E::Forbidden(m) => refused(StatusCode::FORBIDDEN, m),
        other => OpsError::Resources(other),
    }
}

/// UtilMeta's create body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateBody {
    /// The rows: MonitoredServices or NodeTasks as the Eve API takes them (`metadata`,
    /// `spec`; `_id`, `pk` and `status` are ignored).
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Value>,
    /// Fields of the created rows to return (none: `null`).
    #[serde(default)]
    pub return_fields: Vec<String>,
    /// Longest string value returned.
    #[serde(default)]
    pub return_max_length: Option<u64>,
}

/// UtilMeta's update body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UpdateBody {
    /// Each row: `pk` (or `_id`, `id`) and the changes, a JSON merge patch.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Value>,
}

/// UtilMeta's delete body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DeleteBody {
    /// The row's primary key (`pk` is taken too).
    #[serde(alias = "pk")]
    pub id: String,
}

/// A write body: 400 when it is not one.
fn write_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, OpsError> {
    serde_json::from_slice(bytes)
        .map_err(|e| OpsError::BadRequest(format!("parse item: ['body'] failed: {e}")))
}

type PrincipalOf = Option<axum::Extension<opsplane_serve::auth::Principal>>;
type PeerOf = Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>;

fn who(principal: PrincipalOf, peer: PeerOf) -> (Option<opsplane_serve::auth::Principal>, String) {
    (
        principal.map(|p| p.0),
        peer.map(|c| c.0.0.ip().to_string()).unwrap_or_default(),
    )
}

fn model_of(params: &HashMap<String, String>) -> Result<(&'static str, Kind), OpsError> {
    let model = params.get("model").map(String::as_str).unwrap_or("");
    let kind = writable(model)?;
    let table = TABLES
        .iter()
        .find(|t| t.reference == model)
        .ok_or_else(|| OpsError::BadRequest(format!("Invalid model: {model}")))?;
    Ok((table.reference, kind))
}

/// The rows' primary key: `pk`, `_id` or `id`.
fn pk_of(row: &Value) -> Option<String> {
    ["pk", "_id", "id"]
        .iter()
        .find_map(|k| row.get(*k).and_then(Value::as_str))
        .map(str::to_owned)
}

/// `row` without the keys a write does not take (`pk`, `_id`, `id`, `status`, `_*`).
fn writable_part(row: &Value) -> Result<Value, OpsError> {
    let Value::Object(map) = row else {
        return Err(OpsError::BadRequest("each row is a JSON object".into()));
    };
    Ok(Value::Object(
        map.iter()
            .filter(|(k, _)| !matches!(k.as_str(), "pk" | "id" | "status") && !k.starts_with('_'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    ))
}

/// `POST <ops_api>/data/create?model=<ref>` (`data.create`): creates the rows, all or
/// nothing; answers the `return_fields` of each created row (secrets masked), or `null`.
#[utoipa::path(post, path = "/ops/data/create", tag = "ops", params(schemas::ModelQuery),
    request_body(content = CreateBody, content_type = "application/json"),
    responses((status = 200, description = "the created rows' return_fields, or null", body = schemas::RowsAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn create(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    principal: PrincipalOf,
    peer: PeerOf,
    body: axum::body::Bytes,
) -> Result<Response, OpsError> {
    let (model, kind) = model_of(&params)?;
    let body: CreateBody = write_body(&body)?;
    if body.data.is_empty() || body.data.len() > 100 {
        return Err(OpsError::BadRequest("data: 1 to 100 rows".into()));
    }
    let rows = body
        .data
        .iter()
        .map(writable_part)
        .collect::<Result<Vec<_>, _>>()?;
    let (principal, ip) = who(principal, peer);
    let written = crate::api::resources::writes::data_write(
        &state,
        kind,
        principal,
        ip,
        crate::api::resources::writes::DataWrite::Create(rows),
    )
    .await
    .map_err(write_error)?;
    if body.return_fields.is_empty() {
        return Ok(answer(Value::Null, 0));
    }
    let ids: Vec<String> = match &written["_items"] {
        Value::Array(items) => items.iter().filter_map(pk_of).collect(),
        one => pk_of(one).into_iter().collect(),
    };
    let current = rows_of(&state, model).await?;
    let query = QueryBody {
        query: Map::from_iter([("pk__in".to_owned(), json!(ids))]),
        orders: Vec::new(),
        rows: Some(100),
        page: None,
        fields: body.return_fields.clone(),
        max_length: body.return_max_length,
    };
    let (page, total) = run(current, &query, "_id")?;
    Ok(answer(page, total))
}

/// `POST <ops_api>/data/update?model=<ref>` (`data.update`): each row's changes merged into
/// it; answers how many rows were updated (an unknown pk is not counted).
#[utoipa::path(post, path = "/ops/data/update", tag = "ops", params(schemas::ModelQuery),
    request_body(content = UpdateBody, content_type = "application/json"),
    responses((status = 200, description = "how many rows were updated", body = schemas::CountAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn update(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    principal: PrincipalOf,
    peer: PeerOf,
    body: axum::body::Bytes,
) -> Result<Response, OpsError> {
    let (_, kind) = model_of(&params)?;
    let body: UpdateBody = write_body(&body)?;
    if body.data.is_empty() || body.data.len() > 100 {
        return Err(OpsError::BadRequest("data: 1 to 100 rows".into()));
    }
    let mut changes = Vec::with_capacity(body.data.len());
    for row in &body.data {
        let id = pk_of(row)
            .ok_or_else(|| OpsError::BadRequest("each row needs its pk (or _id)".into()))?;
        changes.push((id, writable_part(row)?));
    }
    let (principal, ip) = who(principal, peer);
    let mut updated = 0u64;
    for (id, change) in changes {
        match crate::api::resources::writes::data_write(
            &state,
            kind,
            principal.clone(),
            ip.clone(),
            crate::api::resources::writes::DataWrite::Update {
                id,
                changes: change,
            },
        )
        .await
        {
            Ok(_) => updated += 1,
            Err(crate::api::ApiError::NoItem(_)) => {}
            Err(e) => return Err(write_error(e)),
        }
    }
    Ok(answer(updated, 0))
}

/// `POST <ops_api>/data/delete?model=<ref>` (`data.delete`): soft-deletes the row `id` (a
/// tombstone and an oplog entry, as the Eve DELETE); answers the delete count (0 or 1).
#[utoipa::path(post, path = "/ops/data/delete", tag = "ops", params(schemas::ModelQuery),
    request_body(content = DeleteBody, content_type = "application/json"),
    responses((status = 200, description = "how many rows were deleted", body = schemas::CountAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn delete(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    principal: PrincipalOf,
    peer: PeerOf,
    body: axum::body::Bytes,
) -> Result<Response, OpsError> {
    let (_, kind) = model_of(&params)?;
    let body: DeleteBody = write_body(&body)?;
    let (principal, ip) = who(principal, peer);
    match crate::api::resources::writes::data_write(
        &state,
        kind,
        principal,
        ip,
        crate::api::resources::writes::DataWrite::Delete(body.id),
    )
    .await
    {
        Ok(_) => Ok(answer(1, 0)),
        Err(crate::api::ApiError::NoItem(_)) => Ok(answer(0, 0)),
        Err(e) => Err(write_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> QueryBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_services_and_tasks_take_writes() {
        assert_eq!(writable("opsplane.services").unwrap(), Kind::Services);
        assert_eq!(writable("opsplane.tasks").unwrap(), Kind::Tasks);
        for (model, says) in [
            ("opsplane.nodes", "read-only"),
            ("opsplane.exceptions", "read-only"),
            ("blog.Article", "Invalid model"),
        ] {
            let e = writable(model).unwrap_err().to_string();
            assert!(e.contains(says), "{model}: {e}");
        }
        let part = writable_part(
            &json!({"pk": "a/b", "_id": "a/b", "status": {}, "_etag": "x", "spec": {"url": "u"}}),
        )
        .unwrap();
        assert_eq!(part, json!({"spec": {"url": "u"}}));
        assert!(writable_part(&json!([1])).is_err());
        assert_eq!(pk_of(&json!({"_id": "a/b"})).as_deref(), Some("a/b"));
        assert_eq!(pk_of(&json!({"x": 1})), None);
    }

    #[test]
    fn queries_filter_order_page_and_mask_secrets() {
        let rows = vec![
            json!({"_id": "a/x", "spec": {"type": "web", "http": {"headers": {"Authorization": "Bearer s3cret"}}}, "n": 3}),
            json!({"_id": "a/y", "spec": {"type": "db", "password": "p"}, "n": 1}),
            json!({"_id": "b/z", "spec": {"type": "web"}, "n": 2}),
        ];
        let (page, total) = run(
            rows.clone(),
            &body(json!({"query": {"spec.type": "web"}, "orders": ["-n"]})),
            "_id",
        )
        .unwrap();
        assert_eq!(total, 2);
        assert_eq!(page[0]["pk"], "a/x");
        assert_eq!(page[0]["spec"]["http"]["headers"]["Authorization"], MASK);
        let (page, _) = run(
            rows.clone(),
            &body(
                json!({"query": {"pk__startswith": "a/"}, "orders": ["n"], "rows": 1, "page": 2}),
            ),
            "_id",
        )
        .unwrap();
        assert_eq!(page[0]["_id"], "a/x");
        let (page, _) = run(rows.clone(), &body(json!({"query": {"n__gte": 2, "spec.type__in": ["web"]}, "fields": ["spec.password", "n"]})), "_id").unwrap();
        assert_eq!(page.len(), 2);
        let (page, _) = run(rows.clone(), &body(json!({"query": {"_id": "a/y"}})), "_id").unwrap();
        assert_eq!(page[0]["spec"]["password"], MASK);
        assert!(
            run(
                rows.clone(),
                &body(json!({"query": {"n__regex": "x"}})),
                "_id"
            )
            .is_err()
        );
        assert!(run(rows.clone(), &body(json!({"rows": 0})), "_id").is_err());
        assert!(run(rows, &body(json!({"query": {"__in": 1}})), "_id").is_err());
        assert!(is_secret("api_key") && is_secret("X-Session_Token") && !is_secret("keyword"));
    }
}
