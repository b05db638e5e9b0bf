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
}

impl OpsCredential {
    /// The scheme of `ops`, recording tokens in `store`.
    pub fn new(ops: Ops, store: Arc<dyn Store>) -> OpsCredential {
        OpsCredential {
            ops,
            book: tokens::TokenBook::new(store),
        }
    }

    fn refuse(refusal: Refusal) -> Response {
        super::envelope_with_state(refusal.status, &refusal.message, refusal.state)
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
                Claim::Local => (Caller::Local, "utilmeta:local".to_owned()),
                Claim::Token { token, node } => {
                    let now = jiff::Timestamp::now().as_second();
                    let verified =
                        platform::verify(platform.supervisor.as_ref(), node.as_deref(), token, now)
                            .map_err(Self::refuse)?;
                    let issuer = platform
                        .supervisor
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
