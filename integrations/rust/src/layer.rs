//! The tower layer: [`OpsplaneLayer`] wraps a service so that each request is reported when
//! its response body is done — streamed bodies counted frame by frame as they pass, the
//! duration covering the whole body — or when the response or its body is dropped unfinished.

use std::fmt::Display;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Buf;
use http::{Extensions, HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower_layer::Layer;
use tower_service::Service;

use crate::event::{ErrorInfo, Event, MAX_NAME_BYTES, TrustedProxies, cut};
use crate::reporter::Reporter;

/// Methods not reported unless told otherwise, as UtilMeta's `Operations.Log.exclude_methods`
/// (and the Python package).
pub const DEFAULT_EXCLUDE_METHODS: [&str; 4] = ["OPTIONS", "CONNECT", "TRACE", "HEAD"];

type UserFn = dyn Fn(&HeaderMap, &Extensions) -> Option<String> + Send + Sync;

/// Put into a response's extensions by a handler or an inner layer that knows the user:
/// reported as the event's `user` and `username`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportUser(pub String);

/// Put into a response's extensions by a handler that handled an error itself (axum's
/// error-handling example keeps the error there): reported as the event's `error`, an
/// exception in opsplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportError(pub ErrorInfo);

/// The client address of a request, for servers that are not axum: insert it into the
/// request's extensions (axum's `ConnectInfo<SocketAddr>` is read with the `axum` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

struct Options {
    reporter: Reporter,
    service: String,
    proxies: TrustedProxies,
    exclude_methods: Vec<http::Method>,
    user: Option<Arc<UserFn>>,
}

/// A tower layer reporting every request of the service it wraps to opsplane under one
/// service name.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use opsplane_integrate::{Config, OpsplaneLayer, Reporter};
/// let reporter = Reporter::new(Config::new("http://opsplane:8080", std::env::var("OPSPLANE_TOKEN")?))?;
/// let app: axum::Router = axum::Router::new()
///     .route("/hello", axum::routing::get(|| async { "world" }))
///     .layer(OpsplaneLayer::new(reporter.clone(), "shop"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OpsplaneLayer {
    options: Arc<Options>,
}

impl std::fmt::Debug for OpsplaneLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsplaneLayer")
            .field("service", &self.options.service)
            .field("proxies", &self.options.proxies)
            .finish_non_exhaustive()
    }
}

impl OpsplaneLayer {
    /// Reports to `reporter` under `service`, with no trusted proxies and the default
    /// excluded methods.
    pub fn new(reporter: Reporter, service: impl Into<String>) -> OpsplaneLayer {
        OpsplaneLayer {
            options: Arc::new(Options {
                reporter,
                service: cut(service.into(), 253),
                proxies: TrustedProxies::default(),
                exclude_methods: DEFAULT_EXCLUDE_METHODS
                    .iter()
                    .filter_map(|m| m.parse().ok())
                    .collect(),
                user: None,
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Options)) -> OpsplaneLayer {
        match Arc::get_mut(&mut self.options) {
            Some(options) => f(options),
            None => {
                let o = &self.options;
                let mut copy = Options {
                    reporter: o.reporter.clone(),
                    service: o.service.clone(),
                    proxies: o.proxies.clone(),
                    exclude_methods: o.exclude_methods.clone(),
                    user: o.user.clone(),
                };
                f(&mut copy);
                self.options = Arc::new(copy);
            }
        }
        self
    }

    /// Believes `X-Forwarded-For` from these proxies.
    pub fn trusted_proxies(self, proxies: TrustedProxies) -> OpsplaneLayer {
        self.edit(|o| o.proxies = proxies)
    }

    /// Reports these methods' requests only when they fail (default: OPTIONS, CONNECT,
    /// TRACE, HEAD).
    pub fn exclude_methods(self, methods: impl IntoIterator<Item = http::Method>) -> OpsplaneLayer {
        let methods = methods.into_iter().collect();
        self.edit(|o| o.exclude_methods = methods)
    }

    /// Finds the user of a request from its headers and extensions (an auth layer's
    /// claims, say); a [`ReportUser`] in the response's extensions wins.
    pub fn user<F>(self, user: F) -> OpsplaneLayer
    where
        F: Fn(&HeaderMap, &Extensions) -> Option<String> + Send + Sync + 'static,
    {
        let user: Arc<UserFn> = Arc::new(user);
        self.edit(|o| o.user = Some(user))
    }

    /// The reporter events go to.
    pub fn reporter(&self) -> &Reporter {
        &self.options.reporter
    }
}

impl<S> Layer<S> for OpsplaneLayer {
    type Service = OpsplaneService<S>;

    fn layer(&self, inner: S) -> OpsplaneService<S> {
        OpsplaneService {
            inner,
            options: self.options.clone(),
        }
    }
}

/// The service [`OpsplaneLayer`] makes.
#[derive(Clone)]
pub struct OpsplaneService<S> {
    inner: S,
    options: Arc<Options>,
}

impl<S> std::fmt::Debug for OpsplaneService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsplaneService")
            .field("service", &self.options.service)
            .finish_non_exhaustive()
    }
}

fn peer(extensions: &Extensions) -> Option<IpAddr> {
    if let Some(PeerAddr(addr)) = extensions.get() {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(addr.ip());
    }
    None
}

fn header(headers: &HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for OpsplaneService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Display,
    ResBody: Body,
{
    type Response = Response<ReportBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let o = &self.options;
        let headers = request.headers();
        let ip = o.proxies.client(
            peer(request.extensions()),
            header(
                headers,
                http::header::HeaderName::from_static("x-forwarded-for"),
            ),
        );
        let user = o
            .user
            .as_ref()
            .and_then(|f| f(headers, request.extensions()));
        let record = Record {
            options: o.clone(),
            started: Instant::now(),
            wall: SystemTime::now(),
            excluded: o.exclude_methods.contains(request.method()),
            event: Event {
                service: o.service.clone(),
                method: Some(request.method().as_str().to_string()),
                path: Some(cut(request.uri().path().to_string(), MAX_NAME_BYTES)),
                user_agent: header(headers, http::header::USER_AGENT)
                    .map(|ua| cut(ua.to_string(), MAX_NAME_BYTES)),
                ip,
                username: user.clone().map(|u| cut(u, MAX_NAME_BYTES)),
                user: user.map(|u| cut(u, MAX_NAME_BYTES)),
                ..Event::default()
            },
            done: false,
        };
        ResponseFuture {
            inner: self.inner.call(request),
            record: Some(record),
        }
    }
}

/// What the layer knows of one request; reported once, when finished or dropped.
struct Record {
    options: Arc<Options>,
    started: Instant,
    wall: SystemTime,
    excluded: bool,
    event: Event,
    done: bool,
}

impl Record {
    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if self.excluded && self.event.error.is_none() {
            return;
        }
        let mut event = std::mem::take(&mut self.event);
        event.time = self
            .wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        event.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.options.reporter.report(event);
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.finish();
    }
}

pin_project_lite::pin_project! {
    /// The future of [`OpsplaneService`]: the inner response with its body wrapped in a
    /// [`ReportBody`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        record: Option<Record>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Display,
    B: Body,
{
    type Output = Result<Response<ReportBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut record = this.record.take();
        match result {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                if let Some(r) = record.as_mut() {
                    r.event.status = Some(parts.status.as_u16());
                    r.event.size = Some(0);
                    if let Some(ReportUser(user)) = parts.extensions.get() {
                        r.event.user = Some(cut(user.clone(), MAX_NAME_BYTES));
                        r.event.username = r.event.user.clone();
                    }
                    if let Some(ReportError(error)) = parts.extensions.get() {
                        r.event.error = Some(error.clone());
                    }
                }
                let body = ReportBody {
                    inner: body,
                    record,
                };
                Poll::Ready(Ok(Response::from_parts(parts, body)))
            }
            Err(e) => {
                if let Some(mut r) = record {
                    r.event.status = Some(500);
                    r.event.error = Some(ErrorInfo::new("service error", e.to_string()));
                    r.finish();
                }
                Poll::Ready(Err(e))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its data frames as they pass and reports the request at
    /// its end (or when dropped).
    pub struct ReportBody<B> {
        #[pin]
        inner: B,
        record: Option<Record>,
    }
}

impl<B: Body> Body for ReportBody<B>
where
    B::Error: Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(record) = this.record.as_mut() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let size = record.event.size.get_or_insert(0);
                        *size += data.remaining() as u64;
                    }
                }
                Some(Err(e)) => {
                    record.event.error = Some(ErrorInfo::new("body error", e.to_string()));
                    record.finish();
                }
                None => record.finish(),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
