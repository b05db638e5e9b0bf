//! The node task runner: every control task of seed 002 — §三 CrontabHandler, OsHandler,
//! ServiceHandler, TimerHandler, §五 FileHandler, and §二.12–15 add_ip / update_ip /
//! delete_ip / exchange_ip / verify_password — behind one library API used by the node API
//! (`POST /api/v1/monitor/task` and the IP/password endpoints) and, later, by a NodeTask
//! watcher.
//!
//! ```no_run
//! # async fn demo(runner: std::sync::Arc<opsplane_node_daemon::task::Runner>) {
//! use opsplane_node_daemon::task::{Caller, TaskRequest};
//! let request = TaskRequest::from_parts("ServiceHandler", "restart",
//!     &serde_json::json!({"service": ["libvirtd"]})).unwrap();
//! let caller = Caller { client: None, identity: "NodeTask/restart-libvirtd@<uid>".into() };
//! let outcome = runner.run(request, &caller).await;
//! println!("{} {} {}", outcome.code, outcome.msg, outcome.data);
//! # }
//! ```
//!
//! Every call is checked against the node's configuration first ([`TaskSettings`]: disruptive
//! and destructive commands are off until allowed) and recorded in the audit log
//! ([`audit`]), whether it ran, was refused or was invalid. One module per handler does the
//! work; this module parses, authorizes, dispatches and records.

pub mod audit;
pub mod crontab;
pub mod file;
pub mod ip;
pub mod os;
pub mod password;
pub mod service;
pub mod timer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::envelope::SUCCESS_MSG;
pub use crate::error::{OutcomeKind, TaskError};
use crate::reporter::Reporter;

/// The identity of a caller that presented the node API's bearer token (there is one token,
/// so the token identifies "whoever holds the node API Secret").
pub const IDENTITY_NODE_API: &str = "node-api-token";

/// The node API endpoints served by the task runner (`POST /api/v1/monitor/<name>`).
pub const TASK_ENDPOINTS: &[&str] = &[
    "task",
    "add_ip",
    "update_ip",
    "delete_ip",
    "exchange_ip",
    "verify_password",
];

/// Who asked for a task: recorded in the audit log; the client IP keys the password-check rate
/// limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The HTTP peer; `None` for callers inside the daemon (a NodeTask watcher, the crontab
    /// scheduler).
    pub client: Option<SocketAddr>,
    /// Who it is: [`IDENTITY_NODE_API`] for the node API, e.g. `NodeTask/<name>@<uid>` for a
    /// watcher, `crontab:<task_name>` for a scheduled shutdown.
    pub identity: String,
}

/// A parsed, validated task (seed 002 body → typed request). Parsing never touches the host.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskRequest {
    /// CrontabHandler setup/modify/select/delete_shutdown (§三.1).
    Crontab(crontab::CrontabCommand),
    /// OsHandler shutdown/reboot (§三.2).
    Os(os::PowerAction),
    /// ServiceHandler start/stop/restart/enable/disable (§三.3).
    Service(service::ServiceTask),
    /// TimerHandler update/pause/resume (§三.4).
    Timer(timer::TimerCommand),
    /// FileHandler delete_file (§五.1).
    File(file::DeleteFile),
    /// add_ip / update_ip / delete_ip / exchange_ip (§二.12–15).
    Ip(ip::IpTask),
    /// verify_password (§二.15).
    Password(password::PasswordCheck),
}

impl TaskRequest {
    /// Parses a `POST /api/v1/monitor/task` body: `{"handler", "command", "data"}`.
    pub fn from_task_body(body: &Value) -> Result<Self, TaskError> {
        let Some(object) = body.as_object() else {
            return Err(TaskError::Invalid("the body must be a JSON object".into()));
        };
        let field = |name: &str| -> Result<&str, TaskError> {
            match object.get(name) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s),
                Some(Value::String(_)) | None => Err(TaskError::Invalid(format!(
                    "a task needs \"handler\" and \"command\" strings; \"{name}\" is missing"
                ))),
                Some(_) => Err(TaskError::Invalid(format!("\"{name}\" must be a string"))),
            }
        };
        let handler = field("handler")?;
        let command = field("command")?;
        let data = object.get("data").unwrap_or(&Value::Null);
        Self::from_parts(handler, command, data)
    }

    /// Parses a task from its handler, command and data (the NodeTask spec's fields). IP tasks
    /// take the handler name `NetworkHandler` and the endpoint name as command (`add_ip`, ...).
    /// verify_password is only reachable through its endpoint ([`Self::from_endpoint`]): a
    /// password has no place in a custom resource.
    pub fn from_parts(handler: &str, command: &str, data: &Value) -> Result<Self, TaskError> {
        match handler {
            "CrontabHandler" => Ok(Self::Crontab(crontab::CrontabCommand::parse(
                command, data,
            )?)),
            "OsHandler" => Ok(Self::Os(os::PowerAction::parse(command)?)),
            "ServiceHandler" => Ok(Self::Service(service::ServiceTask::parse(command, data)?)),
            "TimerHandler" => Ok(Self::Timer(timer::TimerCommand::parse(command, data)?)),
            "FileHandler" => Ok(Self::File(file::DeleteFile::parse(command, data)?)),
            "NetworkHandler" => Ok(Self::Ip(ip::IpTask::parse(command, data)?)),
            other => Err(TaskError::Unsupported(format!(
                "unknown handler {:?} (CrontabHandler, OsHandler, ServiceHandler, TimerHandler, FileHandler, NetworkHandler)",
                clip(other)
            ))),
        }
    }

    /// Parses the body of `POST /api/v1/monitor/<endpoint>` for one of [`TASK_ENDPOINTS`].
    pub fn from_endpoint(endpoint: &str, body: &Value) -> Result<Self, TaskError> {
        if !body.is_object() {
            return Err(TaskError::Invalid("the body must be a JSON object".into()));
        }
        match endpoint {
            "task" => Self::from_task_body(body),
            "verify_password" => Ok(Self::Password(password::PasswordCheck::parse(body)?)),
            "add_ip" | "update_ip" | "delete_ip" | "exchange_ip" => {
                Ok(Self::Ip(ip::IpTask::parse(endpoint, body)?))
            }
            other => Err(TaskError::Unsupported(format!(
                "{:?} is not a task endpoint",
                clip(other)
            ))),
        }
    }

    /// Parses raw body bytes of a task endpoint (malformed JSON is a 30006).
    pub fn from_endpoint_bytes(endpoint: &str, body: &[u8]) -> Result<Self, TaskError> {
        let value = parse_json(body)?;
        Self::from_endpoint(endpoint, &value)
    }

    /// The handler's own request inside.
    pub fn handler_request(&self) -> &dyn HandlerRequest {
        match self {
            Self::Crontab(c) => c,
            Self::Os(a) => a,
            Self::Service(s) => s,
            Self::Timer(t) => t,
            Self::File(f) => f,
            Self::Ip(t) => t,
            Self::Password(p) => p,
        }
    }

    /// The seed handler name (`NetworkHandler` / `PasswordHandler` for the §二 endpoints).
    pub fn handler(&self) -> &'static str {
        self.handler_request().handler()
    }

    /// The seed command name.
    pub fn command(&self) -> &'static str {
        self.handler_request().command()
    }

    /// `{handler, command, data}` for the audit log, secrets removed.
    pub fn audit_what(&self) -> Value {
        let request = self.handler_request();
        json!({"handler": request.handler(), "command": request.command(), "data": request.audit_data()})
    }

    /// Whether this node's configuration allows the task; the refusal names the flag.
    pub fn permission(&self, settings: &TaskSettings) -> Result<(), TaskError> {
        self.handler_request().permission(settings)
    }
}

/// What a parsed request of one handler says about itself. Each handler's module implements it
/// for its request type, so the handler's names, its audit data and what it needs allowed stay
/// in its module (kured keeps one interface per concern); [`TaskRequest`] only picks the
/// handler's request ([`TaskRequest::handler_request`]).
pub trait HandlerRequest {
    /// The seed handler name.
    fn handler(&self) -> &'static str;
    /// The seed command name.
    fn command(&self) -> &'static str;
    /// The request's `data` for the audit log, secrets removed.
    fn audit_data(&self) -> Value;
    /// Whether this node's configuration allows the request; a refusal names the flag.
    fn permission(&self, settings: &TaskSettings) -> Result<(), TaskError>;
}

/// Allows `what` only with `--allow-disruptive`; the refusal says how to allow it.
pub(crate) fn disruptive(settings: &TaskSettings, what: &str) -> Result<(), TaskError> {
    if settings.allow_disruptive {
        Ok(())
    } else {
        Err(TaskError::Refused(format!(
            "{what} is disruptive; start the node-daemon with --allow-disruptive (OPSPLANE_ALLOW_DISRUPTIVE=true; in the Helm chart, nodeDaemon.allowDisruptive=true) to allow it"
        )))
    }
}

/// The result of a task: the seed envelope's `code`, `msg`, `data`, and the kind of ending.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskOutcome {
    /// Seed return code (0 success).
    pub code: i32,
    /// "成功" or what went wrong, with what to do about it.
    pub msg: String,
    /// The command's data (`{}` when it has none); per-unit results for ServiceHandler also
    /// on failure.
    pub data: Value,
    /// How it ended.
    #[serde(skip)]
    pub kind: OutcomeKind,
}

impl TaskOutcome {
    fn success(data: Value) -> Self {
        Self {
            code: 0,
            msg: SUCCESS_MSG.into(),
            data,
            kind: OutcomeKind::Succeeded,
        }
    }

    fn failure(error: &TaskError, data: Value) -> Self {
        Self {
            code: error.code(),
            msg: error.to_string(),
            data,
            kind: error.kind(),
        }
    }
}

/// A task that failed, with the data it still answers (ServiceHandler's per-unit results).
#[derive(Debug)]
pub struct TaskFailure {
    /// What went wrong.
    pub error: TaskError,
    /// Data answered with the failure.
    pub data: Value,
}

impl From<TaskError> for TaskFailure {
    fn from(error: TaskError) -> Self {
        Self {
            error,
            data: empty(),
        }
    }
}

/// The time source of the crontab scheduler; tests inject their own.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> jiff::Timestamp;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// What the runner may do on this node. [`TaskSettings::new`] gives the safe defaults:
/// every disruptive or destructive command refused.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    /// The host's `/` as the daemon sees it: shadow file and delete_file paths are read under it.
    pub host_root: PathBuf,
    /// Where scheduled shutdowns (`crontab.json`) persist.
    pub state_dir: PathBuf,
    /// The audit log (JSON lines).
    pub audit_log: PathBuf,
    /// Allows shutdown, reboot, scheduling shutdowns, and service stop/restart/disable.
    pub allow_disruptive: bool,
    /// Directories (host paths) under which delete_file may delete; empty: delete_file refused.
    pub delete_prefixes: Vec<PathBuf>,
    /// Whether delete_file may delete directories (recursively).
    pub allow_delete_dirs: bool,
    /// The power command (program and arguments); `poweroff` or `reboot` is appended.
    pub power_command: Vec<String>,
    /// How long OsHandler waits after answering before it runs the power command.
    pub power_delay: Duration,
    /// The `systemctl` command (program and arguments) of ServiceHandler.
    pub systemctl: Vec<String>,
    /// How long a power or systemctl command may run.
    pub command_timeout: Duration,
    /// Where IP configurations persist (`ifcfg-<label>` files); `None`: IP tasks refused.
    pub ip_config_dir: Option<PathBuf>,
    /// Whether verify_password is on.
    pub password_check: bool,
    /// Password checks allowed per client IP within [`Self::password_window`].
    pub password_attempts: u32,
    /// The password-check rate-limit window.
    pub password_window: Duration,
    /// The time zone of CrontabHandler schedules (the host's local time).
    pub time_zone: jiff::tz::TimeZone,
}

impl TaskSettings {
    /// Safe defaults: nothing disruptive, no deletion, no IP changes, no password check.
    pub fn new(host_root: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        let state_dir = state_dir.into();
        Self {
            host_root: host_root.into(),
            audit_log: state_dir.join("task-audit.log"),
            state_dir,
            allow_disruptive: false,
            delete_prefixes: Vec::new(),
            allow_delete_dirs: false,
            power_command: vec!["systemctl".into()],
            power_delay: Duration::from_secs(1),
            systemctl: vec!["systemctl".into()],
            command_timeout: Duration::from_secs(120),
            ip_config_dir: None,
            password_check: false,
            password_attempts: 5,
            password_window: Duration::from_secs(60),
            time_zone: jiff::tz::TimeZone::system(),
        }
    }
}

/// Runs node tasks: parse → authorize → execute → audit. Shared (`Arc`) by the node API, the
/// crontab scheduler and a NodeTask watcher.
pub struct Runner {
    settings: TaskSettings,
    reporter: Option<Arc<Reporter>>,
    audit: audit::AuditLog,
    schedules: crontab::Schedules,
    limiter: password::RateLimiter,
    ip_lock: tokio::sync::Mutex<()>,
    clock: Arc<dyn Clock>,
}

impl Runner {
    /// A runner over `settings`; loads the persisted schedules from the state directory.
    /// `reporter` serves TimerHandler (without one, TimerHandler answers 30004).
    pub fn new(
        settings: TaskSettings,
        reporter: Option<Arc<Reporter>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, TaskError> {
        let schedules =
            crontab::Schedules::load(settings.state_dir.join("crontab.json"), clock.now())?;
        let limiter =
            password::RateLimiter::new(settings.password_attempts, settings.password_window);
        Ok(Arc::new(Self {
            audit: audit::AuditLog::new(settings.audit_log.clone()),
            settings,
            reporter,
            schedules,
            limiter,
            ip_lock: tokio::sync::Mutex::new(()),
            clock,
        }))
    }

    /// The configuration.
    pub fn settings(&self) -> &TaskSettings {
        &self.settings
    }

    /// Authorizes, runs and audits one task. Never panics on host data; the outcome carries
    /// the seed code and a message a person can act on.
    pub async fn run(self: &Arc<Self>, request: TaskRequest, caller: &Caller) -> TaskOutcome {
        let what = request.audit_what();
        if let Err(error) = request.permission(&self.settings) {
            let outcome = TaskOutcome::failure(&error, empty());
            self.record("task", caller, what, Some(false), &outcome);
            return outcome;
        }
        let outcome = match self.execute(request, caller).await {
            Ok(data) => TaskOutcome::success(data),
            Err(TaskFailure { error, data }) => TaskOutcome::failure(&error, data),
        };
        self.record("task", caller, what, Some(true), &outcome);
        outcome
    }

    /// Parses the raw body of a task endpoint and runs it; an invalid body is answered and
    /// audited (by endpoint, handler and command only) without running anything.
    pub async fn submit(
        self: &Arc<Self>,
        endpoint: &str,
        body: &[u8],
        caller: &Caller,
    ) -> TaskOutcome {
        match TaskRequest::from_endpoint_bytes(endpoint, body) {
            Ok(request) => self.run(request, caller).await,
            Err(error) => self.reject(unparsed_what(endpoint, body), &error, caller),
        }
    }

    /// Answers and audits a task that did not parse: nothing ran. `what` names the task without
    /// its data (which may hold a password).
    pub fn reject(&self, what: Value, error: &TaskError, caller: &Caller) -> TaskOutcome {
        let outcome = TaskOutcome::failure(error, empty());
        self.record("task", caller, what, None, &outcome);
        outcome
    }

    fn record(
        &self,
        event: &str,
        caller: &Caller,
        what: Value,
        allowed: Option<bool>,
        outcome: &TaskOutcome,
    ) {
        tracing::info!(
            event,
            identity = %caller.identity,
            client = ?caller.client,
            what = %what,
            code = outcome.code,
            msg = %outcome.msg,
            "node task"
        );
        self.audit.append(&audit::AuditRecord {
            event,
            caller,
            what,
            allowed,
            code: outcome.code,
            msg: &outcome.msg,
        });
    }

    async fn execute(
        self: &Arc<Self>,
        request: TaskRequest,
        caller: &Caller,
    ) -> Result<Value, TaskFailure> {
        match request {
            TaskRequest::Crontab(command) => Ok(self.schedules.apply(command)?),
            TaskRequest::Os(action) => {
                // Answer first, then act (seed §三.2): the power command runs after the delay.
                let runner = self.clone();
                let caller = caller.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(runner.settings.power_delay).await;
                    runner.power(action, &caller).await;
                });
                Ok(empty())
            }
            TaskRequest::Service(task) => service::run(&self.settings, &task).await,
            TaskRequest::Timer(command) => match &self.reporter {
                Some(reporter) => Ok(timer::apply(reporter, command)?),
                None => {
                    Err(TaskError::Unsupported("this runner has no report timer".into()).into())
                }
            },
            TaskRequest::File(delete) => Ok(file::delete(&self.settings, &delete)?),
            TaskRequest::Ip(task) => {
                let _serial = self.ip_lock.lock().await;
                let dir = self
                    .settings
                    .ip_config_dir
                    .clone()
                    .ok_or_else(|| TaskError::Refused("no --ip-config-dir".into()))?;
                Ok(ip::run(&dir, task).await?)
            }
            TaskRequest::Password(check) => {
                let key = caller
                    .client
                    .map(|a| a.ip().to_string())
                    .unwrap_or_else(|| caller.identity.clone());
                self.limiter.admit(&key, std::time::Instant::now())?;
                let shadow = self.settings.host_root.join("etc/shadow");
                let verdict =
                    tokio::task::spawn_blocking(move || password::verify(&shadow, &check))
                        .await
                        .map_err(|e| {
                            TaskError::Failed(format!("password check did not finish: {e}"))
                        })?;
                verdict?;
                Ok(empty())
            }
        }
    }

    /// Runs the power command now (after an OsHandler answer, or when a schedule fires) and
    /// audits how it ended.
    async fn power(&self, action: os::PowerAction, caller: &Caller) {
        let what = TaskRequest::Os(action).audit_what();
        let result = if self.settings.allow_disruptive {
            os::run_power(&self.settings, action).await
        } else {
            Err(TaskError::Refused(
                "a scheduled shutdown fired but --allow-disruptive is no longer set".into(),
            ))
        };
        let outcome = match result {
            Ok(msg) => TaskOutcome {
                msg,
                ..TaskOutcome::success(empty())
            },
            Err(error) => TaskOutcome::failure(&error, empty()),
        };
        self.record(
            "executed",
            caller,
            what,
            Some(self.settings.allow_disruptive),
            &outcome,
        );
    }

    /// Fires every scheduled shutdown whose minute (local time) passed since the previous call
    /// and returns their names. The scheduler calls it every second with the clock's time;
    /// tests call it with an injected time.
    pub async fn tick(self: &Arc<Self>, now: jiff::Timestamp) -> Vec<String> {
        let due = self.schedules.due(now, &self.settings.time_zone);
        for name in &due {
            let caller = Caller {
                client: None,
                identity: format!("crontab:{name}"),
            };
            self.power(os::PowerAction::Shutdown, &caller).await;
        }
        due
    }

    /// The crontab scheduler: ticks once a second on the runner's clock, forever.
    pub async fn run_schedules(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticker.tick().await;
            let now = self.clock.now();
            self.tick(now).await;
        }
    }
}

/// `{}`.
pub(crate) fn empty() -> Value {
    Value::Object(Map::new())
}

/// A string cut to 64 characters for messages and the audit log.
pub(crate) fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

fn parse_json(body: &[u8]) -> Result<Value, TaskError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(TaskError::Invalid("this endpoint needs a JSON body".into()));
    }
    // The parser's message names a line and column, never the value (a password may be in it).
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        TaskError::Invalid(format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if !value.is_object() {
        return Err(TaskError::Invalid("the body must be a JSON object".into()));
    }
    Ok(value)
}

/// What an unparsable request asked, for the audit log: endpoint, handler and command strings
/// if they can be read; never the data.
fn unparsed_what(endpoint: &str, body: &[u8]) -> Value {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let get = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(clip)
    };
    json!({"endpoint": endpoint, "handler": get("handler"), "command": get("command")})
}

/// Reads a string field of `data`; absent or not a string is a 30006 naming the field.
pub(crate) fn str_field<'a>(data: &'a Value, name: &str) -> Result<&'a str, TaskError> {
    match data.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(TaskError::Invalid(format!("data.{name} must be a string"))),
        None => Err(TaskError::Invalid(format!("data.{name} is required"))),
    }
}

/// Output of a command the runner ran.
#[derive(Debug)]
pub(crate) struct CommandOutput {
    pub success: bool,
    pub status: String,
    pub stderr: String,
}

/// Runs `argv + extra` with no stdin, a timeout, and the output captured.
pub(crate) async fn run_command(
    argv: &[String],
    extra: &[&str],
    timeout: Duration,
) -> Result<CommandOutput, TaskError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(TaskError::Failed("the command is empty".into()));
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let run = command.output();
    let output = match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            return Err(TaskError::Failed(format!(
                "{program} {} did not finish within {}s",
                extra.join(" "),
                timeout.as_secs()
            )));
        }
        Ok(Err(error)) => {
            return Err(TaskError::Failed(format!("cannot run {program}: {error}")));
        }
        Ok(Ok(output)) => output,
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr: String = stderr.trim().chars().take(500).collect();
    Ok(CommandOutput {
        success: output.status.success(),
        status: output.status.to_string(),
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_disruptive_refusal_names_the_daemon_flag_and_the_helm_value() {
        let settings = TaskSettings::new("/", "/nonexistent-state");
        let Err(TaskError::Refused(message)) = disruptive(&settings, "OsHandler reboot") else {
            panic!("a disruptive command without --allow-disruptive is refused");
        };
        for name in [
            "--allow-disruptive",
            "OPSPLANE_ALLOW_DISRUPTIVE=true",
            "nodeDaemon.allowDisruptive=true",
        ] {
            assert!(message.contains(name), "{message:?} lacks {name}");
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,24}".prop_map(Value::String),
            prop::sample::select(vec![
                "CrontabHandler",
                "OsHandler",
                "ServiceHandler",
                "TimerHandler",
                "FileHandler",
                "NetworkHandler",
                "setup_shutdown",
                "modify_shutdown",
                "select_shutdown",
                "delete_shutdown",
                "shutdown",
                "reboot",
                "start",
                "stop",
                "delete_file",
                "add_ip",
                "exchange_ip",
                "eth0:0",
                "255.255.255.0",
                "10.0.0.1",
                "/tmp/x",
                "3",
                "1,2",
                "0,7",
            ])
            .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "handler",
                        "command",
                        "data",
                        "task_name",
                        "exec_hour",
                        "exec_minute",
                        "exec_weekly",
                        "service",
                        "file_name",
                        "name",
                        "ip",
                        "netmask",
                        "gateway",
                        "dns1",
                        "dns2",
                        "name1",
                        "name2",
                        "user",
                        "password",
                        "addr",
                        "node_uuid",
                    ]),
                    inner,
                    0..8,
                )
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn task_parsers_never_panic_on_any_json(body in json_value()) {
            for endpoint in TASK_ENDPOINTS {
                let _ = TaskRequest::from_endpoint(endpoint, &body);
            }
            if let Some(data) = body.get("data") {
                for handler in ["CrontabHandler", "OsHandler", "ServiceHandler", "TimerHandler", "FileHandler", "NetworkHandler"] {
                    for command in ["setup_shutdown", "modify_shutdown", "select_shutdown", "delete_shutdown",
                                    "shutdown", "reboot", "start", "stop", "update", "delete_file",
                                    "add_ip", "update_ip", "delete_ip", "exchange_ip"] {
                        if let Ok(request) = TaskRequest::from_parts(handler, command, data) {
                            // a parsed request always describes itself and is authorized or refused
                            let _ = request.audit_what();
                            let _ = request.permission(&TaskSettings::new("/", "/nonexistent"));
                        }
                    }
                }
            }
        }

        #[test]
        fn task_body_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            for endpoint in TASK_ENDPOINTS {
                if let Err(error) = TaskRequest::from_endpoint_bytes(endpoint, &bytes) {
                    prop_assert!(error.code() == 30006 || error.code() == 30005 || error.code() == 30004);
                }
            }
        }

        #[test]
        fn password_never_appears_in_errors_or_audit(password in "[a-zA-Z0-9]{12,20}", user in ".{0,20}") {
            let body = json!({"user": user, "password": password});
            match TaskRequest::from_endpoint("verify_password", &body) {
                Ok(request) => prop_assert!(!request.audit_what().to_string().contains(&password)),
                Err(error) => prop_assert!(!error.to_string().contains(&password)),
            }
            let bad = json!({"user": 5, "password": password});
            let error = TaskRequest::from_endpoint("verify_password", &bad).unwrap_err();
            prop_assert!(!error.to_string().contains(&password));
        }
    }

    #[test]
    fn unknown_handler_and_command_are_unsupported_and_missing_fields_invalid() {
        let cases = [
            (json!({"handler": "NoHandler", "command": "x"}), 30004),
            (
                json!({"handler": "OsHandler", "command": "hibernate"}),
                30004,
            ),
            (json!({"handler": "OsHandler"}), 30006),
            (json!({"handler": 5, "command": "reboot"}), 30006),
            (json!({"command": "reboot"}), 30006),
        ];
        for (body, code) in cases {
            let error = TaskRequest::from_task_body(&body).unwrap_err();
            assert_eq!(error.code(), code, "{body}: {error}");
        }
        let error = TaskRequest::from_endpoint_bytes("task", b"{\"handler\": ").unwrap_err();
        assert_eq!(error.code(), 30006);
        assert!(error.to_string().contains("not valid JSON"), "{error}");
    }

    #[test]
    fn safe_defaults_refuse_every_disruptive_command_and_name_the_flag() {
        let settings = TaskSettings::new("/", "/nonexistent");
        let refused = [
            (
                json!({"handler": "OsHandler", "command": "reboot"}),
                "--allow-disruptive",
            ),
            (
                json!({"handler": "OsHandler", "command": "shutdown"}),
                "--allow-disruptive",
            ),
            (
                json!({"handler": "ServiceHandler", "command": "stop", "data": {"service": "a"}}),
                "--allow-disruptive",
            ),
            (
                json!({"handler": "ServiceHandler", "command": "restart", "data": {"service": "a"}}),
                "--allow-disruptive",
            ),
            (
                json!({"handler": "ServiceHandler", "command": "disable", "data": {"service": "a"}}),
                "--allow-disruptive",
            ),
            (
                json!({"handler": "CrontabHandler", "command": "setup_shutdown", "data": {"task_name": "a1", "exec_hour": "3", "exec_minute": "5", "exec_weekly": "1"}}),
                "--allow-disruptive",
            ),
            (
                json!({"handler": "FileHandler", "command": "delete_file", "data": {"file_name": "/tmp/x"}}),
                "--allow-delete-prefix",
            ),
            (
                json!({"handler": "NetworkHandler", "command": "delete_ip", "data": {"name": "eth0:0"}}),
                "--ip-config-dir",
            ),
        ];
        for (body, flag) in refused {
            let request = TaskRequest::from_task_body(&body).unwrap();
            let error = request.permission(&settings).unwrap_err();
            assert_eq!(error.code(), 30004, "{body}");
            assert!(error.to_string().contains(flag), "{body}: {error}");
        }
        let password = TaskRequest::from_endpoint(
            "verify_password",
            &json!({"user": "root", "password": "x"}),
        )
        .unwrap();
        assert!(
            password
                .permission(&settings)
                .unwrap_err()
                .to_string()
                .contains("--password-check")
        );
        for body in [
            json!({"handler": "ServiceHandler", "command": "start", "data": {"service": "a"}}),
            json!({"handler": "ServiceHandler", "command": "enable", "data": {"service": ["a", "b"]}}),
            json!({"handler": "CrontabHandler", "command": "select_shutdown", "data": {"task_name": "a1"}}),
            json!({"handler": "CrontabHandler", "command": "delete_shutdown", "data": {"task_name": "a1"}}),
            json!({"handler": "TimerHandler", "command": "pause"}),
        ] {
            let request = TaskRequest::from_task_body(&body).unwrap();
            assert!(request.permission(&settings).is_ok(), "{body}");
        }
    }
}
