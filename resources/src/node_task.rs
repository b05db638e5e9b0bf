//! The `NodeTask` custom resource: a control task run by the node-daemons of the targeted nodes.
//!
//! `handler`, `command` and `data` are exactly those of seed 002 §三 (CrontabHandler, OsHandler,
//! ServiceHandler, TimerHandler) and §五 (FileHandler); the IP tasks of §二.12-15 (add_ip,
//! update_ip, delete_ip, exchange_ip), which the seed exposes as separate endpoints, are reachable
//! here under the handler name `NetworkHandler` with the same data fields. Which commands belong to
//! which handler, and which data each command needs, is checked by CEL rules in the CRD schema.
//!
//! The doc comments of the fields are what `kubectl explain` shows: written for the user (one
//! paragraph per line, defaults said in the text); seed references are `//` comments.

// `#[kube(printcolumn(...))]` repeats `type_ = ...` by design; clippy reads the repeats as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a NodeTask: which nodes, which handler and command, with which data.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "opsplane.io",
    version = "v1alpha1",
    kind = "NodeTask",
    shortname = "ntask",
    category = "opsplane",
    status = "NodeTaskStatus",
    doc = "A control task run by the opsplane node-daemons of the targeted nodes: a scheduled shutdown, a shutdown or reboot, a systemd unit action, a report timer change, a file deletion or a NIC address change. The operator releases it to the nodes (disruptive commands maxUnavailable nodes at a time; shutdown and reboot after cordoning and draining the node, the next only once the node is back with a new boot id and Ready, inside spec.window and while spec.gate holds) and sums up their results; the Complete condition becomes True when every node succeeded, the Failed condition when any failed.",
    printcolumn(name = "Handler", type_ = "string", json_path = ".spec.handler"),
    printcolumn(name = "Command", type_ = "string", json_path = ".spec.command"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Progress",
        type_ = "string",
        json_path = ".status.progress",
        description = "Nodes finished (succeeded or failed) of the nodes targeted."
    ),
    printcolumn(
        name = "DryRun",
        type_ = "boolean",
        json_path = ".spec.dryRun",
        priority = 1
    ),
    printcolumn(
        name = "Max-Unavailable",
        type_ = "integer",
        json_path = ".spec.maxUnavailable",
        priority = 1
    ),
    printcolumn(
        name = "Waiting",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Waiting\")].reason",
        priority = 1,
        description = "Why the rollout is held (Paused, OutsideWindow, a gate, a PodDisruptionBudget), or NotWaiting."
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Complete\")].message",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("(has(self.nodeNames) && size(self.nodeNames) > 0) || has(self.nodeSelector)")
    .message("a NodeTask needs targets: set spec.nodeNames and/or spec.nodeSelector")
    .reason(Reason::FieldValueRequired))]
// Keep the command list in step with `TaskCommand::is_disruptive` (a test compares them).
#[x_kube(validation = Rule::new("!(has(self.nodeSelector) && (!has(self.nodeSelector.matchLabels) || size(self.nodeSelector.matchLabels) == 0) && (!has(self.nodeSelector.matchExpressions) || size(self.nodeSelector.matchExpressions) == 0) && self.command in ['setup_shutdown', 'modify_shutdown', 'shutdown', 'reboot', 'stop', 'restart', 'disable', 'delete_file', 'add_ip', 'update_ip', 'delete_ip', 'exchange_ip']) || (has(self.allNodes) && self.allNodes)")
    .message("an empty spec.nodeSelector selects every node; for a disruptive command set spec.allNodes: true to confirm, or select nodes by label")
    .field_path(".nodeSelector"))]
#[x_kube(validation = Rule::new("self.command in {'CrontabHandler': ['setup_shutdown', 'delete_shutdown', 'select_shutdown', 'modify_shutdown'], 'OsHandler': ['shutdown', 'reboot'], 'ServiceHandler': ['start', 'stop', 'restart', 'enable', 'disable'], 'TimerHandler': ['update', 'pause', 'resume'], 'FileHandler': ['delete_file'], 'NetworkHandler': ['add_ip', 'update_ip', 'delete_ip', 'exchange_ip']}[self.handler]")
    .message("spec.command is not a command of spec.handler (CrontabHandler: setup_shutdown|delete_shutdown|select_shutdown|modify_shutdown; OsHandler: shutdown|reboot; ServiceHandler: start|stop|restart|enable|disable; TimerHandler: update|pause|resume; FileHandler: delete_file; NetworkHandler: add_ip|update_ip|delete_ip|exchange_ip)")
    .field_path(".command"))]
#[x_kube(validation = Rule::new("!(self.command in ['setup_shutdown', 'modify_shutdown']) || (has(self.data) && has(self.data.task_name) && has(self.data.exec_hour) && has(self.data.exec_minute) && has(self.data.exec_weekly))")
    .message("setup_shutdown and modify_shutdown need spec.data.task_name, exec_hour, exec_minute and exec_weekly")
    .reason(Reason::FieldValueRequired)
    .field_path(".data"))]
#[x_kube(validation = Rule::new("!(self.command in ['delete_shutdown', 'select_shutdown']) || (has(self.data) && has(self.data.task_name))")
    .message("delete_shutdown and select_shutdown need spec.data.task_name")
    .reason(Reason::FieldValueRequired)
    .field_path(".data"))]
#[x_kube(validation = Rule::new("self.handler != 'ServiceHandler' || (has(self.data) && has(self.data.service) && size(self.data.service) > 0)")
    .message("ServiceHandler commands need spec.data.service: a list of one or more systemd units")
    .reason(Reason::FieldValueRequired)
    .field_path(".data"))]
#[x_kube(validation = Rule::new("!(self.handler == 'TimerHandler' && self.command == 'update') || (has(self.data) && has(self.data.addr) && has(self.data.node_uuid))")
    .message("TimerHandler update needs spec.data.addr and spec.data.node_uuid")
    .reason(Reason::FieldValueRequired)
    .field_path(".data"))]
#[x_kube(validation = Rule::new("self.command != 'delete_file' || (has(self.data) && has(self.data.file_name))")
    .message("delete_file needs spec.data.file_name, an absolute path")
    .reason(Reason::FieldValueRequired)
    .field_path(".data"))]
#[x_kube(validation = Rule::new("!(self.command in ['add_ip', 'update_ip']) || (has(self.data) && has(self.data.name) && has(self.data.ip) && has(self.data.netmask))")
    .message("add_ip and update_ip need spec.data.name (like eth0:0), ip and netmask")
    .reason(Reason::FieldValueRequired)
    .field_path(".data"))]
#[x_kube(validation = Rule::new("self.command != 'delete_ip' || (has(self.data) && has(self.data.name))")
    .message("delete_ip needs spec.data.name (like eth0:0)")
    .reason(Reason::FieldValueRequired)
    .field_path(".data"))]
#[x_kube(validation = Rule::new("self.command != 'exchange_ip' || (has(self.data) && has(self.data.name1) && has(self.data.name2))")
    .message("exchange_ip needs spec.data.name1 and spec.data.name2")
    .reason(Reason::FieldValueRequired)
    .field_path(".data"))]
#[serde(rename_all = "camelCase")]
pub struct NodeTaskSpec {
    /// Names of the Nodes to run on, in the order disruptive commands are rolled out. A name with no Node fails on that node without running. Set nodeNames, nodeSelector or both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 5000),
        inner(
            length(min = 1, max = 253),
            regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
        )
    )]
    pub node_names: Vec<String>,

    /// Label selector over Node objects; the matching Nodes (by name) are added after nodeNames. The nodes are resolved once, when the task is planned. An empty selector ({}) selects every node, which a disruptive command accepts only with allNodes: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// Confirms that an empty nodeSelector, which selects every node, is meant for a disruptive command. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_nodes: bool,

    // Seed 002's handler names, plus NetworkHandler for §二.12-15.
    /// What kind of task: CrontabHandler (scheduled shutdowns), OsHandler (shutdown, reboot), ServiceHandler (systemd units), TimerHandler (the node's report timer), FileHandler (file deletion) or NetworkHandler (NIC addresses). Required.
    pub handler: TaskHandler,

    // Seed 002's command names.
    /// The command, which must belong to the handler. CrontabHandler: setup_shutdown, modify_shutdown (data: task_name, exec_hour, exec_minute, exec_weekly), delete_shutdown, select_shutdown (data: task_name). OsHandler: shutdown, reboot (no data). ServiceHandler: start, stop, restart, enable, disable (data: service). TimerHandler: update (data: addr, node_uuid), pause, resume (no data). FileHandler: delete_file (data: file_name). NetworkHandler: add_ip, update_ip (data: name, ip, netmask; optional gateway, dns1, dns2), delete_ip (data: name), exchange_ip (data: name1, name2). Disruptive commands, rolled out maxUnavailable nodes at a time and refused by a node-daemon that does not allow them: setup_shutdown, modify_shutdown, shutdown, reboot, stop, restart, disable, delete_file and the four IP commands. Required.
    pub command: TaskCommand,

    // Seed 002's `data` object.
    /// The command's arguments; which fields each command needs is listed under command. Fields a command does not use are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<TaskData>,

    /// How many nodes may run a disruptive command at once, 1-1000; the next node is released after one succeeded, and a failure stops the rollout. Commands that are not disruptive run on every node at once. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_unavailable: Option<i32>,

    /// Plan only: resolve the nodes and report what a real run would meet before running (a missing node fails), but run nothing. Default: false.
    #[serde(default)]
    pub dry_run: bool,

    /// A weekly time window in which a node may start (its drain, or the command itself): days of the week, a start and end time, a time zone, like kured's reboot days and times. Outside the window the task waits (Pending before any node started) with a Waiting condition saying when the window opens; a node that started inside the window finishes. Default: no window (any time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<TimeWindow>,

    /// Cordon and drain each node before the command, and uncordon it once it is back. Default: on for shutdown and reboot, off for other commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainSpec>,

    /// How long a released node may take to be done (for shutdown and reboot: back with a new boot id and its Node Ready), a duration such as 30m. A node not done by then fails (reason NodeTimeout) and nothing more is released. Default: 30m for shutdown and reboot, 10m for other commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(ms|s|m|h))+$')").message("nodeTimeout must be a duration such as 30s, 10m or 1h30m (whole numbers with the units ms, s, m or h)"))]
    #[x_kube(validation = Rule::new("!self.matches('^([0-9]+(ms|s|m|h))+$') || duration(self) >= duration('1s')").message("nodeTimeout must be at least 1s"))]
    pub node_timeout: Option<String>,

    /// Checks made before each release (before a node starts): every node already done is Ready (always), and optionally the selected MonitoredServices are Available and no Prometheus alert fires. While a check fails the next node waits, with a Waiting condition and an Event saying why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSpec>,

    /// Stops further releases: no node starts while true; nodes already started finish. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// What kind of task (seed 002 handler names).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum TaskHandler {
    /// Scheduled shutdowns (§三.1).
    CrontabHandler,
    /// Shutdown / reboot (§三.2).
    OsHandler,
    /// systemd unit control (§三.3).
    ServiceHandler,
    /// Report timer control (§三.4).
    TimerHandler,
    /// File deletion (§五).
    FileHandler,
    /// NIC address tasks (§二.12-15), a handler name opsplane adds for NodeTasks.
    NetworkHandler,
}

/// The command of a task (seed 002 command names, of every handler).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum TaskCommand {
    SetupShutdown,
    DeleteShutdown,
    SelectShutdown,
    ModifyShutdown,
    Shutdown,
    Reboot,
    Start,
    Stop,
    Restart,
    Enable,
    Disable,
    Update,
    Pause,
    Resume,
    DeleteFile,
    AddIp,
    UpdateIp,
    DeleteIp,
    ExchangeIp,
}

impl TaskHandler {
    /// The commands this handler takes (the same table the CRD's CEL rule holds).
    pub fn commands(self) -> &'static [TaskCommand] {
        use TaskCommand::*;
        match self {
            TaskHandler::CrontabHandler => &[
                SetupShutdown,
                DeleteShutdown,
                SelectShutdown,
                ModifyShutdown,
            ],
            TaskHandler::OsHandler => &[Shutdown, Reboot],
            TaskHandler::ServiceHandler => &[Start, Stop, Restart, Enable, Disable],
            TaskHandler::TimerHandler => &[Update, Pause, Resume],
            TaskHandler::FileHandler => &[DeleteFile],
            TaskHandler::NetworkHandler => &[AddIp, UpdateIp, DeleteIp, ExchangeIp],
        }
    }
}

impl TaskCommand {
    /// Commands that take a node, a service or an address away, or destroy data: they roll out
    /// `maxUnavailable` nodes at a time and are refused by a node-daemon not configured to allow them.
    /// CrontabHandler setup/modify_shutdown count: they schedule a power-off (the node-daemon
    /// refuses them without `--allow-disruptive`, and nodes released together would all go down
    /// at the same minute).
    pub fn is_disruptive(self) -> bool {
        use TaskCommand::*;
        matches!(
            self,
            SetupShutdown
                | ModifyShutdown
                | Shutdown
                | Reboot
                | Stop
                | Restart
                | Disable
                | DeleteFile
                | AddIp
                | UpdateIp
                | DeleteIp
                | ExchangeIp
        )
    }

    /// The power commands, OsHandler shutdown and reboot: they succeed by taking the node away,
    /// so a node-daemon that started one and finds itself started again reports it succeeded
    /// instead of interrupted.
    pub fn is_power(self) -> bool {
        matches!(self, TaskCommand::Shutdown | TaskCommand::Reboot)
    }
}

/// The arguments of a command (seed 002 `data`); each command uses its own fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
pub struct TaskData {
    /// CrontabHandler: the schedule's name, 1-64 letters and digits, unique per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9]{1,64}$"))]
    pub task_name: Option<String>,
    /// CrontabHandler: the hour, 0-23, written as a string (`"3"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([01]?[0-9]|2[0-3])$"))]
    pub exec_hour: Option<String>,
    /// CrontabHandler: the minute, 0-59, written as a string (`"55"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-5]?[0-9]$"))]
    pub exec_minute: Option<String>,
    /// CrontabHandler: the weekdays, comma-separated, 0 (or 7) is Sunday, e.g. `"1,2,3,4,5"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-7](,[0-7]){0,7}$"))]
    pub exec_weekly: Option<String>,
    /// ServiceHandler: the systemd units, one or more (at most 64), e.g. `["nginx.service"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9@._:\\-]+$"))
    )]
    pub service: Option<Vec<String>>,
    /// TimerHandler update: the address the node reports to, an http(s) URL such as `http://10.0.0.1:8080/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"), length(max = 2048))]
    pub addr: Option<String>,
    /// TimerHandler update: the node's UUID in its reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub node_uuid: Option<String>,
    /// FileHandler delete_file: the file's absolute path; the node-daemon deletes only under its allowed prefixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"), length(max = 4096))]
    pub file_name: Option<String>,
    /// NetworkHandler: the address configuration's name, like `eth0:0` (an interface and an optional alias number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,15}(:[0-9]{1,4})?$"))]
    pub name: Option<String>,
    /// NetworkHandler add_ip, update_ip: the IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isIP(self)").message("ip must be an IP address"))]
    pub ip: Option<String>,
    /// NetworkHandler add_ip, update_ip: the netmask, e.g. `255.255.255.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isIP(self)").message("netmask must be written as an address, like 255.255.255.0"))]
    pub netmask: Option<String>,
    /// NetworkHandler add_ip, update_ip: the gateway address; optional, empty for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self == '' || isIP(self)").message("gateway must be an IP address"))]
    pub gateway: Option<String>,
    /// NetworkHandler add_ip, update_ip: the first DNS server; optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self == '' || isIP(self)").message("dns1 must be an IP address"))]
    pub dns1: Option<String>,
    /// NetworkHandler add_ip, update_ip: the second DNS server; optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self == '' || isIP(self)").message("dns2 must be an IP address"))]
    pub dns2: Option<String>,
    /// NetworkHandler exchange_ip: the first configuration's name, like `eth0:0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,15}(:[0-9]{1,4})?$"))]
    pub name1: Option<String>,
    /// NetworkHandler exchange_ip: the second configuration's name, like `eth0:1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,15}(:[0-9]{1,4})?$"))]
    pub name2: Option<String>,
}

/// A weekly window in which a node may start (kured's `--reboot-days`, `--start-time`, `--end-time`, `--time-zone`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeWindow {
    /// The days of the week the window opens on (mon, tue, wed, thu, fri, sat, sun); a window that spans midnight belongs to the day it opens. Default: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub days: Vec<Weekday>,
    /// Start, `HH:MM` (24-hour clock) in timeZone. Required.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// End, `HH:MM` in timeZone; before start means the window spans midnight, equal to start means a whole day. Required.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub end: String,
    /// An IANA time zone such as Europe/Berlin; an unknown zone fails the task (reason InvalidTask). Default: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
}

/// A day of the week.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// How a node is drained before the command (`kubectl drain`, kured's drain).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    /// Cordon and drain before the command: the node is marked unschedulable, its pods are evicted through the Eviction API (PodDisruptionBudgets honoured; DaemonSet pods, mirror pods and finished pods stay), and once the command is done and the node back it is uncordoned. A PodDisruptionBudget that refuses an eviction holds the node (a Waiting condition and an Event name it); nothing is forced. Only disruptive commands drain. Default: true for shutdown and reboot, false otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// How long the drain may take, a duration such as 10m; then the node fails (reason DrainTimeout), is uncordoned, and nothing more is released. Default: no limit (a blocked drain waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(ms|s|m|h))+$')").message("drain.timeout must be a duration such as 30s, 10m or 1h30m (whole numbers with the units ms, s, m or h)"))]
    pub timeout: Option<String>,
    /// Seconds each evicted pod gets to terminate, 0-86400, instead of its own terminationGracePeriodSeconds. Default: the pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub grace_period_seconds: Option<i64>,
}

/// Checks before each release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateSpec {
    /// MonitoredServices, in every namespace, selected by their labels: all must be Available (their Available condition True) before a node starts. A selector that matches none holds the task too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitored_services: Option<LabelSelector>,
    /// No alert may fire in Prometheus (or Alertmanager) before a node starts, as kured's --prometheus-url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<AlertGate>,
}

/// Which alerts API a gate asks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AlertApi {
    /// Prometheus' `GET /api/v1/alerts` (firing and pending alerts).
    #[default]
    Prometheus,
    /// Alertmanager's `GET /api/v2/alerts` (active, not silenced or inhibited).
    Alertmanager,
}

/// An alert check before each release (kured's `--prometheus-url`, `--alert-filter-regexp`, `--alert-filter-match-only`, `--alert-firing-only`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertGate {
    /// Base URL of Prometheus (e.g. http://prometheus.monitoring:9090) or Alertmanager; the API path is appended. An unreachable URL or an answer that does not parse holds the task. Required.
    #[schemars(regex(pattern = r"^https?://[^\s]+$"), length(max = 2048))]
    pub url: String,
    /// Prometheus (GET /api/v1/alerts) or Alertmanager (GET /api/v2/alerts). Default: Prometheus.
    #[serde(default)]
    pub api: AlertApi,
    /// A regular expression (RE2 syntax) over alert names: matching alerts are ignored, or with alertFilterMatchOnly the only ones that count. Default: none (every alert counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub alert_filter_regexp: Option<String>,
    /// Only alerts whose name matches alertFilterRegexp hold the task. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alert_filter_match_only: bool,
    /// Only firing alerts hold the task, pending ones not. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alert_firing_only: bool,
}

/// Phase of a task, overall or on one node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum TaskPhase {
    /// Accepted, not started.
    #[default]
    Pending,
    /// Running on at least one node.
    Running,
    /// Succeeded on every node.
    Succeeded,
    /// Failed on every node, or could not start (the Failed condition's reason says why).
    Failed,
    /// Succeeded on some nodes and failed on others: the Failed condition is True (reason PartiallyFailed) and Complete is False.
    PartiallyFailed,
}

/// Observed state of a NodeTask: overall phase and the result on each node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTaskStatus {
    /// Overall phase: Pending, Running, Succeeded, Failed or PartiallyFailed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TaskPhase>,
    /// Nodes finished (succeeded or failed) of the nodes targeted, e.g. `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    // A map-list keyed by `name`: the operator (plan, release) and each node's daemon (its own
    // result) write their fields with server-side apply under their own field managers, so no
    // writer clobbers another's entries.
    /// The plan and the result on each node, one entry per target node in the order the operator releases them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub nodes: Vec<NodeResult>,
    /// `Complete` (True when the task succeeded on every node; for a dry run, when every node exists) and `Failed` (True when it failed on any node, reason Failed or PartiallyFailed, or could not start). Both are False while the task is Pending or Running, so `kubectl wait --for=condition=Complete` waits for success only. `Waiting` is True while the rollout is held: reason Paused, OutsideWindow (the message says when the window opens), NodeNotReady (a node already done is not Ready), MonitoredServiceNotAvailable, AlertsFiring, AlertsUnknown (the alerts API did not answer), PodDisruptionBudget (an eviction was refused; the message names the budget) or EvictionFailed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The result of a task on one node, with its return code and message.
///
/// The operator writes `name`, `releasedAt`, `drainStartedAt`, `doneAt`, `note`, `reason` and —
/// until the node reports — `phase: Pending` (or `phase: Failed` with `msg` and `reason` for a
/// node it will never release); the node's daemon writes `phase`, `code`, `msg`, `startedAt`,
/// `finishedAt`, `bootIdBefore` and `bootIdAfter`. The node's effective phase is the operator's
/// verdict: a `reason` fails it whatever the daemon reported, and a node whose daemon reported
/// success counts as done only with `doneAt` when it had to come back or be uncordoned.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeResult {
    /// Node name.
    pub name: String,
    /// Phase on this node.
    pub phase: TaskPhase,
    /// When the operator released the task to this node (RFC 3339); the node-daemon runs its part only once it is set. Disruptive tasks are released maxUnavailable nodes at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<String>,
    /// The node-daemon's return code: 0 success, anything else a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// The node-daemon's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// Why the operator failed this node: NodeNotFound or RolloutStopped (never released; the node never runs it), DrainTimeout (the drain took longer than spec.drain.timeout) or NodeTimeout (not done within spec.nodeTimeout of its release). The operator's verdict stands over the phase the daemon reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<NodeFailureReason>,
    /// When the node started the task (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the node finished the task (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The host's boot id when the node-daemon started the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id_before: Option<String>,
    /// The host's boot id when the node-daemon reported back after shutdown or reboot; a reboot counts only when it differs from bootIdBefore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id_after: Option<String>,
    /// When the operator cordoned the node and began evicting its pods (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_started_at: Option<String>,
    /// When the operator counted the node done: its daemon reported success and, for shutdown and reboot, the node came back with a new boot id and its Node Ready; a drained node was uncordoned (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<String>,
    /// What the operator is waiting for on this node (pods left to evict, a PodDisruptionBudget, the node coming back), or why it failed a node its daemon had reported on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why the operator failed a node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum NodeFailureReason {
    /// `spec.nodeNames` names a node the cluster did not have when the task was planned.
    NodeNotFound,
    /// A disruptive rollout stopped after another node failed; this one was never released.
    RolloutStopped,
    /// The drain took longer than `spec.drain.timeout`; the node was uncordoned, never released.
    DrainTimeout,
    /// Released, but not done within `spec.nodeTimeout` (for a power command: it never came
    /// back with a new boot id and its Node Ready).
    NodeTimeout,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_seed_002() {
        let spec: NodeTaskSpec = serde_json::from_value(serde_json::json!({
            "nodeNames": ["node-a"],
            "handler": "CrontabHandler",
            "command": "setup_shutdown",
            "data": {"task_name": "shutdown3", "exec_minute": "55", "exec_hour": "3", "exec_weekly": "1,2"}
        }))
        .unwrap();
        assert_eq!(spec.handler, TaskHandler::CrontabHandler);
        assert_eq!(spec.command, TaskCommand::SetupShutdown);
        let data = spec.data.unwrap();
        assert_eq!(data.task_name.as_deref(), Some("shutdown3"));
        assert_eq!(data.exec_weekly.as_deref(), Some("1,2"));
        let back = serde_json::to_value(TaskCommand::ExchangeIp).unwrap();
        assert_eq!(back, "exchange_ip");
    }

    #[test]
    fn every_command_belongs_to_exactly_one_handler() {
        use TaskHandler::*;
        let handlers = [
            CrontabHandler,
            OsHandler,
            ServiceHandler,
            TimerHandler,
            FileHandler,
            NetworkHandler,
        ];
        let total: usize = handlers.iter().map(|h| h.commands().len()).sum();
        assert_eq!(total, 19);
        let mut all: Vec<_> = handlers.iter().flat_map(|h| h.commands()).collect();
        all.sort_by_key(|c| format!("{c:?}"));
        all.dedup();
        assert_eq!(all.len(), 19);
    }

    #[test]
    fn the_power_commands_are_exactly_os_handlers_and_are_disruptive() {
        let power = TaskHandler::OsHandler.commands();
        assert!(power.iter().all(|c| c.is_power() && c.is_disruptive()));
        let others = [
            TaskHandler::CrontabHandler,
            TaskHandler::ServiceHandler,
            TaskHandler::TimerHandler,
            TaskHandler::FileHandler,
            TaskHandler::NetworkHandler,
        ];
        let not_power = others.iter().flat_map(|h| h.commands());
        assert_eq!(not_power.filter(|c| c.is_power()).count(), 0);
    }
}
