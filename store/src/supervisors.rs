//! The UtilMeta platform's supervisors this service is connected to (seed 000; UtilMeta's
//! `Supervisor` table, reference/utilmeta-ops.md §3, §6): one typed record per connection in
//! the document collection [`COLLECTION`], so every API replica sees the same supervisors and
//! they survive a restart, on both backends (the conformance suite runs the cases on both).
//!
//! A record is *pending* while it has an `init_key` (the access key of `ops connect`, stored
//! until the platform's callback `POST <ops_api>/` names it) and *connected* once the callback
//! saved its `node_id` and `public_key` (the JWK its tokens are verified with). The decisions
//! (which record a token or a callback belongs to) are the operator's; this module only keeps
//! the records, with the same revisioned, conditional writes as every document.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Documents, Expect, Result, StoreError, Written};

/// The collection of supervisor records, keyed by [`SupervisorRecord::id`].
pub const COLLECTION: &str = "ops.supervisors";

/// One supervisor (UtilMeta's `Supervisor` row, the fields opsplane uses).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SupervisorRecord {
    /// The record's id (its key in [`COLLECTION`]).
    pub id: String,
    /// The service name it manages.
    pub service: String,
    /// The supervisor's API (`https://api.utilmeta.com/spv`): outbound calls go there, a
    /// token's `iss` must be a prefix of it.
    pub base_url: String,
    /// The ops_api this service announced to it.
    pub ops_api: String,
    /// The node id the platform gave this service (set by the callback).
    #[serde(default)]
    pub node_id: Option<String>,
    /// The public key (a JSON JWK string) the supervisor's tokens are verified with.
    #[serde(default)]
    pub public_key: Option<String>,
    /// The access key of a pending connect; cleared when the callback saves the record.
    /// A secret: never returned by an API nor logged.
    #[serde(default)]
    pub init_key: Option<String>,
    /// The supervisor's ident.
    #[serde(default)]
    pub ident: Option<String>,
    /// The node's page in the platform's console.
    #[serde(default)]
    pub url: Option<String>,
    /// Other URLs of the supervisor.
    #[serde(default)]
    pub backup_urls: Vec<String>,
    /// A local node's supervisor.
    #[serde(default)]
    pub local: bool,
    /// The callback saved it.
    #[serde(default)]
    pub connected: bool,
    /// Tokens of a disabled supervisor are refused.
    #[serde(default)]
    pub disabled: bool,
    /// Heartbeat interval (seconds) the platform asked for.
    #[serde(default)]
    pub heartbeat_interval: Option<u64>,
    /// Settings the platform sent (`PATCH /`), kept as given.
    #[serde(default)]
    pub settings: Value,
    /// Alert settings (`PATCH /`).
    #[serde(default)]
    pub alert_settings: Value,
    /// Task settings (`PATCH /`).
    #[serde(default)]
    pub task_settings: Value,
    /// Aggregate settings (`PATCH /`).
    #[serde(default)]
    pub aggregate_settings: Value,
    /// The etag of the last resources push the supervisor acknowledged.
    #[serde(default)]
    pub resources_etag: Option<String>,
    /// The start (epoch seconds) of the last hour whose aggregate it acknowledged.
    #[serde(default)]
    pub reported_until: Option<i64>,
    /// The start (epoch seconds, a UTC midnight) of the last day whose daily aggregate
    /// (layer 1) it acknowledged.
    #[serde(default)]
    pub daily_reported_until: Option<i64>,
    /// The digest (SHA-256, hex) of the last resources push it acknowledged: the push is
    /// repeated when the resources' digest differs.
    #[serde(default)]
    pub resources_digest: Option<String>,
    /// The platform's ids of this node's resources, from its answer to the resources push.
    #[serde(default)]
    pub remote_ids: Vec<RemoteId>,
    /// When the record was made (epoch seconds).
    #[serde(default)]
    pub created_time: i64,
}

/// One resource the platform knows by its own id (UtilMeta's `Resource.remote_id`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RemoteId {
    /// The resource's type (`server`, `instance`, `endpoint`, `table`, ...).
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Its ident as pushed (a server's name, an instance's address, an endpoint's ident).
    pub ident: String,
    /// The platform's id of it.
    pub remote_id: String,
}

fn decode(id: &str, body: Value) -> Result<SupervisorRecord> {
    serde_json::from_value(body).map_err(|e| StoreError::Corrupt {
        key: format!("{COLLECTION}/{id}"),
        reason: e.to_string(),
    })
}

/// Every record with its revision, by id.
pub async fn list<S: Documents + ?Sized>(store: &S) -> Result<Vec<(u64, SupervisorRecord)>> {
    store
        .documents(COLLECTION)
        .await?
        .into_iter()
        .map(|d| decode(&d.id, d.body).map(|r| (d.revision, r)))
        .collect()
}

/// One record with its revision.
pub async fn get<S: Documents + ?Sized>(
    store: &S,
    id: &str,
) -> Result<Option<(u64, SupervisorRecord)>> {
    match store.document(COLLECTION, id).await? {
        Some(d) => Ok(Some((d.revision, decode(&d.id, d.body)?))),
        None => Ok(None),
    }
}

/// Writes `record` if `expect` holds (an empty id is refused).
pub async fn put<S: Documents + ?Sized>(
    store: &S,
    record: &SupervisorRecord,
    expect: Expect,
) -> Result<Written> {
    if record.id.is_empty() {
        return Err(StoreError::Invalid(
            "a supervisor record needs an id".into(),
        ));
    }
    let body = serde_json::to_value(record).map_err(|e| StoreError::Invalid(e.to_string()))?;
    store
        .put_document(COLLECTION, &record.id, &body, expect)
        .await
}

/// Removes the record `id` if `expect` holds.
pub async fn remove<S: Documents + ?Sized>(store: &S, id: &str, expect: Expect) -> Result<Written> {
    store.delete_document(COLLECTION, id, expect).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_before_the_report_fields_still_loads() {
        let old = serde_json::json!({"id": "a", "service": "s", "base_url": "https://x/spv",
            "ops_api": "https://y/ops", "node_id": "n1", "connected": true,
            "resources_etag": "etag-1", "reported_until": 3600});
        let record = decode("a", old).unwrap();
        assert_eq!(record.reported_until, Some(3600));
        assert_eq!(record.daily_reported_until, None);
        assert_eq!(record.resources_digest, None);
        assert!(record.remote_ids.is_empty());
        let mut new = record.clone();
        new.remote_ids.push(RemoteId {
            resource_type: "server".into(),
            ident: "node-a".into(),
            remote_id: "17".into(),
        });
        let text = serde_json::to_value(&new).unwrap();
        assert_eq!(text["remote_ids"][0]["type"], "server");
        assert_eq!(decode("a", text).unwrap(), new);
    }
}
