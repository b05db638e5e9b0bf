//! opsplane's custom resources (`opsplane.io/v1alpha1`) and the pieces of wire format that the
//! operator and the node-daemon share.
//!
//! - [`MonitoredService`]: a service to watch (SPEC "Custom resources"; seed 001 `check_interval`,
//!   seed 000 `base_url`/`route`/environment).
//! - [`NodeTask`]: a control task for nodes (seed 002 §三/§五 handlers and commands, §二.12-15 IP tasks).
//! - [`crd`]: renders the CustomResourceDefinitions that `opsplane-operator crds` prints and `crds/`
//!   holds.
//! - [`duration`]: the `30s` / `1m30s` duration strings used in specs.
//! - [`node_report`]: the node report a node-daemon posts to the operator (seed 002 §四).
//! - [`status`]: the status-patch body and bounded status messages shared by every status writer.

pub mod crd;
pub mod duration;
pub mod monitored_service;
pub mod node_report;
pub mod node_task;
pub mod status;
pub mod validate;

pub use monitored_service::{
    HttpCheck, HttpMethod, InstanceStatus, MonitoredService, MonitoredServiceSpec,
    MonitoredServiceStatus, ServiceRef, TcpCheck,
};
pub use node_task::{
    NodeFailureReason, NodeResult, NodeTask, NodeTaskSpec, NodeTaskStatus, TaskCommand, TaskData,
    TaskHandler, TaskPhase, TimeWindow,
};

/// API group of every opsplane custom resource.
pub const GROUP: &str = "opsplane.io";
/// API version of every opsplane custom resource.
pub const VERSION: &str = "v1alpha1";
