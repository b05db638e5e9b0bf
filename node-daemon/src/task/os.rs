//! OsHandler (seed 002 §三.2): `shutdown` and `reboot` through the configured power command
//! (default `systemctl`, to which `poweroff` or `reboot` is appended). The seed answers "as soon
//! as the message is received", so the runner answers first and runs the command after
//! `--power-delay`; how the command ended goes to the audit log.

use serde_json::Value;

use super::{HandlerRequest, TaskError, TaskSettings, clip, disruptive, empty, run_command};

/// A power action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// `shutdown`: power the node off.
    Shutdown,
    /// `reboot`.
    Reboot,
}

impl PowerAction {
    /// Parses the seed command.
    pub fn parse(command: &str) -> Result<Self, TaskError> {
        match command {
            "shutdown" => Ok(Self::Shutdown),
            "reboot" => Ok(Self::Reboot),
            other => Err(TaskError::Unsupported(format!(
                "OsHandler takes shutdown or reboot, not {:?}",
                clip(other)
            ))),
        }
    }

    /// The argument appended to the power command (systemctl's verbs).
    pub fn verb(self) -> &'static str {
        match self {
            Self::Shutdown => "poweroff",
            Self::Reboot => "reboot",
        }
    }
}

impl HandlerRequest for PowerAction {
    fn handler(&self) -> &'static str {
        "OsHandler"
    }

    fn command(&self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::Reboot => "reboot",
        }
    }

    fn audit_data(&self) -> Value {
        empty()
    }

    fn permission(&self, settings: &TaskSettings) -> Result<(), TaskError> {
        disruptive(settings, &format!("OsHandler {}", self.command()))
    }
}

/// Runs the power command for `action` and waits for it; `Ok` carries a message for the audit
/// log.
pub async fn run_power(settings: &TaskSettings, action: PowerAction) -> Result<String, TaskError> {
    let output = run_command(
        &settings.power_command,
        &[action.verb()],
        settings.command_timeout,
    )
    .await?;
    let command = format!("{} {}", settings.power_command.join(" "), action.verb());
    if output.success {
        Ok(format!("{command}: {}", output.status))
    } else {
        Err(TaskError::Failed(format!(
            "{command}: {} {}",
            output.status, output.stderr
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_commands_map_to_systemd_verbs() {
        assert_eq!(PowerAction::parse("shutdown").unwrap().verb(), "poweroff");
        assert_eq!(PowerAction::parse("reboot").unwrap().verb(), "reboot");
        assert_eq!(PowerAction::parse("halt").unwrap_err().code(), 30004);
    }

    #[tokio::test]
    async fn the_power_command_gets_the_verb_and_its_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let mut settings = TaskSettings::new("/", dir.path());
        settings.power_command = vec![
            "sh".into(),
            "-c".into(),
            format!("echo \"$0 $@\" >> {}; [ \"$1\" = reboot ]", log.display()),
            "power".into(),
        ];
        assert!(run_power(&settings, PowerAction::Reboot).await.is_ok());
        let error = run_power(&settings, PowerAction::Shutdown)
            .await
            .unwrap_err();
        assert_eq!(error.code(), 99999);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "power reboot\npower poweroff\n"
        );
    }
}
