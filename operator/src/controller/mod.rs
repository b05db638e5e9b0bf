//! Controllers for opsplane's custom resources, in the controller-rs shape: a [`Context`] with
//! clients and metrics, and per-resource `reconcile` / `error_policy` functions.

pub mod monitored_service;
pub mod node_task;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::controller::{self as runtime_controller, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client};
use opsplane_resources::{MonitoredService, NodeTask};

use crate::check::Clients;
use crate::metrics::Metrics;

/// What every reconcile needs.
pub struct Context {
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// When this process last checked each service (by uid).
    pub last_checks: Mutex<HashMap<String, Instant>>,
    /// Kubernetes client.
    pub client: Client,
    /// HTTP clients for checks.
    pub clients: Clients,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Where check results go as metrics and exceptions.
    pub store: crate::recorder::Recorder,
    /// How often a NodeTask in motion is reconciled again (`--node-task-poll`).
    pub node_task_poll: std::time::Duration,
    /// Kubernetes client without the retry of 429 answers, for evictions (a refusal by a
    /// PodDisruptionBudget is an answer to report, not a failure to retry).
    pub eviction_client: Client,
    /// HTTP client of the NodeTask alert gates (Prometheus, Alertmanager).
    pub http: reqwest::Client,
}

/// Reconcile failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a call.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// How many reconciles (checks) run at once.
pub const CONCURRENCY: u16 = 256;

/// How often nodes cordoned by deleted NodeTasks are looked for.
pub const ORPHANED_CORDON_SWEEP: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs every controller until the future is dropped (leadership lost or shutdown).
pub async fn run(ctx: Arc<Context>) {
    tokio::join!(
        run_monitored_services(ctx.clone()),
        run_node_tasks(ctx.clone()),
        release_orphaned_cordons(ctx)
    );
}

/// Uncordons, every [`ORPHANED_CORDON_SWEEP`], the nodes whose cordoning task was deleted
/// (nothing reconciles a deleted task, so its own uncordon never comes).
async fn release_orphaned_cordons(ctx: Arc<Context>) {
    let mut ticker = tokio::time::interval(ORPHANED_CORDON_SWEEP);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = node_task::drain::release_orphaned_cordons(&ctx.client).await {
            tracing::warn!(%error, "could not look for cordons of deleted node tasks");
        }
    }
}

/// The NodeTask controller. Every change triggers a reconcile, status included: the nodes'
/// reports are what moves a rollout on.
async fn run_node_tasks(ctx: Arc<Context>) {
    let tasks: Api<NodeTask> = Api::all(ctx.client.clone());
    Controller::new(tasks, watcher::Config::default().any_semantic())
        .run(node_task::reconcile, node_task::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "node task controller event");
            }
        })
        .await;
}

async fn run_monitored_services(ctx: Arc<Context>) {
    let services: Api<MonitoredService> = Api::all(ctx.client.clone());
    // Only spec changes (generation) trigger a reconcile; status writes of our own do not, and
    // the periodic re-check comes from each reconcile's requeue.
    let (reader, writer) = reflector::store();
    let trigger = watcher(services, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let services_by_ref = reader.clone();
    let slices: Api<EndpointSlice> = Api::all(ctx.client.clone());
    Controller::for_stream(trigger, reader)
        .with_config(runtime_controller::Config::default().concurrency(CONCURRENCY))
        // An EndpointSlice change re-resolves (and re-checks) the services that reference it.
        .watches(
            slices,
            watcher::Config::default(),
            move |slice: EndpointSlice| {
                let namespace = slice.metadata.namespace.clone().unwrap_or_default();
                let service = slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name").cloned())
                    .unwrap_or_default();
                services_by_ref
                    .state()
                    .into_iter()
                    .filter(|ms| {
                        ms.metadata.namespace.as_deref() == Some(namespace.as_str())
                            && ms
                                .spec
                                .service_ref
                                .as_ref()
                                .is_some_and(|r| r.name == service)
                    })
                    .map(|ms| ObjectRef::from_obj(ms.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
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
