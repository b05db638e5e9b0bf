//! NodeTask controller: plan a control task (seed 002 §三, §五, §二.12–15) over the cluster's
//! nodes, release it to them — disruptive commands `maxUnavailable` nodes at a time — and
//! aggregate the per-node results the node-daemons write into one phase.
//!
//! Who writes what in `status` (server-side apply, `status.nodes` is a map-list keyed by `name`):
//! the operator owns `phase`, `observedGeneration`, `conditions` and, per node, `name`,
//! `releasedAt` and — until that node reports — `phase` (Pending, or Failed for a node it will
//! never release, with `msg`). Each node's daemon owns its own entry's `phase`, `code`, `msg`,
//! `startedAt`, `finishedAt` under the field manager `opsplane-node-daemon/<node>`. The operator
//! applies without force: if a daemon reported between the operator's read and its write, the
//! API server answers 409 and the operator re-reads instead of overwriting the report.
//!
//! [`decide`] is the pure part: from the spec, the previous status, the cluster's nodes and the
//! time, what the operator's part of the status should be and which event to publish.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use opsplane_resources::node_task::{NodeTask, NodeTaskSpec, NodeTaskStatus, TaskPhase};
use serde::Serialize;
use serde_json::json;

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
    /// The generation planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Complete` condition.
    pub conditions: Vec<Condition>,
    /// Per-node plan entries.
    pub nodes: Vec<PlanEntry>,
}

/// What [`decide`] says: the operator's status and the event of a phase transition.
pub struct Decision {
    /// Operator-owned status fields to apply.
    pub status: OperatorStatus,
    /// Event to publish, when the phase changes.
    pub event: Option<Event>,
    /// The overall phase after the write, with the nodes' reports merged in.
    pub phase: TaskPhase,
}

/// How many nodes a disruptive command may occupy at once when `maxUnavailable` is not set.
pub const DEFAULT_MAX_UNAVAILABLE: usize = 1;

/// Whether a node's daemon has written its result (it always writes `startedAt`).
fn reported(entry: &opsplane_resources::node_task::NodeResult) -> bool {
    entry.started_at.is_some() || entry.finished_at.is_some()
}

fn terminal(phase: TaskPhase) -> bool {
    matches!(phase, TaskPhase::Succeeded | TaskPhase::Failed)
}

/// The target nodes of a spec, in release order: `nodeNames` in the given order, then the
/// nodes the selector matches, by name. A named node that does not exist is returned with
/// `false`. Pure.
pub fn resolve_targets(
    spec: &NodeTaskSpec,
    nodes: &[NodeInfo],
) -> Result<Vec<(String, bool)>, String> {
    let existing: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let mut targets: Vec<(String, bool)> = Vec::new();
    let mut seen = BTreeSet::new();
    for name in &spec.node_names {
        if seen.insert(name.clone()) {
            targets.push((name.clone(), existing.contains(name.as_str())));
        }
    }
    if let Some(selector) = &spec.node_selector {
        // Kubernetes requires values for In / NotIn; an empty set would silently match nothing
        // (In) or everything (NotIn).
        for requirement in selector.match_expressions.iter().flatten() {
            let empty = requirement.values.as_ref().is_none_or(|v| v.is_empty());
            if matches!(requirement.operator.as_str(), "In" | "NotIn") && empty {
                return Err(format!(
                    "spec.nodeSelector: {} {} needs at least one value",
                    requirement.key, requirement.operator
                ));
            }
        }
        let selector = Selector::try_from(selector.clone())
            .map_err(|e| format!("spec.nodeSelector is not a valid label selector: {}", e.0))?;
        let mut matched: Vec<&str> = nodes
            .iter()
            .filter(|n| selector.matches(&n.labels))
            .map(|n| n.name.as_str())
            .collect();
        matched.sort_unstable();
        for name in matched {
            if seen.insert(name.to_string()) {
                targets.push((name.to_string(), true));
            }
        }
    }
    Ok(targets)
}

fn summary(nodes: &[(String, TaskPhase, Option<String>)]) -> String {
    let count = |p: TaskPhase| nodes.iter().filter(|(_, q, _)| *q == p).count();
    let mut text = format!(
        "{} node(s): {} succeeded, {} failed, {} running, {} pending",
        nodes.len(),
        count(TaskPhase::Succeeded),
        count(TaskPhase::Failed),
        count(TaskPhase::Running),
        count(TaskPhase::Pending)
    );
    let failures: Vec<String> = nodes
        .iter()
        .filter(|(_, p, _)| *p == TaskPhase::Failed)
        .take(5)
        .map(|(n, _, msg)| format!("{n}: {}", msg.as_deref().unwrap_or("failed")))
        .collect();
    if !failures.is_empty() {
        text.push_str("; ");
        text.push_str(&failures.join("; "));
    }
    truncate(&text, 1000)
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// What the operator's part of the status should be. Pure: no I/O, no clock.
///
/// - The plan is made once (first reconcile): later Node changes do not add or drop targets.
/// - A named node that does not exist fails at once and is never released.
/// - Non-disruptive commands are released to every target at once; disruptive ones
///   ([`opsplane_resources::node_task::TaskCommand::is_disruptive`]) to `maxUnavailable`
///   (default 1) nodes at a time, the next only after a released node reported Succeeded
///   (for reboot/shutdown the daemon reports Succeeded only once it is back). After a
///   released node fails, nothing more is released and the rest fail as "not run".
/// - `dryRun`: the plan is written, nothing is released, the phase is Succeeded.
/// - Phase: Pending until something is released; Running; then Succeeded (all nodes),
///   Failed (none) or PartiallyFailed.
pub fn decide(
    spec: &NodeTaskSpec,
    previous: Option<&NodeTaskStatus>,
    generation: Option<i64>,
    nodes: &[NodeInfo],
    now: Timestamp,
) -> Decision {
    let previous_phase = previous.and_then(|s| s.phase);
    let previous_entries = previous.map(|s| s.nodes.as_slice()).unwrap_or(&[]);
    let by_name: BTreeMap<&str, &opsplane_resources::node_task::NodeResult> = previous_entries
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();

    // The plan: fixed once written.
    let mut problem: Option<(String, String)> = None;
    let targets: Vec<(String, bool)> = if !previous_entries.is_empty() {
        previous_entries
            .iter()
            .map(|e| {
                let missing = e.phase == TaskPhase::Failed
                    && !reported(e)
                    && e.released_at.is_none()
                    && e.msg
                        .as_deref()
                        .is_some_and(|m| m.starts_with("no Node named"));
                (e.name.clone(), !missing)
            })
            .collect()
    } else if !spec.handler.commands().contains(&spec.command) {
        problem = Some((
            "InvalidTask".into(),
            format!(
                "spec.command {:?} is not a command of spec.handler {:?}",
                spec.command, spec.handler
            ),
        ));
        Vec::new()
    } else if spec.window.is_some() {
        problem = Some((
            "WindowUnsupported".into(),
            "spec.window is not supported yet: the task is not run rather than run outside the window".into(),
        ));
        Vec::new()
    } else {
        match resolve_targets(spec, nodes) {
            Ok(t) if t.is_empty() => {
                problem = Some((
                    "NoTargets".into(),
                    "no node matches spec.nodeNames / spec.nodeSelector".into(),
                ));
                t
            }
            Ok(t) => t,
            Err(message) => {
                problem = Some(("InvalidTask".into(), message));
                Vec::new()
            }
        }
    };

    let stamp = now.to_string();
    let disruptive = spec.command.is_disruptive();
    let limit = spec
        .max_unavailable
        .and_then(|m| usize::try_from(m).ok())
        .filter(|m| *m >= 1)
        .unwrap_or(DEFAULT_MAX_UNAVAILABLE);

    // Effective state per node: the daemon's report when there is one, else the plan.
    struct Row {
        name: String,
        exists: bool,
        released_at: Option<String>,
        reported_phase: Option<TaskPhase>,
        msg: Option<String>,
    }
    let mut rows: Vec<Row> = targets
        .iter()
        .map(|(name, exists)| {
            let entry = by_name.get(name.as_str());
            Row {
                name: name.clone(),
                exists: *exists,
                released_at: entry.and_then(|e| e.released_at.clone()),
                reported_phase: entry.filter(|e| reported(e)).map(|e| e.phase),
                msg: entry.and_then(|e| e.msg.clone()),
            }
        })
        .collect();

    let failed_node = rows
        .iter()
        .find(|r| r.released_at.is_some() && r.reported_phase == Some(TaskPhase::Failed))
        .map(|r| r.name.clone());
    if !spec.dry_run && problem.is_none() {
        let in_flight = rows
            .iter()
            .filter(|r| r.released_at.is_some() && !r.reported_phase.is_some_and(terminal))
            .count();
        let mut slots = if disruptive {
            limit.saturating_sub(in_flight)
        } else {
            usize::MAX
        };
        let halted = disruptive && failed_node.is_some();
        for row in rows.iter_mut() {
            if slots == 0 || halted {
                break;
            }
            if row.exists && row.released_at.is_none() && row.reported_phase.is_none() {
                row.released_at = Some(stamp.clone());
                slots -= 1;
            }
        }
    }

    // The operator's entries and each node's effective phase.
    let mut entries = Vec::with_capacity(rows.len());
    let mut effective: Vec<(String, TaskPhase, Option<String>)> = Vec::with_capacity(rows.len());
    for row in &rows {
        let (phase, msg) = if let Some(phase) = row.reported_phase {
            effective.push((row.name.clone(), phase, row.msg.clone()));
            (None, None)
        } else if !row.exists {
            let msg = format!("no Node named {} in the cluster", row.name);
            effective.push((row.name.clone(), TaskPhase::Failed, Some(msg.clone())));
            (Some(TaskPhase::Failed), Some(msg))
        } else if row.released_at.is_none() && disruptive && !spec.dry_run {
            if let Some(failed) = &failed_node {
                let msg = format!("not run: the rollout stopped after {failed} failed");
                effective.push((row.name.clone(), TaskPhase::Failed, Some(msg.clone())));
                (Some(TaskPhase::Failed), Some(msg))
            } else {
                effective.push((row.name.clone(), TaskPhase::Pending, None));
                (Some(TaskPhase::Pending), None)
            }
        } else {
            effective.push((row.name.clone(), TaskPhase::Pending, None));
            (Some(TaskPhase::Pending), None)
        };
        entries.push(PlanEntry {
            name: row.name.clone(),
            phase,
            msg,
            released_at: row.released_at.clone(),
        });
    }

    let any_released = rows.iter().any(|r| r.released_at.is_some());
    let (phase, reason, message) = if let Some((reason, message)) = problem {
        (TaskPhase::Failed, reason, message)
    } else if spec.dry_run {
        (
            TaskPhase::Succeeded,
            "DryRun".to_string(),
            format!(
                "dry run: planned for {} node(s) ({}); nothing ran",
                rows.len(),
                truncate(
                    &rows
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    500
                )
            ),
        )
    } else if effective.iter().all(|(_, p, _)| terminal(*p)) {
        let succeeded = effective
            .iter()
            .filter(|(_, p, _)| *p == TaskPhase::Succeeded)
            .count();
        let phase = if succeeded == effective.len() {
            TaskPhase::Succeeded
        } else if succeeded == 0 {
            TaskPhase::Failed
        } else {
            TaskPhase::PartiallyFailed
        };
        (phase, format!("{phase:?}"), summary(&effective))
    } else if any_released || effective.iter().any(|(_, p, _)| *p != TaskPhase::Pending) {
        (TaskPhase::Running, "Running".into(), summary(&effective))
    } else {
        (TaskPhase::Pending, "Pending".into(), summary(&effective))
    };

    let complete = terminal(phase) || phase == TaskPhase::PartiallyFailed;
    let status_word = if complete { "True" } else { "False" };
    let last_transition_time = previous
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Complete" && c.status == status_word)
        })
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    let condition = Condition {
        type_: "Complete".into(),
        status: status_word.into(),
        reason: reason.clone(),
        message: message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    let event = (previous_phase != Some(phase)).then(|| Event {
        type_: if matches!(phase, TaskPhase::Failed | TaskPhase::PartiallyFailed) {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: format!("{phase:?}"),
        note: Some(truncate(&message, 1000)),
        action: "Rollout".into(),
        secondary: None,
    });
    Decision {
        status: OperatorStatus {
            phase,
            observed_generation: generation,
            conditions: vec![condition],
            nodes: entries,
        },
        event,
        phase,
    }
}

/// Whether applying `new` would change what the object holds (ignoring condition times).
fn needs_write(previous: Option<&NodeTaskStatus>, new: &OperatorStatus) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    if previous.phase != Some(new.phase) || previous.observed_generation != new.observed_generation
    {
        return true;
    }
    let old_condition = previous.conditions.iter().find(|c| c.type_ == "Complete");
    let new_condition = new.conditions.first();
    if old_condition.map(|c| (&c.status, &c.reason, &c.message))
        != new_condition.map(|c| (&c.status, &c.reason, &c.message))
    {
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
    })
}

/// Reconciles one NodeTask: plan, release, aggregate, write status, publish the transition.
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
    if needs_write(obj.status.as_ref(), &decision.status) {
        let api: Api<NodeTask> = Api::all(ctx.client.clone());
        let patch = json!({
            "apiVersion": "opsplane.io/v1alpha1",
            "kind": "NodeTask",
            "status": decision.status,
        });
        match api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => ctx.metrics.status_written(),
            // A node reported between our read and this write: re-read rather than overwrite.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::debug!(task = %name, message = %e.message, "status conflict; re-reading");
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(event) = &decision.event {
            let reference = obj.object_ref(&());
            if let Err(error) = ctx.recorder.publish(event, &reference).await {
                tracing::warn!(task = %name, %error, "could not publish the phase event");
            }
        }
        tracing::info!(task = %name, phase = ?decision.phase, "node task status written");
    }
    Ok(match decision.phase {
        TaskPhase::Pending | TaskPhase::Running => Action::requeue(Duration::from_secs(30)),
        _ => Action::await_change(),
    })
}

/// On error: log, count, retry soon.
pub fn error_policy(obj: Arc<NodeTask>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error("NodeTask");
    tracing::warn!(task = %obj.name_any(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsplane_resources::node_task::{NodeResult, TaskCommand, TaskHandler};

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn node(name: &str, role: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: BTreeMap::from([("role".to_string(), role.to_string())]),
        }
    }

    fn cluster() -> Vec<NodeInfo> {
        vec![
            node("node-c", "storage"),
            node("node-a", "storage"),
            node("node-b", "kvm"),
        ]
    }

    fn spec(handler: TaskHandler, command: TaskCommand) -> NodeTaskSpec {
        serde_json::from_value(json!({
            "nodeSelector": {"matchLabels": {"role": "storage"}},
            "handler": handler, "command": command,
        }))
        .unwrap()
    }

    /// Applies the operator's part onto the status, as the API server would.
    fn apply(previous: Option<NodeTaskStatus>, op: &OperatorStatus) -> NodeTaskStatus {
        let mut status = previous.unwrap_or_default();
        status.phase = Some(op.phase);
        status.observed_generation = op.observed_generation;
        status.conditions = op.conditions.clone();
        for entry in &op.nodes {
            let slot = match status.nodes.iter_mut().position(|e| e.name == entry.name) {
                Some(i) => &mut status.nodes[i],
                None => {
                    status.nodes.push(NodeResult {
                        name: entry.name.clone(),
                        ..Default::default()
                    });
                    status.nodes.last_mut().unwrap()
                }
            };
            if let Some(p) = entry.phase {
                slot.phase = p;
            }
            if entry.msg.is_some() {
                slot.msg = entry.msg.clone();
            }
            slot.released_at = entry.released_at.clone();
        }
        status
    }

    /// A node's daemon reporting.
    fn report(status: &mut NodeTaskStatus, name: &str, phase: TaskPhase, msg: &str) {
        let e = status.nodes.iter_mut().find(|e| e.name == name).unwrap();
        e.phase = phase;
        e.code = Some(if phase == TaskPhase::Failed { 99999 } else { 0 });
        e.msg = Some(msg.into());
        e.started_at = Some(now().to_string());
        if phase != TaskPhase::Running {
            e.finished_at = Some(now().to_string());
        }
    }

    fn released(status: &NodeTaskStatus) -> Vec<&str> {
        status
            .nodes
            .iter()
            .filter(|e| e.released_at.is_some())
            .map(|e| e.name.as_str())
            .collect()
    }

    #[test]
    fn selector_resolves_matching_nodes_by_name_and_releases_a_safe_command_everywhere() {
        let s = spec(TaskHandler::ServiceHandler, TaskCommand::Start);
        let d = decide(&s, None, Some(1), &cluster(), now());
        let names: Vec<_> = d.status.nodes.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["node-a", "node-c"]);
        assert!(
            d.status
                .nodes
                .iter()
                .all(|e| e.released_at.is_some() && e.phase == Some(TaskPhase::Pending))
        );
        assert_eq!(d.phase, TaskPhase::Running);
        assert_eq!(d.event.as_ref().unwrap().reason, "Running");
    }

    #[test]
    fn named_nodes_come_first_and_a_missing_one_fails_without_release() {
        let mut s = spec(TaskHandler::ServiceHandler, TaskCommand::Start);
        s.node_names = vec!["node-b".into(), "node-x".into(), "node-a".into()];
        let d = decide(&s, None, Some(1), &cluster(), now());
        let names: Vec<_> = d.status.nodes.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["node-b", "node-x", "node-a", "node-c"]);
        let x = &d.status.nodes[1];
        assert_eq!(x.phase, Some(TaskPhase::Failed));
        assert!(x.released_at.is_none());
        assert_eq!(
            x.msg.as_deref(),
            Some("no Node named node-x in the cluster")
        );
        // The others succeed: the task is PartiallyFailed, and node-x stays unreleased.
        let mut st = apply(None, &d.status);
        for n in ["node-a", "node-b", "node-c"] {
            report(&mut st, n, TaskPhase::Succeeded, "成功");
        }
        let d2 = decide(&s, Some(&st), Some(1), &[], now());
        assert_eq!(d2.phase, TaskPhase::PartiallyFailed);
        assert!(d2.status.nodes[1].released_at.is_none());
        assert!(
            d2.status.conditions[0]
                .message
                .contains("node-x: no Node named")
        );
        assert_eq!(d2.event.unwrap().type_, EventType::Warning);
    }

    #[test]
    fn reboot_rolls_one_node_at_a_time_and_only_after_success() {
        let mut s = spec(TaskHandler::OsHandler, TaskCommand::Reboot);
        s.node_selector = None;
        s.node_names = vec!["node-c".into(), "node-a".into(), "node-b".into()];
        let d = decide(&s, None, Some(1), &cluster(), now());
        let mut st = apply(None, &d.status);
        assert_eq!(released(&st), ["node-c"]);
        // Accepted but not back yet: nothing more is released.
        report(&mut st, "node-c", TaskPhase::Running, "rebooting");
        let d = decide(&s, Some(&st), Some(1), &[], now());
        assert!(d.event.is_none(), "still Running: no transition event");
        st = apply(Some(st), &d.status);
        assert_eq!(released(&st), ["node-c"]);
        assert_eq!(st.phase, Some(TaskPhase::Running));
        // Back in: the next one.
        report(&mut st, "node-c", TaskPhase::Succeeded, "back");
        st = apply(
            Some(st.clone()),
            &decide(&s, Some(&st), Some(1), &[], now()).status,
        );
        assert_eq!(released(&st), ["node-c", "node-a"]);
        report(&mut st, "node-a", TaskPhase::Succeeded, "back");
        st = apply(
            Some(st.clone()),
            &decide(&s, Some(&st), Some(1), &[], now()).status,
        );
        assert_eq!(released(&st), ["node-c", "node-a", "node-b"]);
        report(&mut st, "node-b", TaskPhase::Succeeded, "back");
        let d = decide(&s, Some(&st), Some(1), &[], now());
        assert_eq!(d.phase, TaskPhase::Succeeded);
        assert_eq!(d.event.unwrap().reason, "Succeeded");
        // The reported phases are not overwritten: the operator applies none for them.
        assert!(d.status.nodes.iter().all(|e| e.phase.is_none()));
    }

    #[test]
    fn max_unavailable_releases_that_many_and_a_failure_stops_the_rollout() {
        let mut s = spec(TaskHandler::ServiceHandler, TaskCommand::Restart);
        s.node_selector = None;
        s.node_names = vec!["node-a".into(), "node-b".into(), "node-c".into()];
        s.max_unavailable = Some(2);
        let mut st = apply(None, &decide(&s, None, Some(1), &cluster(), now()).status);
        assert_eq!(released(&st), ["node-a", "node-b"]);
        report(&mut st, "node-a", TaskPhase::Failed, "systemctl failed");
        let d = decide(&s, Some(&st), Some(1), &[], now());
        st = apply(Some(st), &d.status);
        assert_eq!(
            released(&st),
            ["node-a", "node-b"],
            "halted after a failure"
        );
        let c = st.nodes.iter().find(|e| e.name == "node-c").unwrap();
        assert_eq!(c.phase, TaskPhase::Failed);
        assert_eq!(
            c.msg.as_deref(),
            Some("not run: the rollout stopped after node-a failed")
        );
        assert_eq!(st.phase, Some(TaskPhase::Running), "node-b still in flight");
        report(&mut st, "node-b", TaskPhase::Succeeded, "成功");
        let d = decide(&s, Some(&st), Some(1), &[], now());
        assert_eq!(d.phase, TaskPhase::PartiallyFailed);
    }

    #[test]
    fn crontab_setup_is_disruptive_and_rolls() {
        let mut s = spec(TaskHandler::CrontabHandler, TaskCommand::SetupShutdown);
        s.node_selector = None;
        s.node_names = vec!["node-a".into(), "node-b".into()];
        let st = apply(None, &decide(&s, None, Some(1), &cluster(), now()).status);
        assert_eq!(released(&st), ["node-a"]);
    }

    #[test]
    fn all_failed_is_failed() {
        let s = spec(TaskHandler::FileHandler, TaskCommand::DeleteFile);
        let mut s2 = s.clone();
        s2.max_unavailable = Some(5);
        let mut st = apply(None, &decide(&s2, None, Some(1), &cluster(), now()).status);
        assert_eq!(released(&st), ["node-a", "node-c"]);
        report(&mut st, "node-a", TaskPhase::Failed, "outside");
        report(&mut st, "node-c", TaskPhase::Failed, "outside");
        let d = decide(&s2, Some(&st), Some(1), &[], now());
        assert_eq!(d.phase, TaskPhase::Failed);
        assert!(d.status.conditions[0].message.contains("node-a: outside"));
    }

    #[test]
    fn no_target_dry_run_window_and_bad_selector() {
        let mut s = spec(TaskHandler::TimerHandler, TaskCommand::Pause);
        let d = decide(&s, None, Some(1), &[node("x", "kvm")], now());
        assert_eq!(d.phase, TaskPhase::Failed);
        assert_eq!(d.status.conditions[0].reason, "NoTargets");

        s.dry_run = true;
        let d = decide(&s, None, Some(1), &cluster(), now());
        assert_eq!(d.phase, TaskPhase::Succeeded);
        assert_eq!(d.status.conditions[0].reason, "DryRun");
        assert!(d.status.nodes.iter().all(|e| e.released_at.is_none()));
        assert_eq!(d.status.nodes.len(), 2);

        s.dry_run = false;
        s.window = Some(opsplane_resources::node_task::TimeWindow {
            start: "01:00".into(),
            end: "02:00".into(),
        });
        let d = decide(&s, None, Some(1), &cluster(), now());
        assert_eq!(d.phase, TaskPhase::Failed);
        assert_eq!(d.status.conditions[0].reason, "WindowUnsupported");
        assert!(d.status.nodes.is_empty());

        s.window = None;
        s.node_selector = Some(
            serde_json::from_value(
                json!({"matchExpressions": [{"key": "role", "operator": "In", "values": []}]}),
            )
            .unwrap(),
        );
        let d = decide(&s, None, Some(1), &cluster(), now());
        assert_eq!(d.phase, TaskPhase::Failed);
        assert_eq!(d.status.conditions[0].reason, "InvalidTask");
        assert!(
            d.status.conditions[0]
                .message
                .contains("needs at least one value")
        );
        s.node_selector = Some(
            serde_json::from_value(
                json!({"matchExpressions": [{"key": "role", "operator": "Near", "values": ["x"]}]}),
            )
            .unwrap(),
        );
        let d = decide(&s, None, Some(1), &cluster(), now());
        assert_eq!(d.status.conditions[0].reason, "InvalidTask");
        assert!(
            d.status.conditions[0]
                .message
                .contains("not a valid label selector")
        );
    }

    #[test]
    fn the_plan_is_fixed_once_written() {
        let s = spec(TaskHandler::ServiceHandler, TaskCommand::Enable);
        let st = apply(None, &decide(&s, None, Some(1), &cluster(), now()).status);
        // A new matching node later does not join.
        let mut more = cluster();
        more.push(node("node-d", "storage"));
        let d = decide(&s, Some(&st), Some(1), &more, now());
        assert_eq!(d.status.nodes.len(), 2);
        assert!(!needs_write(
            Some(&apply(Some(st.clone()), &d.status)),
            &d.status
        ));
    }

    #[test]
    fn a_selector_matching_nothing_with_names_missing_fails_every_node() {
        let mut s = spec(TaskHandler::ServiceHandler, TaskCommand::Start);
        s.node_selector = None;
        s.node_names = vec!["gone".into()];
        let d = decide(&s, None, Some(1), &cluster(), now());
        assert_eq!(d.phase, TaskPhase::Failed);
        // Re-deciding from the written status keeps it failed and unreleased.
        let st = apply(None, &d.status);
        let d2 = decide(&s, Some(&st), Some(1), &[], now());
        assert_eq!(d2.phase, TaskPhase::Failed);
        assert!(d2.status.nodes[0].released_at.is_none());
        assert!(d2.event.is_none());
    }
}
