//! opsplane-integrate: report every request of a Rust service to opsplane (issue 13's
//! `integrate()`, seed 000's `Operations(...).integrate(app, __name__)`), as the Python
//! package `integrations/python` does for Django, Flask and FastAPI.
//!
//! A [`Reporter`] holds a bounded queue and posts batches to opsplane's ingestion endpoint
//! (`POST /monitoring/api/ingest/`, docs/monitoring.md) from a background task;
//! [`OpsplaneLayer`] is the tower layer that measures each request — method, path, status,
//! duration, response size (streamed bodies counted as they pass), user agent, client address
//! (`X-Forwarded-For` only from trusted proxies), user, error — and hands it to the reporter.
//! Nothing here fails the service: when opsplane is down the queue fills, then new events are
//! dropped and counted ([`Reporter::counters`]).
//!
//! ```no_run
//! use opsplane_integrate::{Config, OpsplaneLayer, Reporter};
//! use std::net::SocketAddr;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let reporter = Reporter::new(Config::new(
//!     "http://opsplane:8080",
//!     std::env::var("OPSPLANE_TOKEN")?,
//! ))?;
//! let app = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "world" }))
//!     .layer(OpsplaneLayer::new(reporter.clone(), "shop"));
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! reporter.shutdown(Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod event;
mod layer;
mod reporter;

pub use event::{ErrorInfo, Event, MAX_ERROR_BYTES, MAX_NAME_BYTES, TrustedProxies, cut};
pub use layer::{
    DEFAULT_EXCLUDE_METHODS, OpsplaneLayer, OpsplaneService, PeerAddr, ReportBody, ReportError,
    ReportUser, ResponseFuture,
};
pub use reporter::{Config, Counters, INGEST_PATH, MAX_BATCH, Reporter};

/// What is wrong with a reporter's configuration; found when it is made, not at the first
/// request.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The URL is not an absolute http(s) URL.
    #[error(
        "opsplane url should be an absolute http(s) URL such as http://opsplane:8080, got {0:?} (OPSPLANE_URL)"
    )]
    Url(String),
    /// No token.
    #[error("a bearer token with the operator role is required (OPSPLANE_TOKEN)")]
    Token,
    /// A bound out of range.
    #[error("{0} {1}")]
    Bound(&'static str, String),
    /// A trusted proxy that is neither an address nor a network.
    #[error("trusted proxy {0:?} is neither an IP address nor a network")]
    TrustedProxy(String),
    /// Made outside a tokio runtime.
    #[error("a Reporter must be made inside a tokio runtime (it spawns its posting task)")]
    NoRuntime,
    /// The HTTP client could not be built.
    #[error("the HTTP client: {0}")]
    Client(String),
}
