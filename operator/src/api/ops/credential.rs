//! The ops API's own credential scheme in the guard ([`opsplane_serve::guard::ApiCredential`]):
//! the platform's signed tokens and the local node ([`super::platform`] decides; the token
//! book in [`super::tokens`] refuses revoked ones and counts uses). It leaves every other
//! request to opsplane's own schemes, and puts the [`Caller`] of a platform request into its
//! extensions for the handlers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::response::Response;
use futures::future::BoxFuture;
use opsplane_serve::auth::{Grant, Principal, Role, Scheme};
use opsplane_serve::guard::ApiCredential;
use opsplane_store::Store;

use super::platform::{self, Claim, Refusal};
use super::{Ops, tokens};

/// Who is calling an ops route through the platform's credentials.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    /// A verified platform token.
    Token {
        /// Its `jti`.
        token_id: String,
        /// Its scopes.
        scopes: Vec<String>,
        /// The stored supervisor record that signed it (`None`: the flag-configured one).
        supervisor: Option<String>,
        /// The node id the token was presented for.
        node_id: String,
    },
    /// The local node (every scope).
    Local,
}

impl Caller {
    /// The scopes of the caller.
    pub fn scopes(&self) -> Vec<String> {
        match self {
            Caller::Token { scopes, .. } => scopes.clone(),
            Caller::Local => vec![platform::ALL_SCOPES.to_owned()],
        }
    }
}

/// The UtilMeta scopes an opsplane principal holds on the ops API: an admin all of them, a
/// viewer or operator the reads (the ops API has no other writes than revoking tokens).
pub fn scopes_of_principal(principal: Option<&Principal>) -> Vec<String> {
    let role = match principal.map(|p| &p.grant) {
        Some(Grant::Role(role)) => Some(*role),
        Some(Grant::Scopes(scopes)) => return scopes.clone(),
        // A Kubernetes user passed RBAC for this read; what else it may do is RBAC's to say.
        Some(Grant::Kubernetes { .. }) => Some(Role::Viewer),
        None => None,
    };
    match role {
        Some(Role::Admin) => vec![platform::ALL_SCOPES.to_owned()],
        Some(Role::Viewer | Role::Operator) => [
            "api.view",
            "data.view",
            "data.query",
            "log.view",
            "metrics.view",
            "token.view",
        ]
        .map(str::to_owned)
        .to_vec(),
        // Public reads: what the route needed, nothing more is known.
        _ => Vec::new(),
    }
}

/// The scheme: the ops routes' scopes, the supervisor, the token book.
pub struct OpsCredential {
    ops: Ops,
    book: tokens::TokenBook,
    store: Arc<dyn Store>,
}

impl OpsCredential {
    /// The scheme of `ops`, recording tokens in `store`.
    pub fn new(ops: Ops, store: Arc<dyn Store>) -> OpsCredential {
        OpsCredential {
            ops,
            book: tokens::TokenBook::new(store.clone()),
            store,
        }
    }

    fn refuse(refusal: Refusal) -> Response {
        super::envelope_with_state(refusal.status, &refusal.message, refusal.state)
    }

    /// The supervisor whose key verifies a token for `node`: the flag-configured one when it
    /// has that node id, else the connected, enabled store record with it (and its id).
    async fn supervisor_of(
        &self,
        node: Option<&str>,
    ) -> Result<(Option<platform::Supervisor>, Option<String>), Response> {
        let Some(node) = node.filter(|n| !n.is_empty()) else {
            return Ok((None, None));
        };
        if let Some(s) = self.ops.platform.supervisor.as_ref()
            && s.node_id == node
        {
            return Ok((Some(s.clone()), None));
        }
        let records = opsplane_store::supervisors::list(&*self.store)
            .await
            .map_err(|e| {
                Self::refuse(Refusal {
                    status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    state: serde_json::json!(0),
                    message: format!("the store failed: {e}"),
                })
            })?;
        Ok(records
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| r.connected && !r.disabled && r.node_id.as_deref() == Some(node))
            .find_map(|r| {
                let key = r.public_key.as_deref()?;
                platform::Supervisor::from_jwk(node, &r.base_url, key).map(|s| (s, r.id.clone()))
            })
            .map(|(s, id)| (Some(s), Some(id)))
            .unwrap_or((None, None)))
    }
}

impl ApiCredential for OpsCredential {
    fn check<'a>(
        &'a self,
        parts: &'a mut Parts,
        route: &'a str,
    ) -> BoxFuture<'a, Result<Option<Principal>, Response>> {
        Box::pin(async move {
            let peer = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            let platform = &self.ops.platform;
            let claim =
                platform::claims_request(&parts.headers, parts.uri.query(), peer, platform.local);
            let (caller, name) = match claim {
                Claim::Opsplane => return Ok(None),
                Claim::Local => {
                    if let Some(key) = &platform.connection_key {
                        key.check(&parts.headers).map_err(Self::refuse)?;
                    }
                    (Caller::Local, "utilmeta:local".to_owned())
                }
                Claim::Token { token, node } => {
                    let now = jiff::Timestamp::now().as_second();
                    let (supervisor, record) = self.supervisor_of(node.as_deref()).await?;
                    let verified =
                        platform::verify(supervisor.as_ref(), node.as_deref(), token, now)
                            .map_err(Self::refuse)?;
                    let issuer = supervisor
                        .as_ref()
                        .map(|s| s.base_url.as_str())
                        .unwrap_or_default();
                    self.book
                        .admit(&verified, issuer, peer)
                        .await
                        .map_err(Self::refuse)?;
                    let name = format!(
                        "utilmeta:{}",
                        verified.subject.as_deref().unwrap_or(&verified.token_id)
                    );
                    (
                        Caller::Token {
                            token_id: verified.token_id,
                            scopes: verified.scopes,
                            supervisor: record,
                            node_id: node.unwrap_or_default(),
                        },
                        name,
                    )
                }
            };
            let scope = self.ops.scope_of(&parts.method, route).unwrap_or(Some("*"));
            let scopes = caller.scopes();
            if !platform::grants(&scopes, scope) {
                return Err(Self::refuse(Refusal::insufficient_scope()));
            }
            parts.extensions.insert(caller);
            Ok(Some(Principal {
                name,
                scheme: Scheme::Api("utilmeta"),
                grant: Grant::Scopes(scopes),
            }))
        })
    }
}
