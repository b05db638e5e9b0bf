//! The auth and rate-limit layer every API route goes through (part of [`crate::observe::Api`]):
//! each route declares its permission once, as a [`Rule`] in its API's table, and a request
//! for a method no rule declares is answered 405 with `Allow` before any handler runs — so a
//! route without a declared permission cannot be reached (fail closed).
//!
//! Order of work per request: the route's rule → a blocked client (too many failed logins) is
//! refused → the credential is checked (401; failures counted per IP) → the client's rate limit
//! is counted (429) → the principal's permission is checked (403) → a place among the route's
//! requests in flight is taken (503 at once when they are all taken: load is shed instead of
//! queued without end) → the handler runs with the [`Principal`] in its request extensions.
//!
//! An API may bring a credential scheme of its own ([`ApiCredential`]; the ops API's platform
//! tokens, seed 000): its router puts an [`ApiScheme`] into each request's extensions (a layer
//! outside [`crate::observe::Api::wrap`]), and the scheme is asked first. It either leaves the
//! request to the binary's own schemes, or authenticates *and* authorises it for the route (the
//! role check is then skipped), or refuses it with an answer in its API's envelope.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::RequestExt;
use axum::body::Body;
use axum::extract::{ConnectInfo, RawPathParams, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use prometheus::{IntCounterVec, Opts, Registry};

use crate::auth::{Access, Auth, AuthError, Grant, Principal};
use crate::ratelimit::{Blocked, Counter, Limits, OnError, WarnOnce};

/// One route's permission: `method` on `route` (the path as the router declares it, with
/// its prefix: `/api/v1/services/{namespace}/{name}`) needs `access`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The method.
    pub method: Method,
    /// The route template.
    pub route: &'static str,
    /// What it needs.
    pub access: Access,
}

impl Rule {
    /// `method route` needs `access`.
    pub fn new(method: Method, route: &'static str, access: Access) -> Rule {
        Rule {
            method,
            route,
            access,
        }
    }
}

/// A credential scheme of one API, asked before the binary's own [`Auth`] (see the module
/// docs). Implementations must never panic on what a request presents.
pub trait ApiCredential: Send + Sync {
    /// What the request whose head is `parts`, matched to `route`, presents:
    /// - `Ok(None)`: nothing of this scheme; the binary's schemes decide;
    /// - `Ok(Some(principal))`: authenticated and allowed `parts.method` on `route` (the scheme
    ///   may leave what handlers need in `parts.extensions`);
    /// - `Err(answer)`: refused with `answer` (status and body of the API's own envelope).
    fn check<'a>(
        &'a self,
        parts: &'a mut axum::http::request::Parts,
        route: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<Principal>, Response>>;
}

/// The request extension through which an API's router hands the layer its own scheme.
#[derive(Clone)]
pub struct ApiScheme(pub Arc<dyn ApiCredential>);

/// The counters of the layer.
#[derive(Clone)]
struct GuardMetrics {
    refused: IntCounterVec,
    limiter_errors: prometheus::IntCounter,
}

/// Authentication, rate limits and their counters, shared by every API of a binary.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

struct Inner {
    in_flight: std::sync::OnceLock<InFlight>,
    auth: Auth,
    limits: Limits,
    counter: Option<Arc<dyn Counter>>,
    blocked: Blocked,
    warn: WarnOnce,
    metrics: GuardMetrics,
}

/// The bound on requests in flight per route: each route has its own places, so an overloaded
/// route (a heavy query) sheds its own load without starving the others.
struct InFlight {
    limit: u32,
    routes: std::sync::RwLock<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl InFlight {
    /// A place for a request of `route`, or `None` when all are taken.
    fn enter(&self, route: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let found = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(route)
            .cloned();
        let places = match found {
            Some(places) => places,
            None => self
                .routes
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(route.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.limit as usize)))
                .clone(),
        };
        places.try_acquire_owned().ok()
    }
}

/// What the layer decided about a request before its handler.
pub(crate) enum Verdict {
    /// Run the handler, holding the place in flight until it ends; add these rate-limit
    /// headers to the answer.
    Pass(
        Box<Request>,
        Option<RateHeaders>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ),
    /// Answer this instead (status, message, extra headers).
    Refuse(StatusCode, String, Vec<(header::HeaderName, HeaderValue)>),
    /// Answer this, already rendered by the API's own scheme.
    Answer(Response),
}

/// `X-RateLimit-*` values of one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateHeaders {
    limit: u64,
    remaining: u64,
    reset: i64,
}

impl RateHeaders {
    fn pairs(self) -> Vec<(header::HeaderName, HeaderValue)> {
        vec![
            (
                header::HeaderName::from_static("x-ratelimit-limit"),
                HeaderValue::from(self.limit),
            ),
            (
                header::HeaderName::from_static("x-ratelimit-remaining"),
                HeaderValue::from(self.remaining),
            ),
            (
                header::HeaderName::from_static("x-ratelimit-reset"),
                HeaderValue::from(self.reset),
            ),
        ]
    }

    pub(crate) fn apply(self, response: &mut Response) {
        for (name, value) in self.pairs() {
            response.headers_mut().insert(name, value);
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Largest body read to check an HMAC signature.
const MAX_SIGNED_BODY: usize = 16 * 1024 * 1024;

impl Guard {
    /// A guard over `auth` and `limits`, counting in `counter` (no counter: no rate limits),
    /// registering its metrics in `registry`.
    pub fn new(
        auth: Auth,
        limits: Limits,
        counter: Option<Arc<dyn Counter>>,
        registry: &Registry,
    ) -> Result<Guard, prometheus::Error> {
        let refused = IntCounterVec::new(
            Opts::new(
                "opsplane_http_refused_total",
                "Requests refused before their handler, by API and reason (unauthenticated, forbidden, rate_limited, blocked, overloaded)",
            ),
            &["api", "reason"],
        )?;
        let limiter_errors = prometheus::IntCounter::new(
            "opsplane_ratelimit_errors_total",
            "Requests whose rate limit could not be counted (the store was unreachable)",
        )?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(limiter_errors.clone()))?;
        Ok(Guard {
            inner: Arc::new(Inner {
                in_flight: std::sync::OnceLock::new(),
                auth,
                limits,
                counter,
                blocked: Blocked::default(),
                warn: WarnOnce::default(),
                metrics: GuardMetrics {
                    refused,
                    limiter_errors,
                },
            }),
        })
    }

    /// Bounds the requests in flight of each route to `limit` (0: no bound); beyond it a request
    /// is answered 503 with `Retry-After: 1` at once, counted as `overloaded`. Health and other
    /// public routes are never bounded. Set once, at start; later calls change nothing.
    pub fn limit_in_flight(&self, limit: u32) {
        if limit > 0 {
            let _ = self.inner.in_flight.set(InFlight {
                limit,
                routes: Default::default(),
            });
        }
    }

    /// The authentication and authorisation the layer uses, for handlers that decide a further
    /// permission themselves (a disruptive NodeTask on a route operators may write).
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    fn refuse(
        &self,
        api: &str,
        reason: &str,
        status: StatusCode,
        message: String,
        headers: Vec<(header::HeaderName, HeaderValue)>,
    ) -> Verdict {
        self.inner
            .metrics
            .refused
            .with_label_values(&[api, reason])
            .inc();
        Verdict::Refuse(status, message, headers)
    }

    /// Decides about `request`, matched to `route` of API `api` whose rules are `rules`.
    pub(crate) async fn check(
        &self,
        api: &str,
        rules: &[Rule],
        route: &str,
        request: Request,
    ) -> Verdict {
        let inner = &self.inner;
        let method = request.method().clone();
        let declared = |m: &Method| {
            rules
                .iter()
                .find(|r| r.route == route && r.method == *m)
                .or_else(|| {
                    // HEAD is answered by the GET handler (axum does), with GET's permission.
                    (m == Method::HEAD)
                        .then(|| {
                            rules
                                .iter()
                                .find(|r| r.route == route && r.method == Method::GET)
                        })
                        .flatten()
                })
        };
        let Some(rule) = declared(&method) else {
            let mut allowed: Vec<&str> = rules
                .iter()
                .filter(|r| r.route == route)
                .map(|r| r.method.as_str())
                .collect();
            if allowed.contains(&"GET") && !allowed.contains(&"HEAD") {
                allowed.push("HEAD");
            }
            let allow = allowed.join(", ");
            return Verdict::Refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {route}: use {allow}"),
                vec![(
                    header::ALLOW,
                    HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("")),
                )],
            );
        };
        // Health and the like: no credential is read, nothing is counted.
        if rule.access.need == crate::auth::Need::Public {
            return Verdict::Pass(Box::new(request), None, None);
        }
        let mut request = request;
        let namespace = request
            .extract_parts::<RawPathParams>()
            .await
            .ok()
            .and_then(|params| {
                params
                    .iter()
                    .find(|(k, _)| *k == "namespace")
                    .map(|(_, v)| v.to_owned())
            });
        let access = rule.access.clone().in_namespace(namespace.as_deref());
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let ip = inner.limits.client_ip(peer, request.headers());
        let now = now_secs();
        let has_credential = !matches!(
            crate::auth::presented(request.headers()),
            crate::auth::Presented::None
        );
        if let Some(ip) = ip
            && has_credential
            && let Some(end) = inner.blocked.until(ip, now)
        {
            return self.refuse(
                api,
                "blocked",
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed authentications from this address; try again later".into(),
                vec![(header::RETRY_AFTER, HeaderValue::from((end - now).max(1)))],
            );
        }
        // HMAC signs the body: read it (bounded) and put it back for the handler.
        let mut body_bytes = axum::body::Bytes::new();
        if inner.auth.needs_body(request.headers()) {
            let (parts, body) = request.into_parts();
            body_bytes = match axum::body::to_bytes(body, MAX_SIGNED_BODY).await {
                Ok(bytes) => bytes,
                Err(_) => {
                    return Verdict::Refuse(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("a signed body may be at most {MAX_SIGNED_BODY} bytes"),
                        Vec::new(),
                    );
                }
            };
            request = Request::from_parts(parts, Body::from(body_bytes.clone()));
        }
        // The API's own scheme first: it may claim the request (and then has checked its
        // permission too).
        let mut by_api_scheme = false;
        let mut principal = None;
        if let Some(ApiScheme(scheme)) = request.extensions().get::<ApiScheme>().cloned() {
            let (mut parts, body) = request.into_parts();
            let outcome = scheme.check(&mut parts, route).await;
            request = Request::from_parts(parts, body);
            match outcome {
                Ok(Some(p)) => {
                    by_api_scheme = true;
                    principal = Some(p);
                }
                Ok(None) => {}
                Err(answer) => {
                    let reason = if answer.status() == StatusCode::FORBIDDEN {
                        "forbidden"
                    } else {
                        "unauthenticated"
                    };
                    self.inner
                        .metrics
                        .refused
                        .with_label_values(&[api, reason])
                        .inc();
                    return Verdict::Answer(answer);
                }
            }
        }
        let authenticated = if by_api_scheme {
            Ok(principal)
        } else {
            inner
                .auth
                .authenticate(request.headers(), &body_bytes)
                .await
        };
        let principal = match authenticated {
            Ok(p) => p,
            Err(AuthError::Unauthenticated(why)) => {
                return self.failed_login(api, ip, now, why).await;
            }
            Err(e @ AuthError::Unavailable(_)) => {
                return self.refuse(
                    api,
                    "unavailable",
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.to_string(),
                    Vec::new(),
                );
            }
            Err(e @ AuthError::Forbidden { .. }) => {
                return self.refuse(
                    api,
                    "forbidden",
                    StatusCode::FORBIDDEN,
                    e.to_string(),
                    Vec::new(),
                );
            }
        };
        if principal.is_none() && !inner.auth.is_open(access.need) {
            return self.refuse(
                api,
                "unauthenticated",
                StatusCode::UNAUTHORIZED,
                format!(
                    "authentication required: send Authorization: Bearer <token> (or another enabled scheme: {})",
                    inner.auth.challenge()
                ),
                vec![self.challenge()],
            );
        }
        let rate = match self.count(&method, principal.as_ref(), ip, now).await {
            Ok(rate) => rate,
            Err(verdict) => return verdict,
        };
        if let Some(rate) = rate
            && rate.over
        {
            let mut headers = rate.headers.pairs();
            headers.push((
                header::RETRY_AFTER,
                HeaderValue::from((rate.headers.reset - now).max(1)),
            ));
            return self.refuse(
                api,
                "rate_limited",
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "rate limit exceeded: {} {method} requests per {} s; try again after the window resets",
                    rate.headers.limit, rate.window
                ),
                headers,
            );
        }
        if let Some(principal) = &principal
            && !by_api_scheme
            && let Err(e) = inner.auth.authorize(principal, &access).await
        {
            let status = match e {
                AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::FORBIDDEN,
            };
            let mut headers = Vec::new();
            if let Some(rate) = rate {
                headers = rate.headers.pairs();
            }
            return self.refuse(api, "forbidden", status, e.to_string(), headers);
        }
        let place = match inner.in_flight.get() {
            None => None,
            Some(in_flight) => match in_flight.enter(route) {
                Some(place) => Some(place),
                None => {
                    let mut headers = rate.map(|r| r.headers.pairs()).unwrap_or_default();
                    headers.push((header::RETRY_AFTER, HeaderValue::from(1)));
                    return self.refuse(
                        api,
                        "overloaded",
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "overloaded: {} requests of {route} are in flight already; try again shortly",
                            in_flight.limit
                        ),
                        headers,
                    );
                }
            },
        };
        if let Some(principal) = principal {
            request.extensions_mut().insert(principal);
        }
        Verdict::Pass(Box::new(request), rate.map(|r| r.headers), place)
    }

    fn challenge(&self) -> (header::HeaderName, HeaderValue) {
        (
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&self.inner.auth.challenge())
                .unwrap_or(HeaderValue::from_static("Bearer realm=\"opsplane\"")),
        )
    }

    /// A credential no scheme accepted: 401, or 429 once the address failed too often.
    async fn failed_login(
        &self,
        api: &str,
        ip: Option<std::net::IpAddr>,
        now: i64,
        why: String,
    ) -> Verdict {
        let inner = &self.inner;
        if let (Some(ip), Some(counter)) = (ip, &inner.counter) {
            let limit = inner.limits.auth_failures;
            let key = format!("authfail:{ip}");
            if let Ok(hit) = counter.hit(&key, limit.window.as_secs(), now).await
                && hit.count > limit.count
            {
                inner.blocked.block(ip, hit.reset);
                return self.refuse(
                    api,
                    "blocked",
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed authentications from this address; try again later".into(),
                    vec![(
                        header::RETRY_AFTER,
                        HeaderValue::from((hit.reset - now).max(1)),
                    )],
                );
            }
        }
        self.refuse(
            api,
            "unauthenticated",
            StatusCode::UNAUTHORIZED,
            format!("authentication failed: {why}"),
            vec![self.challenge()],
        )
    }

    /// Counts the request against its client's limit. `Ok(None)`: the method is not limited.
    async fn count(
        &self,
        method: &Method,
        principal: Option<&Principal>,
        ip: Option<std::net::IpAddr>,
        now: i64,
    ) -> Result<Option<Counted>, Verdict> {
        let inner = &self.inner;
        let Some(counter) = &inner.counter else {
            return Ok(None);
        };
        let role = principal.and_then(|p| match &p.grant {
            Grant::Role(r) => Some(*r),
            Grant::Kubernetes { .. } | Grant::Scopes(_) => None,
        });
        let Some(limit) = inner.limits.limit(role, method) else {
            return Ok(None);
        };
        let client = match (principal, ip) {
            (Some(p), _) => format!("u:{}", p.name),
            (None, Some(ip)) => format!("ip:{ip}"),
            (None, None) => "ip:unknown".to_owned(),
        };
        let key = format!("{client}:{method}");
        match counter.hit(&key, limit.window.as_secs(), now).await {
            Ok(hit) => Ok(Some(Counted {
                headers: RateHeaders {
                    limit: limit.count,
                    remaining: limit.count.saturating_sub(hit.count),
                    reset: hit.reset,
                },
                over: hit.count > limit.count,
                window: limit.window.as_secs(),
            })),
            Err(error) => {
                inner.metrics.limiter_errors.inc();
                if inner.warn.due() {
                    tracing::warn!(%error, on_error = ?inner.limits.on_error, "cannot count a rate limit");
                }
                match inner.limits.on_error {
                    OnError::Open => Ok(None),
                    OnError::Closed => Err(Verdict::Refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the rate limiter cannot reach its store; try again later".into(),
                        Vec::new(),
                    )),
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Counted {
    headers: RateHeaders,
    over: bool,
    window: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Credentials, Need, Role, Scheme};
    use crate::observe::{Api, RequestMetrics};
    use axum::Router;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use tower::ServiceExt;

    /// Claims requests with `x-test`: `ok` authenticates (and leaves a note for the handler),
    /// anything else is refused with a 418 of its own.
    struct TestScheme;

    impl ApiCredential for TestScheme {
        fn check<'a>(
            &'a self,
            parts: &'a mut axum::http::request::Parts,
            route: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Option<Principal>, Response>> {
            Box::pin(async move {
                match parts.headers.get("x-test").and_then(|v| v.to_str().ok()) {
                    None => Ok(None),
                    Some("ok") => {
                        parts.extensions.insert(format!("checked {route}"));
                        Ok(Some(Principal {
                            name: "platform".into(),
                            scheme: Scheme::Api("test"),
                            grant: Grant::Scopes(vec!["a".into()]),
                        }))
                    }
                    Some(_) => {
                        Err((StatusCode::IM_A_TEAPOT, "refused by the scheme").into_response())
                    }
                }
            })
        }
    }

    fn app() -> Router {
        let registry = Registry::new();
        let mut credentials = Credentials::default();
        credentials.add_token("admin", Role::Admin, "admin-token");
        credentials.add_token("viewer", Role::Viewer, "viewer-token");
        let guard = Guard::new(
            Auth::new(credentials, None, false),
            Limits::parse("off").unwrap(),
            None,
            &registry,
        )
        .unwrap();
        let rules = vec![Rule::new(
            Method::GET,
            "/admin",
            Access::new(Need::Admin, "x", "get"),
        )];
        let api = Api {
            name: "test",
            metrics: RequestMetrics::register(&registry).unwrap(),
            timeout: std::time::Duration::from_secs(5),
            envelope: |status, message| (status, format!("envelope: {message}")).into_response(),
            guard: Some((guard, rules.into())),
        };
        let routes =
            Router::new().route(
                "/admin",
                get(
                    |principal: axum::Extension<Principal>,
                     note: Option<axum::Extension<String>>| async move {
                        format!(
                            "{} {}",
                            principal.name,
                            note.map(|n| n.0).unwrap_or_default()
                        )
                    },
                ),
            );
        api.wrap(routes)
            .layer(axum::Extension(ApiScheme(Arc::new(TestScheme))))
    }

    async fn call(headers: &[(&str, &str)]) -> (StatusCode, String) {
        let mut request = Request::get("/admin");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = app()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn an_apis_own_scheme_is_asked_first_and_its_verdict_stands() {
        // Claimed and allowed: the role check is the scheme's, the handler sees its principal.
        assert_eq!(
            call(&[("x-test", "ok")]).await,
            (StatusCode::OK, "platform checked /admin".into())
        );
        // Claimed and refused: the scheme's own answer, as it made it.
        assert_eq!(
            call(&[("x-test", "no"), ("authorization", "Bearer admin-token")]).await,
            (StatusCode::IM_A_TEAPOT, "refused by the scheme".into())
        );
        // Not claimed: the binary's schemes and roles, as before.
        assert_eq!(
            call(&[("authorization", "Bearer admin-token")]).await,
            (StatusCode::OK, "admin ".into())
        );
        assert_eq!(
            call(&[("authorization", "Bearer viewer-token")]).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(call(&[]).await.0, StatusCode::UNAUTHORIZED);
    }
}
