//! `opsplane-node-daemon` as a library: host probes (seed 002 §二), the background sampler,
//! the node API with the seed's `{code, msg, data}` envelope and return codes, the task runner
//! (seed 002 §三, §五, §二.12–15), the NodeTask watcher, the reporter (§四) and `/metrics`.
//! The maintain API (seed 003) for the node is [`maintain`].
//! The binary (`main.rs`) wires these together from the configuration.

pub mod api;
pub mod config;
pub mod envelope;
pub mod error;
pub mod host;
pub mod maintain;
pub mod metrics;
pub mod monitor;
pub mod openapi;
pub mod probe;
pub mod reporter;
pub mod sampler;
pub mod sock_diag;
pub mod task;
pub mod watch;
