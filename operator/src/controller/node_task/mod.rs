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
//! Gather, decide, act: [`reconcile`] reads the Nodes (only until the plan is written), calls
//! [`decide`] — the pure part, a chain of small steps in [`mod@decide`] — and applies the result.

pub mod decide;

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

use super::{Context, Error};

/// Field manager of the operator's part of a NodeTask's status.
pub const FIELD_MANAGER: &str = "opsplane-operator";

/// A Node as the plan needs it: name and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
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
            || entry.phase.is_some_and(|p| p != old.phase)
            || (entry.msg.is_some() && entry.msg != old.msg)
            || (entry.reason.is_some() && entry.reason != old.reason)
    })
}

/// Reconciles one NodeTask: plan, release, aggregate, write status, publish the transition.
#[instrument(skip_all, fields(task = %obj.name_any(), generation = obj.metadata.generation))]
pub async fn reconcile(obj: Arc<NodeTask>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer("NodeTask");
    let name = obj.name_any();
    let planned = obj.status.as_ref().is_some_and(|s| !s.nodes.is_empty());
    // Nodes are read only to make the plan; afterwards the plan is fixed.
    let nodes = if planned {
        Vec::new()
    } else {
        let api: Api<Node> = Api::all(ctx.client.clone());
        api.list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|n| NodeInfo {
                name: n.metadata.name.unwrap_or_default(),
                labels: n.metadata.labels.unwrap_or_default(),
            })
            .collect()
    };
    let decision = decide(
        &obj.spec,
        obj.status.as_ref(),
        obj.metadata.generation,
        &nodes,
        Timestamp::now(),
    );
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
        if let Some(event) = &decision.event {
            let reference = obj.object_ref(&());
            if let Err(error) = ctx.recorder.publish(event, &reference).await {
                tracing::warn!(%error, "could not publish the phase event");
            }
        }
        tracing::info!(?phase, "node task status written");
    }
    Ok(match phase {
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
