//! The platform's tokens (seed 000; UtilMeta's `AccessToken` table and `TokenAPI`,
//! reference/utilmeta-ops.md §3-4): each `jti` is recorded at its first use and counted at
//! every later one, in the store's `ops.tokens` collection (shared by every replica, kept
//! across restarts); a revoked `jti` is refused. `GET /token`, `GET /token/scope`,
//! `POST /token/revoke`. Records of tokens past their expiry are pruned ([`TokenBook::prune`],
//! a bounded number per round of [`super::connect::run_platform_calls`]): an expired token is
//! refused by its `exp` whether or not its record is kept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use opsplane_serve::auth::Principal;
use opsplane_store::{Expect, Store, Written};
use serde_json::{Value, json};

use super::credential::{Caller, scopes_of_principal};
use super::platform::{Refusal, Verified};
use super::{OpsError, answer, schemas};
use crate::api::AppState;

/// The store collection of token records, keyed by `jti`.
pub const COLLECTION: &str = "ops.tokens";

/// How often a conditional write of a record is tried before giving up.
const WRITE_ATTEMPTS: usize = 16;

/// A revoked `jti` never seen before is kept this long (UtilMeta: a day).
const UNKNOWN_REVOKED_FOR: i64 = 86_400;

/// ISO-8601 with `+00:00`, as UtilMeta writes its times.
pub fn iso(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::UTC)
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        })
        .unwrap_or_default()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The token records.
#[derive(Clone)]
pub struct TokenBook {
    store: Arc<dyn Store>,
}

impl TokenBook {
    /// The book in `store`.
    pub fn new(store: Arc<dyn Store>) -> TokenBook {
        TokenBook { store }
    }

    /// Admits a verified token: refused when its `jti` is revoked; else recorded (first use)
    /// or counted (later uses). Writes are conditional on what was read, so a revocation that
    /// lands between the read and the write is never overwritten: the write is retried on the
    /// new record (and then refuses the token).
    pub async fn admit(
        &self,
        token: &Verified,
        issuer: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        let unavailable = |message: String| Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            state: json!(0),
            message,
        };
        for _ in 0..WRITE_ATTEMPTS {
            let now = now();
            let known = self
                .store
                .document(COLLECTION, &token.token_id)
                .await
                .map_err(|e| unavailable(format!("the store failed: {e}")))?;
            let (body, expect) = match known {
                Some(doc) if doc.body["revoked"] == true => {
                    return Err(Refusal {
                        status: StatusCode::BAD_REQUEST,
                        state: json!("token_expired"),
                        message: "Invalid token: revoked".into(),
                    });
                }
                Some(mut doc) => {
                    let used = doc.body["used_times"].as_u64().unwrap_or(0) + 1;
                    doc.body["used_times"] = json!(used);
                    doc.body["last_activity"] = json!(iso(now));
                    if let Some(ip) = ip {
                        doc.body["ip"] = json!(ip.to_string());
                    }
                    (doc.body, Expect::Revision(doc.revision))
                }
                None => (
                    json!({
                        "id": token.token_id,
                        "issuer_id": issuer,
                        "token_id": token.token_id,
                        "issued_at": token.issued_at.map(iso),
                        "subject": token.subject,
                        "expiry_time": iso(token.expires),
                        "last_activity": iso(now),
                        "used_times": 1,
                        "ip": ip.map(|ip| ip.to_string()),
                        "scope": token.scopes,
                        "revoked": false,
                    }),
                    Expect::Absent,
                ),
            };
            match self
                .store
                .put_document(COLLECTION, &token.token_id, &body, expect)
                .await
                .map_err(|e| unavailable(format!("the store failed: {e}")))?
            {
                Written::Done(_) => return Ok(()),
                Written::Conflict(_) => continue,
            }
        }
        Err(unavailable(
            "the token's record changed under every attempt; try again".into(),
        ))
    }

    /// Removes at most `limit` records whose `expiry_time` is before `now` (revoked ones
    /// included: their token is refused by its `exp` anyway), each at the revision read, so a
    /// record touched meanwhile stays for the next round. How many were removed.
    pub async fn prune(&self, now: i64, limit: usize) -> Result<usize, opsplane_store::StoreError> {
        let mut removed = 0;
        for doc in self.store.documents(COLLECTION).await? {
            if removed >= limit {
                break;
            }
            let expired = doc.body["expiry_time"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| t.as_second() < now);
            if expired
                && let Written::Done(_) = self
                    .store
                    .delete_document(COLLECTION, &doc.id, Expect::Revision(doc.revision))
                    .await?
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Every record.
    pub async fn all(&self) -> Result<Vec<Value>, opsplane_store::StoreError> {
        Ok(self
            .store
            .documents(COLLECTION)
            .await?
            .into_iter()
            .map(|d| d.body)
            .collect())
    }

    /// Revokes each of `ids`: the number of known tokens this revoked; unknown ones are
    /// recorded as revoked (so a token presented later is refused). Conditional writes, retried
    /// when a use of the token lands in between.
    pub async fn revoke(&self, ids: &[String]) -> Result<u64, OpsError> {
        let mut revoked = 0;
        'ids: for id in ids {
            for _ in 0..WRITE_ATTEMPTS {
                let (body, expect, known) = match self.store.document(COLLECTION, id).await? {
                    Some(doc) if doc.body["revoked"] == true => continue 'ids,
                    Some(mut doc) => {
                        doc.body["revoked"] = json!(true);
                        (doc.body, Expect::Revision(doc.revision), true)
                    }
                    None => (
                        json!({
                            "id": id, "issuer_id": null, "token_id": id, "issued_at": null,
                            "subject": null, "expiry_time": iso(now() + UNKNOWN_REVOKED_FOR),
                            "last_activity": null, "used_times": 0, "ip": null, "scope": [],
                            "revoked": true,
                        }),
                        Expect::Absent,
                        false,
                    ),
                };
                if let Written::Done(_) = self
                    .store
                    .put_document(COLLECTION, id, &body, expect)
                    .await?
                {
                    revoked += u64::from(known);
                    continue 'ids;
                }
            }
            return Err(OpsError::Coded {
                status: StatusCode::CONFLICT,
                state: "revoke_failed",
                message: format!("token {id} changed under every attempt; try again"),
            });
        }
        Ok(revoked)
    }
}

/// `GET <ops_api>/token/scope`: the caller's scopes (`["*"]` for the local node or an admin).
#[utoipa::path(get, path = "/ops/token/scope", tag = "ops",
    responses((status = 200, description = "the caller's scopes", body = schemas::ScopesAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn scope(
    caller: Option<Extension<Caller>>,
    principal: Option<Extension<Principal>>,
) -> Response {
    let scopes = match caller {
        Some(Extension(caller)) => caller.scopes(),
        None => scopes_of_principal(principal.as_ref().map(|p| &p.0)),
    };
    answer(scopes, 0)
}

/// `GET <ops_api>/token`: the recorded platform tokens, filtered by `id`, `token_id`,
/// `subject`, `ip`, `revoked`. The local node has no supervisor: 404 `supervisor_not_found`.
#[utoipa::path(get, path = "/ops/token", tag = "ops", params(schemas::TokenQuery),
    responses((status = 200, description = "the tokens", body = schemas::TokensAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    if matches!(caller, Some(Extension(Caller::Local))) {
        return Err(OpsError::Coded {
            status: StatusCode::NOT_FOUND,
            state: "supervisor_not_found",
            message: "Supervisor not found".into(),
        });
    }
    let book = TokenBook::new(state.recorder.store().clone());
    let revoked = match query.get("revoked").map(String::as_str) {
        None => None,
        Some("true" | "1") => Some(true),
        Some("false" | "0") => Some(false),
        Some(other) => {
            return Err(OpsError::BadRequest(format!(
                "parse item: ['query'] failed: revoked: {other:?} is not a boolean"
            )));
        }
    };
    let mut tokens: Vec<Value> = book
        .all()
        .await?
        .into_iter()
        .filter(|t| {
            ["id", "token_id", "subject", "ip"].iter().all(|k| {
                query
                    .get(*k)
                    .is_none_or(|v| t[*k].as_str() == Some(v.as_str()))
            }) && revoked.is_none_or(|r| t["revoked"] == r)
        })
        .collect();
    tokens.sort_by(|a, b| {
        b["last_activity"]
            .as_str()
            .cmp(&a["last_activity"].as_str())
    });
    Ok(answer(tokens, 0))
}

/// `POST <ops_api>/token/revoke`: a JSON list of `jti`s; answers how many known tokens it
/// revoked (unknown ones are kept as revoked).
#[utoipa::path(post, path = "/ops/token/revoke", tag = "ops",
    request_body(content = Vec<String>, description = "the `jti`s to revoke", content_type = "application/json"),
    responses((status = 200, description = "how many known tokens were revoked", body = schemas::CountAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn revoke(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, OpsError> {
    let ids: Vec<String> = serde_json::from_slice(&body).map_err(|e| {
        OpsError::BadRequest(format!("the body must be a JSON list of token ids: {e}"))
    })?;
    if ids.iter().any(|id| id.is_empty() || id.len() > 256) {
        return Err(OpsError::BadRequest(
            "a token id is 1 to 256 characters".into(),
        ));
    }
    let book = TokenBook::new(state.recorder.store().clone());
    Ok(answer(book.revoke(&ids).await?, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        let retention = opsplane_store::Retention {
            minutes: 2 * 86_400,
            hours: 90 * 86_400,
            exceptions: 30 * 86_400,
        };
        Arc::new(
            opsplane_store::embedded::EmbeddedStore::open(&dir.path().join("s.redb"), retention)
                .unwrap(),
        )
    }

    fn verified(jti: &str, expires: i64) -> Verified {
        Verified {
            token_id: jti.into(),
            subject: None,
            issued_at: Some(expires - 600),
            expires,
            scopes: vec!["api.view".into()],
        }
    }

    #[tokio::test]
    async fn expired_token_records_are_pruned_a_bounded_number_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let book = TokenBook::new(store(&dir));
        let now = jiff::Timestamp::now().as_second();
        for i in 0..5 {
            book.admit(&verified(&format!("old-{i}"), now - 10 - i), "spv", None)
                .await
                .unwrap();
        }
        book.admit(&verified("live", now + 600), "spv", None)
            .await
            .unwrap();
        // Revoked but never seen: kept for a day.
        book.revoke(&["unseen".into(), "old-0".into()])
            .await
            .unwrap();
        assert_eq!(book.prune(now, 3).await.unwrap(), 3, "at most the limit");
        assert_eq!(book.prune(now, 3).await.unwrap(), 2);
        assert_eq!(book.prune(now, 3).await.unwrap(), 0);
        let mut left: Vec<String> = book
            .all()
            .await
            .unwrap()
            .iter()
            .map(|t| t["token_id"].as_str().unwrap().to_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["live", "unseen"]);
        // A live token keeps working after a prune; the revoked unseen one stays refused.
        assert!(
            book.admit(&verified("live", now + 600), "spv", None)
                .await
                .is_ok()
        );
        assert!(
            book.admit(&verified("unseen", now + 600), "spv", None)
                .await
                .is_err()
        );
    }
}
