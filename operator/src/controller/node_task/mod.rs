//! NodeTask controller: plan a control task (seed 002 §三, §五, §二.12–15) over the cluster's
//! nodes, release it to them — disruptive commands `maxUnavailable` nodes at a time — and
//! aggregate the per-node results the node-daemons write into one phase.
//!
//! Who writes what in `status` (server-side apply, `status.nodes` is a map-list keyed by `name`):
//! the operator owns `phase`, `observedGeneration`, `conditions` and, per node, `name`,
//! `releasedAt` and — until that node reports — `phase` (Pending, or Failed for a node it will
//! never release, with `msg` and `reason`). Each node's daemon owns its own entry's `phase`,
//! `code`, `msg`, `startedAt`, `finishedAt` under the field manager
//! `opsplane-node-daemon/<node>`. The operator applies without force: if a daemon reported
//! between the operator's read and its write, the API server answers 409 and the operator
//! re-reads instead of overwriting the report.
//!
//! Gather, decide, act: [`reconcile`] reads the Nodes, the pods of the nodes being drained and
//! the gates' readings ([`gate`]), calls [`decide`] — the pure part, a chain of small steps in
//! [`mod@decide`] — then cordons, evicts and uncordons ([`drain`]), decides once more with the
//! evictions' outcomes (a PodDisruptionBudget that refused one), and writes the status.
//!
//! Kured-grade safety: a shutdown or reboot cordons and drains its node first (PDBs honoured,
//! never forced), the node counts as done only when its daemon reports a new boot id and the
//! Node is Ready, and it is uncordoned then; `spec.window`, `spec.gate`, `spec.paused` and
//! `spec.nodeTimeout` bound when the next node may start. A deleted task releases nothing more:
//! nothing reconciles it, and a daemon runs only what a task's status released to it; a node it
//! had cordoned is uncordoned by the sweep of [`drain::release_orphaned_cordons`].

pub mod decide;
pub mod drain;
pub mod gate;
pub mod window;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use opsplane_resources::node_task::{NodeFailureReason, NodeTask, NodeTaskStatus, TaskPhase};
use opsplane_resources::status::status_patch;
use serde::Serialize;
use tracing::instrument;

pub use decide::decide;
use decide::{Eviction, Observed, PodInfo};
use gate::GateReadings;

use super::{Context, Error};

/// Field manager of the operator's part of a NodeTask's status.
pub const FIELD_MANAGER: &str = "opsplane-operator";

/// How long the alerts API of a gate may take to answer.
pub const ALERTS_TIMEOUT: Duration = Duration::from_secs(5);

/// A Node as the decision needs it ([`drain::node_info`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// Its `Ready` condition is True.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// The task whose cordon it carries ([`drain::CORDON_ANNOTATION`]).
    pub cordoned_by: Option<String>,
}

/// The operator's part of one `status.nodes` entry, as applied (absent fields are not owned).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanEntry {
    /// Node name (the map-list key).
    pub name: String,
    /// Set while the node has not reported: Pending, or Failed for a node never released.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<TaskPhase>,
    /// Why the operator failed the node (only with `phase: Failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// The kind of `msg` (only with `phase: Failed`): the node is never released.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<NodeFailureReason>,
    /// When the task was released to the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_at: Option<String>,
    /// When the drain began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_started_at: Option<String>,
    /// When the operator counted the node done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_at: Option<String>,
    /// What the operator waits for on the node, or why it failed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The operator's part of the status, as applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorStatus {
    /// Overall phase.
    pub phase: TaskPhase,
    /// `done/total` nodes ([`decide::progress`]).
    pub progress: String,
    /// The generation planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Complete` and `Failed` conditions ([`decide::conditions`]).
    pub conditions: Vec<Condition>,
    /// Per-node plan entries.
    pub nodes: Vec<PlanEntry>,
}

/// Whether applying `new` would change what the object holds (ignoring condition times).
fn needs_write(previous: Option<&NodeTaskStatus>, new: &OperatorStatus) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    if previous.phase != Some(new.phase)
        || previous.observed_generation != new.observed_generation
        || previous.progress.as_deref() != Some(new.progress.as_str())
    {
        return true;
    }
    let changed = new.conditions.iter().any(|new| {
        previous
            .conditions
            .iter()
            .find(|c| c.type_ == new.type_)
            .map(|c| (&c.status, &c.reason, &c.message))
            != Some((&new.status, &new.reason, &new.message))
    });
    if changed {
        return true;
    }
    if previous.nodes.len() != new.nodes.len() {
        return true;
    }
    new.nodes.iter().any(|entry| {
        let Some(old) = previous.nodes.iter().find(|e| e.name == entry.name) else {
            return true;
        };
        old.released_at != entry.released_at
            || old.drain_started_at != entry.drain_started_at
            || old.done_at != entry.done_at
            || old.note != entry.note
            || old.reason != entry.reason
            || entry.phase.is_some_and(|p| p != old.phase)
            || (entry.msg.is_some() && entry.msg != old.msg)
    })
}

/// The nodes whose pods the drain has to see this round: draining in the previous status
/// (started, not released, not failed).
fn draining(status: Option<&NodeTaskStatus>) -> Vec<String> {
    status
        .map(|s| {
            s.nodes
                .iter()
                .filter(|e| {
                    e.drain_started_at.is_some()
                        && e.released_at.is_none()
                        && e.reason.is_none()
                        && e.done_at.is_none()
                })
                .map(|e| e.name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Reads what the task's gates need (only while it may still start nodes).
async fn read_gates(obj: &NodeTask, ctx: &Context) -> GateReadings {
    let finished = obj.status.as_ref().and_then(|s| s.phase).is_some_and(|p| {
        matches!(
            p,
            TaskPhase::Succeeded | TaskPhase::Failed | TaskPhase::PartiallyFailed
        )
    });
    let Some(spec) = obj
        .spec
        .gate
        .as_ref()
        .filter(|_| !finished && !obj.spec.paused)
    else {
        return GateReadings::default();
    };
    let services = match &spec.monitored_services {
        Some(selector) => Some(gate::read_services(&ctx.client, selector).await),
        None => None,
    };
    let alerts = match &spec.prometheus {
        Some(p) => Some(gate::fetch_alerts(&ctx.http, p, ALERTS_TIMEOUT).await),
        None => None,
    };
    GateReadings { services, alerts }
}

/// Reconciles one NodeTask: gather (Nodes, pods of draining nodes, gates), decide, act
/// (cordon, evict, uncordon), decide with the evictions' outcomes, write the status, publish
/// the events.
#[instrument(skip_all, fields(task = %obj.name_any(), generation = obj.metadata.generation))]
pub async fn reconcile(obj: Arc<NodeTask>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer("NodeTask");
    let name = obj.name_any();
    let node_api: Api<Node> = Api::all(ctx.client.clone());
    let nodes: Vec<NodeInfo> = node_api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(drain::node_info)
        .collect();
    let mut pods: BTreeMap<String, Vec<PodInfo>> = BTreeMap::new();
    for node in draining(obj.status.as_ref()) {
        let on_node = drain::pods_on(&ctx.client, &node).await?;
        pods.insert(node, on_node);
    }
    let gates = read_gates(&obj, &ctx).await;
    let mut observed = Observed {
        task: &name,
        nodes: &nodes,
        pods: &pods,
        gates: &gates,
        evictions: &[],
        now: Timestamp::now(),
    };
    let first = decide(
        &obj.spec,
        obj.status.as_ref(),
        obj.metadata.generation,
        &observed,
    );
    tracing::debug!(actions = ?first.actions, draining = pods.len(), polling = first.polling, "decided");
    // Act before recording: each action is idempotent, and a failed one leaves the status as
    // it was, so the next reconcile does it again.
    let grace = decide::Rollout::of(&obj.spec)
        .ok()
        .and_then(|r| r.grace_period_seconds);
    let mut evictions: Vec<Eviction> = Vec::new();
    for (node, pod) in &first.actions.evict {
        let Some(info) = pods
            .get(node)
            .and_then(|p| p.iter().find(|p| &p.name == pod))
        else {
            continue;
        };
        evictions.push(Eviction {
            node: node.clone(),
            pod: pod.clone(),
            outcome: drain::evict(&ctx.eviction_client, info, grace).await,
        });
    }
    for node in &first.actions.cordon {
        drain::cordon(&ctx.client, node, &name).await?;
    }
    for node in &first.actions.uncordon {
        drain::uncordon(&ctx.client, node, &name).await?;
    }
    let decision = if evictions.is_empty() {
        first
    } else {
        observed.evictions = &evictions;
        decide(
            &obj.spec,
            obj.status.as_ref(),
            obj.metadata.generation,
            &observed,
        )
    };
    let phase = decision.status.phase;
    if needs_write(obj.status.as_ref(), &decision.status) {
        let api: Api<NodeTask> = Api::all(ctx.client.clone());
        let patch = status_patch::<NodeTask>(&decision.status);
        match api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => {
                ctx.metrics.status_written();
                if obj.status.as_ref().and_then(|s| s.phase) != Some(phase) {
                    ctx.metrics.node_task_transition(&format!("{phase:?}"));
                }
            }
            // A node reported between our read and this write: re-read rather than overwrite.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::debug!(message = %e.message, "status conflict; re-reading");
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            Err(e) => return Err(e.into()),
        }
        let reference = obj.object_ref(&());
        for event in &decision.events {
            if let Err(error) = ctx.recorder.publish(event, &reference).await {
                tracing::warn!(%error, reason = %event.reason, "could not publish an event");
            }
        }
        tracing::info!(?phase, "node task status written");
    }
    Ok(match phase {
        _ if decision.polling => Action::requeue(ctx.node_task_poll),
        TaskPhase::Pending | TaskPhase::Running => Action::requeue(Duration::from_secs(30)),
        _ => Action::await_change(),
    })
}

/// On error: log, count, retry soon.
#[instrument(skip_all, fields(task = %obj.name_any(), generation = obj.metadata.generation))]
pub fn error_policy(obj: Arc<NodeTask>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error("NodeTask");
    tracing::warn!(%error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}
