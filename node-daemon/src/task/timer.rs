//! TimerHandler (seed 002 §三.4): `update` (report address and node_uuid), `pause`, `resume`
//! of the report timer in [`crate::reporter`].

use serde_json::{Value, json};

use super::{HandlerRequest, TaskError, TaskSettings, clip, empty, str_field};
use crate::reporter::Reporter;

/// A TimerHandler command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerCommand {
    /// `update` with `data: {addr, node_uuid}`.
    Update {
        /// Where reports go (an http(s) URL).
        addr: String,
        /// The node's UUID in reports.
        node_uuid: String,
    },
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
}

impl TimerCommand {
    /// Parses command and data.
    pub fn parse(command: &str, data: &Value) -> Result<Self, TaskError> {
        match command {
            "update" => {
                let addr = str_field(data, "addr").unwrap_or_default();
                let node_uuid = str_field(data, "node_uuid").unwrap_or_default();
                let valid_addr = (addr.starts_with("http://") || addr.starts_with("https://"))
                    && addr.len() > "https://".len()
                    && addr.len() <= 2048
                    && !addr.chars().any(|c| c.is_whitespace() || c.is_control());
                if !valid_addr {
                    return Err(TaskError::Invalid(format!(
                        "data.addr must be an http(s) URL such as http://10.0.0.1:8080/, got {:?}",
                        clip(addr)
                    )));
                }
                if node_uuid.is_empty() || node_uuid.len() > 128 {
                    return Err(TaskError::Invalid(
                        "data.node_uuid must be a non-empty string of at most 128 characters"
                            .into(),
                    ));
                }
                Ok(Self::Update {
                    addr: addr.to_owned(),
                    node_uuid: node_uuid.to_owned(),
                })
            }
            "pause" => Ok(Self::Pause),
            "resume" => Ok(Self::Resume),
            other => Err(TaskError::Unsupported(format!(
                "TimerHandler takes update, pause or resume, not {:?}",
                clip(other)
            ))),
        }
    }
}

impl HandlerRequest for TimerCommand {
    fn handler(&self) -> &'static str {
        "TimerHandler"
    }

    fn command(&self) -> &'static str {
        match self {
            Self::Update { .. } => "update",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }

    fn audit_data(&self) -> Value {
        match self {
            Self::Update { addr, node_uuid } => json!({"addr": addr, "node_uuid": node_uuid}),
            _ => empty(),
        }
    }

    fn permission(&self, _: &TaskSettings) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Applies the command to the report timer (persisted by the reporter).
pub fn apply(reporter: &Reporter, command: TimerCommand) -> Result<Value, TaskError> {
    let result = match command {
        TimerCommand::Update { addr, node_uuid } => reporter.update(addr, node_uuid),
        TimerCommand::Pause => reporter.set_paused(true),
        TimerCommand::Resume => reporter.set_paused(false),
    };
    result.map_err(|e| TaskError::Failed(e.to_string()))?;
    Ok(empty())
}
