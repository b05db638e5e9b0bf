//! The HTTP serving pieces that both opsplane binaries (the operator and the node-daemon) share,
//! so that each is written once:
//!
//! - [`logging`]: log set-up (colour only on a terminal, `--log-format json` for machines) and
//!   log levels by scope, changeable at run time.
//! - [`shutdown`]: the SIGTERM/SIGINT future both servers stop on.
//! - [`bearer`]: `Authorization: Bearer` parsing and constant-time token comparison.
//! - [`auth`], [`ratelimit`], [`guard`]: who is calling, what they may do, how often — the
//!   layer every API route goes through, with each route's permission declared once.
//! - [`listener`]: the accept loop both binaries serve with — connections counted by protocol
//!   and client host, closable one host or port at a time, per-host and total limits, header
//!   and idle timeouts, graceful shutdown with a deadline.
//! - [`maintain`]: seed 003's maintain endpoints both binaries share (connections, memory,
//!   log levels).
//! - [`observe`]: the tower layers every router gets — a request id, a trace span per request,
//!   a request timeout — and request metrics by API and matched route, with the logging of
//!   failed requests that handlers' errors leave in the response.

pub mod auth;
pub mod bearer;
pub mod guard;
pub mod listener;
pub mod logging;
pub mod maintain;
pub mod observe;
pub mod openapi;
pub mod ratelimit;
pub mod shutdown;
pub mod testing;
