//! The operator's side of authentication: the credentials and limits its configuration names
//! ([`guard`]), the metric store as the rate limiter's counter (Redis shared by every replica),
//! and Kubernetes tokens checked with TokenReview / SubjectAccessReview ([`KubeReviewer`]).

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use opsplane_serve::auth::{Access, Auth, Credentials, Grant, Principal, Reviewer, Role, Scheme};
use opsplane_serve::bearer::BearerToken;
use opsplane_serve::guard::Guard;
use opsplane_serve::ratelimit::{Counter, Hit, Limits};
use opsplane_store::Store;

use crate::config::AuthArgs;
use crate::metrics::Metrics;

/// The rate limiter's counter in the metric store.
struct StoreCounter(Arc<dyn Store>);

impl Counter for StoreCounter {
    fn hit<'a>(
        &'a self,
        key: &'a str,
        window_secs: u64,
        now: i64,
    ) -> BoxFuture<'a, Result<Hit, String>> {
        Box::pin(async move {
            self.0
                .rate_hit(key, window_secs, now)
                .await
                .map(|h| Hit {
                    count: h.count,
                    reset: h.reset,
                })
                .map_err(|e| e.to_string())
        })
    }
}

/// TokenReview and SubjectAccessReview against the cluster's API server. The operator's
/// ServiceAccount needs `create` on `tokenreviews` and `subjectaccessreviews` (the chart grants
/// exactly that).
pub struct KubeReviewer {
    client: kube::Client,
}

impl KubeReviewer {
    /// A reviewer asking the API server `client` talks to.
    pub fn new(client: kube::Client) -> KubeReviewer {
        KubeReviewer { client }
    }
}

impl Reviewer for KubeReviewer {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<Principal>, String>> {
        Box::pin(async move {
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: token.to_owned(),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| format!("TokenReview: {e}"))?;
            let status = answer.status.unwrap_or_default();
            if status.authenticated != Some(true) {
                return Ok(None);
            }
            let user = status.user.unwrap_or_default();
            Ok(Some(Principal {
                name: user.username.unwrap_or_default(),
                scheme: Scheme::Kubernetes,
                grant: Grant::Kubernetes {
                    groups: user.groups.unwrap_or_default(),
                    uid: user.uid.unwrap_or_default(),
                },
            }))
        })
    }

    fn authorize<'a>(
        &'a self,
        principal: &'a Principal,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let (groups, uid) = match &principal.grant {
                Grant::Kubernetes { groups, uid } => (groups.clone(), uid.clone()),
                Grant::Role(_) | Grant::Scopes(_) => return Ok(false),
            };
            let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(principal.name.clone()),
                    groups: Some(groups),
                    uid: Some(uid),
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(opsplane_resources::GROUP.to_owned()),
                        resource: Some(access.resource.to_owned()),
                        verb: Some(access.verb.to_owned()),
                        namespace: access.namespace.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| format!("SubjectAccessReview: {e}"))?;
            Ok(answer.status.is_some_and(|s| s.allowed))
        })
    }
}

/// The guard of every API: `admin` (`OPSPLANE_TOKEN`) and the configured credentials, the
/// configured limits counted in `store`, and `reviewer` for Kubernetes tokens.
pub fn guard(
    args: &AuthArgs,
    public_reads: bool,
    admin: &BearerToken,
    reviewer: Option<Arc<dyn Reviewer>>,
    store: Arc<dyn Store>,
    metrics: &Metrics,
) -> anyhow::Result<Guard> {
    let mut credentials = Credentials::default();
    credentials.add_token("admin", Role::Admin, admin.expose());
    if let Some(raw) = &args.report_token {
        let token = BearerToken::from_config(raw)
            .map_err(|_| anyhow::anyhow!("OPSPLANE_REPORT_TOKEN / --report-token is empty"))?;
        if token.was_trimmed() {
            tracing::warn!("OPSPLANE_REPORT_TOKEN has white space around it; it was removed");
        }
        credentials.add_token("node-daemon", Role::Reporter, token.expose());
    }
    if let Some(path) = &args.tokens_file {
        credentials.load_tokens(path)?;
    }
    if let Some(path) = &args.users_file {
        credentials.load_users(path)?;
    }
    if let Some(path) = &args.hmac_file {
        credentials.load_hmac(path)?;
    }
    let mut limits = Limits::parse(&args.rate_limit)
        .map_err(|e| anyhow::anyhow!("--rate-limit: {e}"))?
        .with_auth_failures(&args.auth_failure_limit)
        .map_err(|e| anyhow::anyhow!("--auth-failure-limit: {e}"))?;
    limits.on_error = args.rate_limit_on_error;
    limits.trusted_proxies = args.trusted_proxies.clone();
    let counter: Arc<dyn Counter> = Arc::new(StoreCounter(store));
    let guard = Guard::new(
        Auth::new(credentials, reviewer, public_reads),
        limits,
        Some(counter),
        metrics.registry(),
    )?;
    guard.limit_in_flight(args.max_in_flight);
    Ok(guard)
}
