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
use opsplane_resources::node_task::{NodeResult, NodeTask, TaskPhase};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::task::{Caller, OutcomeKind, Runner};

/// File name of the ledger in the state directory.
pub const LEDGER_FILE: &str = "node-tasks.json";

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// One task in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// The NodeTask's name (for people reading the file).
    pub task: String,
    /// `Handler/command`.
    pub what: String,
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

impl Ledger {
    /// Loads the ledger (empty when the file does not exist). A file that does not parse is an
    /// error: running tasks again because their record was unreadable is what it prevents.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        let entries = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "the NodeTask ledger {} does not parse ({e}); fix or move it — tasks are not run without it",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Self { path, entries })
    }

    /// The entry of a task uid.
    pub fn get(&self, uid: &str) -> Option<&LedgerEntry> {
        self.entries.get(uid)
    }

    /// Records `entry` durably (temporary file, fsync, rename, fsync of the directory).
    pub fn put(&mut self, uid: &str, entry: LedgerEntry) -> Result<(), String> {
        let mut next = self.entries.clone();
        next.insert(uid.to_string(), entry);
        write_durably(&self.path, &next)?;
        self.entries = next;
        Ok(())
    }
}

fn write_durably(path: &Path, entries: &BTreeMap<String, LedgerEntry>) -> Result<(), String> {
    use std::io::Write;
    let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| fail("creating the directory of", e))?;
    let body = serde_json::to_vec_pretty(entries).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(|e| fail("creating", e))?;
    file.write_all(&body).map_err(|e| fail("writing", e))?;
    file.sync_all().map_err(|e| fail("syncing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail("renaming onto", e))?;
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
            LedgerState::Started if l.what.starts_with("OsHandler/") => Step::Returned(l.clone()),
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
    ) -> Result<Self, String> {
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
                let boot = self.boot_id();
                let how = if !l.boot_id.is_empty() && !boot.is_empty() && l.boot_id != boot {
                    format!("boot id {} → {}", l.boot_id, boot)
                } else {
                    "the node-daemon started again; the boot id did not change".to_string()
                };
                l.report = Report {
                    phase: TaskPhase::Succeeded,
                    code: 0,
                    msg: format!("成功: the node reported back after {} ({how})", l.what),
                    started_at: l.report.started_at.clone(),
                    finished_at: Some(jiff::Timestamp::now().to_string()),
                };
                self.finish(&uid, &name, l).await;
            }
            Step::Interrupted(mut l) => {
                l.report = Report {
                    phase: TaskPhase::Failed,
                    code: 99999,
                    msg: format!(
                        "系统异常: the node-daemon stopped while {} was running and does not run a task twice; check the node (audit log: task-audit.log) and create a new NodeTask if it has to run again",
                        l.what
                    ),
                    started_at: l.report.started_at.clone(),
                    finished_at: Some(jiff::Timestamp::now().to_string()),
                };
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
        let handler = serde_json::to_value(task.spec.handler).unwrap_or(Value::Null);
        let command = serde_json::to_value(task.spec.command).unwrap_or(Value::Null);
        let what = format!(
            "{}/{}",
            handler.as_str().unwrap_or("?"),
            command.as_str().unwrap_or("?")
        );
        let started_at = jiff::Timestamp::now().to_string();
        let mut entry = LedgerEntry {
            task: name.to_string(),
            what: what.clone(),
            state: LedgerState::Started,
            instance: self.instance.clone(),
            boot_id: self.boot_id(),
            report: Report {
                phase: TaskPhase::Running,
                code: 0,
                msg: format!("running {what}"),
                started_at: started_at.clone(),
                finished_at: None,
            },
        };
        // Recorded before anything runs: a restart from here on never runs it again.
        if let Err(error) = self.ledger.put(uid, entry.clone()) {
            let report = Report {
                phase: TaskPhase::Failed,
                code: 99999,
                msg: format!(
                    "系统异常: not run: the node-daemon cannot record the task before running it ({error}); check --state-dir"
                ),
                started_at: started_at.clone(),
                finished_at: Some(jiff::Timestamp::now().to_string()),
            };
            self.write(uid, name, &report).await;
            return;
        }
        self.write(uid, name, &entry.report).await;
        let data = match &task.spec.data {
            Some(d) => serde_json::to_value(d).unwrap_or_else(|_| json!({})),
            None => json!({}),
        };
        let body = json!({"handler": handler, "command": command, "data": data});
        let caller = Caller {
            client: None,
            identity: format!("NodeTask/{name}@{uid}"),
        };
        tracing::info!(task = %name, %uid, %what, "running a NodeTask");
        let outcome = self
            .runner
            .submit("task", body.to_string().as_bytes(), &caller)
            .await;
        let power = what.starts_with("OsHandler/");
        entry.instance = self.instance.clone();
        entry.report = if outcome.kind == OutcomeKind::Succeeded && power {
            entry.state = LedgerState::AwaitingReturn;
            Report {
                phase: TaskPhase::Running,
                code: i64::from(outcome.code),
                msg: format!(
                    "{}: {what} accepted; waiting for the node to report back",
                    outcome.msg
                ),
                started_at,
                finished_at: None,
            }
        } else {
            entry.state = LedgerState::Done;
            Report {
                phase: if outcome.kind == OutcomeKind::Succeeded {
                    TaskPhase::Succeeded
                } else {
                    TaskPhase::Failed
                },
                code: i64::from(outcome.code),
                msg: outcome.msg.clone(),
                started_at,
                finished_at: Some(jiff::Timestamp::now().to_string()),
            }
        };
        let report = entry.report.clone();
        if let Err(error) = self.ledger.put(uid, entry) {
            tracing::error!(task = %name, %error, "cannot record the task's result in the ledger");
        }
        self.write(uid, name, &report).await;
    }

    /// Applies this node's entry; retried a few times, then left to the next watch event
    /// (the ledger keeps the result, [`step`] re-reports what the status does not show).
    async fn write(&mut self, uid: &str, name: &str, report: &Report) {
        let api: Api<NodeTask> = Api::all(self.client.clone());
        let mut node = serde_json::to_value(report).unwrap_or_else(|_| json!({}));
        if let Some(object) = node.as_object_mut() {
            object.insert("name".into(), Value::String(self.node.clone()));
        }
        let patch = json!({
            "apiVersion": "opsplane.io/v1alpha1",
            "kind": "NodeTask",
            "status": {"nodes": [node]},
        });
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
            what: what.into(),
            state,
            instance: instance.into(),
            boot_id: "b1".into(),
            report: Report {
                phase,
                code: 0,
                msg: "成功".into(),
                started_at: "2026-11-25T10:00:01Z".into(),
                finished_at: (phase != TaskPhase::Running).then(|| "2026-11-25T10:00:02Z".into()),
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
        assert!(error.contains("does not parse"), "{error}");
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
