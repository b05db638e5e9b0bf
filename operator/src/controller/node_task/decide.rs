//! The pure part of the NodeTask controller: from the spec, the previous status, the cluster's
//! nodes and the time, what the operator's part of the status should be and which event to
//! publish. No I/O, no clock.
//!
//! [`decide`] is a chain of small steps, each tested on its own:
//!
//! 1. [`plan`]: the target nodes — the plan already written, or resolved from `nodeNames` and
//!    `nodeSelector` — or the [`Problem`] that stops the task before it starts.
//! 2. [`node_states`]: each target as it stands: released or not, reported or not.
//! 3. [`release`]: which waiting nodes are released now, under the [`Rollout`] rules.
//! 4. [`node_phases`]: each node's effective phase, and the entry the operator writes for it.
//! 5. [`overall`]: the task's phase with the reason and message of its conditions.
//! 6. [`conditions`] and [`transition_event`]: the `Complete` and `Failed` conditions (Job's
//!    convention: `Complete` only on success) and the event of a phase change.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::{Selector, SelectorExt};
use kube::runtime::events::{Event, EventType};
use opsplane_resources::node_task::{
    NodeFailureReason, NodeResult, NodeTaskSpec, NodeTaskStatus, TaskPhase,
};
use opsplane_resources::status::truncate;

use super::{NodeInfo, OperatorStatus, PlanEntry};

/// How many nodes a disruptive command may occupy at once when `maxUnavailable` is not set.
pub const DEFAULT_MAX_UNAVAILABLE: usize = 1;

/// What [`decide`] says: the operator's status and the event of a phase transition.
pub struct Decision {
    /// Operator-owned status fields to apply; `status.phase` is the overall phase with the
    /// nodes' reports merged in.
    pub status: OperatorStatus,
    /// Event to publish, when the phase changes.
    pub event: Option<Event>,
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
/// - `dryRun`: the plan is written, nothing is released; the phase is what a real run would
///   meet before running anything: Succeeded when every target exists, else Failed (no target
///   exists) or PartiallyFailed (some do not).
/// - Phase: Pending until something is released; Running; then Succeeded (all nodes),
///   Failed (none) or PartiallyFailed.
/// - Conditions, as a Job's: `Complete=True` only when Succeeded; `Failed=True` when Failed or
///   PartiallyFailed (reason says which); both False while Pending or Running.
pub fn decide(
    spec: &NodeTaskSpec,
    previous: Option<&NodeTaskStatus>,
    generation: Option<i64>,
    nodes: &[NodeInfo],
    now: Timestamp,
) -> Decision {
    let rollout = Rollout::of(spec);
    let (outcomes, verdict) = match plan(spec, previous, nodes) {
        Err(problem) => (Vec::new(), problem.verdict()),
        Ok(targets) => {
            let states = release(node_states(targets, previous), &rollout, &now.to_string());
            let outcomes = node_phases(&states, &rollout);
            let verdict = overall(&outcomes, &rollout);
            (outcomes, verdict)
        }
    };
    let conditions = conditions(&verdict, previous, generation, now);
    let event = transition_event(previous.and_then(|s| s.phase), &verdict);
    Decision {
        status: OperatorStatus {
            phase: verdict.phase,
            progress: progress(&outcomes),
            observed_generation: generation,
            conditions,
            nodes: outcomes.iter().map(NodeOutcome::entry).collect(),
        },
        event,
    }
}

// --- 1. plan ---------------------------------------------------------------------------------

/// One target node of the plan, in release order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Node name.
    pub name: String,
    /// Whether the cluster had the node when the task was planned; a missing one is never
    /// released.
    pub exists: bool,
}

impl Target {
    fn new(name: &str, exists: bool) -> Self {
        Self {
            name: name.to_string(),
            exists,
        }
    }
}

/// Why a task stops before anything is planned; each kind is the reason of its condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The spec cannot be run: a command of another handler, or a bad selector.
    InvalidTask,
    /// `spec.window` is set; time windows are not supported yet.
    WindowUnsupported,
    /// Nothing matches `nodeNames` / `nodeSelector`.
    NoTargets,
}

impl ProblemKind {
    /// The condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            ProblemKind::InvalidTask => "InvalidTask",
            ProblemKind::WindowUnsupported => "WindowUnsupported",
            ProblemKind::NoTargets => "NoTargets",
        }
    }
}

/// A task that fails before it starts: what kind of problem, and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The kind, which is the condition's reason.
    pub kind: ProblemKind,
    /// What is wrong, for people.
    pub message: String,
}

impl Problem {
    fn new(kind: ProblemKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A problem fails the whole task.
    fn verdict(self) -> Verdict {
        Verdict {
            phase: TaskPhase::Failed,
            reason: self.kind.reason().to_string(),
            message: self.message,
        }
    }
}

/// Step 1: the targets. A written plan is kept as it is (later Node changes do not add or drop
/// targets; a node failed as [`NodeFailureReason::NodeNotFound`] stays missing). Otherwise the
/// spec is checked and its targets resolved against the cluster's nodes.
pub fn plan(
    spec: &NodeTaskSpec,
    previous: Option<&NodeTaskStatus>,
    nodes: &[NodeInfo],
) -> Result<Vec<Target>, Problem> {
    let written = previous.map(|s| s.nodes.as_slice()).unwrap_or(&[]);
    if !written.is_empty() {
        return Ok(written
            .iter()
            .map(|e| Target::new(&e.name, e.reason != Some(NodeFailureReason::NodeNotFound)))
            .collect());
    }
    if !spec.handler.commands().contains(&spec.command) {
        return Err(Problem::new(
            ProblemKind::InvalidTask,
            format!(
                "spec.command {:?} is not a command of spec.handler {:?}",
                spec.command, spec.handler
            ),
        ));
    }
    if spec.window.is_some() {
        return Err(Problem::new(
            ProblemKind::WindowUnsupported,
            "spec.window is not supported yet: the task is not run rather than run outside the window",
        ));
    }
    let targets =
        resolve_targets(spec, nodes).map_err(|m| Problem::new(ProblemKind::InvalidTask, m))?;
    if targets.is_empty() {
        return Err(Problem::new(
            ProblemKind::NoTargets,
            "no node matches spec.nodeNames / spec.nodeSelector",
        ));
    }
    Ok(targets)
}

/// The target nodes of a spec, in release order: `nodeNames` in the given order, then the
/// nodes the selector matches, by name. A named node that does not exist is returned with
/// `exists: false`. Pure.
pub fn resolve_targets(spec: &NodeTaskSpec, nodes: &[NodeInfo]) -> Result<Vec<Target>, String> {
    let existing: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let mut targets: Vec<Target> = Vec::new();
    let mut seen = BTreeSet::new();
    for name in &spec.node_names {
        if seen.insert(name.clone()) {
            targets.push(Target::new(name, existing.contains(name.as_str())));
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
                targets.push(Target::new(name, true));
            }
        }
    }
    Ok(targets)
}

// --- 2. node states --------------------------------------------------------------------------

/// One target as it stands: the plan's view merged with the daemon's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// Node name.
    pub name: String,
    /// Whether the node existed when the task was planned.
    pub exists: bool,
    /// When the operator released the task to the node.
    pub released_at: Option<String>,
    /// The phase the node's daemon reported, once it did.
    pub reported: Option<TaskPhase>,
    /// The last message on the node's entry (the daemon's, or the operator's).
    pub msg: Option<String>,
}

/// Whether a node's daemon has written its result (it always writes `startedAt`).
fn reported(entry: &NodeResult) -> bool {
    entry.started_at.is_some() || entry.finished_at.is_some()
}

fn terminal(phase: TaskPhase) -> bool {
    matches!(phase, TaskPhase::Succeeded | TaskPhase::Failed)
}

/// Step 2: each target with what the previous status says about it.
pub fn node_states(targets: Vec<Target>, previous: Option<&NodeTaskStatus>) -> Vec<NodeState> {
    let by_name: BTreeMap<&str, &NodeResult> = previous
        .map(|s| s.nodes.iter().map(|e| (e.name.as_str(), e)).collect())
        .unwrap_or_default();
    targets
        .into_iter()
        .map(|Target { name, exists }| {
            let entry = by_name.get(name.as_str());
            NodeState {
                exists,
                released_at: entry.and_then(|e| e.released_at.clone()),
                reported: entry.filter(|e| reported(e)).map(|e| e.phase),
                msg: entry.and_then(|e| e.msg.clone()),
                name,
            }
        })
        .collect()
}

// --- 3. release ------------------------------------------------------------------------------

/// How a task is rolled out, from its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// Whether the command is disruptive: released `max_unavailable` nodes at a time and halted
    /// by a failure.
    pub disruptive: bool,
    /// How many released nodes may be in flight at once for a disruptive command (at least 1).
    pub max_unavailable: usize,
    /// Plan only, release nothing.
    pub dry_run: bool,
}

impl Rollout {
    /// The rollout of `spec`: `maxUnavailable` when set and positive, else
    /// [`DEFAULT_MAX_UNAVAILABLE`].
    pub fn of(spec: &NodeTaskSpec) -> Self {
        Self {
            disruptive: spec.command.is_disruptive(),
            max_unavailable: spec
                .max_unavailable
                .and_then(|m| usize::try_from(m).ok())
                .filter(|m| *m >= 1)
                .unwrap_or(DEFAULT_MAX_UNAVAILABLE),
            dry_run: spec.dry_run,
        }
    }
}

/// The first released node that reported Failed: after it, a disruptive rollout halts.
fn first_failure(states: &[NodeState]) -> Option<&str> {
    states
        .iter()
        .find(|s| s.released_at.is_some() && s.reported == Some(TaskPhase::Failed))
        .map(|s| s.name.as_str())
}

/// Step 3: release waiting nodes, in plan order, stamped `now`. Nothing in a dry run; every
/// existing node at once for a safe command; for a disruptive one, as many as free slots
/// (`max_unavailable` minus the released nodes still in flight), and none after a failure.
pub fn release(mut states: Vec<NodeState>, rollout: &Rollout, now: &str) -> Vec<NodeState> {
    if rollout.dry_run {
        return states;
    }
    let mut slots = if rollout.disruptive {
        if first_failure(&states).is_some() {
            return states;
        }
        let in_flight = states
            .iter()
            .filter(|s| s.released_at.is_some() && !s.reported.is_some_and(terminal))
            .count();
        rollout.max_unavailable.saturating_sub(in_flight)
    } else {
        usize::MAX
    };
    for state in states.iter_mut() {
        if slots == 0 {
            break;
        }
        if state.exists && state.released_at.is_none() && state.reported.is_none() {
            state.released_at = Some(now.to_string());
            slots -= 1;
        }
    }
    states
}

// --- 4. per-node phases ----------------------------------------------------------------------

/// A node's effective phase: the daemon's report when there is one, else the operator's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOutcome {
    /// Node name.
    pub name: String,
    /// The effective phase.
    pub phase: TaskPhase,
    /// The message that goes with it (the daemon's, or why the operator failed the node).
    pub msg: Option<String>,
    /// Whether `phase` and `msg` are the daemon's (the operator then writes neither).
    pub reported: bool,
    /// Why the operator failed the node, when it did.
    pub reason: Option<NodeFailureReason>,
    /// When the task was released to the node.
    pub released_at: Option<String>,
}

impl NodeOutcome {
    /// The operator's part of the node's status entry: its phase, message and reason only while
    /// the daemon has not reported, so a report is never overwritten.
    pub fn entry(&self) -> PlanEntry {
        let (phase, msg) = if self.reported {
            (None, None)
        } else {
            (Some(self.phase), self.msg.clone())
        };
        PlanEntry {
            name: self.name.clone(),
            phase,
            msg,
            reason: self.reason.filter(|_| !self.reported),
            released_at: self.released_at.clone(),
        }
    }
}

/// Step 4: each node's effective phase. A report stands; a missing node is Failed
/// ([`NodeFailureReason::NodeNotFound`]); a waiting node of a halted disruptive rollout is
/// Failed ([`NodeFailureReason::RolloutStopped`]); everything else is Pending.
pub fn node_phases(states: &[NodeState], rollout: &Rollout) -> Vec<NodeOutcome> {
    let halted_by = first_failure(states).filter(|_| rollout.disruptive && !rollout.dry_run);
    states
        .iter()
        .map(|s| {
            let outcome = |phase, msg, reported, reason| NodeOutcome {
                name: s.name.clone(),
                phase,
                msg,
                reported,
                reason,
                released_at: s.released_at.clone(),
            };
            if let Some(phase) = s.reported {
                outcome(phase, s.msg.clone(), true, None)
            } else if !s.exists {
                outcome(
                    TaskPhase::Failed,
                    Some(format!("no Node named {} in the cluster", s.name)),
                    false,
                    Some(NodeFailureReason::NodeNotFound),
                )
            } else if let Some(failed) = halted_by.filter(|_| s.released_at.is_none()) {
                outcome(
                    TaskPhase::Failed,
                    Some(format!(
                        "not run: the rollout stopped after {failed} failed"
                    )),
                    false,
                    Some(NodeFailureReason::RolloutStopped),
                )
            } else {
                outcome(TaskPhase::Pending, None, false, None)
            }
        })
        .collect()
}

// --- 5. overall phase ------------------------------------------------------------------------

/// The task's phase with the reason and message of its conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Overall phase.
    pub phase: TaskPhase,
    /// Condition reason.
    pub reason: String,
    /// Condition message.
    pub message: String,
}

/// `N node(s): a succeeded, b failed, ...` and the first five failures with their messages.
fn summary(nodes: &[NodeOutcome]) -> String {
    let count = |p: TaskPhase| nodes.iter().filter(|n| n.phase == p).count();
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
        .filter(|n| n.phase == TaskPhase::Failed)
        .take(5)
        .map(|n| format!("{}: {}", n.name, n.msg.as_deref().unwrap_or("failed")))
        .collect();
    if !failures.is_empty() {
        text.push_str("; ");
        text.push_str(&failures.join("; "));
    }
    truncate(&text, 1000)
}

/// Step 5: the overall phase. A dry run is what a real run would meet before it runs anything:
/// Succeeded (reason `DryRun`) when no node failed in planning (a missing node does), else
/// Failed (every node) or PartiallyFailed. A real run, once every node is Succeeded or Failed:
/// Succeeded (all), Failed (none) or PartiallyFailed; Running once anything was released or a
/// node left Pending; else Pending.
pub fn overall(nodes: &[NodeOutcome], rollout: &Rollout) -> Verdict {
    let verdict = |phase: TaskPhase, message: String| Verdict {
        phase,
        reason: format!("{phase:?}"),
        message,
    };
    if rollout.dry_run {
        let (failed, planned): (Vec<&NodeOutcome>, Vec<&NodeOutcome>) =
            nodes.iter().partition(|n| n.phase == TaskPhase::Failed);
        let names = |ns: &[&NodeOutcome]| {
            let names: Vec<&str> = ns.iter().map(|n| n.name.as_str()).collect();
            truncate(&names.join(", "), 500)
        };
        if failed.is_empty() {
            return Verdict {
                phase: TaskPhase::Succeeded,
                reason: "DryRun".into(),
                message: format!(
                    "dry run: planned for {} node(s) ({}); nothing ran",
                    nodes.len(),
                    names(&planned)
                ),
            };
        }
        let phase = if planned.is_empty() {
            TaskPhase::Failed
        } else {
            TaskPhase::PartiallyFailed
        };
        let failures: Vec<String> = failed
            .iter()
            .take(5)
            .map(|n| format!("{}: {}", n.name, n.msg.as_deref().unwrap_or("failed")))
            .collect();
        let mut message = format!(
            "dry run: a real run would fail on {} of {} node(s) ({})",
            failed.len(),
            nodes.len(),
            failures.join("; ")
        );
        if !planned.is_empty() {
            message.push_str(&format!(" and run on {}", names(&planned)));
        }
        message.push_str("; nothing ran");
        return verdict(phase, truncate(&message, 1000));
    }
    if nodes.iter().all(|n| terminal(n.phase)) {
        let succeeded = nodes
            .iter()
            .filter(|n| n.phase == TaskPhase::Succeeded)
            .count();
        let phase = if succeeded == nodes.len() {
            TaskPhase::Succeeded
        } else if succeeded == 0 {
            TaskPhase::Failed
        } else {
            TaskPhase::PartiallyFailed
        };
        return verdict(phase, summary(nodes));
    }
    let started = nodes
        .iter()
        .any(|n| n.released_at.is_some() || n.phase != TaskPhase::Pending);
    let phase = if started {
        TaskPhase::Running
    } else {
        TaskPhase::Pending
    };
    verdict(phase, summary(nodes))
}

/// `done/total`: the nodes that finished (Succeeded or Failed, a node failed without release
/// included) of the nodes targeted, for `kubectl get`'s Progress column.
pub fn progress(nodes: &[NodeOutcome]) -> String {
    let done = nodes.iter().filter(|n| terminal(n.phase)).count();
    format!("{done}/{}", nodes.len())
}

// --- 6. condition and event ------------------------------------------------------------------

/// The condition types a NodeTask carries, in the order they are written.
pub const CONDITION_TYPES: [&str; 2] = ["Complete", "Failed"];

/// Step 6a: the conditions, as a Job's, so that `kubectl wait --for=condition=Complete` means
/// success and `--for=condition=Failed` means failure:
///
/// - `Complete`: True only when the task Succeeded (a successful dry run included).
/// - `Failed`: True when the task Failed or PartiallyFailed (the reason says which).
///
/// Both are False while the task is Pending or Running; both carry the verdict's reason and
/// message. `lastTransitionTime` moves only when a condition's status flips.
pub fn conditions(
    verdict: &Verdict,
    previous: Option<&NodeTaskStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let holds = |kind: &str| match kind {
        "Complete" => verdict.phase == TaskPhase::Succeeded,
        _ => matches!(
            verdict.phase,
            TaskPhase::Failed | TaskPhase::PartiallyFailed
        ),
    };
    CONDITION_TYPES
        .iter()
        .map(|kind| {
            let status = if holds(kind) { "True" } else { "False" };
            let last_transition_time = previous
                .and_then(|s| {
                    s.conditions
                        .iter()
                        .find(|c| c.type_ == *kind && c.status == status)
                })
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: (*kind).into(),
                status: status.into(),
                reason: verdict.reason.clone(),
                message: verdict.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Step 6b: the event of a phase change (a Warning for Failed and PartiallyFailed); none while
/// the phase stays.
pub fn transition_event(previous: Option<TaskPhase>, verdict: &Verdict) -> Option<Event> {
    let phase = verdict.phase;
    (previous != Some(phase)).then(|| Event {
        type_: if matches!(phase, TaskPhase::Failed | TaskPhase::PartiallyFailed) {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: format!("{phase:?}"),
        note: Some(truncate(&verdict.message, 1000)),
        action: "Rollout".into(),
        secondary: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::needs_write;
    use super::*;
    use opsplane_resources::node_task::{TaskCommand, TaskHandler};
    use serde_json::json;

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
        status.progress = Some(op.progress.clone());
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
            if entry.reason.is_some() {
                slot.reason = entry.reason;
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
        assert_eq!(d.status.phase, TaskPhase::Running);
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
        assert_eq!(d2.status.phase, TaskPhase::PartiallyFailed);
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
        assert_eq!(d.status.phase, TaskPhase::Succeeded);
        assert_eq!(statuses(&d.status.conditions), ("True", "False"));
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
        assert_eq!(d.status.phase, TaskPhase::PartiallyFailed);
        assert_eq!(
            statuses(&d.status.conditions),
            ("False", "True"),
            "a partial failure is Failed, never Complete"
        );
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
        assert_eq!(d.status.phase, TaskPhase::Failed);
        assert_eq!(statuses(&d.status.conditions), ("False", "True"));
        assert!(d.status.conditions[0].message.contains("node-a: outside"));
    }

    #[test]
    fn no_target_dry_run_window_and_bad_selector() {
        let mut s = spec(TaskHandler::TimerHandler, TaskCommand::Pause);
        let d = decide(&s, None, Some(1), &[node("x", "kvm")], now());
        assert_eq!(d.status.phase, TaskPhase::Failed);
        assert_eq!(d.status.conditions[0].reason, "NoTargets");

        s.dry_run = true;
        let d = decide(&s, None, Some(1), &cluster(), now());
        assert_eq!(d.status.phase, TaskPhase::Succeeded);
        assert_eq!(d.status.conditions[0].reason, "DryRun");
        assert_eq!(statuses(&d.status.conditions), ("True", "False"));
        assert!(d.status.nodes.iter().all(|e| e.released_at.is_none()));
        assert_eq!(d.status.nodes.len(), 2);

        s.dry_run = false;
        s.window = Some(opsplane_resources::node_task::TimeWindow {
            start: "01:00".into(),
            end: "02:00".into(),
        });
        let d = decide(&s, None, Some(1), &cluster(), now());
        assert_eq!(d.status.phase, TaskPhase::Failed);
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
        assert_eq!(d.status.phase, TaskPhase::Failed);
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
    fn a_dry_run_naming_a_missing_node_reports_what_a_real_run_would_meet() {
        let mut s = spec(TaskHandler::ServiceHandler, TaskCommand::Stop);
        s.node_selector = None;
        s.dry_run = true;
        s.node_names = vec!["node-a".into(), "node-x".into()];
        let d = decide(&s, None, Some(1), &cluster(), now());
        assert_eq!(d.status.phase, TaskPhase::PartiallyFailed);
        assert_eq!(statuses(&d.status.conditions), ("False", "True"));
        assert_eq!(
            d.status.conditions[0].message,
            "dry run: a real run would fail on 1 of 2 node(s) (node-x: no Node named node-x in \
             the cluster) and run on node-a; nothing ran"
        );
        assert!(d.status.nodes.iter().all(|e| e.released_at.is_none()));
        let event = d.event.expect("a transition event");
        assert_eq!(
            (event.type_, event.reason.as_str()),
            (EventType::Warning, "PartiallyFailed")
        );
        // Only missing nodes: Failed, as a real run would be.
        s.node_names = vec!["node-x".into()];
        let d = decide(&s, None, Some(1), &cluster(), now());
        assert_eq!(d.status.phase, TaskPhase::Failed);
        assert_eq!(d.event.map(|e| e.type_), Some(EventType::Warning));
        // Re-deciding from the written plan says the same and publishes nothing new.
        let st = apply(None, &decide(&s, None, Some(1), &cluster(), now()).status);
        let again = decide(&s, Some(&st), Some(1), &[], now());
        assert_eq!(again.status.phase, TaskPhase::Failed);
        assert!(again.event.is_none());
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
        assert_eq!(d.status.phase, TaskPhase::Failed);
        // Re-deciding from the written status keeps it failed and unreleased.
        let st = apply(None, &d.status);
        let d2 = decide(&s, Some(&st), Some(1), &[], now());
        assert_eq!(d2.status.phase, TaskPhase::Failed);
        assert!(d2.status.nodes[0].released_at.is_none());
        assert!(d2.event.is_none());
    }

    // --- each step on its own ----------------------------------------------------------------

    const T0: &str = "2027-01-15T08:00:00Z";

    fn state(name: &str, exists: bool, released: bool, reported: Option<TaskPhase>) -> NodeState {
        NodeState {
            name: name.into(),
            exists,
            released_at: released.then(|| T0.to_string()),
            reported,
            msg: reported.map(|p| format!("{p:?} on {name}")),
        }
    }

    fn rollout(disruptive: bool, max_unavailable: usize, dry_run: bool) -> Rollout {
        Rollout {
            disruptive,
            max_unavailable,
            dry_run,
        }
    }

    fn outcome(name: &str, phase: TaskPhase, released: bool) -> NodeOutcome {
        NodeOutcome {
            name: name.into(),
            phase,
            msg: (phase == TaskPhase::Failed).then(|| "boom".to_string()),
            reported: phase != TaskPhase::Pending,
            reason: None,
            released_at: released.then(|| T0.to_string()),
        }
    }

    fn entry(name: &str) -> NodeResult {
        NodeResult {
            name: name.into(),
            ..Default::default()
        }
    }

    /// (why, spec, previous status, the targets or the kind of problem)
    type PlanCase<'a> = (
        &'a str,
        NodeTaskSpec,
        Option<&'a NodeTaskStatus>,
        Result<Vec<Target>, ProblemKind>,
    );

    #[test]
    fn plan_step() {
        let base = spec(TaskHandler::ServiceHandler, TaskCommand::Start);
        let written = NodeTaskStatus {
            nodes: vec![
                NodeResult {
                    phase: TaskPhase::Failed,
                    msg: Some("no Node named gone in the cluster".into()),
                    reason: Some(NodeFailureReason::NodeNotFound),
                    ..entry("gone")
                },
                NodeResult {
                    phase: TaskPhase::Failed,
                    // A message that merely reads like a missing node does not make one.
                    msg: Some("no Node named node-a answered".into()),
                    started_at: Some(T0.into()),
                    ..entry("node-a")
                },
                NodeResult {
                    phase: TaskPhase::Failed,
                    msg: Some("not run: the rollout stopped after node-a failed".into()),
                    reason: Some(NodeFailureReason::RolloutStopped),
                    ..entry("node-c")
                },
            ],
            ..Default::default()
        };
        let with = |f: &dyn Fn(&mut NodeTaskSpec)| {
            let mut s = base.clone();
            f(&mut s);
            s
        };
        let t = |name: &str, exists: bool| Target::new(name, exists);
        let cases: Vec<PlanCase> = vec![
            (
                "the selector's nodes come by name",
                base.clone(),
                None,
                Ok(vec![t("node-a", true), t("node-c", true)]),
            ),
            (
                "named nodes come first, in their order, once, a missing one marked",
                with(&|s| s.node_names = vec!["node-c".into(), "node-x".into(), "node-c".into()]),
                None,
                Ok(vec![
                    t("node-c", true),
                    t("node-x", false),
                    t("node-a", true),
                ]),
            ),
            (
                "a written plan is kept, and only a NodeNotFound reason makes a node missing",
                with(&|s| s.node_names = vec!["node-b".into()]),
                Some(&written),
                Ok(vec![t("gone", false), t("node-a", true), t("node-c", true)]),
            ),
            (
                "a written plan is kept even when the spec would now be refused",
                with(&|s| s.command = TaskCommand::Reboot),
                Some(&written),
                Ok(vec![t("gone", false), t("node-a", true), t("node-c", true)]),
            ),
            (
                "a command of another handler is an invalid task",
                with(&|s| s.command = TaskCommand::Reboot),
                None,
                Err(ProblemKind::InvalidTask),
            ),
            (
                "a time window is not supported yet",
                with(&|s| {
                    s.window = Some(opsplane_resources::node_task::TimeWindow {
                        start: "01:00".into(),
                        end: "02:00".into(),
                    })
                }),
                None,
                Err(ProblemKind::WindowUnsupported),
            ),
            (
                "a selector matching nothing is no targets",
                with(&|s| {
                    s.node_selector = Some(
                        serde_json::from_value(json!({"matchLabels": {"role": "gpu"}})).unwrap(),
                    )
                }),
                None,
                Err(ProblemKind::NoTargets),
            ),
            (
                "an In requirement without values is an invalid task",
                with(&|s| {
                    s.node_selector = Some(
                        serde_json::from_value(
                            json!({"matchExpressions": [{"key": "role", "operator": "In"}]}),
                        )
                        .unwrap(),
                    )
                }),
                None,
                Err(ProblemKind::InvalidTask),
            ),
        ];
        for (why, spec, previous, expected) in cases {
            let got = plan(&spec, previous, &cluster()).map_err(|p| p.kind);
            assert_eq!(got, expected, "{why}");
        }
    }

    #[test]
    fn node_states_step_takes_a_report_from_started_at_not_from_the_phase() {
        let previous = NodeTaskStatus {
            nodes: vec![
                NodeResult {
                    phase: TaskPhase::Failed,
                    msg: Some("not run".into()),
                    ..entry("failed-by-operator")
                },
                NodeResult {
                    phase: TaskPhase::Running,
                    released_at: Some(T0.into()),
                    started_at: Some(T0.into()),
                    msg: Some("rebooting".into()),
                    ..entry("running")
                },
            ],
            ..Default::default()
        };
        let states = node_states(
            vec![
                Target::new("failed-by-operator", true),
                Target::new("running", true),
                Target::new("new", true),
            ],
            Some(&previous),
        );
        assert_eq!(
            states,
            [
                NodeState {
                    name: "failed-by-operator".into(),
                    exists: true,
                    released_at: None,
                    reported: None,
                    msg: Some("not run".into()),
                },
                NodeState {
                    name: "running".into(),
                    exists: true,
                    released_at: Some(T0.into()),
                    reported: Some(TaskPhase::Running),
                    msg: Some("rebooting".into()),
                },
                NodeState {
                    name: "new".into(),
                    exists: true,
                    released_at: None,
                    reported: None,
                    msg: None,
                },
            ]
        );
    }

    #[test]
    fn release_step() {
        use TaskPhase::{Failed, Running, Succeeded};
        let cases = [
            (
                "a safe command is released to every existing waiting node",
                rollout(false, 1, false),
                vec![
                    state("a", true, false, None),
                    state("x", false, false, None),
                    state("b", true, false, None),
                ],
                vec!["a", "b"],
            ),
            (
                "a dry run releases nothing",
                rollout(false, 1, true),
                vec![state("a", true, false, None)],
                vec![],
            ),
            (
                "a disruptive command takes the free slots in plan order",
                rollout(true, 2, false),
                vec![
                    state("a", true, true, Some(Running)),
                    state("b", true, false, None),
                    state("c", true, false, None),
                ],
                vec!["a", "b"],
            ),
            (
                "a node that finished frees its slot",
                rollout(true, 1, false),
                vec![
                    state("a", true, true, Some(Succeeded)),
                    state("b", true, false, None),
                ],
                vec!["a", "b"],
            ),
            (
                "a released node that has not reported holds its slot",
                rollout(true, 1, false),
                vec![state("a", true, true, None), state("b", true, false, None)],
                vec!["a"],
            ),
            (
                "a failure halts a disruptive rollout",
                rollout(true, 5, false),
                vec![
                    state("a", true, true, Some(Failed)),
                    state("b", true, false, None),
                ],
                vec!["a"],
            ),
            (
                "a failure does not halt a safe command",
                rollout(false, 1, false),
                vec![
                    state("a", true, true, Some(Failed)),
                    state("b", true, false, None),
                ],
                vec!["a", "b"],
            ),
            (
                "a missing node is never released",
                rollout(true, 3, false),
                vec![state("x", false, false, None)],
                vec![],
            ),
        ];
        for (why, rollout, states, expected) in cases {
            let released = release(states, &rollout, T0);
            let names: Vec<&str> = released
                .iter()
                .filter(|s| s.released_at.is_some())
                .map(|s| s.name.as_str())
                .collect();
            assert_eq!(names, expected, "{why}");
        }
    }

    #[test]
    fn node_phases_step() {
        use TaskPhase::{Failed, Pending, Running};
        let halted = vec![
            state("a", true, true, Some(Failed)),
            state("b", true, true, None),
            state("c", true, false, None),
            state("x", false, false, None),
        ];
        let cases = [
            (
                "a report stands, a missing node fails, a halted rollout fails the waiting",
                rollout(true, 2, false),
                halted.clone(),
                vec![
                    ("a", Failed, true, None),
                    ("b", Pending, false, None),
                    ("c", Failed, false, Some(NodeFailureReason::RolloutStopped)),
                    ("x", Failed, false, Some(NodeFailureReason::NodeNotFound)),
                ],
            ),
            (
                "a safe command is not halted by a failure",
                rollout(false, 1, false),
                halted.clone(),
                vec![
                    ("a", Failed, true, None),
                    ("b", Pending, false, None),
                    ("c", Pending, false, None),
                    ("x", Failed, false, Some(NodeFailureReason::NodeNotFound)),
                ],
            ),
            (
                "a running report stays the daemon's",
                rollout(true, 1, false),
                vec![state("a", true, true, Some(Running))],
                vec![("a", Running, true, None)],
            ),
        ];
        for (why, rollout, states, expected) in cases {
            let got: Vec<_> = node_phases(&states, &rollout)
                .into_iter()
                .map(|o| (o.name, o.phase, o.reported, o.reason))
                .collect();
            let expected: Vec<_> = expected
                .into_iter()
                .map(|(n, p, r, reason)| (n.to_string(), p, r, reason))
                .collect();
            assert_eq!(got, expected, "{why}");
        }
        let outcomes = node_phases(&halted, &rollout(true, 2, false));
        assert_eq!(
            outcomes[2].msg.as_deref(),
            Some("not run: the rollout stopped after a failed")
        );
        assert_eq!(
            outcomes[3].msg.as_deref(),
            Some("no Node named x in the cluster")
        );
    }

    #[test]
    fn an_entry_leaves_a_reported_node_to_its_daemon() {
        let reported = outcome("a", TaskPhase::Failed, true);
        assert_eq!(
            reported.entry(),
            PlanEntry {
                name: "a".into(),
                phase: None,
                msg: None,
                reason: None,
                released_at: Some(T0.into()),
            }
        );
        let missing = NodeOutcome {
            msg: Some("no Node named b in the cluster".into()),
            reported: false,
            reason: Some(NodeFailureReason::NodeNotFound),
            ..outcome("b", TaskPhase::Failed, false)
        };
        assert_eq!(
            serde_json::to_value(missing.entry()).unwrap(),
            json!({"name": "b", "phase": "Failed", "msg": "no Node named b in the cluster", "reason": "NodeNotFound"})
        );
    }

    #[test]
    fn overall_step() {
        use TaskPhase::{Failed, PartiallyFailed, Pending, Running, Succeeded};
        let cases = [
            (
                "a dry run succeeds",
                rollout(false, 1, true),
                vec![outcome("a", Pending, false)],
                Succeeded,
                "DryRun",
            ),
            (
                "every node succeeded",
                rollout(false, 1, false),
                vec![outcome("a", Succeeded, true), outcome("b", Succeeded, true)],
                Succeeded,
                "Succeeded",
            ),
            (
                "no node succeeded",
                rollout(false, 1, false),
                vec![outcome("a", Failed, true), outcome("b", Failed, false)],
                Failed,
                "Failed",
            ),
            (
                "some nodes failed",
                rollout(false, 1, false),
                vec![outcome("a", Succeeded, true), outcome("b", Failed, true)],
                PartiallyFailed,
                "PartiallyFailed",
            ),
            (
                "a released node not finished is running",
                rollout(false, 1, false),
                vec![outcome("a", Succeeded, true), outcome("b", Pending, true)],
                Running,
                "Running",
            ),
            (
                "a node out of Pending while nothing was released is running",
                rollout(true, 1, false),
                vec![outcome("a", Failed, false), outcome("b", Pending, false)],
                Running,
                "Running",
            ),
            (
                "nothing released and nothing moved is pending",
                rollout(true, 1, false),
                vec![outcome("a", Pending, false)],
                Pending,
                "Pending",
            ),
        ];
        for (why, rollout, outcomes, phase, reason) in cases {
            let v = overall(&outcomes, &rollout);
            assert_eq!((v.phase, v.reason.as_str()), (phase, reason), "{why}");
        }
        let v = overall(
            &[outcome("a", Succeeded, true), outcome("b", Failed, true)],
            &rollout(false, 1, false),
        );
        assert_eq!(
            v.message,
            "2 node(s): 1 succeeded, 1 failed, 0 running, 0 pending; b: boom"
        );
        let v = overall(&[outcome("a", Pending, false)], &rollout(false, 1, true));
        assert_eq!(v.message, "dry run: planned for 1 node(s) (a); nothing ran");
    }

    /// `(Complete, Failed)` statuses of a verdict's conditions.
    fn statuses(conditions: &[Condition]) -> (&str, &str) {
        let of = |kind: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == kind)
                .map(|c| c.status.as_str())
                .unwrap_or("absent")
        };
        (of("Complete"), of("Failed"))
    }

    #[test]
    fn conditions_step_follows_jobs_complete_only_on_success_failed_otherwise() {
        let verdict = |phase: TaskPhase| Verdict {
            phase,
            reason: format!("{phase:?}"),
            message: "m".into(),
        };
        let cases = [
            (TaskPhase::Pending, ("False", "False")),
            (TaskPhase::Running, ("False", "False")),
            (TaskPhase::Succeeded, ("True", "False")),
            (TaskPhase::Failed, ("False", "True")),
            (TaskPhase::PartiallyFailed, ("False", "True")),
        ];
        for (phase, expected) in cases {
            let got = conditions(&verdict(phase), None, Some(2), now());
            assert_eq!(statuses(&got), expected, "{phase:?}");
            assert!(
                got.iter()
                    .all(|c| c.reason == format!("{phase:?}") && c.observed_generation == Some(2)),
                "{phase:?}: {got:?}"
            );
        }
    }

    #[test]
    fn progress_counts_finished_nodes_of_all_targets() {
        use TaskPhase::{Failed, Pending, Running, Succeeded};
        let nodes = [
            outcome("a", Succeeded, true),
            outcome("b", Failed, false),
            outcome("c", Running, true),
            outcome("d", Pending, false),
        ];
        assert_eq!(progress(&nodes), "2/4");
        assert_eq!(progress(&[]), "0/0");
        let mut s = spec(TaskHandler::ServiceHandler, TaskCommand::Start);
        s.node_names = vec!["node-x".into()];
        let d = decide(&s, None, Some(1), &cluster(), now());
        assert_eq!(d.status.progress, "1/3", "node-x failed at once");
    }

    #[test]
    fn conditions_step_moves_a_transition_time_only_on_a_flip() {
        let t1 = now() + jiff::SignedDuration::from_secs(60);
        let verdict = |phase: TaskPhase| Verdict {
            phase,
            reason: format!("{phase:?}"),
            message: "m".into(),
        };
        let running = conditions(&verdict(TaskPhase::Running), None, Some(2), now());
        let previous = NodeTaskStatus {
            conditions: running,
            ..Default::default()
        };
        let still = conditions(&verdict(TaskPhase::Pending), Some(&previous), Some(2), t1);
        assert!(
            still.iter().all(|c| c.last_transition_time == Time(now())),
            "nothing flipped: {still:?}"
        );
        let failed = conditions(&verdict(TaskPhase::Failed), Some(&previous), Some(2), t1);
        let time = |kind: &str| {
            failed
                .iter()
                .find(|c| c.type_ == kind)
                .map(|c| c.last_transition_time.clone())
        };
        assert_eq!(time("Failed"), Some(Time(t1)), "Failed flipped to True");
        assert_eq!(time("Complete"), Some(Time(now())), "Complete stayed False");
    }

    #[test]
    fn transition_event_step() {
        use TaskPhase::{Failed, PartiallyFailed, Running, Succeeded};
        let verdict = |phase: TaskPhase| Verdict {
            phase,
            reason: format!("{phase:?}"),
            message: "m".into(),
        };
        let cases = [
            (
                "no event while the phase stays",
                Some(Running),
                Running,
                None,
            ),
            (
                "the first phase is announced",
                None,
                Running,
                Some(EventType::Normal),
            ),
            (
                "success is normal",
                Some(Running),
                Succeeded,
                Some(EventType::Normal),
            ),
            (
                "failure warns",
                Some(Running),
                Failed,
                Some(EventType::Warning),
            ),
            (
                "partial failure warns",
                Some(Running),
                PartiallyFailed,
                Some(EventType::Warning),
            ),
        ];
        for (why, before, after, expected) in cases {
            let event = transition_event(before, &verdict(after));
            assert_eq!(event.as_ref().map(|e| e.type_), expected, "{why}");
            if let Some(event) = event {
                assert_eq!(event.reason, format!("{after:?}"), "{why}");
            }
        }
    }
}
