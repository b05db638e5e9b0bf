//! States of the configured services (seed 002 §二.10 `service`, also the §四.2 report):
//! `running`, `not found` when the unit does not exist, else systemd's sub-state (`dead`,
//! `failed`, `exited`, ...). Only `running` is healthy, as the seed says.
//!
//! One `systemctl show` for all services, through a configurable command so the DaemonSet can
//! reach the host's systemd (e.g. `chroot /host systemctl`) and tests can use a fixture
//! script. Starting a process is the most expensive thing a probe can do, so it runs once per
//! `--service-interval` (10 s by default), not every cycle; the sampler reuses the last states
//! in between.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opsplane_resources::node_report::RUNNING;
use serde_json::Value;

use super::{Probe, ProbeError, ProbeSettings, Reading, with_utc};
use crate::error::Failure;
use crate::host::HostRoot;
use crate::metrics::Exposition;
use crate::sampler::Snapshot;

/// Service name → state; as the §四.2 report's `data` carries them.
pub type Services = opsplane_resources::node_report::ServiceStates;

/// How long one `systemctl show` may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads [`Services`].
pub struct ServiceProbe {
    /// Service names as configured (`libvirtd`, `sshd.service`).
    pub services: Vec<String>,
    /// Program and leading arguments standing for `systemctl`.
    pub systemctl: Vec<String>,
    /// How often `systemctl` runs (zero: every cycle).
    pub every: Duration,
}

impl ServiceProbe {
    /// The probe of the configured services.
    pub fn new(settings: &ProbeSettings) -> Self {
        Self {
            services: settings.services.clone(),
            systemctl: settings.systemctl.clone(),
            every: settings.service_interval,
        }
    }
}

impl Probe for ServiceProbe {
    type Reading = Services;
    fn failure(&self) -> Failure {
        Failure::Services
    }
    fn refresh(&self) -> Option<Duration> {
        (!self.every.is_zero()).then_some(self.every)
    }
    fn collect(&self, _host: &HostRoot) -> Result<Services, ProbeError> {
        if self.services.is_empty() {
            return Ok(Services::new());
        }
        let output = self.show()?;
        let states = parse_show(&output, self.services.len())?;
        Ok(self.services.iter().cloned().zip(states).collect())
    }
}

impl Reading for Services {
    fn seed_data(&self, snapshot: &Snapshot) -> Result<Value, serde_json::Error> {
        with_utc(self, snapshot.utc)
    }
    fn write_metrics(&self, _snapshot: &Snapshot, out: &mut Exposition<'_>) {
        out.gauge(
            "opsplane_node_service_running",
            "1 when the configured service is running",
            self.iter().map(|(s, st)| {
                (
                    vec![("service", s.clone()), ("state", st.clone())],
                    f64::from(u8::from(st == RUNNING)),
                )
            }),
        );
    }
}

impl ServiceProbe {
    fn show(&self) -> Result<String, ProbeError> {
        let (program, leading) = self
            .systemctl
            .split_first()
            .ok_or_else(|| ProbeError::Command("no systemctl command configured".into()))?;
        let mut child = Command::new(program)
            .args(leading)
            .args(["show", "--property=LoadState,ActiveState,SubState", "--"])
            .args(&self.services)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ProbeError::Command(format!("cannot run {program}: {e}")))?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < COMMAND_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ProbeError::Command(format!(
                        "{program} show took longer than {COMMAND_TIMEOUT:?}"
                    )));
                }
                Err(e) => return Err(ProbeError::Command(format!("{program}: {e}"))),
            }
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = child.stdout.take() {
            out.read_to_string(&mut stdout)?;
        }
        if let Some(mut err) = child.stderr.take() {
            err.read_to_string(&mut stderr)?;
        }
        if !status.success() {
            return Err(ProbeError::Command(format!(
                "{program} show failed ({status}): {}",
                stderr.trim()
            )));
        }
        Ok(stdout)
    }
}

/// States from `systemctl show` output: one blank-line-separated block per unit, in order.
pub fn parse_show(output: &str, units: usize) -> Result<Vec<String>, ProbeError> {
    let mut states = Vec::new();
    for block in output.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let property = |name: &str| {
            block.lines().find_map(|line| {
                let (k, v) = line.split_once('=')?;
                (k == name).then_some(v.trim())
            })
        };
        let state = match (
            property("LoadState"),
            property("ActiveState"),
            property("SubState"),
        ) {
            (Some("not-found"), _, _) => "not found".to_owned(),
            (_, Some("active"), Some("running")) => "running".to_owned(),
            (_, _, Some(sub)) if !sub.is_empty() => sub.to_owned(),
            (_, Some(active), _) => active.to_owned(),
            _ => "unknown".to_owned(),
        };
        states.push(state);
    }
    if states.len() != units {
        return Err(ProbeError::Command(format!(
            "systemctl show answered {} units for {units} asked",
            states.len()
        )));
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_systemd_states_to_seed_states() {
        let out = "LoadState=loaded\nActiveState=active\nSubState=running\n\n\
                   LoadState=not-found\nActiveState=inactive\nSubState=dead\n\n\
                   LoadState=loaded\nActiveState=failed\nSubState=failed\n";
        assert_eq!(
            parse_show(out, 3).unwrap(),
            vec!["running", "not found", "failed"]
        );
        assert!(parse_show(out, 2).is_err());
    }
}
