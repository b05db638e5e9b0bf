//! CrontabHandler (seed 002 §三.1): scheduled shutdowns. `setup_shutdown` / `modify_shutdown`
//! take `task_name` (letters and digits, unique), `exec_hour` (0–23), `exec_minute` (0–59) and
//! `exec_weekly` (comma-separated weekdays, 0 = Sunday; 7 is accepted as Sunday too, as cron
//! does and as the seed's own example sends); `select_shutdown` answers a schedule,
//! `delete_shutdown` removes it, `modify_shutdown` answers the schedule it replaced (as the
//! seed's example shows). Values may be strings (as the seed sends them) or integers; the seed
//! table's `exec_time: "H,M"` is accepted in place of `exec_hour` + `exec_minute`.
//!
//! Schedules persist in `<state-dir>/crontab.json` (written to a temporary file, then renamed)
//! and are loaded at start, so they survive restarts. The runner's scheduler ticks every second
//! and fires the power command (`poweroff`) for each schedule whose weekday, hour and minute
//! in the host's local time were reached since the previous tick. A minute missed by more than
//! two minutes (daemon down, host suspended, clock jumped) is skipped rather than run late, and
//! a local minute that occurs twice (DST fold) fires once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp, civil::DateTime, tz::TimeZone};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{HandlerRequest, TaskError, TaskSettings, clip, disruptive, empty, str_field};

/// Most schedules a node keeps.
pub const MAX_SCHEDULES: usize = 256;

/// When a shutdown happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Hour, 0–23, local time.
    pub exec_hour: u8,
    /// Minute, 0–59.
    pub exec_minute: u8,
    /// Weekdays, 0 = Sunday … 6 = Saturday.
    pub exec_weekly: BTreeSet<u8>,
}

impl Schedule {
    /// The seed's answer shape: strings, weekdays ascending.
    pub fn to_seed(&self) -> Value {
        let weekly: Vec<String> = self.exec_weekly.iter().map(u8::to_string).collect();
        json!({
            "exec_hour": self.exec_hour.to_string(),
            "exec_minute": self.exec_minute.to_string(),
            "exec_weekly": weekly.join(","),
        })
    }

    fn matches(&self, weekday: u8, hour: u8, minute: u8) -> bool {
        self.exec_hour == hour && self.exec_minute == minute && self.exec_weekly.contains(&weekday)
    }
}

/// A CrontabHandler command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrontabCommand {
    /// `setup_shutdown`.
    Setup(String, Schedule),
    /// `modify_shutdown`.
    Modify(String, Schedule),
    /// `select_shutdown`.
    Select(String),
    /// `delete_shutdown`.
    Delete(String),
}

impl CrontabCommand {
    /// Parses command and data.
    pub fn parse(command: &str, data: &Value) -> Result<Self, TaskError> {
        match command {
            "setup_shutdown" => Ok(Self::Setup(task_name(data)?, schedule(data)?)),
            "modify_shutdown" => Ok(Self::Modify(task_name(data)?, schedule(data)?)),
            "select_shutdown" => Ok(Self::Select(task_name(data)?)),
            "delete_shutdown" => Ok(Self::Delete(task_name(data)?)),
            other => Err(TaskError::Unsupported(format!(
                "CrontabHandler takes setup_shutdown, modify_shutdown, select_shutdown or delete_shutdown, not {:?}",
                clip(other)
            ))),
        }
    }

    /// Whether the command schedules a power-off (needs `--allow-disruptive`).
    pub fn schedules_power_off(&self) -> bool {
        matches!(self, Self::Setup(..) | Self::Modify(..))
    }
}

impl HandlerRequest for CrontabCommand {
    fn handler(&self) -> &'static str {
        "CrontabHandler"
    }

    fn command(&self) -> &'static str {
        match self {
            Self::Setup(..) => "setup_shutdown",
            Self::Modify(..) => "modify_shutdown",
            Self::Select(_) => "select_shutdown",
            Self::Delete(_) => "delete_shutdown",
        }
    }

    fn audit_data(&self) -> Value {
        match self {
            Self::Setup(name, s) | Self::Modify(name, s) => {
                let mut v = s.to_seed();
                v["task_name"] = json!(name);
                v
            }
            Self::Select(name) | Self::Delete(name) => json!({"task_name": name}),
        }
    }

    /// Scheduling a shutdown is disruptive: nodes released together would all go down at the
    /// same minute.
    fn permission(&self, settings: &TaskSettings) -> Result<(), TaskError> {
        if self.schedules_power_off() {
            disruptive(
                settings,
                &format!("CrontabHandler {} (schedules a shutdown)", self.command()),
            )
        } else {
            Ok(())
        }
    }
}

fn task_name(data: &Value) -> Result<String, TaskError> {
    let name = str_field(data, "task_name")?;
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(TaskError::Invalid(format!(
            "data.task_name must be 1 to 64 letters and digits, got {:?}",
            clip(name)
        )));
    }
    Ok(name.to_owned())
}

/// A number given as a JSON integer or a decimal string.
fn number(data: &Value, name: &str, max: u8) -> Result<u8, TaskError> {
    let out_of_range = || {
        TaskError::Invalid(format!(
            "data.{name} must be a whole number from 0 to {max}"
        ))
    };
    let n = match data.get(name) {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(out_of_range)?,
        Some(Value::String(s)) => parse_small(s).ok_or_else(out_of_range)?,
        Some(_) => return Err(out_of_range()),
        None => return Err(TaskError::Invalid(format!("data.{name} is required"))),
    };
    u8::try_from(n)
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(out_of_range)
}

fn parse_small(text: &str) -> Option<u64> {
    let t = text.trim();
    if t.is_empty() || t.len() > 3 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

fn schedule(data: &Value) -> Result<Schedule, TaskError> {
    let (exec_hour, exec_minute) = match (data.get("exec_hour"), data.get("exec_time")) {
        (None, Some(Value::String(time))) => {
            let bad = || {
                TaskError::Invalid(format!(
                    "data.exec_time must be \"hour,minute\" (0-23,0-59), got {:?}",
                    clip(time)
                ))
            };
            let (h, m) = time.split_once(',').ok_or_else(bad)?;
            let h = parse_small(h).filter(|h| *h <= 23).ok_or_else(bad)?;
            let m = parse_small(m).filter(|m| *m <= 59).ok_or_else(bad)?;
            (h as u8, m as u8)
        }
        _ => (
            number(data, "exec_hour", 23)?,
            number(data, "exec_minute", 59)?,
        ),
    };
    let bad_weekly = || {
        TaskError::Invalid(
            "data.exec_weekly must list weekdays 0-7 separated by commas (0 and 7 = Sunday), e.g. \"1,2\"".into(),
        )
    };
    let days: Vec<u64> = match data.get("exec_weekly") {
        Some(Value::String(s)) => s
            .split(',')
            .map(|d| parse_small(d).ok_or_else(bad_weekly))
            .collect::<Result<_, _>>()?,
        Some(Value::Array(items)) => items
            .iter()
            .map(|d| match d {
                Value::Number(n) => n.as_u64().ok_or_else(bad_weekly),
                Value::String(s) => parse_small(s).ok_or_else(bad_weekly),
                _ => Err(bad_weekly()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad_weekly()),
        None => return Err(TaskError::Invalid("data.exec_weekly is required".into())),
    };
    if days.is_empty() || days.iter().any(|d| *d > 7) {
        return Err(bad_weekly());
    }
    Ok(Schedule {
        exec_hour,
        exec_minute,
        exec_weekly: days.into_iter().map(|d| (d % 7) as u8).collect(),
    })
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    schedules: BTreeMap<String, Schedule>,
}

struct Inner {
    schedules: BTreeMap<String, Schedule>,
    last_tick: Timestamp,
    fired: HashMap<String, DateTime>,
}

/// The node's scheduled shutdowns, persisted.
pub struct Schedules {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl Schedules {
    /// Loads `path` (missing: no schedules). An unreadable or corrupt file is an error naming
    /// it: starting without the schedules would silently drop shutdowns someone set up.
    pub fn load(path: PathBuf, now: Timestamp) -> Result<Self, TaskError> {
        let schedules = match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str::<Persisted>(&text)
                    .map_err(|e| {
                        TaskError::Failed(format!("{} is not a schedule file: {e}", path.display()))
                    })?
                    .schedules
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(TaskError::Failed(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        Ok(Self {
            path,
            inner: Mutex::new(Inner {
                schedules,
                last_tick: now,
                fired: HashMap::new(),
            }),
        })
    }

    /// The schedules now.
    pub fn list(&self) -> BTreeMap<String, Schedule> {
        self.lock().schedules.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a command; a change is persisted before it is answered.
    pub fn apply(&self, command: CrontabCommand) -> Result<Value, TaskError> {
        let mut inner = self.lock();
        let unknown =
            |name: &str| TaskError::Invalid(format!("no scheduled shutdown named {name:?}"));
        let mut next = inner.schedules.clone();
        let answer = match command {
            CrontabCommand::Select(name) => {
                return inner
                    .schedules
                    .get(&name)
                    .map(Schedule::to_seed)
                    .ok_or_else(|| unknown(&name));
            }
            CrontabCommand::Setup(name, schedule) => {
                if next.contains_key(&name) {
                    return Err(TaskError::Invalid(format!(
                        "a scheduled shutdown named {name:?} exists; task names are unique (use modify_shutdown to change it)"
                    )));
                }
                if next.len() >= MAX_SCHEDULES {
                    return Err(TaskError::Invalid(format!(
                        "this node already has {MAX_SCHEDULES} scheduled shutdowns"
                    )));
                }
                next.insert(name, schedule);
                empty()
            }
            CrontabCommand::Modify(name, schedule) => {
                let old = next.get_mut(&name).ok_or_else(|| unknown(&name))?;
                let previous = old.to_seed();
                *old = schedule;
                previous
            }
            CrontabCommand::Delete(name) => {
                next.remove(&name).ok_or_else(|| unknown(&name))?;
                empty()
            }
        };
        self.persist(&next)?;
        inner.schedules = next;
        Ok(answer)
    }

    fn persist(&self, schedules: &BTreeMap<String, Schedule>) -> Result<(), TaskError> {
        let fail = |e: std::io::Error| {
            TaskError::Failed(format!("cannot persist {}: {e}", self.path.display()))
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let text = serde_json::to_string_pretty(&Persisted {
            schedules: schedules.clone(),
        })
        .map_err(|e| TaskError::Failed(e.to_string()))?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(fail)?;
        std::fs::rename(&tmp, &self.path).map_err(fail)
    }

    /// Names of the schedules due in `(previous tick, now]`, in `tz`; remembers `now`.
    pub fn due(&self, now: Timestamp, tz: &TimeZone) -> Vec<String> {
        let mut inner = self.lock();
        let last = inner.last_tick;
        if now <= last {
            if last.duration_since(now) > SignedDuration::from_hours(1) {
                inner.last_tick = now; // the clock was set back far: start over from here
            }
            return Vec::new();
        }
        inner.last_tick = now;
        let minute = |t: Timestamp| t.as_second().div_euclid(60) * 60;
        let earliest = minute(now) - 120;
        let mut at = (minute(last) + 60).max(earliest);
        let mut due = Vec::new();
        while at <= now.as_second() {
            let Ok(ts) = Timestamp::from_second(at) else {
                break;
            };
            let local = ts.to_zoned(tz.clone());
            let weekday = local.weekday().to_sunday_zero_offset() as u8;
            let (hour, min) = (local.hour() as u8, local.minute() as u8);
            let civil = local.datetime();
            let names: Vec<String> = inner
                .schedules
                .iter()
                .filter(|(_, s)| s.matches(weekday, hour, min))
                .map(|(n, _)| n.clone())
                .collect();
            for name in names {
                if inner.fired.get(&name) != Some(&civil) {
                    inner.fired.insert(name.clone(), civil);
                    due.push(name);
                }
            }
            at += 60;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn seed_bodies_parse_and_bad_values_get_30006() {
        let ok = CrontabCommand::parse(
            "setup_shutdown",
            &json!({"task_name": "shutdown3", "exec_minute": "55", "exec_hour": "3", "exec_weekly": "1,2"}),
        )
        .unwrap();
        let CrontabCommand::Setup(name, s) = ok else {
            panic!()
        };
        assert_eq!(name, "shutdown3");
        assert_eq!(
            s.to_seed(),
            json!({"exec_hour": "3", "exec_minute": "55", "exec_weekly": "1,2"})
        );
        let seven =
            schedule(&json!({"exec_minute": "5", "exec_hour": "22", "exec_weekly": "1,2,5,6,7"}))
                .unwrap();
        assert_eq!(seven.to_seed()["exec_weekly"], "0,1,2,5,6");
        let time = schedule(&json!({"exec_time": "3,55", "exec_weekly": [0, 6]})).unwrap();
        assert_eq!((time.exec_hour, time.exec_minute), (3, 55));
        for bad in [
            json!({"task_name": "shut-down", "exec_minute": "5", "exec_hour": "3", "exec_weekly": "1"}),
            json!({"task_name": "", "exec_minute": "5", "exec_hour": "3", "exec_weekly": "1"}),
            json!({"task_name": "a", "exec_minute": "5", "exec_hour": "24", "exec_weekly": "1"}),
            json!({"task_name": "a", "exec_minute": "60", "exec_hour": "3", "exec_weekly": "1"}),
            json!({"task_name": "a", "exec_minute": "-1", "exec_hour": "3", "exec_weekly": "1"}),
            json!({"task_name": "a", "exec_minute": "5", "exec_hour": "3", "exec_weekly": "8"}),
            json!({"task_name": "a", "exec_minute": "5", "exec_hour": "3", "exec_weekly": ""}),
            json!({"task_name": "a", "exec_minute": "5", "exec_hour": "3"}),
            json!({"task_name": "a", "exec_minute": 5.5, "exec_hour": "3", "exec_weekly": "1"}),
            json!({"task_name": "a", "exec_time": "25,1", "exec_weekly": "1"}),
        ] {
            let error = CrontabCommand::parse("setup_shutdown", &bad).unwrap_err();
            assert_eq!(error.code(), 30006, "{bad}: {error}");
        }
    }

    #[test]
    fn due_fires_once_at_the_local_minute_on_listed_weekdays() {
        let tz = TimeZone::fixed(jiff::tz::offset(8));
        let dir = tempfile::tempdir().unwrap();
        // 2026-11-22 is a Sunday; 03:54:30 +08:00 on Monday 2026-11-23 = 2026-11-22T19:54:30Z.
        let s = Schedules::load(dir.path().join("c.json"), ts("2026-11-22T19:54:30Z")).unwrap();
        s.apply(CrontabCommand::parse(
            "setup_shutdown",
            &json!({"task_name": "s3", "exec_minute": "55", "exec_hour": "3", "exec_weekly": "1,2"}),
        ).unwrap()).unwrap();
        assert!(s.due(ts("2026-11-22T19:54:59Z"), &tz).is_empty());
        assert_eq!(s.due(ts("2026-11-22T19:55:00Z"), &tz), ["s3"]);
        assert!(
            s.due(ts("2026-11-22T19:55:40Z"), &tz).is_empty(),
            "once per minute"
        );
        // Wednesday 03:55 local: not listed.
        assert!(s.due(ts("2026-11-24T19:54:59Z"), &tz).is_empty());
        assert!(s.due(ts("2026-11-24T19:56:00Z"), &tz).is_empty());
        // The clock set back over the same minute does not fire it twice.
        assert!(s.due(ts("2026-11-22T19:54:00Z"), &tz).is_empty());
        // Missed by more than two minutes: skipped.
        let late = Schedules::load(dir.path().join("c.json"), ts("2026-11-23T19:50:00Z")).unwrap();
        assert!(late.due(ts("2026-11-23T19:58:01Z"), &tz).is_empty());
        // Tuesday 03:55 local, with a coarse tick: fires.
        let tue = Schedules::load(dir.path().join("c.json"), ts("2026-11-23T19:54:10Z")).unwrap();
        assert_eq!(tue.due(ts("2026-11-23T19:56:30Z"), &tz), ["s3"]);
    }
}
