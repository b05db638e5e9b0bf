//! The NodeTask watcher (SPEC "NodeTask": "the node-daemon on each targeted node executes its
//! part and writes its own result"): watches every NodeTask, and runs a task's seed 002
//! handler/command through [`crate::task::Runner`] once the operator has released it to this
//! node (`status.nodes[name = this node].releasedAt`).
//!
//! Never twice, also across restarts: a ledger of task uids (`<state-dir>/node-tasks.json`,
//! written with fsync + rename) records a task as started *before* anything runs. A task found
//! started by an earlier process was interrupted; it is reported Failed, not run again — except
//! OsHandler reboot/shutdown, whose interruption is the point: the node coming back (the daemon
//! starting again) is its success, and what lets the operator release the next node.
//!
//! Results go to this node's entry of `status.nodes` only, by server-side apply under the field
//! manager `opsplane-node-daemon-<node>`: `status.nodes` is a map-list keyed by node name, so
//! nodes never clobber each other's entries or the operator's fields.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use opsplane_resources::node_task::{
    NodeResult, NodeTask, NodeTaskSpec, NodeTaskStatus, TaskCommand, TaskHandler, TaskPhase,
};
use opsplane_resources::status::status_patch;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::task::{Caller, OutcomeKind, Runner, TaskError, TaskOutcome, TaskRequest};

/// File name of the ledger in the state directory.
pub const LEDGER_FILE: &str = "node-tasks.json";

/// What a task runs: its handler and command. Written `Handler/command` (`OsHandler/reboot`)
/// in the ledger and in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskKind {
    /// The seed 002 handler.
    pub handler: TaskHandler,
    /// Its command.
    pub command: TaskCommand,
}

impl TaskKind {
    /// The handler and command of a NodeTask.
    pub fn of(spec: &NodeTaskSpec) -> Self {
        Self {
            handler: spec.handler,
            command: spec.command,
        }
    }

    /// A power command (OsHandler shutdown or reboot): it succeeds by taking the node away, and
    /// the node-daemon starting again is its success.
    pub fn is_power(self) -> bool {
        self.handler == TaskHandler::OsHandler && self.command.is_power()
    }
}

/// The seed 002 name of a handler or command: its name on the wire (serde's).
fn seed_name(value: impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        // Unit enum variants always serialize to strings; keep something readable regardless.
        other => format!("{other:?}"),
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", seed_name(self.handler), seed_name(self.command))
    }
}

impl std::str::FromStr for TaskKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let Some((handler, command)) = text.split_once('/') else {
            return Err(format!("{text:?} is not Handler/command"));
        };
        let handler = serde_json::from_value(Value::String(handler.to_owned()))
            .map_err(|e| format!("{text:?}: handler: {e}"))?;
        let command = serde_json::from_value(Value::String(command.to_owned()))
            .map_err(|e| format!("{text:?}: command: {e}"))?;
        Ok(Self { handler, command })
    }
}

impl TryFrom<String> for TaskKind {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<TaskKind> for String {
    fn from(kind: TaskKind) -> String {
        kind.to_string()
    }
}

/// The typed request of a NodeTask: its handler, command and data parsed by the parser of the
/// node API's task body ([`TaskRequest::from_parts`]), so both routes check alike.
pub fn request(spec: &NodeTaskSpec) -> Result<TaskRequest, TaskError> {
    let data = match &spec.data {
        Some(data) => serde_json::to_value(data)
            .map_err(|e| TaskError::Invalid(format!("spec.data cannot be read: {e}")))?,
        None => Value::Object(Map::new()),
    };
    TaskRequest::from_parts(&seed_name(spec.handler), &seed_name(spec.command), &data)
}

/// Where a task stands on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LedgerState {
    /// Recorded before running; still so if the daemon stopped while it ran.
    Started,
    /// A power command was accepted; the node has to come back.
    AwaitingReturn,
    /// Finished with `result`.
    Done,
}

/// This node's result, as written to its `status.nodes` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Phase on this node.
    pub phase: TaskPhase,
    /// Seed 002 return code.
    pub code: i64,
    /// Seed 002 message.
    pub msg: String,
    /// When this node started the task.
    pub started_at: String,
    /// When it finished (none while Running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The host's boot id when the task started (the operator counts a reboot done only when
    /// the boot id after differs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id_before: Option<String>,
    /// The host's boot id when the node came back after a power command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id_after: Option<String>,
}

/// Every report this node writes is made here.
impl Report {
    /// Recorded in the ledger before the task runs.
    pub fn running(what: TaskKind, started_at: String) -> Self {
        Self {
            phase: TaskPhase::Running,
            code: 0,
            msg: format!("running {what}"),
            started_at,
            finished_at: None,
            ..Self::default()
        }
    }

    /// Not run: the ledger could not record the task first.
    pub fn not_recorded(error: &LedgerError, started_at: String, now: jiff::Timestamp) -> Self {
        Self {
            phase: TaskPhase::Failed,
            code: 99999,
            msg: format!(
                "系统异常: not run: the node-daemon cannot record the task before running it ({error}); check --state-dir"
            ),
            started_at,
            finished_at: Some(now.to_string()),
            ..Self::default()
        }
    }

    /// The outcome of a task this process ran, and where that leaves it: a power command
    /// accepted is still running until the node comes back; anything else is done.
    pub fn ran(
        what: TaskKind,
        outcome: &TaskOutcome,
        started_at: String,
        now: jiff::Timestamp,
    ) -> (LedgerState, Self) {
        let succeeded = outcome.kind == OutcomeKind::Succeeded;
        let code = i64::from(outcome.code);
        if succeeded && what.is_power() {
            let report = Self {
                phase: TaskPhase::Running,
                code,
                msg: format!(
                    "{}: {what} accepted; waiting for the node to report back",
                    outcome.msg
                ),
                started_at,
                finished_at: None,
                ..Self::default()
            };
            return (LedgerState::AwaitingReturn, report);
        }
        let report = Self {
            phase: if succeeded {
                TaskPhase::Succeeded
            } else {
                TaskPhase::Failed
            },
            code,
            msg: outcome.msg.clone(),
            started_at,
            finished_at: Some(now.to_string()),
            ..Self::default()
        };
        (LedgerState::Done, report)
    }

    /// The node is back after the power command of `entry`; `boot_id` is the host's boot id now
    /// (empty when unreadable).
    pub fn returned(entry: &LedgerEntry, boot_id: &str, now: jiff::Timestamp) -> Self {
        let how = if !entry.boot_id.is_empty() && !boot_id.is_empty() && entry.boot_id != boot_id {
            format!("boot id {} → {boot_id}", entry.boot_id)
        } else {
            "the node-daemon started again; the boot id did not change".to_string()
        };
        Self {
            phase: TaskPhase::Succeeded,
            code: 0,
            msg: format!("成功: the node reported back after {} ({how})", entry.what),
            started_at: entry.report.started_at.clone(),
            finished_at: Some(now.to_string()),
            boot_id_before: Some(entry.boot_id.clone()).filter(|b| !b.is_empty()),
            boot_id_after: Some(boot_id.to_string()).filter(|b| !b.is_empty()),
        }
    }

    /// An earlier process started the task of `entry` and stopped before it finished.
    pub fn interrupted(entry: &LedgerEntry, now: jiff::Timestamp) -> Self {
        Self {
            phase: TaskPhase::Failed,
            code: 99999,
            msg: format!(
                "系统异常: the node-daemon stopped while {} was running and does not run a task twice; check the node (audit log: task-audit.log) and create a new NodeTask if it has to run again",
                entry.what
            ),
            started_at: entry.report.started_at.clone(),
            finished_at: Some(now.to_string()),
            boot_id_before: entry.report.boot_id_before.clone(),
            boot_id_after: None,
        }
    }

    /// This node's `status.nodes` entry showing the report (the fields the node-daemon owns).
    pub fn entry(&self, node: &str) -> NodeResult {
        NodeResult {
            name: node.to_owned(),
            phase: self.phase,
            released_at: None,
            code: Some(self.code),
            msg: Some(self.msg.clone()),
            started_at: Some(self.started_at.clone()),
            finished_at: self.finished_at.clone(),
            boot_id_before: self.boot_id_before.clone(),
            boot_id_after: self.boot_id_after.clone(),
            // The operator's fields (its verdict, its drain and its notes).
            ..NodeResult::default()
        }
    }
}

/// The server-side-apply body that writes this node's entry, and only it.
pub fn report_patch(node: &str, report: &Report) -> Value {
    status_patch::<NodeTask>(&NodeTaskStatus {
        nodes: vec![report.entry(node)],
        ..NodeTaskStatus::default()
    })
}

/// One task in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// The NodeTask's name (for people reading the file).
    pub task: String,
    /// `Handler/command`.
    pub what: TaskKind,
    /// Where it stands.
    pub state: LedgerState,
    /// The daemon process that wrote the state (to tell an earlier process's entries).
    pub instance: String,
    /// The host's boot id when the task started.
    #[serde(default)]
    pub boot_id: String,
    /// The last result reported (or to report).
    pub report: Report,
}

/// The ledger: task uid → entry, persisted on every change before the change takes effect.
pub struct Ledger {
    path: PathBuf,
    entries: BTreeMap<String, LedgerEntry>,
}

/// Why the ledger cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file is there but is not a ledger.
    #[error("the NodeTask ledger {} does not parse ({source}); fix or move it — tasks are not run without it", path.display())]
    Corrupt {
        /// The ledger file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// Reading, writing, syncing or renaming failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The step: `reading`, `writing`, ...
        what: &'static str,
        /// The file (or directory).
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The entries could not be encoded.
    #[error("cannot encode the NodeTask ledger: {0}")]
    Encode(#[source] serde_json::Error),
}

impl Ledger {
    /// Loads the ledger (empty when the file does not exist). A file that does not parse is an
    /// error: running tasks again because their record was unreadable is what it prevents.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, LedgerError> {
        let path = path.into();
        let entries = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(entries) => entries,
                Err(source) => return Err(LedgerError::Corrupt { path, source }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(LedgerError::Io {
                    what: "cannot read",
                    path,
                    source,
                });
            }
        };
        Ok(Self { path, entries })
    }

    /// The entry of a task uid.
    pub fn get(&self, uid: &str) -> Option<&LedgerEntry> {
        self.entries.get(uid)
    }

    /// Records `entry` durably (temporary file, fsync, rename, fsync of the directory).
    pub fn put(&mut self, uid: &str, entry: LedgerEntry) -> Result<(), LedgerError> {
        let mut next = self.entries.clone();
        next.insert(uid.to_string(), entry);
        write_durably(&self.path, &next)?;
        self.entries = next;
        Ok(())
    }
}

fn write_durably(path: &Path, entries: &BTreeMap<String, LedgerEntry>) -> Result<(), LedgerError> {
    use std::io::Write;
    let fail = |what: &'static str| {
        move |source| LedgerError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(fail("creating the directory of"))?;
    let body = serde_json::to_vec_pretty(entries).map_err(LedgerError::Encode)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(fail("creating"))?;
    file.write_all(&body).map_err(fail("writing"))?;
    file.sync_all().map_err(fail("syncing"))?;
    std::fs::rename(&tmp, path).map_err(fail("renaming onto"))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What to do about a task seen in a watch event. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not for this node, not released yet, or nothing to do.
    Ignore,
    /// Run it (it is not in the ledger).
    Run,
    /// Write this report (the status does not show it yet).
    Report(Report),
    /// The node is back after a power command an earlier process accepted: report success
    /// (the ledger entry is the argument).
    Returned(LedgerEntry),
    /// An earlier process started it and stopped before it finished: report it failed.
    Interrupted(LedgerEntry),
}

fn shows(status: &NodeResult, report: &Report) -> bool {
    status.phase == report.phase
        && status.code == Some(report.code)
        && status.msg.as_deref() == Some(report.msg.as_str())
        && status.finished_at == report.finished_at
}

/// Decides what to do about a task: `entry` is this node's `status.nodes` entry, `ledger` the
/// ledger's record of the task uid, `instance` this process's id.
pub fn step(entry: Option<&NodeResult>, ledger: Option<&LedgerEntry>, instance: &str) -> Step {
    let Some(entry) = entry else {
        return Step::Ignore;
    };
    if entry.released_at.is_none() {
        return Step::Ignore;
    }
    match ledger {
        // Reported by someone (a daemon whose state directory was lost): never run twice.
        None if entry.started_at.is_some() => Step::Ignore,
        None => Step::Run,
        Some(l) if l.instance != instance => match l.state {
            LedgerState::Started if l.what.is_power() => Step::Returned(l.clone()),
            LedgerState::AwaitingReturn => Step::Returned(l.clone()),
            LedgerState::Started => Step::Interrupted(l.clone()),
            LedgerState::Done if shows(entry, &l.report) => Step::Ignore,
            LedgerState::Done => Step::Report(l.report.clone()),
        },
        Some(l) if shows(entry, &l.report) => Step::Ignore,
        Some(l) => Step::Report(l.report.clone()),
    }
}

/// The field manager of this node's writes (at most 128 bytes, as the API server requires).
pub fn field_manager(node: &str) -> String {
    let mut manager = format!("opsplane-node-daemon-{node}");
    if manager.len() > 128 {
        let mut end = 128;
        while !manager.is_char_boundary(end) {
            end -= 1;
        }
        manager.truncate(end);
    }
    manager
}

/// The watcher of one node.
pub struct Watcher {
    client: Client,
    node: String,
    runner: Arc<Runner>,
    ledger: Ledger,
    instance: String,
    boot_id_path: PathBuf,
    /// The last report this process wrote per task uid: watch events queued before that write
    /// still show the older entry and must not trigger a rewrite.
    written: BTreeMap<String, Report>,
}

impl Watcher {
    /// A watcher for `node`, with the ledger in `state_dir`; `host_root` locates the boot id.
    pub fn new(
        client: Client,
        node: String,
        runner: Arc<Runner>,
        state_dir: &Path,
        host_root: &Path,
    ) -> Result<Self, LedgerError> {
        let ledger = Ledger::load(state_dir.join(LEDGER_FILE))?;
        let instance = format!(
            "{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        );
        Ok(Self {
            client,
            node,
            runner,
            ledger,
            instance,
            boot_id_path: host_root.join("proc/sys/kernel/random/boot_id"),
            written: BTreeMap::new(),
        })
    }

    fn boot_id(&self) -> String {
        std::fs::read_to_string(&self.boot_id_path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// Watches NodeTasks until the future is dropped; tasks of this node run one at a time.
    pub async fn run(mut self) {
        let api: Api<NodeTask> = Api::all(self.client.clone());
        tracing::info!(node = %self.node, "watching NodeTasks released to this node");
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(task) => self.handle(&task).await,
                Err(error) => tracing::warn!(%error, "NodeTask watch"),
            }
        }
    }

    /// Handles one task seen in the watch.
    pub async fn handle(&mut self, task: &NodeTask) {
        let Some(uid) = task.uid() else {
            return;
        };
        let name = task.name_any();
        let entry = task
            .status
            .as_ref()
            .and_then(|s| s.nodes.iter().find(|e| e.name == self.node));
        match step(entry, self.ledger.get(&uid), &self.instance) {
            Step::Ignore => {}
            Step::Run => self.run_task(task, &uid, &name).await,
            Step::Report(report) if self.written.get(&uid) == Some(&report) => {}
            Step::Report(report) => self.write(&uid, &name, &report).await,
            Step::Returned(mut l) => {
                l.report = Report::returned(&l, &self.boot_id(), jiff::Timestamp::now());
                self.finish(&uid, &name, l).await;
            }
            Step::Interrupted(mut l) => {
                l.report = Report::interrupted(&l, jiff::Timestamp::now());
                self.finish(&uid, &name, l).await;
            }
        }
    }

    async fn finish(&mut self, uid: &str, name: &str, mut entry: LedgerEntry) {
        entry.state = LedgerState::Done;
        entry.instance = self.instance.clone();
        let report = entry.report.clone();
        if let Err(error) = self.ledger.put(uid, entry) {
            tracing::error!(task = %name, %error, "cannot record the task's result in the ledger");
        }
        self.write(uid, name, &report).await;
    }

    async fn run_task(&mut self, task: &NodeTask, uid: &str, name: &str) {
        let what = TaskKind::of(&task.spec);
        let started_at = jiff::Timestamp::now().to_string();
        let boot_id = self.boot_id();
        let mut entry = LedgerEntry {
            task: name.to_string(),
            what,
            state: LedgerState::Started,
            instance: self.instance.clone(),
            report: Report {
                boot_id_before: Some(boot_id.clone()).filter(|b| !b.is_empty()),
                ..Report::running(what, started_at.clone())
            },
            boot_id,
        };
        // Recorded before anything runs: a restart from here on never runs it again.
        if let Err(error) = self.ledger.put(uid, entry.clone()) {
            let report = Report::not_recorded(&error, started_at, jiff::Timestamp::now());
            self.write(uid, name, &report).await;
            return;
        }
        self.write(uid, name, &entry.report).await;
        let caller = Caller {
            client: None,
            identity: format!("NodeTask/{name}@{uid}"),
        };
        tracing::info!(task = %name, %uid, %what, "running a NodeTask");
        let outcome = match request(&task.spec) {
            Ok(request) => self.runner.run(request, &caller).await,
            Err(error) => self.runner.reject(
                json!({"handler": seed_name(what.handler), "command": seed_name(what.command)}),
                &error,
                &caller,
            ),
        };
        let (state, mut report) = Report::ran(what, &outcome, started_at, jiff::Timestamp::now());
        report.boot_id_before = entry.report.boot_id_before.clone();
        entry.instance = self.instance.clone();
        entry.state = state;
        entry.report = report.clone();
        if let Err(error) = self.ledger.put(uid, entry) {
            tracing::error!(task = %name, %error, "cannot record the task's result in the ledger");
        }
        self.write(uid, name, &report).await;
    }

    /// Applies this node's entry; retried a few times, then left to the next watch event
    /// (the ledger keeps the result, [`step`] re-reports what the status does not show).
    async fn write(&mut self, uid: &str, name: &str, report: &Report) {
        let api: Api<NodeTask> = Api::all(self.client.clone());
        let patch = report_patch(&self.node, report);
        let params = PatchParams::apply(&field_manager(&self.node)).force();
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=5 {
            match api.patch_status(name, &params, &Patch::Apply(&patch)).await {
                Ok(_) => {
                    tracing::info!(task = %name, phase = ?report.phase, code = report.code, "NodeTask result written");
                    self.written.insert(uid.to_string(), report.clone());
                    return;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    tracing::info!(task = %name, "the NodeTask is gone; result not written");
                    return;
                }
                Err(error) => {
                    tracing::warn!(task = %name, attempt, %error, "cannot write the NodeTask result");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Whether the watcher should run: `on`, or `auto` with a node name and a cluster configured
/// (in-cluster service account environment or `KUBECONFIG`).
pub fn enabled(mode: &str, node_name: Option<&str>) -> bool {
    let has_node = node_name.is_some_and(|n| !n.is_empty());
    match mode {
        "on" => true,
        "off" => false,
        _ => {
            has_node
                && (std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
                    || std::env::var_os("KUBECONFIG").is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released() -> NodeResult {
        NodeResult {
            name: "node-a".into(),
            phase: TaskPhase::Pending,
            released_at: Some("2026-11-25T10:00:00Z".into()),
            ..Default::default()
        }
    }

    fn ledger(state: LedgerState, what: &str, instance: &str, phase: TaskPhase) -> LedgerEntry {
        LedgerEntry {
            task: "t".into(),
            what: what.parse().unwrap(),
            state,
            instance: instance.into(),
            boot_id: "b1".into(),
            report: Report {
                phase,
                code: 0,
                msg: "成功".into(),
                started_at: "2026-11-25T10:00:01Z".into(),
                finished_at: (phase != TaskPhase::Running).then(|| "2026-11-25T10:00:02Z".into()),
                ..Report::default()
            },
        }
    }

    #[test]
    fn runs_only_once_released_and_only_without_a_ledger_entry() {
        let mut unreleased = released();
        unreleased.released_at = None;
        assert_eq!(step(None, None, "me"), Step::Ignore);
        assert_eq!(step(Some(&unreleased), None, "me"), Step::Ignore);
        assert_eq!(step(Some(&released()), None, "me"), Step::Run);
        // Someone reported for this node already (state directory lost): not run again.
        let mut reported = released();
        reported.started_at = Some("x".into());
        assert_eq!(step(Some(&reported), None, "me"), Step::Ignore);
    }

    #[test]
    fn a_task_started_by_an_earlier_process_is_not_run_again() {
        let l = ledger(
            LedgerState::Started,
            "ServiceHandler/start",
            "old",
            TaskPhase::Running,
        );
        assert_eq!(
            step(Some(&released()), Some(&l), "me"),
            Step::Interrupted(l.clone())
        );
        // By this process: in progress, nothing to do but show it.
        assert!(matches!(
            step(Some(&released()), Some(&l), "old"),
            Step::Report(_)
        ));
    }

    #[test]
    fn a_power_command_succeeds_when_the_node_comes_back() {
        for state in [LedgerState::Started, LedgerState::AwaitingReturn] {
            let l = ledger(state, "OsHandler/reboot", "old", TaskPhase::Running);
            assert_eq!(step(Some(&released()), Some(&l), "me"), Step::Returned(l));
        }
        // The process that issued it waits.
        let l = ledger(
            LedgerState::AwaitingReturn,
            "OsHandler/reboot",
            "me",
            TaskPhase::Running,
        );
        let mut shown = released();
        shown.phase = TaskPhase::Running;
        shown.code = Some(0);
        shown.msg = Some("成功".into());
        assert_eq!(step(Some(&shown), Some(&l), "me"), Step::Ignore);
    }

    #[test]
    fn a_done_result_missing_from_the_status_is_reported_again() {
        let l = ledger(
            LedgerState::Done,
            "FileHandler/delete_file",
            "old",
            TaskPhase::Succeeded,
        );
        assert_eq!(
            step(Some(&released()), Some(&l), "me"),
            Step::Report(l.report.clone())
        );
        let mut shown = released();
        shown.phase = TaskPhase::Succeeded;
        shown.code = Some(0);
        shown.msg = Some("成功".into());
        shown.started_at = Some(l.report.started_at.clone());
        shown.finished_at = l.report.finished_at.clone();
        assert_eq!(step(Some(&shown), Some(&l), "me"), Step::Ignore);
    }

    #[test]
    fn the_ledger_survives_a_reload_and_a_corrupt_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEDGER_FILE);
        let mut ledger_file = Ledger::load(&path).unwrap();
        let l = ledger(
            LedgerState::Started,
            "OsHandler/reboot",
            "p1",
            TaskPhase::Running,
        );
        ledger_file.put("uid-1", l.clone()).unwrap();
        assert_eq!(Ledger::load(&path).unwrap().get("uid-1"), Some(&l));
        std::fs::write(&path, b"{not json").unwrap();
        let error = Ledger::load(&path).err().unwrap();
        assert!(matches!(error, LedgerError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("does not parse"), "{error}");
        assert!(std::error::Error::source(&error).is_some());
    }

    #[test]
    fn the_ledger_writes_what_a_task_runs_as_handler_slash_command() {
        let l = ledger(
            LedgerState::Started,
            "OsHandler/reboot",
            "p1",
            TaskPhase::Running,
        );
        assert_eq!(
            l.what,
            TaskKind {
                handler: TaskHandler::OsHandler,
                command: TaskCommand::Reboot
            }
        );
        let written = serde_json::to_value(&l).unwrap();
        assert_eq!(written["what"], "OsHandler/reboot");
        assert_eq!(serde_json::from_value::<LedgerEntry>(written).unwrap(), l);
        let kind: TaskKind = "NetworkHandler/exchange_ip".parse().unwrap();
        assert_eq!(kind.to_string(), "NetworkHandler/exchange_ip");
        for bad in ["OsHandler", "NoHandler/reboot", "OsHandler/hibernate"] {
            assert!(bad.parse::<TaskKind>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_os_handler_shutdown_and_reboot_wait_for_the_node_to_come_back() {
        let kind = |s: &str| s.parse::<TaskKind>().unwrap();
        assert!(kind("OsHandler/reboot").is_power() && kind("OsHandler/shutdown").is_power());
        for other in [
            "CrontabHandler/setup_shutdown",
            "ServiceHandler/restart",
            "NetworkHandler/add_ip",
        ] {
            assert!(!kind(other).is_power(), "{other}");
            // Interrupted, not returned.
            let l = ledger(LedgerState::Started, other, "old", TaskPhase::Running);
            assert_eq!(
                step(Some(&released()), Some(&l), "me"),
                Step::Interrupted(l.clone())
            );
        }
    }

    fn outcome(kind: OutcomeKind, code: i32, msg: &str) -> TaskOutcome {
        TaskOutcome {
            code,
            msg: msg.into(),
            data: json!({}),
            kind,
        }
    }

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn reports_of_a_task_this_process_ran() {
        let now = at("2026-11-25T10:00:05Z");
        let started = "2026-11-25T10:00:01Z".to_string();
        let reboot = "OsHandler/reboot".parse().unwrap();
        let restart = "ServiceHandler/restart".parse().unwrap();
        let running = Report::running(restart, started.clone());
        assert_eq!(
            (running.phase, running.msg.as_str(), &running.finished_at),
            (TaskPhase::Running, "running ServiceHandler/restart", &None)
        );
        // A power command accepted: still running, waiting for the node.
        let (state, r) = Report::ran(
            reboot,
            &outcome(OutcomeKind::Succeeded, 0, "成功"),
            started.clone(),
            now,
        );
        assert_eq!(state, LedgerState::AwaitingReturn);
        assert_eq!(
            (r.phase, r.code, r.finished_at),
            (TaskPhase::Running, 0, None)
        );
        assert_eq!(
            r.msg,
            "成功: OsHandler/reboot accepted; waiting for the node to report back"
        );
        // A power command refused, and any other command: done.
        let (state, r) = Report::ran(
            reboot,
            &outcome(OutcomeKind::Refused, 30004, "不支持的设备操作: refused"),
            started.clone(),
            now,
        );
        assert_eq!(state, LedgerState::Done);
        assert_eq!(
            (r.phase, r.code, r.msg.as_str()),
            (TaskPhase::Failed, 30004, "不支持的设备操作: refused")
        );
        assert_eq!(r.finished_at.as_deref(), Some("2026-11-25T10:00:05Z"));
        let (state, r) = Report::ran(
            restart,
            &outcome(OutcomeKind::Succeeded, 0, "成功"),
            started.clone(),
            now,
        );
        assert_eq!(
            (state, r.phase, r.started_at.as_str()),
            (LedgerState::Done, TaskPhase::Succeeded, started.as_str())
        );
    }

    #[test]
    fn reports_of_a_task_an_earlier_process_started() {
        let now = at("2026-11-25T10:09:00Z");
        let l = ledger(
            LedgerState::AwaitingReturn,
            "OsHandler/reboot",
            "old",
            TaskPhase::Running,
        );
        let back = Report::returned(&l, "b2", now);
        assert_eq!((back.phase, back.code), (TaskPhase::Succeeded, 0));
        assert_eq!(
            back.msg,
            "成功: the node reported back after OsHandler/reboot (boot id b1 → b2)"
        );
        assert_eq!(back.started_at, l.report.started_at);
        // Both boot ids go to the entry: the operator counts the reboot only when they differ.
        assert_eq!(
            (
                back.boot_id_before.as_deref(),
                back.boot_id_after.as_deref()
            ),
            (Some("b1"), Some("b2"))
        );
        let entry = back.entry("node-a");
        assert_eq!(entry.boot_id_after.as_deref(), Some("b2"));
        let same_boot = Report::returned(&l, "b1", now);
        assert!(
            same_boot.msg.ends_with("the boot id did not change)"),
            "{}",
            same_boot.msg
        );
        let cut = Report::interrupted(&l, now);
        assert_eq!((cut.phase, cut.code), (TaskPhase::Failed, 99999));
        assert!(
            cut.msg
                .contains("stopped while OsHandler/reboot was running"),
            "{}",
            cut.msg
        );
        assert_eq!(cut.finished_at.as_deref(), Some("2026-11-25T10:09:00Z"));
    }

    #[test]
    fn the_status_patch_holds_only_this_nodes_entry_and_its_fields() {
        let report = Report {
            phase: TaskPhase::Running,
            code: 0,
            msg: "running OsHandler/reboot".into(),
            started_at: "2026-11-25T10:00:01Z".into(),
            finished_at: None,
            boot_id_before: Some("b1".into()),
            boot_id_after: None,
        };
        assert_eq!(
            report_patch("node-a", &report),
            json!({
                "apiVersion": "opsplane.io/v1alpha1",
                "kind": "NodeTask",
                "status": {"nodes": [{
                    "name": "node-a", "phase": "Running", "code": 0,
                    "msg": "running OsHandler/reboot", "startedAt": "2026-11-25T10:00:01Z",
                    "bootIdBefore": "b1"
                }]},
            })
        );
        let done = Report {
            phase: TaskPhase::Succeeded,
            finished_at: Some("2026-11-25T10:00:02Z".into()),
            ..report
        };
        assert_eq!(
            report_patch("node-a", &done)["status"]["nodes"][0]["finishedAt"],
            "2026-11-25T10:00:02Z"
        );
        // What the patch says is what the next watch event shows: no rewrite.
        let mut shown = done.entry("node-a");
        shown.released_at = Some("2026-11-25T10:00:00Z".into());
        assert!(shows(&shown, &done));
    }

    fn spec(handler: &str, command: &str, data: Value) -> NodeTaskSpec {
        serde_json::from_value(json!({
            "nodeNames": ["node-a"], "handler": handler, "command": command, "data": data
        }))
        .unwrap()
    }

    #[test]
    fn a_node_task_becomes_the_typed_request_of_its_handler_and_command() {
        let r = request(&spec(
            "ServiceHandler",
            "restart",
            json!({"service": ["libvirtd"]}),
        ))
        .unwrap();
        assert_eq!((r.handler(), r.command()), ("ServiceHandler", "restart"));
        let r = request(&spec(
            "NetworkHandler",
            "exchange_ip",
            json!({"name1": "eth0", "name2": "eth0:1"}),
        ))
        .unwrap();
        assert!(matches!(r, TaskRequest::Ip(_)), "{r:?}");
        let mut no_data = spec("OsHandler", "reboot", json!({}));
        no_data.data = None;
        assert!(matches!(request(&no_data), Ok(TaskRequest::Os(_))));
        // What the CRD's schema lets through but the seed's rules do not: refused, not run.
        let error = request(&spec(
            "NetworkHandler",
            "add_ip",
            json!({"name": "eth0:1", "ip": "10.0.0.5", "netmask": "255.0.255.0"}),
        ))
        .unwrap_err();
        assert_eq!(error.code(), 30006, "{error}");
    }

    #[test]
    fn field_managers_are_per_node_and_bounded() {
        assert_eq!(field_manager("node-a"), "opsplane-node-daemon-node-a");
        assert_ne!(field_manager("node-a"), field_manager("node-b"));
        assert!(field_manager(&"n".repeat(253)).len() <= 128);
        assert!(!enabled("off", Some("a")));
        assert!(enabled("on", None));
    }
}
