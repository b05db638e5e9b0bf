//! The task audit log: one JSON line per task, allowed or refused, valid or not — who asked,
//! what, when, and the result — plus one line for each action that runs after its answer
//! (OsHandler power commands, CrontabHandler firings). Secrets never reach it: a
//! verify_password line names the user, never the password, and an unparsable body is recorded
//! by its handler/command/endpoint only.
//!
//! Line format (`node-daemon/README.md`, "Audit log"):
//! `{"time":"2026-11-25T14:00:00.123Z","event":"task","who":{"client":"10.0.0.9:51234",
//! "identity":"node-api-token"},"what":{"handler":"OsHandler","command":"reboot","data":{}},
//! "allowed":false,"result":{"code":30004,"msg":"..."}}`

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use super::Caller;

/// Appends audit lines to a file (created with mode 0600 when missing).
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

/// One audit record.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    /// `task` for a request, `executed` for an action run after its answer.
    pub event: &'a str,
    /// Who asked.
    pub caller: &'a Caller,
    /// What was asked: `{handler, command, data}` with secrets removed.
    pub what: Value,
    /// Whether the configuration allowed it (`None` when it never got that far: invalid body).
    pub allowed: Option<bool>,
    /// Seed return code.
    pub code: i32,
    /// Message.
    pub msg: &'a str,
}

impl AuditLog {
    /// An audit log writing to `path`; the file is opened on first use.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            file: Mutex::new(None),
        }
    }

    /// Where the lines go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line. A failure to write is logged (the task's answer does not change: the
    /// audit log must not become a way to make tasks fail or succeed).
    pub fn append(&self, record: &AuditRecord<'_>) {
        let time = jiff::Timestamp::now().to_string();
        let line = json!({
            "time": time,
            "event": record.event,
            "who": {
                "client": record.caller.client.map(|a| a.to_string()),
                "identity": record.caller.identity,
            },
            "what": record.what,
            "allowed": record.allowed,
            "result": {"code": record.code, "msg": record.msg},
        });
        let mut text = line.to_string();
        text.push('\n');
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            match open_append(&self.path) {
                Ok(f) => *guard = Some(f),
                Err(error) => {
                    tracing::error!(path = %self.path.display(), %error, "cannot open the task audit log");
                    return;
                }
            }
        }
        if let Some(file) = guard.as_mut()
            && let Err(error) = file.write_all(text.as_bytes())
        {
            tracing::error!(path = %self.path.display(), %error, "cannot append to the task audit log");
            // Reopen next time (the file may have been rotated away or the disk freed).
            *guard = None;
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_as_json_with_who_what_when_and_result() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().join("sub/audit.log"));
        let caller = Caller {
            client: Some("192.0.2.7:4000".parse().unwrap()),
            identity: "node-api-token".into(),
        };
        for code in [0, 30004] {
            log.append(&AuditRecord {
                event: "task",
                caller: &caller,
                what: json!({"handler": "OsHandler", "command": "reboot"}),
                allowed: Some(code == 0),
                code,
                msg: "m",
            });
        }
        let text = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["who"]["client"], "192.0.2.7:4000");
        assert_eq!(lines[1]["result"]["code"], 30004);
        assert_eq!(lines[1]["allowed"], false);
        assert!(
            lines[0]["time"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
    }
}
