//! The pure part of the NodeTask controller: from the spec, the previous status and what the
//! reconcile observed (the cluster's Nodes, the pods on draining nodes, the gates' readings,
//! this round's evictions, the time), what the operator's part of the status should be, which
//! Nodes to cordon and uncordon, which pods to evict, and which events to publish. No I/O, no
//! clock.
//!
//! [`decide`] is a chain of small steps, each tested on its own:
//!
//! 1. [`plan`]: the target nodes — the plan already written, or resolved from `nodeNames` and
//!    `nodeSelector` — or the [`Problem`] that stops the task before it starts.
//! 2. [`node_states`]: each target as the previous status has it.
//! 3. [`settle`]: each node's [`Stage`] now — waiting, draining, released, done or failed — with
//!    the drain (cordon, evictions, [`NodeTimeout`](NodeFailureReason::NodeTimeout)s, "back
//!    means back": a new boot id and the Node Ready) and the uncordon of a node that is done.
//! 4. [`hold`]: what keeps the next node from starting — `paused`, `window`, the gates.
//! 5. [`release`]: which waiting nodes start now (drain first, or release), under the
//!    [`Rollout`] rules.
//! 6. [`node_phases`]: each node's effective phase, and the entry the operator writes for it.
//! 7. [`overall`]: the task's phase with the reason and message of its conditions.
//! 8. [`conditions`] and [`events`]: `Complete`, `Failed` (Job's convention) and `Waiting`, and
//!    the events of a phase change and of a new hold.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::core::{Selector, SelectorExt};
use kube::runtime::events::{Event, EventType};
use opsplane_resources::duration::parse_duration;
use opsplane_resources::node_task::{
    NodeFailureReason, NodeResult, NodeTaskSpec, NodeTaskStatus, TaskPhase,
};
use opsplane_resources::status::truncate;

use super::gate::GateReadings;
use super::window::{self, WindowState};
use super::{NodeInfo, OperatorStatus, PlanEntry};

/// How many nodes a disruptive command may occupy at once when `maxUnavailable` is not set.
pub const DEFAULT_MAX_UNAVAILABLE: usize = 1;
/// `spec.nodeTimeout` of shutdown and reboot when unset.
pub const DEFAULT_POWER_NODE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// `spec.nodeTimeout` of other commands when unset.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// A pod on a node being drained, as the drain needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// `namespace/name`.
    pub name: String,
    /// Its labels (to name the PodDisruptionBudgets that cover it).
    pub labels: BTreeMap<String, String>,
    /// Owned by a DaemonSet: it would come straight back, so it stays (kubectl drain's
    /// `--ignore-daemonsets`).
    pub daemon_set: bool,
    /// A mirror pod (annotation `kubernetes.io/config.mirror`): the kubelet's static pod, which
    /// the API cannot evict.
    pub mirror: bool,
    /// Phase Succeeded or Failed: nothing runs any more.
    pub finished: bool,
    /// Has a deletion timestamp: evicted (or deleted) and terminating.
    pub terminating: bool,
}

impl PodInfo {
    /// Whether the drain waits for this pod to go.
    pub fn counts(&self) -> bool {
        !self.daemon_set && !self.mirror && !self.finished
    }
}

/// How one eviction of this round went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictionOutcome {
    /// Accepted: the pod is terminating.
    Evicted,
    /// Gone already.
    Gone,
    /// Refused because of a PodDisruptionBudget (HTTP 429): never forced.
    Blocked {
        /// `namespace/name` of the budgets covering the pod.
        budgets: Vec<String>,
        /// The API server's message.
        message: String,
    },
    /// Refused otherwise.
    Failed(String),
}

/// One eviction of this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// The node drained.
    pub node: String,
    /// `namespace/name` of the pod.
    pub pod: String,
    /// What the API server said.
    pub outcome: EvictionOutcome,
}

/// What the reconcile observed before deciding.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The task's name (the value of the cordon annotation).
    pub task: &'a str,
    /// Every Node of the cluster.
    pub nodes: &'a [NodeInfo],
    /// The pods of each node that was draining in the previous status.
    pub pods: &'a BTreeMap<String, Vec<PodInfo>>,
    /// The gates' readings (only for the gates the task has).
    pub gates: &'a GateReadings,
    /// The evictions made this round (none on the first pass).
    pub evictions: &'a [Eviction],
    /// Now.
    pub now: Timestamp,
}

/// What the reconcile does to Nodes and pods; each is idempotent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions {
    /// Nodes to cordon (unschedulable, annotated with the task's name).
    pub cordon: Vec<String>,
    /// Nodes this task cordoned to uncordon.
    pub uncordon: Vec<String>,
    /// Pods (`namespace/name`) to evict, by node.
    pub evict: Vec<(String, String)>,
}

/// What [`decide`] says.
pub struct Decision {
    /// Operator-owned status fields to apply; `status.phase` is the overall phase with the
    /// nodes' reports merged in.
    pub status: OperatorStatus,
    /// Events to publish: a phase change, a new hold.
    pub events: Vec<Event>,
    /// Cordons, uncordons and evictions, done before the status is written.
    pub actions: Actions,
    /// Whether something is in motion that no watch event announces (a drain, a node to come
    /// back, a hold to lift): the reconcile then looks again soon.
    pub polling: bool,
}

/// What the operator's part of the status should be. Pure: no I/O, no clock.
///
/// - The plan is made once (first reconcile): later Node changes do not add or drop targets.
/// - A named node that does not exist fails at once and is never released.
/// - A node starts only while nothing holds the rollout ([`hold`]: `paused`, outside `window`,
///   a node already done not Ready, a selected MonitoredService not Available, an alert firing).
/// - Non-disruptive commands start on every target at once; disruptive ones
///   ([`opsplane_resources::node_task::TaskCommand::is_disruptive`]) on `maxUnavailable`
///   (default 1) nodes at a time, the next only after a started node is done. A node that drains
///   (shutdown and reboot by default, `spec.drain`) is cordoned and its pods evicted first; it is
///   released once no pod is left, and uncordoned once done. A shutdown or reboot is done when
///   the daemon reports back with a new boot id and the Node is Ready. A node not done within
///   `nodeTimeout` of its release, or not drained within `drain.timeout`, fails. After a node
///   fails, nothing more starts and the rest fail as "not run".
/// - `dryRun`: the plan is written, nothing is released; the phase is what a real run would
///   meet before running anything: Succeeded when every target exists, else Failed (no target
///   exists) or PartiallyFailed (some do not).
/// - Phase: Pending until a node starts; Running; then Succeeded (all nodes), Failed (none) or
///   PartiallyFailed.
/// - Conditions, as a Job's: `Complete=True` only when Succeeded; `Failed=True` when Failed or
///   PartiallyFailed (reason says which); both False while Pending or Running. `Waiting=True`
///   while a hold or a refused eviction keeps the rollout from moving on.
pub fn decide(
    spec: &NodeTaskSpec,
    previous: Option<&NodeTaskStatus>,
    generation: Option<i64>,
    observed: &Observed,
) -> Decision {
    let now = observed.now;
    let mut actions = Actions::default();
    let (outcomes, verdict, waiting, polling) = match plan(spec, previous, observed.nodes)
        .and_then(|targets| Rollout::of(spec).map(|rollout| (targets, rollout)))
    {
        Err(problem) => (Vec::new(), problem.verdict(), None, false),
        Ok((targets, rollout)) => {
            let states = node_states(targets, previous);
            let mut stages = settle(&states, &rollout, observed, &mut actions);
            let held = if startable(&stages, &rollout) {
                hold(spec, &states, &stages, observed)
            } else {
                None
            };
            if held.is_none() {
                release(&states, &mut stages, &rollout, observed, &mut actions);
            }
            let outcomes = node_phases(&states, &stages, &rollout, observed.evictions);
            let verdict = overall(&outcomes, &rollout);
            let blocked = blocked(observed.evictions);
            let waiting = if terminal_phase(verdict.phase) {
                None
            } else {
                blocked.or(held)
            };
            let polling = !rollout.dry_run
                && !terminal_phase(verdict.phase)
                && (waiting.is_some()
                    || stages
                        .iter()
                        .any(|s| matches!(s, Stage::Draining { .. } | Stage::Released { .. })));
            (outcomes, verdict, waiting, polling)
        }
    };
    let conditions = conditions(&verdict, waiting.as_ref(), previous, generation, now);
    let events = events(previous, &verdict, waiting.as_ref());
    Decision {
        status: OperatorStatus {
            phase: verdict.phase,
            progress: progress(&outcomes),
            observed_generation: generation,
            conditions,
            nodes: outcomes.iter().map(NodeOutcome::entry).collect(),
        },
        events,
        actions,
        polling,
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
    /// The spec cannot be run: a command of another handler, a bad selector, an unknown time
    /// zone, a filter that does not compile.
    InvalidTask,
    /// Nothing matches `nodeNames` / `nodeSelector`.
    NoTargets,
}

impl ProblemKind {
    /// The condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            ProblemKind::InvalidTask => "InvalidTask",
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

/// A label selector checked as Kubernetes would: `In` / `NotIn` need values (an empty set would
/// silently match nothing or everything), and the rest must parse. `field` names it in errors.
pub fn selector_of(selector: &LabelSelector, field: &str) -> Result<Selector, String> {
    for requirement in selector.match_expressions.iter().flatten() {
        let empty = requirement.values.as_ref().is_none_or(|v| v.is_empty());
        if matches!(requirement.operator.as_str(), "In" | "NotIn") && empty {
            return Err(format!(
                "{field}: {} {} needs at least one value",
                requirement.key, requirement.operator
            ));
        }
    }
    Selector::try_from(selector.clone())
        .map_err(|e| format!("{field} is not a valid label selector: {}", e.0))
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
    let invalid = |m: String| Problem::new(ProblemKind::InvalidTask, m);
    if !spec.handler.commands().contains(&spec.command) {
        return Err(invalid(format!(
            "spec.command {:?} is not a command of spec.handler {:?}",
            spec.command, spec.handler
        )));
    }
    if let Some(w) = &spec.window {
        window::state(w, Timestamp::UNIX_EPOCH).map_err(|e| invalid(e.to_string()))?;
    }
    if let Some(gate) = &spec.gate {
        if let Some(selector) = &gate.monitored_services {
            selector_of(selector, "spec.gate.monitoredServices").map_err(invalid)?;
        }
        if let Some(filter) = gate
            .prometheus
            .as_ref()
            .and_then(|p| p.alert_filter_regexp.as_ref())
        {
            regex::Regex::new(filter).map_err(|e| {
                invalid(format!(
                    "spec.gate.prometheus.alertFilterRegexp does not compile: {e}"
                ))
            })?;
        }
    }
    let targets = resolve_targets(spec, nodes).map_err(invalid)?;
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
        let selector = selector_of(selector, "spec.nodeSelector")?;
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

/// One target as the previous status has it: the operator's fields merged with the daemon's
/// report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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
    /// When the operator began draining the node.
    pub drain_started_at: Option<String>,
    /// When the operator counted the node done.
    pub done_at: Option<String>,
    /// A verdict of the operator that stands (a timeout).
    pub timed_out: Option<NodeFailureReason>,
    /// The operator's note on the entry (kept with a verdict that stands).
    pub note: Option<String>,
    /// The daemon's boot ids, before the task and after coming back.
    pub boot_ids: (Option<String>, Option<String>),
}

/// Whether a node's daemon has written its result (it always writes `startedAt`).
fn reported(entry: &NodeResult) -> bool {
    entry.started_at.is_some() || entry.finished_at.is_some()
}

fn terminal(phase: TaskPhase) -> bool {
    matches!(phase, TaskPhase::Succeeded | TaskPhase::Failed)
}

fn terminal_phase(phase: TaskPhase) -> bool {
    matches!(
        phase,
        TaskPhase::Succeeded | TaskPhase::Failed | TaskPhase::PartiallyFailed
    )
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
                drain_started_at: entry.and_then(|e| e.drain_started_at.clone()),
                done_at: entry.and_then(|e| e.done_at.clone()),
                timed_out: entry.and_then(|e| e.reason).filter(|r| {
                    matches!(
                        r,
                        NodeFailureReason::NodeTimeout | NodeFailureReason::DrainTimeout
                    )
                }),
                note: entry.and_then(|e| e.note.clone()),
                boot_ids: (
                    entry.and_then(|e| e.boot_id_before.clone()),
                    entry.and_then(|e| e.boot_id_after.clone()),
                ),
                name,
            }
        })
        .collect()
}

// --- 3. settle -------------------------------------------------------------------------------

/// How a task is rolled out, from its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// Whether the command is disruptive: started `max_unavailable` nodes at a time and halted
    /// by a failure.
    pub disruptive: bool,
    /// How many started nodes may be in flight at once for a disruptive command (at least 1).
    pub max_unavailable: usize,
    /// Plan only, release nothing.
    pub dry_run: bool,
    /// Shutdown or reboot: done only when back with a new boot id and the Node Ready.
    pub power: bool,
    /// Cordon and drain before releasing, uncordon when done.
    pub drain: bool,
    /// How long a drain may take (`None`: no limit).
    pub drain_timeout: Option<Duration>,
    /// How long a released node may take to be done.
    pub node_timeout: Duration,
    /// Grace period of each eviction.
    pub grace_period_seconds: Option<i64>,
}

impl Rollout {
    /// The rollout of `spec`: `maxUnavailable` when set and positive, else
    /// [`DEFAULT_MAX_UNAVAILABLE`]; drain on for power commands unless `spec.drain.enabled`
    /// says otherwise, and only ever for disruptive ones; the timeouts parsed (the CRD schema
    /// admits only durations that parse).
    pub fn of(spec: &NodeTaskSpec) -> Result<Self, Problem> {
        let power = spec.command.is_power();
        let disruptive = spec.command.is_disruptive();
        let invalid = |field: &str, e: opsplane_resources::duration::DurationError| {
            Problem::new(ProblemKind::InvalidTask, format!("{field}: {e}"))
        };
        let node_timeout = match &spec.node_timeout {
            Some(text) => parse_duration(text).map_err(|e| invalid("spec.nodeTimeout", e))?,
            None if power => DEFAULT_POWER_NODE_TIMEOUT,
            None => DEFAULT_NODE_TIMEOUT,
        };
        let drain = spec.drain.clone().unwrap_or_default();
        let drain_timeout = match &drain.timeout {
            Some(text) => Some(parse_duration(text).map_err(|e| invalid("spec.drain.timeout", e))?),
            None => None,
        };
        Ok(Self {
            disruptive,
            max_unavailable: spec
                .max_unavailable
                .and_then(|m| usize::try_from(m).ok())
                .filter(|m| *m >= 1)
                .unwrap_or(DEFAULT_MAX_UNAVAILABLE),
            dry_run: spec.dry_run,
            power,
            drain: disruptive && drain.enabled.unwrap_or(power),
            drain_timeout,
            node_timeout,
            grace_period_seconds: drain.grace_period_seconds,
        })
    }
}

/// Where a node stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Not started.
    Waiting,
    /// Cordoned, pods being evicted; not released yet.
    Draining {
        /// Since when.
        since: String,
        /// Pods the drain still waits for.
        pods_left: usize,
    },
    /// Released to its daemon; not done yet.
    Released {
        /// When.
        at: String,
        /// What the operator waits for, when the daemon has reported.
        note: Option<String>,
    },
    /// Done (the operator's verdict; with the time when it had to be confirmed).
    Done {
        /// `doneAt`, when the node had to come back or be uncordoned.
        at: Option<String>,
    },
    /// Failed: the daemon reported so, or the operator failed it for a timeout.
    Failed {
        /// The operator's reason, when it was the operator.
        reason: Option<NodeFailureReason>,
        /// The operator's note.
        note: Option<String>,
    },
}

fn elapsed_since(since: &str, now: Timestamp) -> Option<Duration> {
    let since: Timestamp = since.parse().ok()?;
    let d: SignedDuration = now.duration_since(since);
    Duration::try_from(d).ok()
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Whether a power command's node is back: a new boot id (both known and different) and Ready.
/// `Err` says what is missing.
fn back(state: &NodeState, node: Option<&NodeInfo>) -> Result<(), String> {
    let (before, after) = (&state.boot_ids.0, &state.boot_ids.1);
    match (before.as_deref(), after.as_deref()) {
        (Some(b), Some(a)) if !b.is_empty() && !a.is_empty() && a != b => {}
        (Some(b), Some(a)) if a == b => {
            return Err(format!(
                "the node-daemon is back but the boot id did not change ({a}); waiting for the node to reboot"
            ));
        }
        _ => return Err("waiting for the node-daemon to report back with a new boot id".into()),
    }
    match node {
        Some(n) if n.ready => Ok(()),
        Some(_) => Err("back with a new boot id; waiting for the Node to be Ready".into()),
        None => Err("back with a new boot id; the Node object is gone".into()),
    }
}

/// Step 3: each node's stage, and the cordons, evictions and uncordons that go with it.
///
/// - A timeout the operator recorded stands; so does a node counted done.
/// - A released node: a reported failure fails it; reported success makes it done — for a power
///   command only once [back](back) — and uncordons it if this task cordoned it; not done within
///   `nodeTimeout` of its release, it fails ([`NodeFailureReason::NodeTimeout`]; it stays
///   cordoned: it is not known to be well).
/// - A draining node: cordoned (again, if someone uncordoned it), its counted pods that are not
///   terminating evicted; released once none is left and the Node is unschedulable; past
///   `drain.timeout` it fails ([`NodeFailureReason::DrainTimeout`]) and is uncordoned.
pub fn settle(
    states: &[NodeState],
    rollout: &Rollout,
    observed: &Observed,
    actions: &mut Actions,
) -> Vec<Stage> {
    let now = observed.now;
    let node_of = |name: &str| observed.nodes.iter().find(|n| n.name == name);
    let ours =
        |name: &str| node_of(name).is_some_and(|n| n.cordoned_by.as_deref() == Some(observed.task));
    states
        .iter()
        .map(|s| {
            if let Some(reason) = s.timed_out {
                return Stage::Failed {
                    reason: Some(reason),
                    note: s.note.clone(),
                };
            }
            if s.done_at.is_some() {
                return Stage::Done {
                    at: s.done_at.clone(),
                };
            }
            if let Some(at) = &s.released_at {
                let timed_out = elapsed_since(at, now).is_some_and(|e| e >= rollout.node_timeout);
                let timeout = |what: String| Stage::Failed {
                    reason: Some(NodeFailureReason::NodeTimeout),
                    note: Some(format!(
                        "not done within spec.nodeTimeout ({}) of its release: {what}",
                        human(rollout.node_timeout)
                    )),
                };
                return match s.reported {
                    Some(TaskPhase::Failed) => Stage::Failed {
                        reason: None,
                        note: None,
                    },
                    Some(TaskPhase::Succeeded) => {
                        let confirmed = if rollout.power {
                            back(s, node_of(&s.name))
                        } else {
                            Ok(())
                        };
                        match confirmed {
                            Ok(()) => {
                                let cordoned = ours(&s.name);
                                if cordoned {
                                    actions.uncordon.push(s.name.clone());
                                }
                                Stage::Done {
                                    at: (rollout.power || cordoned || s.drain_started_at.is_some())
                                        .then(|| now.to_string()),
                                }
                            }
                            Err(what) if timed_out => timeout(what),
                            Err(what) => Stage::Released {
                                at: at.clone(),
                                note: Some(what),
                            },
                        }
                    }
                    _ if timed_out => timeout(if s.reported.is_some() {
                        "the node-daemon never reported it finished".into()
                    } else {
                        "the node-daemon never reported".into()
                    }),
                    _ => Stage::Released {
                        at: at.clone(),
                        note: None,
                    },
                };
            }
            if let Some(since) = &s.drain_started_at {
                if rollout
                    .drain_timeout
                    .is_some_and(|limit| elapsed_since(since, now).is_some_and(|e| e >= limit))
                {
                    if ours(&s.name) {
                        actions.uncordon.push(s.name.clone());
                    }
                    let left = observed.pods.get(&s.name).map(|p| p.iter().filter(|p| p.counts()).count()).unwrap_or(0);
                    return Stage::Failed {
                        reason: Some(NodeFailureReason::DrainTimeout),
                        note: Some(format!(
                            "not drained within spec.drain.timeout ({}): {left} pod(s) left; uncordoned, nothing forced",
                            human(rollout.drain_timeout.unwrap_or_default())
                        )),
                    };
                }
                let node = node_of(&s.name);
                let cordoned = node.is_some_and(|n| n.unschedulable);
                if !cordoned {
                    actions.cordon.push(s.name.clone());
                }
                let pods: Vec<&PodInfo> = observed
                    .pods
                    .get(&s.name)
                    .map(|p| p.iter().filter(|p| p.counts()).collect())
                    .unwrap_or_default();
                for pod in pods.iter().filter(|p| !p.terminating) {
                    actions.evict.push((s.name.clone(), pod.name.clone()));
                }
                if cordoned && pods.is_empty() && observed.pods.contains_key(&s.name) {
                    return Stage::Released {
                        at: now.to_string(),
                        note: None,
                    };
                }
                return Stage::Draining {
                    since: since.clone(),
                    pods_left: pods.len(),
                };
            }
            Stage::Waiting
        })
        .collect()
}

// --- 4. hold ---------------------------------------------------------------------------------

/// What keeps the rollout from moving on: the reason of the `Waiting` condition and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The condition's reason (Paused, OutsideWindow, NodeNotReady,
    /// MonitoredServiceNotAvailable, AlertsFiring, AlertsUnknown, PodDisruptionBudget,
    /// EvictionFailed).
    pub reason: &'static str,
    /// For people: what holds it, and for a window when it opens.
    pub message: String,
}

impl Hold {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: truncate(&message.into(), 1000),
        }
    }

    /// Holds that mean something is wrong are Warnings; a pause or a closed window is not.
    fn event_type(&self) -> EventType {
        match self.reason {
            "Paused" | "OutsideWindow" => EventType::Normal,
            _ => EventType::Warning,
        }
    }
}

fn halted(stages: &[Stage], rollout: &Rollout) -> bool {
    rollout.disruptive && stages.iter().any(|s| matches!(s, Stage::Failed { .. }))
}

fn in_flight(stages: &[Stage]) -> usize {
    stages
        .iter()
        .filter(|s| matches!(s, Stage::Draining { .. } | Stage::Released { .. }))
        .count()
}

/// Whether a node could start now if nothing held the rollout: one is waiting, the rollout is
/// not halted, a slot is free, it is not a dry run.
pub fn startable(stages: &[Stage], rollout: &Rollout) -> bool {
    !rollout.dry_run
        && !halted(stages, rollout)
        && stages.contains(&Stage::Waiting)
        && (!rollout.disruptive || in_flight(stages) < rollout.max_unavailable)
}

/// Step 4: what holds the next start, checked in this order: `spec.paused`; `spec.window`
/// (the message says when it opens); every node already done Ready; the MonitoredServices of
/// `spec.gate.monitoredServices` all Available (a selector matching none holds too); no alert
/// of `spec.gate.prometheus` counting (kured's filter rules). A gate that could not be read
/// holds.
pub fn hold(
    spec: &NodeTaskSpec,
    states: &[NodeState],
    stages: &[Stage],
    observed: &Observed,
) -> Option<Hold> {
    if spec.paused {
        return Some(Hold::new(
            "Paused",
            "spec.paused is true: no node starts until it is false",
        ));
    }
    if let Some(w) = &spec.window {
        match window::state(w, observed.now) {
            Ok(WindowState::Open) => {}
            Ok(WindowState::Closed { opens_at }) => {
                return Some(Hold::new(
                    "OutsideWindow",
                    format!(
                        "outside spec.window ({}); the next node may start at {}",
                        window::describe(w),
                        opens_at.strftime("%Y-%m-%dT%H:%M:%S%:z")
                    ),
                ));
            }
            Err(e) => return Some(Hold::new("OutsideWindow", e.to_string())),
        }
    }
    let done: BTreeSet<&str> = states
        .iter()
        .zip(stages)
        .filter(|(_, stage)| matches!(stage, Stage::Done { .. }))
        .map(|(s, _)| s.name.as_str())
        .collect();
    let not_ready: Vec<&str> = done
        .iter()
        .copied()
        .filter(|name| !observed.nodes.iter().any(|n| n.name == *name && n.ready))
        .collect();
    if !not_ready.is_empty() {
        return Some(Hold::new(
            "NodeNotReady",
            format!(
                "node(s) already done are not Ready: {}",
                not_ready.join(", ")
            ),
        ));
    }
    let gate = spec.gate.as_ref()?;
    if gate.monitored_services.is_some() {
        match &observed.gates.services {
            Some(Ok(services)) if services.is_empty() => {
                return Some(Hold::new(
                    "MonitoredServiceNotAvailable",
                    "spec.gate.monitoredServices selects no MonitoredService",
                ));
            }
            Some(Ok(services)) => {
                let down: Vec<String> = services
                    .iter()
                    .filter(|s| !s.available)
                    .take(5)
                    .map(|s| format!("{} ({})", s.name, truncate(&s.message, 200)))
                    .collect();
                if !down.is_empty() {
                    return Some(Hold::new(
                        "MonitoredServiceNotAvailable",
                        format!("MonitoredService(s) not Available: {}", down.join("; ")),
                    ));
                }
            }
            Some(Err(e)) => return Some(Hold::new("MonitoredServiceNotAvailable", e.clone())),
            None => {
                return Some(Hold::new(
                    "MonitoredServiceNotAvailable",
                    "the MonitoredServices of spec.gate were not read",
                ));
            }
        }
    }
    if let Some(p) = &gate.prometheus {
        let filter = match p.alert_filter_regexp.as_deref().map(regex::Regex::new) {
            None => None,
            Some(Ok(re)) => Some(re),
            Some(Err(e)) => {
                return Some(Hold::new(
                    "AlertsUnknown",
                    format!("spec.gate.prometheus.alertFilterRegexp does not compile: {e}"),
                ));
            }
        };
        match &observed.gates.alerts {
            Some(Ok(alerts)) => {
                let counting: BTreeSet<&str> = alerts
                    .iter()
                    .filter(|a| a.firing || !p.alert_firing_only)
                    .filter(|a| {
                        let matches = filter.as_ref().is_some_and(|re| re.is_match(&a.name));
                        if p.alert_filter_match_only {
                            matches
                        } else {
                            !matches
                        }
                    })
                    .map(|a| a.name.as_str())
                    .collect();
                if !counting.is_empty() {
                    let names: Vec<&str> = counting.into_iter().take(10).collect();
                    return Some(Hold::new(
                        "AlertsFiring",
                        format!("alerts active at {}: {}", p.url, names.join(", ")),
                    ));
                }
            }
            Some(Err(e)) => {
                return Some(Hold::new(
                    "AlertsUnknown",
                    format!("the alerts could not be read: {e}"),
                ));
            }
            None => {
                return Some(Hold::new("AlertsUnknown", "the alerts were not read"));
            }
        }
    }
    None
}

// --- 5. release ------------------------------------------------------------------------------

/// Step 5: start waiting nodes, in plan order, stamped `now`: nothing in a dry run or after a
/// disruptive rollout failed; every existing node at once for a safe command; for a disruptive
/// one, as many as free slots (`max_unavailable` minus the nodes draining or released and not
/// done). A node that drains starts by being cordoned ([`Stage::Draining`]); others are
/// released.
pub fn release(
    states: &[NodeState],
    stages: &mut [Stage],
    rollout: &Rollout,
    observed: &Observed,
    actions: &mut Actions,
) {
    let now = observed.now;
    if rollout.dry_run || halted(stages, rollout) {
        return;
    }
    let mut slots = if rollout.disruptive {
        rollout.max_unavailable.saturating_sub(in_flight(stages))
    } else {
        usize::MAX
    };
    for (state, stage) in states.iter().zip(stages.iter_mut()) {
        if slots == 0 {
            break;
        }
        if *stage == Stage::Waiting && state.exists && state.reported.is_none() {
            *stage = if rollout.drain {
                // A node someone else cordoned stays theirs: not annotated, never uncordoned.
                let schedulable = observed
                    .nodes
                    .iter()
                    .any(|n| n.name == state.name && !n.unschedulable);
                if schedulable {
                    actions.cordon.push(state.name.clone());
                }
                Stage::Draining {
                    since: now.to_string(),
                    pods_left: 0,
                }
            } else {
                Stage::Released {
                    at: now.to_string(),
                    note: None,
                }
            };
            slots -= 1;
        }
    }
}

// --- 6. per-node phases ----------------------------------------------------------------------

/// A node's effective phase: the operator's verdict over the daemon's report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeOutcome {
    /// Node name.
    pub name: String,
    /// The effective phase.
    pub phase: TaskPhase,
    /// The message that goes with it (the daemon's, or why the operator failed the node).
    pub msg: Option<String>,
    /// Whether the daemon reported (it then owns `phase` and `msg` of the entry).
    pub reported: bool,
    /// Why the operator failed the node, when it did.
    pub reason: Option<NodeFailureReason>,
    /// When the task was released to the node.
    pub released_at: Option<String>,
    /// When the drain began.
    pub drain_started_at: Option<String>,
    /// When the operator counted the node done.
    pub done_at: Option<String>,
    /// What the operator waits for on the node, or why it failed it.
    pub note: Option<String>,
}

impl NodeOutcome {
    /// The operator's part of the node's status entry: its phase and message only while the
    /// daemon has not reported, so a report is never overwritten; its own fields always.
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
            reason: self.reason,
            released_at: self.released_at.clone(),
            drain_started_at: self.drain_started_at.clone(),
            done_at: self.done_at.clone(),
            note: self.note.clone(),
        }
    }
}

/// Step 6: each node's effective phase. A node counted done is Succeeded; a failure (the
/// daemon's, or a timeout of the operator's) is Failed; a released node is the daemon's phase,
/// except that a reported success not confirmed yet is Running; a draining node is Pending; a
/// missing node is Failed ([`NodeFailureReason::NodeNotFound`]); a waiting node of a halted
/// disruptive rollout is Failed ([`NodeFailureReason::RolloutStopped`]); else Pending.
pub fn node_phases(
    states: &[NodeState],
    stages: &[Stage],
    rollout: &Rollout,
    evictions: &[Eviction],
) -> Vec<NodeOutcome> {
    let halted_by = states
        .iter()
        .zip(stages)
        .find(|(_, stage)| matches!(stage, Stage::Failed { .. }))
        .map(|(s, _)| s.name.as_str())
        .filter(|_| rollout.disruptive && !rollout.dry_run);
    states
        .iter()
        .zip(stages)
        .map(|(s, stage)| {
            let base = NodeOutcome {
                name: s.name.clone(),
                phase: TaskPhase::Pending,
                msg: s.msg.clone(),
                reported: s.reported.is_some(),
                reason: None,
                released_at: s.released_at.clone(),
                drain_started_at: s.drain_started_at.clone(),
                done_at: None,
                note: None,
            };
            match stage {
                Stage::Waiting => {
                    if let Some(phase) = s.reported {
                        NodeOutcome { phase, ..base }
                    } else if !s.exists {
                        NodeOutcome {
                            phase: TaskPhase::Failed,
                            msg: Some(format!("no Node named {} in the cluster", s.name)),
                            reason: Some(NodeFailureReason::NodeNotFound),
                            ..base
                        }
                    } else if let Some(failed) = halted_by {
                        NodeOutcome {
                            phase: TaskPhase::Failed,
                            msg: Some(format!(
                                "not run: the rollout stopped after {failed} failed"
                            )),
                            reason: Some(NodeFailureReason::RolloutStopped),
                            ..base
                        }
                    } else {
                        NodeOutcome { msg: None, ..base }
                    }
                }
                Stage::Draining { since, pods_left } => {
                    let refused: Vec<String> = evictions
                        .iter()
                        .filter(|e| e.node == s.name)
                        .filter_map(|e| match &e.outcome {
                            EvictionOutcome::Blocked { budgets, .. } => Some(format!(
                                "{} refused by PodDisruptionBudget {}",
                                e.pod,
                                budgets.join(", ")
                            )),
                            EvictionOutcome::Failed(m) => Some(format!("{}: {m}", e.pod)),
                            _ => None,
                        })
                        .take(3)
                        .collect();
                    let mut note = format!("cordoned; draining: {pods_left} pod(s) left");
                    if !refused.is_empty() {
                        note.push_str("; eviction of ");
                        note.push_str(&refused.join("; "));
                    }
                    NodeOutcome {
                        msg: None,
                        drain_started_at: Some(since.clone()),
                        note: Some(truncate(&note, 1000)),
                        ..base
                    }
                }
                Stage::Released { at, note } => NodeOutcome {
                    phase: match s.reported {
                        Some(TaskPhase::Succeeded) => TaskPhase::Running,
                        Some(phase) => phase,
                        None => TaskPhase::Pending,
                    },
                    msg: if s.reported.is_some() {
                        s.msg.clone()
                    } else {
                        None
                    },
                    released_at: Some(at.clone()),
                    note: note.clone(),
                    ..base
                },
                Stage::Done { at } => NodeOutcome {
                    phase: TaskPhase::Succeeded,
                    done_at: at.clone(),
                    ..base
                },
                Stage::Failed { reason, note } => NodeOutcome {
                    phase: TaskPhase::Failed,
                    // The operator's verdict is the message when the daemon's is not there.
                    msg: if s.reported.is_some() {
                        s.msg.clone()
                    } else {
                        note.clone().or_else(|| s.msg.clone())
                    },
                    reason: *reason,
                    note: note.clone(),
                    ..base
                },
            }
        })
        .collect()
}

// --- 7. overall phase ------------------------------------------------------------------------

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
        .map(|n| {
            let why = match (&n.reason, &n.note) {
                (
                    Some(NodeFailureReason::NodeTimeout | NodeFailureReason::DrainTimeout),
                    Some(note),
                ) => note.as_str(),
                _ => n.msg.as_deref().unwrap_or("failed"),
            };
            format!("{}: {why}", n.name)
        })
        .collect();
    if !failures.is_empty() {
        text.push_str("; ");
        text.push_str(&failures.join("; "));
    }
    truncate(&text, 1000)
}

/// Step 7: the overall phase. A dry run is what a real run would meet before it runs anything:
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
    let started = nodes.iter().any(|n| {
        n.released_at.is_some() || n.drain_started_at.is_some() || n.phase != TaskPhase::Pending
    });
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

// --- 8. conditions and events ------------------------------------------------------------------

/// The condition types a NodeTask carries, in the order they are written.
pub const CONDITION_TYPES: [&str; 3] = ["Complete", "Failed", "Waiting"];

/// Step 8a: the conditions, as a Job's, so that `kubectl wait --for=condition=Complete` means
/// success and `--for=condition=Failed` means failure:
///
/// - `Complete`: True only when the task Succeeded (a successful dry run included).
/// - `Failed`: True when the task Failed or PartiallyFailed (the reason says which).
/// - `Waiting`: True while something holds the rollout (the [`Hold`]'s reason and message);
///   False with reason `NotWaiting` otherwise.
///
/// `Complete` and `Failed` are False while the task is Pending or Running and carry the
/// verdict's reason and message. `lastTransitionTime` moves only when a condition's status
/// flips.
pub fn conditions(
    verdict: &Verdict,
    waiting: Option<&Hold>,
    previous: Option<&NodeTaskStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let holds = |kind: &str| match kind {
        "Complete" => verdict.phase == TaskPhase::Succeeded,
        "Waiting" => waiting.is_some(),
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
            let (reason, message) = match (*kind, waiting) {
                ("Waiting", Some(hold)) => (hold.reason.to_string(), hold.message.clone()),
                ("Waiting", None) => ("NotWaiting".to_string(), String::new()),
                _ => (verdict.reason.clone(), verdict.message.clone()),
            };
            Condition {
                type_: (*kind).into(),
                status: status.into(),
                reason,
                message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Step 8b: the event of a phase change (a Warning for Failed and PartiallyFailed); none while
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

/// Why evictions of this round hold the drain: the first refused by a PodDisruptionBudget
/// (naming it), else the first that failed otherwise.
pub fn blocked(evictions: &[Eviction]) -> Option<Hold> {
    let budget = evictions.iter().find_map(|e| match &e.outcome {
        EvictionOutcome::Blocked { budgets, message } => Some(Hold::new(
            "PodDisruptionBudget",
            format!(
                "draining {}: the eviction of pod {} is refused by PodDisruptionBudget {} ({message}); waiting, nothing is forced",
                e.node,
                e.pod,
                if budgets.is_empty() {
                    "(not found)".to_string()
                } else {
                    budgets.join(", ")
                }
            ),
        )),
        _ => None,
    });
    budget.or_else(|| {
        evictions.iter().find_map(|e| match &e.outcome {
            EvictionOutcome::Failed(message) => Some(Hold::new(
                "EvictionFailed",
                format!(
                    "draining {}: the eviction of pod {} failed: {message}",
                    e.node, e.pod
                ),
            )),
            _ => None,
        })
    })
}

/// Step 8c: the events of this round: the phase change ([`transition_event`]) and a hold that
/// is new or says something new (Normal for a pause or a closed window, else a Warning).
pub fn events(
    previous: Option<&NodeTaskStatus>,
    verdict: &Verdict,
    waiting: Option<&Hold>,
) -> Vec<Event> {
    let mut events: Vec<Event> = transition_event(previous.and_then(|s| s.phase), verdict)
        .into_iter()
        .collect();
    if let Some(hold) = waiting {
        let was = previous
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Waiting"))
            .filter(|c| c.status == "True")
            .map(|c| (c.reason.as_str(), c.message.as_str()));
        if was != Some((hold.reason, hold.message.as_str())) {
            events.push(Event {
                type_: hold.event_type(),
                reason: hold.reason.to_string(),
                note: Some(truncate(&hold.message, 1000)),
                action: if hold.reason == "PodDisruptionBudget" || hold.reason == "EvictionFailed" {
                    "Drain".into()
                } else {
                    "Hold".into()
                },
                secondary: None,
            });
        }
    }
    events
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
            ready: true,
            ..Default::default()
        }
    }

    /// A decision with its phase event picked out.
    struct Decided {
        status: OperatorStatus,
        event: Option<Event>,
        /// The other events (holds).
        events: Vec<Event>,
        actions: Actions,
        polling: bool,
    }

    impl From<Decision> for Decided {
        fn from(d: Decision) -> Self {
            let (mut phase, events): (Vec<Event>, Vec<Event>) =
                d.events.into_iter().partition(|e| e.action == "Rollout");
            Decided {
                event: phase.pop(),
                status: d.status,
                events,
                actions: d.actions,
                polling: d.polling,
            }
        }
    }

    /// [`super::decide`] with nothing drained, no gate readings and no evictions.
    fn decide(
        spec: &NodeTaskSpec,
        previous: Option<&NodeTaskStatus>,
        generation: Option<i64>,
        nodes: &[NodeInfo],
        now: Timestamp,
    ) -> Decided {
        observe(
            spec,
            previous,
            nodes,
            &BTreeMap::new(),
            &GateReadings::default(),
            &[],
            now,
        )
        .with_generation(generation)
    }

    /// Everything observed, as the reconcile passes it.
    struct Observation<'a> {
        spec: &'a NodeTaskSpec,
        previous: Option<&'a NodeTaskStatus>,
        nodes: &'a [NodeInfo],
        pods: &'a BTreeMap<String, Vec<PodInfo>>,
        gates: &'a GateReadings,
        evictions: &'a [Eviction],
        now: Timestamp,
    }

    impl Observation<'_> {
        fn with_generation(&self, generation: Option<i64>) -> Decided {
            let observed = Observed {
                task: "t",
                nodes: self.nodes,
                pods: self.pods,
                gates: self.gates,
                evictions: self.evictions,
                now: self.now,
            };
            super::decide(self.spec, self.previous, generation, &observed).into()
        }
    }

    fn observe<'a>(
        spec: &'a NodeTaskSpec,
        previous: Option<&'a NodeTaskStatus>,
        nodes: &'a [NodeInfo],
        pods: &'a BTreeMap<String, Vec<PodInfo>>,
        gates: &'a GateReadings,
        evictions: &'a [Eviction],
        now: Timestamp,
    ) -> Observation<'a> {
        Observation {
            spec,
            previous,
            nodes,
            pods,
            gates,
            evictions,
            now,
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
            slot.reason = entry.reason;
            slot.released_at = entry.released_at.clone();
            slot.drain_started_at = entry.drain_started_at.clone();
            slot.done_at = entry.done_at.clone();
            slot.note = entry.note.clone();
        }
        status
    }

    /// The daemon of a power command reporting back with its boot ids.
    fn report_back(status: &mut NodeTaskStatus, name: &str, before: &str, after: &str) {
        report(status, name, TaskPhase::Succeeded, "back");
        let e = status.nodes.iter_mut().find(|e| e.name == name).unwrap();
        e.boot_id_before = Some(before.into());
        e.boot_id_after = Some(after.into());
    }

    fn entry_of<'a>(status: &'a NodeTaskStatus, name: &str) -> &'a NodeResult {
        status.nodes.iter().find(|e| e.name == name).unwrap()
    }

    fn pod(name: &str) -> PodInfo {
        PodInfo {
            name: format!("shop/{name}"),
            labels: BTreeMap::from([("app".to_string(), "shop".to_string())]),
            daemon_set: false,
            mirror: false,
            finished: false,
            terminating: false,
        }
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
        let d2 = decide(&s, Some(&st), Some(1), &cluster(), now());
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
    fn reboot_drains_rolls_one_node_at_a_time_and_waits_until_the_node_is_back() {
        let mut s = spec(TaskHandler::OsHandler, TaskCommand::Reboot);
        s.node_selector = None;
        s.node_names = vec!["node-c".into(), "node-a".into(), "node-b".into()];
        let gates = GateReadings::default();
        let mut nodes = cluster();
        let at = |nodes: &mut Vec<NodeInfo>, name: &str, f: &dyn Fn(&mut NodeInfo)| {
            f(nodes.iter_mut().find(|n| n.name == name).unwrap())
        };
        // 1. The first node is cordoned; nothing is released yet.
        let d = decide(&s, None, Some(1), &nodes, now());
        assert_eq!(d.actions.cordon, ["node-c"]);
        assert_eq!(d.status.phase, TaskPhase::Running);
        assert!(d.polling);
        let mut st = apply(None, &d.status);
        assert!(released(&st).is_empty());
        assert_eq!(
            entry_of(&st, "node-c").drain_started_at,
            Some(now().to_string())
        );
        at(&mut nodes, "node-c", &|n| {
            n.unschedulable = true;
            n.cordoned_by = Some("t".into());
        });
        // 2. Its pods are evicted; a DaemonSet pod is not.
        let ds = PodInfo {
            daemon_set: true,
            ..pod("agent")
        };
        let pods = BTreeMap::from([("node-c".to_string(), vec![pod("web-1"), ds.clone()])]);
        let d: Decided =
            observe(&s, Some(&st), &nodes, &pods, &gates, &[], now()).with_generation(Some(1));
        assert_eq!(
            d.actions.evict,
            [("node-c".to_string(), "shop/web-1".to_string())]
        );
        assert!(d.actions.cordon.is_empty(), "already cordoned");
        // 3. A PodDisruptionBudget refuses: the task waits, naming it, with a Warning event.
        let refused = [Eviction {
            node: "node-c".into(),
            pod: "shop/web-1".into(),
            outcome: EvictionOutcome::Blocked {
                budgets: vec!["shop/web-pdb".into()],
                message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            },
        }];
        let d: Decided =
            observe(&s, Some(&st), &nodes, &pods, &gates, &refused, now()).with_generation(Some(1));
        let waiting = d
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Waiting")
            .unwrap();
        assert_eq!(
            (waiting.status.as_str(), waiting.reason.as_str()),
            ("True", "PodDisruptionBudget")
        );
        assert!(
            waiting.message.contains("shop/web-pdb")
                && waiting.message.contains("nothing is forced"),
            "{}",
            waiting.message
        );
        assert_eq!(d.events.len(), 1);
        assert_eq!(
            (d.events[0].type_, d.events[0].reason.as_str()),
            (EventType::Warning, "PodDisruptionBudget")
        );
        let note = d.status.nodes[0].note.clone().unwrap_or_default();
        assert!(
            note.contains("1 pod(s) left") && note.contains("shop/web-pdb"),
            "{note}"
        );
        st = apply(Some(st), &d.status);
        assert!(released(&st).is_empty(), "never forced");
        // The same refusal again publishes nothing new.
        let d: Decided =
            observe(&s, Some(&st), &nodes, &pods, &gates, &refused, now()).with_generation(Some(1));
        assert!(d.events.is_empty() && d.event.is_none());
        // 4. Terminating pods are waited for, not evicted again.
        let going = BTreeMap::from([(
            "node-c".to_string(),
            vec![
                PodInfo {
                    terminating: true,
                    ..pod("web-1")
                },
                ds.clone(),
            ],
        )]);
        let d: Decided =
            observe(&s, Some(&st), &nodes, &going, &gates, &[], now()).with_generation(Some(1));
        assert!(d.actions.evict.is_empty());
        st = apply(Some(st), &d.status);
        assert!(released(&st).is_empty());
        // 5. Drained: released.
        let drained = BTreeMap::from([("node-c".to_string(), vec![ds])]);
        let d: Decided =
            observe(&s, Some(&st), &nodes, &drained, &gates, &[], now()).with_generation(Some(1));
        st = apply(Some(st), &d.status);
        assert_eq!(released(&st), ["node-c"]);
        // 6. Back, but the boot id did not change: not done, nothing more starts.
        report_back(&mut st, "node-c", "boot-1", "boot-1");
        let d = decide(&s, Some(&st), Some(1), &nodes, now());
        assert!(d.actions.uncordon.is_empty() && d.actions.cordon.is_empty());
        assert_eq!(d.status.phase, TaskPhase::Running);
        assert!(
            d.status.nodes[0]
                .note
                .as_deref()
                .unwrap_or_default()
                .contains("boot id did not change")
        );
        assert_eq!(d.status.progress, "0/3");
        // 7. A new boot id, but the Node is not Ready: still not done.
        report_back(&mut st, "node-c", "boot-1", "boot-2");
        at(&mut nodes, "node-c", &|n| n.ready = false);
        let d = decide(&s, Some(&st), Some(1), &nodes, now());
        assert!(d.actions.cordon.is_empty());
        assert!(
            d.status.nodes[0]
                .note
                .as_deref()
                .unwrap_or_default()
                .contains("Ready")
        );
        // 8. Ready: done, uncordoned, and the next node is cordoned.
        at(&mut nodes, "node-c", &|n| n.ready = true);
        let d = decide(&s, Some(&st), Some(1), &nodes, now());
        assert_eq!(d.actions.uncordon, ["node-c"]);
        assert_eq!(d.actions.cordon, ["node-a"]);
        assert_eq!(d.status.progress, "1/3");
        st = apply(Some(st), &d.status);
        assert!(entry_of(&st, "node-c").done_at.is_some());
        // The rest, quickly; the reported phases are never overwritten.
        for name in ["node-a", "node-b"] {
            let empty = BTreeMap::from([(name.to_string(), vec![])]);
            let mut ns = nodes.clone();
            at(&mut ns, name, &|n| n.unschedulable = true);
            let d: Decided =
                observe(&s, Some(&st), &ns, &empty, &gates, &[], now()).with_generation(Some(1));
            st = apply(Some(st), &d.status);
            assert!(released(&st).contains(&name), "{name}");
            report_back(&mut st, name, "x", "y");
            if name == "node-b" {
                break;
            }
            st = apply(
                Some(st.clone()),
                &decide(&s, Some(&st), Some(1), &nodes, now()).status,
            );
        }
        let d = decide(&s, Some(&st), Some(1), &nodes, now());
        assert_eq!(d.status.phase, TaskPhase::Succeeded);
        assert_eq!(statuses(&d.status.conditions), ("True", "False"));
        assert_eq!(d.event.unwrap().reason, "Succeeded");
        assert!(d.status.nodes.iter().all(|e| e.phase.is_none()));
        assert!(!d.polling);
    }

    #[test]
    fn a_node_not_back_within_node_timeout_fails_and_nothing_more_is_released() {
        let mut s = spec(TaskHandler::OsHandler, TaskCommand::Reboot);
        s.node_selector = None;
        s.node_names = vec!["node-a".into(), "node-b".into()];
        s.drain = Some(opsplane_resources::node_task::DrainSpec {
            enabled: Some(false),
            ..Default::default()
        });
        s.node_timeout = Some("2m".into());
        let mut st = apply(None, &decide(&s, None, Some(1), &cluster(), now()).status);
        assert_eq!(released(&st), ["node-a"]);
        report(&mut st, "node-a", TaskPhase::Running, "rebooting");
        let later = now() + SignedDuration::from_secs(119);
        let d = decide(&s, Some(&st), Some(1), &cluster(), later);
        assert_eq!(d.status.phase, TaskPhase::Running);
        let later = now() + SignedDuration::from_secs(120);
        let d = decide(&s, Some(&st), Some(1), &cluster(), later);
        st = apply(Some(st), &d.status);
        let a = entry_of(&st, "node-a");
        let a_note = a.note.clone();
        assert_eq!(a.reason, Some(NodeFailureReason::NodeTimeout));
        assert!(
            a.note
                .as_deref()
                .unwrap_or_default()
                .contains("spec.nodeTimeout (2m)"),
            "{a:?}"
        );
        assert_eq!(
            entry_of(&st, "node-b").reason,
            Some(NodeFailureReason::RolloutStopped)
        );
        assert_eq!(d.status.phase, TaskPhase::Failed);
        assert!(
            d.status.conditions[1]
                .message
                .contains("node-a: not done within spec.nodeTimeout")
        );
        // A late report does not undo the verdict (nor its note), and nothing more is released.
        report_back(&mut st, "node-a", "1", "2");
        let d = decide(&s, Some(&st), Some(1), &cluster(), later);
        assert_eq!(d.status.phase, TaskPhase::Failed);
        assert_eq!(d.status.nodes[0].note, a_note);
        st = apply(Some(st), &d.status);
        assert_eq!(released(&st), ["node-a"]);
    }

    #[test]
    fn a_drain_past_its_timeout_fails_the_node_and_uncordons_it() {
        let mut s = spec(TaskHandler::OsHandler, TaskCommand::Shutdown);
        s.node_selector = None;
        s.node_names = vec!["node-a".into()];
        s.drain = Some(opsplane_resources::node_task::DrainSpec {
            timeout: Some("1m".into()),
            ..Default::default()
        });
        let st = apply(None, &decide(&s, None, Some(1), &cluster(), now()).status);
        let mut nodes = cluster();
        nodes[1].unschedulable = true;
        nodes[1].cordoned_by = Some("t".into());
        let pods = BTreeMap::from([("node-a".to_string(), vec![pod("db-0")])]);
        let gates = GateReadings::default();
        let d: Decided = observe(
            &s,
            Some(&st),
            &nodes,
            &pods,
            &gates,
            &[],
            now() + SignedDuration::from_secs(61),
        )
        .with_generation(Some(1));
        assert_eq!(d.actions.uncordon, ["node-a"]);
        assert!(d.actions.evict.is_empty());
        assert_eq!(d.status.phase, TaskPhase::Failed);
        assert_eq!(
            d.status.nodes[0].reason,
            Some(NodeFailureReason::DrainTimeout)
        );
        assert!(d.status.nodes[0].released_at.is_none());
        assert!(
            d.status.nodes[0]
                .msg
                .as_deref()
                .unwrap_or_default()
                .contains("1 pod(s) left")
        );
    }

    #[test]
    fn holds_pause_window_and_gates_keep_the_next_node_waiting() {
        use super::super::gate::{AlertReading, ServiceReading};
        use opsplane_resources::node_task::{AlertGate, GateSpec, TimeWindow};
        let mut s = spec(TaskHandler::ServiceHandler, TaskCommand::Restart);
        let gates = GateReadings::default();
        let pods = BTreeMap::new();
        let held = |s: &NodeTaskSpec,
                    gates: &GateReadings,
                    at: Timestamp|
         -> (TaskPhase, String, String, usize) {
            let d: Decided =
                observe(s, None, &cluster(), &pods, gates, &[], at).with_generation(Some(1));
            let w = d
                .status
                .conditions
                .iter()
                .find(|c| c.type_ == "Waiting")
                .unwrap();
            let released = d
                .status
                .nodes
                .iter()
                .filter(|e| e.released_at.is_some())
                .count();
            (
                d.status.phase,
                w.reason.clone(),
                w.message.clone(),
                released,
            )
        };
        s.paused = true;
        let (phase, reason, _, released) = held(&s, &gates, now());
        assert_eq!(
            (phase, reason.as_str(), released),
            (TaskPhase::Pending, "Paused", 0)
        );
        s.paused = false;
        // now() is 2027-01-15T08:00:00Z, a Friday.
        s.window = Some(TimeWindow {
            days: vec![opsplane_resources::node_task::Weekday::Sat],
            start: "01:00".into(),
            end: "03:00".into(),
            time_zone: Some("Europe/Berlin".into()),
        });
        let (phase, reason, message, released) = held(&s, &gates, now());
        assert_eq!(
            (phase, reason.as_str(), released),
            (TaskPhase::Pending, "OutsideWindow", 0)
        );
        assert!(
            message.contains("may start at 2027-01-16T01:00:00+01:00"),
            "{message}"
        );
        let inside: Timestamp = "2027-01-16T00:30:00Z".parse().unwrap();
        let (phase, reason, _, released) = held(&s, &gates, inside);
        assert_eq!(
            (phase, reason.as_str(), released),
            (TaskPhase::Running, "NotWaiting", 1)
        );
        s.window = None;
        s.gate = Some(GateSpec {
            monitored_services: Some(
                serde_json::from_value(json!({"matchLabels": {"tier": "web"}})).unwrap(),
            ),
            prometheus: Some(AlertGate {
                url: "http://prom:9090".into(),
                api: Default::default(),
                alert_filter_regexp: Some("^Watchdog$".into()),
                alert_filter_match_only: false,
                alert_firing_only: true,
            }),
        });
        let service = |available: bool| ServiceReading {
            name: "prod/shop".into(),
            available,
            message: if available {
                "ok".into()
            } else {
                "connection refused".into()
            },
        };
        let alert = |name: &str, firing: bool| AlertReading {
            name: name.into(),
            firing,
        };
        let readings = |services: Vec<ServiceReading>,
                        alerts: Result<Vec<AlertReading>, String>| {
            GateReadings {
                services: Some(Ok(services)),
                alerts: Some(alerts),
            }
        };
        let cases = [
            (
                "a service down holds",
                readings(vec![service(false)], Ok(vec![])),
                "MonitoredServiceNotAvailable",
                "prod/shop (connection refused)",
            ),
            (
                "a selector matching nothing holds",
                readings(vec![], Ok(vec![])),
                "MonitoredServiceNotAvailable",
                "selects no MonitoredService",
            ),
            (
                "a firing alert holds",
                readings(vec![service(true)], Ok(vec![alert("NodeDown", true)])),
                "AlertsFiring",
                "NodeDown",
            ),
            (
                "a filtered alert and a pending one do not",
                readings(
                    vec![service(true)],
                    Ok(vec![alert("Watchdog", true), alert("Slow", false)]),
                ),
                "NotWaiting",
                "",
            ),
            (
                "an unreadable alerts API holds",
                readings(vec![service(true)], Err("connection refused".into())),
                "AlertsUnknown",
                "connection refused",
            ),
        ];
        for (why, gates, reason, part) in cases {
            let (_, got, message, released) = held(&s, &gates, now());
            assert_eq!(got, reason, "{why}: {message}");
            assert!(message.contains(part), "{why}: {message}");
            assert_eq!(
                released,
                usize::from(reason == "NotWaiting"),
                "{why}: one node at a time"
            );
        }
        // Match-only: only the matching alerts count.
        if let Some(p) = s.gate.as_mut().and_then(|g| g.prometheus.as_mut()) {
            p.alert_filter_match_only = true;
            p.alert_filter_regexp = Some("^Node".into());
        }
        let (_, reason, _, _) = held(
            &s,
            &readings(vec![service(true)], Ok(vec![alert("Other", true)])),
            now(),
        );
        assert_eq!(reason, "NotWaiting");
        let (_, reason, _, _) = held(
            &s,
            &readings(vec![service(true)], Ok(vec![alert("NodeDown", true)])),
            now(),
        );
        assert_eq!(reason, "AlertsFiring");
    }

    #[test]
    fn a_done_node_that_is_not_ready_holds_the_next_one() {
        let mut s = spec(TaskHandler::ServiceHandler, TaskCommand::Restart);
        s.node_selector = None;
        s.node_names = vec!["node-a".into(), "node-b".into()];
        let mut st = apply(None, &decide(&s, None, Some(1), &cluster(), now()).status);
        report(&mut st, "node-a", TaskPhase::Succeeded, "成功");
        let mut nodes = cluster();
        nodes[1].ready = false;
        let d = decide(&s, Some(&st), Some(1), &nodes, now());
        let w = d
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Waiting")
            .unwrap();
        assert_eq!(
            (w.reason.as_str(), w.message.as_str()),
            ("NodeNotReady", "node(s) already done are not Ready: node-a")
        );
        assert_eq!(d.events.len(), 1, "the hold is announced");
        assert!(d.status.nodes[1].released_at.is_none());
        let d = decide(&s, Some(&st), Some(1), &cluster(), now());
        assert!(d.status.nodes[1].released_at.is_some());
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
        let d = decide(&s, Some(&st), Some(1), &cluster(), now());
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
        let d = decide(&s, Some(&st), Some(1), &cluster(), now());
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
        let d = decide(&s2, Some(&st), Some(1), &cluster(), now());
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
        let again = decide(&s, Some(&st), Some(1), &cluster(), now());
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
        let d2 = decide(&s, Some(&st), Some(1), &cluster(), now());
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
            ..Default::default()
        }
    }

    fn rollout(disruptive: bool, max_unavailable: usize, dry_run: bool) -> Rollout {
        Rollout {
            disruptive,
            max_unavailable,
            dry_run,
            power: false,
            drain: false,
            drain_timeout: None,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            grace_period_seconds: None,
        }
    }

    /// An observation of the test cluster at `at`, with `pods` on draining nodes.
    fn seen<'a>(
        nodes: &'a [NodeInfo],
        pods: &'a BTreeMap<String, Vec<PodInfo>>,
        gates: &'a GateReadings,
        at: Timestamp,
    ) -> Observed<'a> {
        Observed {
            task: "t",
            nodes,
            pods,
            gates,
            evictions: &[],
            now: at,
        }
    }

    /// The stages [`settle`] gives the states at `T0` + `after`.
    fn stages_of(states: &[NodeState], rollout: &Rollout) -> Vec<Stage> {
        let (nodes, pods, gates) = (cluster_abc(), BTreeMap::new(), GateReadings::default());
        settle(
            states,
            rollout,
            &seen(&nodes, &pods, &gates, t0()),
            &mut Actions::default(),
        )
    }

    fn t0() -> Timestamp {
        T0.parse().unwrap()
    }

    /// Nodes a, b, c (and x missing), all Ready.
    fn cluster_abc() -> Vec<NodeInfo> {
        ["a", "b", "c"].iter().map(|n| node(n, "any")).collect()
    }

    fn outcome(name: &str, phase: TaskPhase, released: bool) -> NodeOutcome {
        NodeOutcome {
            name: name.into(),
            phase,
            msg: (phase == TaskPhase::Failed).then(|| "boom".to_string()),
            reported: phase != TaskPhase::Pending,
            reason: None,
            released_at: released.then(|| T0.to_string()),
            ..Default::default()
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
                "a window in an unknown time zone is an invalid task",
                with(&|s| {
                    s.window = Some(opsplane_resources::node_task::TimeWindow {
                        days: vec![],
                        start: "01:00".into(),
                        end: "02:00".into(),
                        time_zone: Some("Nowhere/Atlantis".into()),
                    })
                }),
                None,
                Err(ProblemKind::InvalidTask),
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
                    ..Default::default()
                },
                NodeState {
                    name: "running".into(),
                    exists: true,
                    released_at: Some(T0.into()),
                    reported: Some(TaskPhase::Running),
                    msg: Some("rebooting".into()),
                    ..Default::default()
                },
                NodeState {
                    name: "new".into(),
                    exists: true,
                    ..Default::default()
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
        let (nodes, pods, gates) = (cluster_abc(), BTreeMap::new(), GateReadings::default());
        for (why, rollout, states, expected) in cases {
            let mut stages = stages_of(&states, &rollout);
            let mut actions = Actions::default();
            release(
                &states,
                &mut stages,
                &rollout,
                &seen(&nodes, &pods, &gates, t0()),
                &mut actions,
            );
            let names: Vec<&str> = states
                .iter()
                .zip(&stages)
                .filter(|(s, st)| s.released_at.is_some() || matches!(st, Stage::Released { .. }))
                .map(|(s, _)| s.name.as_str())
                .collect();
            assert_eq!(names, expected, "{why}");
            assert!(actions.cordon.is_empty(), "{why}: nothing drains");
        }
        // A draining rollout starts by cordoning, and releases nothing yet.
        let mut drains = rollout(true, 1, false);
        drains.drain = true;
        let states = vec![state("a", true, false, None), state("b", true, false, None)];
        let mut stages = stages_of(&states, &drains);
        let mut actions = Actions::default();
        release(
            &states,
            &mut stages,
            &drains,
            &seen(&nodes, &pods, &gates, t0()),
            &mut actions,
        );
        assert_eq!(actions.cordon, ["a"]);
        assert!(matches!(stages[0], Stage::Draining { .. }), "{stages:?}");
        assert_eq!(stages[1], Stage::Waiting);
        // A node someone else cordoned is drained but not cordoned (so never uncordoned) by us.
        let mut theirs = cluster_abc();
        theirs[0].unschedulable = true;
        let mut stages = stages_of(&states, &drains);
        let mut actions = Actions::default();
        release(
            &states,
            &mut stages,
            &drains,
            &seen(&theirs, &pods, &gates, t0()),
            &mut actions,
        );
        assert!(actions.cordon.is_empty());
        assert!(matches!(stages[0], Stage::Draining { .. }));
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
            let stages = stages_of(&states, &rollout);
            let got: Vec<_> = node_phases(&states, &stages, &rollout, &[])
                .into_iter()
                .map(|o| (o.name, o.phase, o.reported, o.reason))
                .collect();
            let expected: Vec<_> = expected
                .into_iter()
                .map(|(n, p, r, reason)| (n.to_string(), p, r, reason))
                .collect();
            assert_eq!(got, expected, "{why}");
        }
        let r = rollout(true, 2, false);
        let outcomes = node_phases(&halted, &stages_of(&halted, &r), &r, &[]);
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
                drain_started_at: None,
                done_at: None,
                note: None,
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
            let got = conditions(&verdict(phase), None, None, Some(2), now());
            assert_eq!(statuses(&got), expected, "{phase:?}");
            assert!(
                got.iter()
                    .filter(|c| c.type_ != "Waiting")
                    .all(|c| c.reason == format!("{phase:?}") && c.observed_generation == Some(2)),
                "{phase:?}: {got:?}"
            );
            let waiting = got.iter().find(|c| c.type_ == "Waiting").unwrap();
            assert_eq!(
                (waiting.status.as_str(), waiting.reason.as_str()),
                ("False", "NotWaiting")
            );
        }
        let hold = Hold::new("Paused", "spec.paused is true");
        let got = conditions(
            &verdict(TaskPhase::Pending),
            Some(&hold),
            None,
            Some(2),
            now(),
        );
        let waiting = got.iter().find(|c| c.type_ == "Waiting").unwrap();
        assert_eq!(
            (
                waiting.status.as_str(),
                waiting.reason.as_str(),
                waiting.message.as_str()
            ),
            ("True", "Paused", "spec.paused is true")
        );
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
        let running = conditions(&verdict(TaskPhase::Running), None, None, Some(2), now());
        let previous = NodeTaskStatus {
            conditions: running,
            ..Default::default()
        };
        let still = conditions(
            &verdict(TaskPhase::Pending),
            None,
            Some(&previous),
            Some(2),
            t1,
        );
        assert!(
            still.iter().all(|c| c.last_transition_time == Time(now())),
            "nothing flipped: {still:?}"
        );
        let failed = conditions(
            &verdict(TaskPhase::Failed),
            None,
            Some(&previous),
            Some(2),
            t1,
        );
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
