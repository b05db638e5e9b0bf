//! NodeTasks in standalone mode: the tasks created through `/api/v1/tasks` (kept in the store's
//! `objects/tasks` documents) run on this host, the one node, through the node agent's task
//! runner — the node-daemon's runner, with its safety switches.
//!
//! Both halves of the cluster's work happen here, with the cluster's own pure steps:
//! the operator's part is [`decide`] (plan, release, aggregate, conditions) over a cluster of one
//! node ([`local_node`]), and the node's part is the NodeTask watcher's [`watch::step`] with its
//! ledger in the agent's state directory, so a task never runs twice on the host, also across
//! restarts (a reboot task succeeds when the operator starts again). What the cluster writes by
//! server-side apply under two field managers is merged here ([`apply_operator`],
//! [`apply_node`]) and written back with the document's revision as precondition; a concurrent
//! write (a PATCH, a delete) wins and the task is looked at again on the next round.
//!
//! `--node-tasks` is off by default: a released task then fails on this host with 30004 and a
//! message naming the flag, instead of waiting for ever.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use opsplane_node_daemon::task::{Caller, Runner};
use opsplane_node_daemon::watch::{
    self, Ledger, LedgerEntry, LedgerError, LedgerState, Report, Step, TaskKind,
};
use opsplane_resources::node_task::{NodeResult, NodeTask, NodeTaskStatus, TaskPhase};
use opsplane_store::{Expect, Store, Written};
use serde_json::Value;

use crate::controller::node_task::decide::{Decision, Observed, decide};
use crate::controller::node_task::{NodeInfo, OperatorStatus};
use crate::metrics::Metrics;

/// The store collection of API-created NodeTasks (the resources backend's).
const COLLECTION: &str = "objects/tasks";

/// How often the tasks are looked at.
pub const POLL: Duration = Duration::from_secs(1);

/// This host as the one Node of a standalone plan: its name and the labels a `nodeSelector`
/// can match (`opsplane.io/standalone: "true"`, `kubernetes.io/hostname: <host>`).
pub fn local_node(hostname: &str) -> NodeInfo {
    NodeInfo {
        name: hostname.to_string(),
        labels: BTreeMap::from([
            ("opsplane.io/standalone".to_string(), "true".to_string()),
            ("kubernetes.io/hostname".to_string(), hostname.to_string()),
        ]),
        // The process running is the host being up; there is no Node to cordon.
        ready: true,
        unschedulable: false,
        cordoned_by: None,
    }
}

/// The controller's decision for a task on this host alone: no pods to drain (standalone has
/// no Kubernetes workloads, so a drain ends at once), no gate readings, no evictions.
fn decide_here(
    task: &NodeTask,
    previous: Option<&NodeTaskStatus>,
    hostname: &str,
    now: Timestamp,
) -> Decision {
    let name = kube::ResourceExt::name_any(task);
    // No Node to cordon: the host counts as cordoned by this task already, so a drain (of no
    // pods) ends at once and nothing waits for a cordon that cannot happen.
    let mut here = local_node(hostname);
    here.unschedulable = true;
    here.cordoned_by = Some(name.clone());
    let nodes = [here];
    let pods = BTreeMap::from([(hostname.to_string(), Vec::new())]);
    let gates = Default::default();
    decide(
        &task.spec,
        previous,
        task.metadata.generation,
        &Observed {
            task: &name,
            nodes: &nodes,
            pods: &pods,
            gates: &gates,
            evictions: &[],
            now,
        },
    )
}

/// The status after the operator's part is applied to `previous`, as server-side apply would
/// merge it: the operator's fields replace theirs; a node's own fields (code, times, and its
/// phase and message once it reported) are kept.
pub fn apply_operator(previous: Option<&NodeTaskStatus>, op: &OperatorStatus) -> NodeTaskStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.phase = Some(op.phase);
    status.progress = Some(op.progress.clone());
    status.observed_generation = op.observed_generation;
    status.conditions = op.conditions.clone();
    let mut nodes = Vec::with_capacity(op.nodes.len());
    for plan in &op.nodes {
        let mut entry = status
            .nodes
            .iter()
            .find(|n| n.name == plan.name)
            .cloned()
            .unwrap_or_else(|| NodeResult {
                name: plan.name.clone(),
                ..NodeResult::default()
            });
        if let Some(phase) = plan.phase {
            entry.phase = phase;
        }
        if plan.msg.is_some() {
            entry.msg = plan.msg.clone();
        }
        if plan.reason.is_some() {
            entry.reason = plan.reason;
        }
        if plan.released_at.is_some() {
            entry.released_at = plan.released_at.clone();
        }
        // Fields only the operator writes: what it applies now is what they are (an apply
        // without one removes it).
        entry.drain_started_at = plan.drain_started_at.clone();
        entry.done_at = plan.done_at.clone();
        entry.note = plan.note.clone();
        nodes.push(entry);
    }
    status.nodes = nodes;
    status
}

/// The status after the node's report is applied: its entry's phase, code, message and times.
pub fn apply_node(mut status: NodeTaskStatus, node: &str, report: &Report) -> NodeTaskStatus {
    let own = report.entry(node);
    match status.nodes.iter_mut().find(|n| n.name == node) {
        Some(entry) => {
            entry.phase = own.phase;
            entry.code = own.code;
            entry.msg = own.msg;
            entry.started_at = own.started_at;
            entry.finished_at = own.finished_at;
            entry.boot_id_before = own.boot_id_before;
            entry.boot_id_after = own.boot_id_after;
        }
        None => status.nodes.push(own),
    }
    status
}

/// The status a new standalone task starts with: planned for this host at once (a named node
/// other than this host fails the task, as a missing Node does in a cluster).
pub fn initial_status(task: &NodeTask, hostname: &str, now: Timestamp) -> NodeTaskStatus {
    let decision = decide_here(task, None, hostname, now);
    apply_operator(None, &decision.status)
}

/// What this host reports for a released task while `--node-tasks` is off.
fn refused(what: TaskKind, now: Timestamp) -> Report {
    Report {
        phase: TaskPhase::Failed,
        code: 30004,
        msg: format!(
            "不允许: not run: this standalone operator runs no NodeTasks ({what}); start it with --node-tasks on (OPSPLANE_NODE_TASKS) to run them on this host"
        ),
        started_at: now.to_string(),
        finished_at: Some(now.to_string()),
        boot_id_before: None,
        boot_id_after: None,
    }
}

/// The standalone task runner.
pub struct LocalTasks {
    store: Arc<dyn Store>,
    runner: Arc<Runner>,
    node: String,
    enabled: bool,
    ledger: Ledger,
    instance: String,
    boot_id_path: std::path::PathBuf,
    metrics: Metrics,
}

impl LocalTasks {
    /// The runner of this host's tasks; the ledger is `<state_dir>/node-tasks.json`.
    pub fn new(
        store: Arc<dyn Store>,
        runner: Arc<Runner>,
        node: String,
        enabled: bool,
        state_dir: &Path,
        host_root: &Path,
        metrics: Metrics,
    ) -> Result<Self, LedgerError> {
        Ok(Self {
            store,
            runner,
            node,
            enabled,
            ledger: Ledger::load(state_dir.join(watch::LEDGER_FILE))?,
            instance: format!(
                "standalone-{}-{}",
                std::process::id(),
                Timestamp::now().as_nanosecond()
            ),
            boot_id_path: host_root.join("proc/sys/kernel/random/boot_id"),
            metrics,
        })
    }

    fn boot_id(&self) -> String {
        std::fs::read_to_string(&self.boot_id_path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// Looks at every task each [`POLL`] until the future is dropped.
    pub async fn run(mut self) {
        tracing::info!(node = %self.node, enabled = self.enabled, "standalone NodeTasks");
        loop {
            self.round().await;
            tokio::time::sleep(POLL).await;
        }
    }

    /// One look at every task.
    pub async fn round(&mut self) {
        let documents = match self.store.documents(COLLECTION).await {
            Ok(documents) => documents,
            Err(error) => {
                self.metrics.store_error("node_tasks");
                tracing::warn!(%error, "cannot read the NodeTasks");
                return;
            }
        };
        for document in documents {
            let task: NodeTask = match serde_json::from_value(document.body.clone()) {
                Ok(task) => task,
                Err(error) => {
                    tracing::warn!(id = %document.id, %error, "a stored NodeTask does not parse; skipped");
                    continue;
                }
            };
            self.task(&document.id, document.revision, document.body, task)
                .await;
        }
    }

    /// Moves one task on: the operator's step, then this node's, written once.
    async fn task(&mut self, id: &str, revision: u64, body: Value, task: NodeTask) {
        let Some(uid) = task.metadata.uid.clone() else {
            return;
        };
        let before = task.status.clone();
        let operated = self.operate(&task, before.as_ref());
        let entry = operated.nodes.iter().find(|n| n.name == self.node).cloned();
        let what = TaskKind::of(&task.spec);
        let mut status = operated;
        match watch::step(entry.as_ref(), self.ledger.get(&uid), &self.instance) {
            Step::Ignore => {}
            Step::Report(report) => status = apply_node(status, &self.node, &report),
            Step::Returned(mut l) => {
                l.report = Report::returned(&l, &self.boot_id(), Timestamp::now());
                status = apply_node(status, &self.node, &l.report);
                self.record(&uid, l);
            }
            Step::Interrupted(mut l) => {
                l.report = Report::interrupted(&l, Timestamp::now());
                status = apply_node(status, &self.node, &l.report);
                self.record(&uid, l);
            }
            Step::Run if !self.enabled => {
                let report = refused(what, Timestamp::now());
                status = apply_node(status, &self.node, &report);
                self.record(
                    &uid,
                    LedgerEntry {
                        task: task.metadata.name.clone().unwrap_or_default(),
                        what,
                        state: LedgerState::Done,
                        instance: self.instance.clone(),
                        boot_id: self.boot_id(),
                        report,
                    },
                );
            }
            Step::Run => {
                let Some((status, revision, before)) = self
                    .run_task(&task, &uid, id, revision, &body, status)
                    .await
                else {
                    return;
                };
                return self
                    .finish(id, revision, &body, before.as_ref(), status)
                    .await;
            }
        }
        self.finish(id, revision, &body, before.as_ref(), status)
            .await;
    }

    /// Aggregates the node's report into the overall phase and writes when anything changed.
    async fn finish(
        &mut self,
        id: &str,
        revision: u64,
        body: &Value,
        before: Option<&NodeTaskStatus>,
        status: NodeTaskStatus,
    ) {
        let Ok(task) = serde_json::from_value::<NodeTask>(body.clone()) else {
            return;
        };
        let status = apply_operator(Some(&status), &self.decide(&task, Some(&status)));
        if before == Some(&status) {
            return;
        }
        self.write(id, revision, body, before, &status).await;
    }

    fn decide(&self, task: &NodeTask, status: Option<&NodeTaskStatus>) -> OperatorStatus {
        decide_here(task, status, &self.node, Timestamp::now()).status
    }

    fn operate(&self, task: &NodeTask, status: Option<&NodeTaskStatus>) -> NodeTaskStatus {
        apply_operator(status, &self.decide(task, status))
    }

    /// Records a task's final result in the ledger.
    fn record(&mut self, uid: &str, mut entry: LedgerEntry) {
        entry.instance = self.instance.clone();
        entry.state = LedgerState::Done;
        if let Err(error) = self.ledger.put(uid, entry) {
            tracing::error!(%uid, %error, "cannot record the task's result in the ledger");
        }
    }

    /// Runs a released task: ledger first (never twice), Running written, the runner, the
    /// result. The status with the result, the document's revision and the status it holds;
    /// `None` when the task changed or went away before it ran (the next round looks again).
    async fn run_task(
        &mut self,
        task: &NodeTask,
        uid: &str,
        id: &str,
        revision: u64,
        body: &Value,
        status: NodeTaskStatus,
    ) -> Option<(NodeTaskStatus, u64, Option<NodeTaskStatus>)> {
        let name = task.metadata.name.clone().unwrap_or_default();
        let what = TaskKind::of(&task.spec);
        let started_at = Timestamp::now().to_string();
        let mut entry = LedgerEntry {
            task: name.clone(),
            what,
            state: LedgerState::Started,
            instance: self.instance.clone(),
            boot_id: self.boot_id(),
            report: Report::running(what, started_at.clone()),
        };
        if let Err(error) = self.ledger.put(uid, entry.clone()) {
            let report = Report::not_recorded(&error, started_at, Timestamp::now());
            let status = apply_node(status, &self.node, &report);
            return Some((status, revision, task.status.clone()));
        }
        let running = apply_node(status, &self.node, &entry.report);
        let running = apply_operator(Some(&running), &self.decide(task, Some(&running)));
        let Some(revision) = self
            .write(id, revision, body, task.status.as_ref(), &running)
            .await
        else {
            // Recorded as started but not run: say so (the next round writes it) rather than
            // leave a record that would make it look interrupted.
            let now = Timestamp::now();
            entry.report = Report {
                phase: TaskPhase::Failed,
                code: 99999,
                msg: "系统异常: not run: the NodeTask changed or its status could not be written as it was about to start; create it again to run it".into(),
                started_at,
                finished_at: Some(now.to_string()),
                boot_id_before: None,
                boot_id_after: None,
            };
            self.record(uid, entry);
            return None;
        };
        let caller = Caller {
            client: None,
            identity: format!("NodeTask/{name}@{uid}"),
        };
        tracing::info!(task = %name, %uid, %what, "running a NodeTask on this host");
        let outcome = match watch::request(&task.spec) {
            Ok(request) => self.runner.run(request, &caller).await,
            Err(error) => self.runner.reject(
                serde_json::json!({"handler": task.spec.handler, "command": task.spec.command}),
                &error,
                &caller,
            ),
        };
        let (state, report) = Report::ran(what, &outcome, started_at, Timestamp::now());
        entry.state = state;
        entry.report = report.clone();
        if let Err(error) = self.ledger.put(uid, entry) {
            tracing::error!(task = %name, %error, "cannot record the task's result in the ledger");
        }
        let done = apply_node(running.clone(), &self.node, &report);
        Some((done, revision, Some(running)))
    }

    /// Writes `status` into the task's document at `revision`; the new revision, or `None`
    /// when the document changed or is gone.
    async fn write(
        &self,
        id: &str,
        revision: u64,
        body: &Value,
        before: Option<&NodeTaskStatus>,
        status: &NodeTaskStatus,
    ) -> Option<u64> {
        let mut body = body.clone();
        body["status"] = match serde_json::to_value(status) {
            Ok(value) => value,
            Err(error) => {
                tracing::error!(%id, %error, "cannot encode a NodeTask status");
                return None;
            }
        };
        if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        match self
            .store
            .put_document(COLLECTION, id, &body, Expect::Revision(revision))
            .await
        {
            Ok(Written::Done(revision)) => {
                if let Some(phase) = status.phase
                    && before.and_then(|s| s.phase) != Some(phase)
                {
                    self.metrics.node_task_transition(&format!("{phase:?}"));
                    tracing::info!(task = %id, ?phase, "NodeTask phase");
                }
                Some(revision)
            }
            Ok(Written::Conflict(_)) => {
                tracing::debug!(task = %id, "the NodeTask changed meanwhile; looked at again");
                None
            }
            Err(error) => {
                self.metrics.store_error("node_tasks");
                tracing::warn!(task = %id, %error, "cannot write a NodeTask status");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsplane_resources::node_task::NodeTaskSpec;

    fn task(spec: serde_json::Value) -> NodeTask {
        let spec: NodeTaskSpec = serde_json::from_value(spec).unwrap();
        let mut task = NodeTask::new("t", spec);
        task.metadata.generation = Some(1);
        task.metadata.uid = Some("u1".into());
        task
    }

    #[test]
    fn a_task_for_this_host_is_released_to_it_at_once() {
        let t = task(
            serde_json::json!({"nodeNames": ["here"], "handler": "ServiceHandler",
            "command": "start", "data": {"service": ["x"]}}),
        );
        let status = initial_status(&t, "here", Timestamp::now());
        assert_eq!(status.nodes.len(), 1);
        assert_eq!(status.nodes[0].name, "here");
        assert!(status.nodes[0].released_at.is_some(), "{status:?}");
        assert_eq!(status.phase, Some(TaskPhase::Running));
    }

    #[test]
    fn a_task_naming_another_node_fails_without_being_released() {
        let t = task(
            serde_json::json!({"nodeNames": ["n1"], "handler": "ServiceHandler",
            "command": "start", "data": {"service": ["x"]}}),
        );
        let status = initial_status(&t, "here", Timestamp::now());
        assert_eq!(status.phase, Some(TaskPhase::Failed));
        assert_eq!(status.nodes[0].name, "n1");
        assert!(status.nodes[0].released_at.is_none());
    }

    #[test]
    fn a_selector_matches_the_standalone_labels_and_a_dry_run_releases_nothing() {
        let t = task(
            serde_json::json!({"nodeSelector": {"matchLabels": {"opsplane.io/standalone": "true"}},
            "handler": "ServiceHandler", "command": "start", "data": {"service": ["x"]}, "dryRun": true}),
        );
        let status = initial_status(&t, "here", Timestamp::now());
        assert_eq!(status.nodes[0].name, "here");
        assert!(status.nodes[0].released_at.is_none());
        assert_eq!(status.phase, Some(TaskPhase::Succeeded));
    }

    #[test]
    fn the_node_report_is_kept_when_the_operator_part_is_applied_again() {
        let t = task(
            serde_json::json!({"nodeNames": ["here"], "handler": "ServiceHandler",
            "command": "start", "data": {"service": ["x"]}}),
        );
        let status = initial_status(&t, "here", Timestamp::now());
        let now = Timestamp::now();
        let report = refused(TaskKind::of(&t.spec), now);
        let reported = apply_node(status, "here", &report);
        let op = decide_here(&t, Some(&reported), "here", now).status;
        let merged = apply_operator(Some(&reported), &op);
        assert_eq!(merged.phase, Some(TaskPhase::Failed));
        assert_eq!(merged.nodes[0].code, Some(30004));
        assert!(merged.nodes[0].released_at.is_some());
        assert!(
            merged.nodes[0]
                .msg
                .as_deref()
                .unwrap()
                .contains("--node-tasks")
        );
    }
}
