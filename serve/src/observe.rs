//! What every request of both binaries goes through, as tower layers rather than code in
//! handlers (axum's `key-value-store` and `prometheus-metrics` examples):
//!
//! - [`outer`]: an `x-request-id` (kept when the client sent one, else a new UUID, echoed in
//!   the response) and a trace span per request carrying it, method and path.
//! - [`Api::wrap`]: per API router — request metrics by API, matched route, method and status
//!   (`opsplane_http_requests_total`, `opsplane_http_request_duration_seconds`), a request
//!   timeout answered in that API's own error envelope, and the logging of failed requests.
//!
//! Handlers' errors do not log themselves (a `From` or `IntoResponse` with a side effect is a
//! trap, as axum's `error-handling` example says): an error that should be logged puts a
//! [`Failure`] into its response, and the layer logs it once, inside the request's span.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::guard::{Guard, Rule, Verdict};

/// The header that carries the request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route label of a request that matched no route of its API.
pub const UNMATCHED: &str = "unmatched";

/// Request counters and latency histograms of one process.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl RequestMetrics {
    /// Creates the request metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<RequestMetrics, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "opsplane_http_requests_total",
                "HTTP requests by API, matched route, method and status code",
            ),
            &["api", "route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "opsplane_http_request_duration_seconds",
                "Time from a request's arrival to its response head, by API, matched route and method",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["api", "route", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(RequestMetrics { requests, duration })
    }

    fn observe(&self, api: &str, route: &str, method: &str, status: StatusCode, took: Duration) {
        self.requests
            .with_label_values(&[api, route, method, status.as_str()])
            .inc();
        self.duration
            .with_label_values(&[api, route, method])
            .observe(took.as_secs_f64());
    }
}

/// Methods are labelled by name only when HTTP defines them, so a client cannot grow the
/// metric's label set without end.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Why a request failed, left in its response by the error that rendered it, so that the
/// API layer logs it once (with the request's span) instead of the error logging itself.
#[derive(Debug, Clone)]
pub struct Failure(pub Arc<str>);

impl Failure {
    /// Attaches `error` and its whole `source()` chain (`a: b: c`) to `response`.
    pub fn attach(response: &mut Response, error: &(dyn std::error::Error + 'static)) {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            // thiserror's `{0}` formats often repeat their source; say each part once.
            if !text.ends_with(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        response.extensions_mut().insert(Failure(text.into()));
    }
}

/// Renders an error in an API's own envelope (status, message).
pub type Envelope = fn(StatusCode, &str) -> Response;

/// The layers of one API router.
#[derive(Clone)]
pub struct Api {
    /// The `api` label: `eve`, `monitoring`, `node`, ...
    pub name: &'static str,
    /// Where requests are counted.
    pub metrics: RequestMetrics,
    /// Longest a handler may take before the request is answered with 503.
    pub timeout: Duration,
    /// The API's error envelope, for the answers of the layer itself (timeouts, 401, 403,
    /// 405, 429).
    pub envelope: Envelope,
    /// Authentication and rate limits with this API's permission table; `None` serves every
    /// route to anyone (tests of the layer alone).
    pub guard: Option<(Guard, Arc<[Rule]>)>,
}

impl Api {
    /// `router` with this API's metrics, timeout and failure logging on every route and on its
    /// fallback. Apply it to the API's own router, before nesting it.
    pub fn wrap<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        router.layer(middleware::from_fn_with_state(self, track))
    }
}

async fn track(State(api): State<Api>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let route = route.as_deref().unwrap_or(UNMATCHED).to_owned();
    let method = method_label(request.method());
    let start = Instant::now();
    // `_place`: the request's place among its route's requests in flight, held until it ends.
    let (request, rate, _place) = match (&api.guard, route != UNMATCHED) {
        (Some((guard, rules)), true) => match guard.check(api.name, rules, &route, request).await {
            Verdict::Pass(request, rate, place) => (*request, rate, place),
            Verdict::Answer(response) => {
                api.metrics
                    .observe(api.name, &route, method, response.status(), start.elapsed());
                return response;
            }
            Verdict::Refuse(status, message, headers) => {
                let mut response = (api.envelope)(status, &message);
                response.headers_mut().extend(headers);
                api.metrics
                    .observe(api.name, &route, method, status, start.elapsed());
                return response;
            }
        },
        _ => (request, None, None),
    };
    let mut response = match tokio::time::timeout(api.timeout, next.run(request)).await {
        Ok(response) => into_envelope(response, api.envelope).await,
        Err(_) => {
            let message = format!(
                "the request did not complete within {} s; it was abandoned",
                api.timeout.as_secs_f64()
            );
            let mut response = (api.envelope)(StatusCode::SERVICE_UNAVAILABLE, &message);
            response
                .extensions_mut()
                .insert(Failure(message.as_str().into()));
            response
        }
    };
    if let Some(rate) = rate {
        rate.apply(&mut response);
    }
    let status = response.status();
    api.metrics
        .observe(api.name, &route, method, status, start.elapsed());
    if let Some(Failure(why)) = response.extensions().get::<Failure>() {
        if status.is_server_error() {
            tracing::warn!(api = api.name, %route, status = status.as_u16(), error = %why, "request failed");
        } else {
            tracing::info!(api = api.name, %route, status = status.as_u16(), error = %why, "request refused");
        }
    }
    response
}

/// An error answered outside the API's envelope — axum's own rejections are plain text (a body
/// over the limit is 413, bad percent-encoding 400, a wrong content type 415) — re-rendered in
/// `envelope` with the same status and the text as the message, so every error of every API
/// has its envelope.
async fn into_envelope(response: Response, envelope: Envelope) -> Response {
    let status = response.status();
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| t.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_owned()
    } else {
        text
    };
    let mut rendered = envelope(status, &message);
    // Keep what the original answer said besides its body (Allow, Retry-After, extensions).
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            rendered.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rendered.extensions_mut().extend(parts.extensions);
    rendered
}

/// The layers around the whole router of a binary: a request id and a trace span per request.
pub fn outer<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    // The path only: query strings may carry what does not belong in logs.
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id = %id,
                    )
                }),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use tower::ServiceExt;

    fn plain(status: StatusCode, message: &str) -> Response {
        (status, format!("envelope: {message}")).into_response()
    }

    fn app(registry: &Registry, timeout: Duration) -> Router {
        let api = Api {
            name: "test",
            metrics: RequestMetrics::register(registry).unwrap(),
            timeout,
            envelope: plain,
            guard: None,
        };
        let inner = Router::new()
            .route("/items/{id}", get(|| async { "item" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .fallback(|| async { (StatusCode::NOT_FOUND, "none") });
        outer(Router::new().nest("/api", api.wrap(inner)))
    }

    fn counted(registry: &Registry, route: &str, status: &str) -> u64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == "opsplane_http_requests_total")
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| {
                let labels: Vec<(&str, &str)> = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                labels.contains(&("route", route)) && labels.contains(&("status", status))
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    #[tokio::test]
    async fn requests_are_counted_by_matched_route_of_the_nested_api() {
        let registry = Registry::new();
        let app = app(&registry, Duration::from_secs(5));
        for path in ["/api/items/1", "/api/items/2", "/api/nothing"] {
            let response = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert!(response.headers().contains_key(REQUEST_ID));
        }
        assert_eq!(counted(&registry, "/api/items/{id}", "200"), 2);
        assert_eq!(counted(&registry, UNMATCHED, "404"), 1);
    }

    #[tokio::test]
    async fn plain_text_errors_of_handlers_and_extractors_get_the_api_envelope() {
        let registry = Registry::new();
        let api = Api {
            name: "test",
            metrics: RequestMetrics::register(&registry).unwrap(),
            timeout: Duration::from_secs(5),
            envelope: plain,
            guard: None,
        };
        let inner = Router::new()
            .route(
                "/json",
                axum::routing::post(|axum::Json(v): axum::Json<serde_json::Value>| async move {
                    v.to_string()
                }),
            )
            .route(
                "/teapot",
                get(|| async {
                    (
                        StatusCode::IM_A_TEAPOT,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        "{}",
                    )
                }),
            );
        let app = Router::new().nest("/api", api.wrap(inner));
        let response = app
            .clone()
            .oneshot(
                Request::post("/api/json")
                    .header("content-type", "text/csv")
                    .body(Body::from("a,b"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&body).starts_with("envelope: Expected request with"),
            "{body:?}"
        );
        // An error already in a JSON envelope is left as it is.
        let response = app
            .oneshot(Request::get("/api/teapot").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"{}");
    }

    #[tokio::test]
    async fn a_request_id_sent_by_the_client_is_echoed() {
        let registry = Registry::new();
        let response = app(&registry, Duration::from_secs(5))
            .oneshot(
                Request::get("/api/items/1")
                    .header(REQUEST_ID, "abc-123")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.headers()[REQUEST_ID], "abc-123");
    }

    #[tokio::test]
    async fn a_handler_over_its_time_is_answered_in_the_api_envelope() {
        let registry = Registry::new();
        let response = app(&registry, Duration::from_millis(100))
            .oneshot(Request::get("/api/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&body).starts_with("envelope: the request did not complete"),
            "{body:?}"
        );
        assert_eq!(counted(&registry, "/api/slow", "503"), 1);
    }

    #[test]
    fn failures_carry_the_whole_source_chain() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the store failed")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let mut response = Response::new(Body::empty());
        Failure::attach(
            &mut response,
            &Outer(std::io::Error::other("connection refused")),
        );
        let Failure(text) = response.extensions().get::<Failure>().unwrap();
        assert_eq!(&**text, "the store failed: connection refused");
    }
}
