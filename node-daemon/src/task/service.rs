//! ServiceHandler (seed 002 §三.3): `start`, `stop`, `restart`, `enable`, `disable` of one unit
//! (`"service": "libvirtd"`) or several (`"service": ["libvirtd", "sshd"]`) through the
//! configured `systemctl` command (`systemctl <command> -- <unit>`, one call per unit so each
//! unit gets its own result). `data` answers per unit `{"code", "msg"}`; when any unit failed
//! the task answers 99999 naming the failed units, with the same per-unit data.

use serde_json::{Map, Value, json};

use super::{HandlerRequest, TaskError, TaskFailure, TaskSettings, clip, disruptive, run_command};
use crate::envelope::SUCCESS_MSG;

/// Most units one task may name.
pub const MAX_UNITS: usize = 64;

/// A systemctl action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAction {
    /// `start`.
    Start,
    /// `stop` (disruptive).
    Stop,
    /// `restart` (disruptive).
    Restart,
    /// `enable`.
    Enable,
    /// `disable` (disruptive).
    Disable,
}

impl ServiceAction {
    /// The seed command (and systemctl verb).
    pub fn command(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Enable => "enable",
            Self::Disable => "disable",
        }
    }

    /// Whether it can take a running service away (needs `--allow-disruptive`).
    pub fn is_disruptive(self) -> bool {
        matches!(self, Self::Stop | Self::Restart | Self::Disable)
    }
}

/// A ServiceHandler task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTask {
    /// What to do.
    pub action: ServiceAction,
    /// The units, in the order given, without repeats.
    pub units: Vec<String>,
}

impl HandlerRequest for ServiceTask {
    fn handler(&self) -> &'static str {
        "ServiceHandler"
    }

    fn command(&self) -> &'static str {
        self.action.command()
    }

    fn audit_data(&self) -> Value {
        json!({"service": self.units})
    }

    fn permission(&self, settings: &TaskSettings) -> Result<(), TaskError> {
        if self.action.is_disruptive() {
            disruptive(
                settings,
                &format!("ServiceHandler {}", self.action.command()),
            )
        } else {
            Ok(())
        }
    }
}

impl ServiceTask {
    /// Parses command and `data.service` (a string or an array of strings).
    pub fn parse(command: &str, data: &Value) -> Result<Self, TaskError> {
        let action = match command {
            "start" => ServiceAction::Start,
            "stop" => ServiceAction::Stop,
            "restart" => ServiceAction::Restart,
            "enable" => ServiceAction::Enable,
            "disable" => ServiceAction::Disable,
            other => {
                return Err(TaskError::Unsupported(format!(
                    "ServiceHandler takes start, stop, restart, enable or disable, not {:?}",
                    clip(other)
                )));
            }
        };
        let names: Vec<&Value> = match data.get("service") {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(single @ Value::String(_)) => vec![single],
            Some(_) => {
                return Err(TaskError::Invalid(
                    "data.service must be a unit name or an array of unit names".into(),
                ));
            }
            None => return Err(TaskError::Invalid("data.service is required".into())),
        };
        if names.is_empty() {
            return Err(TaskError::Invalid("data.service names no unit".into()));
        }
        if names.len() > MAX_UNITS {
            return Err(TaskError::Invalid(format!(
                "data.service names {} units; at most {MAX_UNITS}",
                names.len()
            )));
        }
        let mut units: Vec<String> = Vec::new();
        for name in names {
            let Some(name) = name.as_str() else {
                return Err(TaskError::Invalid(
                    "data.service must hold unit names (strings)".into(),
                ));
            };
            if !valid_unit(name) {
                return Err(TaskError::Invalid(format!(
                    "{:?} is not a systemd unit name (letters, digits and :-_.@\\ only, not starting with -, at most 255 bytes)",
                    clip(name)
                )));
            }
            if !units.iter().any(|u| u == name) {
                units.push(name.to_owned());
            }
        }
        Ok(Self { action, units })
    }
}

/// systemd's unit name alphabet (`unit_name_is_valid`), so nothing reaches systemctl as an
/// option or a glob.
fn valid_unit(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.@\\".contains(&b))
}

/// Runs the task, one systemctl call per unit.
pub async fn run(settings: &TaskSettings, task: &ServiceTask) -> Result<Value, TaskFailure> {
    let mut results = Map::new();
    let mut failed = Vec::new();
    for unit in &task.units {
        let verb = task.action.command();
        let result = run_command(
            &settings.systemctl,
            &[verb, "--", unit],
            settings.command_timeout,
        )
        .await;
        let (code, msg) = match result {
            Ok(output) if output.success => (0, SUCCESS_MSG.to_owned()),
            Ok(output) => {
                let why = if output.stderr.is_empty() {
                    output.status
                } else {
                    output.stderr
                };
                (99999, format!("systemctl {verb} {unit}: {why}"))
            }
            Err(error) => (error.code(), error.to_string()),
        };
        if code != 0 {
            failed.push(msg.clone());
        }
        results.insert(unit.clone(), json!({"code": code, "msg": msg}));
    }
    let data = Value::Object(results);
    if failed.is_empty() {
        Ok(data)
    } else {
        Err(TaskFailure {
            error: TaskError::Failed(format!(
                "{} of {} units failed: {}",
                failed.len(),
                task.units.len(),
                failed.join("; ")
            )),
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_unit_or_an_array_without_repeats() {
        let t = ServiceTask::parse("stop", &json!({"service": "libvirtd"})).unwrap();
        assert_eq!(t.units, ["libvirtd"]);
        assert!(t.action.is_disruptive());
        let t =
            ServiceTask::parse("start", &json!({"service": ["a", "b@1.service", "a"]})).unwrap();
        assert_eq!(t.units, ["a", "b@1.service"]);
        assert!(!t.action.is_disruptive());
    }

    #[test]
    fn option_like_and_odd_unit_names_are_refused() {
        for bad in [
            json!({"service": "--all"}),
            json!({"service": "a b"}),
            json!({"service": "*"}),
            json!({"service": []}),
            json!({"service": [1]}),
            json!({}),
            json!({"service": {}}),
            json!({"service": "x/../y"}),
        ] {
            let error = ServiceTask::parse("start", &bad).unwrap_err();
            assert_eq!(error.code(), 30006, "{bad}");
        }
        assert_eq!(
            ServiceTask::parse("status", &json!({"service": "a"}))
                .unwrap_err()
                .code(),
            30004
        );
    }
}
