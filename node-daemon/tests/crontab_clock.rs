//! Scheduled shutdowns (CrontabHandler) firing at the right local time, through the task
//! runner's library API with an injected clock: the real scheduler loop reads the clock, the
//! power command is a recording script, the time zone is UTC+8 so local and UTC weekdays
//! differ. Schedules persist across a new runner over the same state dir, and a schedule does
//! not fire when the configuration no longer allows disruptive commands.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use opsplane_node_daemon::task::{Caller, Clock, Runner, TaskRequest, TaskSettings};

mod common;

use common::{audit_lines, calls, recording_script, wait_for};

struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    fn set(&self, text: &str) {
        *self.0.lock().unwrap() = text.parse().unwrap();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

fn settings(dir: &std::path::Path, allow: bool) -> TaskSettings {
    let power = recording_script(dir, "power", "exit 0");
    let mut s = TaskSettings::new("/", dir.join("state"));
    s.allow_disruptive = allow;
    s.power_command = vec![power.display().to_string()];
    s.time_zone = jiff::tz::TimeZone::fixed(jiff::tz::offset(8));
    s
}

fn caller() -> Caller {
    Caller {
        client: None,
        identity: "test".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_shutdown_fires_at_the_local_minute_and_survives_a_new_runner() {
    let dir = tempfile::tempdir().unwrap();
    // Monday 2026-11-23 03:50:00 at UTC+8 is Sunday 19:50 UTC.
    let clock = Arc::new(ManualClock(Mutex::new(
        "2026-11-22T19:50:00Z".parse().unwrap(),
    )));
    let runner = Runner::new(settings(dir.path(), true), None, clock.clone()).unwrap();
    let setup = TaskRequest::from_task_body(&json!({
        "handler": "CrontabHandler", "command": "setup_shutdown",
        "data": {"task_name": "night", "exec_hour": "3", "exec_minute": "55", "exec_weekly": "1,2"}
    }))
    .unwrap();
    assert_eq!(runner.run(setup, &caller()).await.code, 0);
    let scheduler = tokio::spawn(runner.clone().run_schedules());

    clock.set("2026-11-22T19:54:58Z");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(calls(dir.path(), "power").is_empty(), "fired early");
    clock.set("2026-11-22T19:55:01Z");
    assert!(
        wait_for(Duration::from_secs(5), || calls(dir.path(), "power")
            == ["poweroff"]),
        "did not fire at 03:55 local: {:?}",
        calls(dir.path(), "power")
    );
    // Later the same minute and the next minutes: nothing more.
    clock.set("2026-11-22T19:55:40Z");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    clock.set("2026-11-22T19:57:00Z");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(calls(dir.path(), "power").len(), 1);
    scheduler.abort();

    let audit = audit_lines(&dir.path().join("state/task-audit.log"));
    let fired = audit
        .iter()
        .find(|l| l["event"] == "executed")
        .expect("an executed line");
    assert_eq!(fired["who"]["identity"], "crontab:night");
    assert_eq!(fired["what"]["command"], "shutdown");
    assert_eq!(fired["result"]["code"], 0);
    drop(runner);

    // A new runner over the same state dir (a daemon restart) knows the schedule.
    clock.set("2026-11-23T19:54:30Z"); // Tuesday 03:54:30 local
    let runner = Runner::new(settings(dir.path(), true), None, clock.clone()).unwrap();
    assert!(
        runner
            .tick("2026-11-23T19:54:59Z".parse().unwrap())
            .await
            .is_empty()
    );
    assert_eq!(
        runner.tick("2026-11-23T19:55:00Z".parse().unwrap()).await,
        ["night"]
    );
    assert!(
        runner
            .tick("2026-11-24T19:55:30Z".parse().unwrap())
            .await
            .is_empty(),
        "Wednesday is not listed"
    );
    assert_eq!(calls(dir.path(), "power"), ["poweroff", "poweroff"]);

    // Restarted without --allow-disruptive: the schedule is kept but refused when it fires.
    drop(runner);
    clock.set("2026-11-29T19:54:00Z"); // Monday 2026-11-30 03:54 local
    let runner = Runner::new(settings(dir.path(), false), None, clock.clone()).unwrap();
    assert_eq!(
        runner.tick("2026-11-29T19:55:05Z".parse().unwrap()).await,
        ["night"]
    );
    assert_eq!(
        calls(dir.path(), "power").len(),
        2,
        "fired although not allowed"
    );
    let audit = audit_lines(&dir.path().join("state/task-audit.log"));
    let last = audit.last().unwrap();
    assert_eq!(
        (
            last["event"].as_str(),
            last["allowed"].as_bool(),
            last["result"]["code"].as_i64()
        ),
        (Some("executed"), Some(false), Some(30004)),
        "{last}"
    );
}
