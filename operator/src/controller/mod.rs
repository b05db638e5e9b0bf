//! Controllers for opsplane's custom resources, in the controller-rs shape: a [`Context`] with
//! clients and metrics, and per-resource `reconcile` / `error_policy` functions.

pub mod monitored_service;

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::controller::Controller;
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client};
use opsplane_resources::MonitoredService;

use crate::check::Clients;
use crate::metrics::Metrics;

/// What every reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// HTTP clients for checks.
    pub clients: Clients,
    /// The operator's metrics.
    pub metrics: Metrics,
}

/// Reconcile failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a call.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Runs every controller until the future is dropped (leadership lost or shutdown).
pub async fn run(ctx: Arc<Context>) {
    let services: Api<MonitoredService> = Api::all(ctx.client.clone());
    // Only spec changes (generation) trigger a reconcile; status writes of our own do not, and
    // the periodic re-check comes from each reconcile's requeue.
    let (reader, writer) = reflector::store();
    let trigger = watcher(services, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    Controller::for_stream(trigger, reader)
        .run(
            monitored_service::reconcile,
            monitored_service::error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
        })
        .await;
}
