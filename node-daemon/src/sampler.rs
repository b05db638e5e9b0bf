//! The background sampler: runs every probe once per interval (default 1 s), keeps the latest
//! readings and a ring of the last 60 s of derived points (CPU and memory utilization, NIC
//! byte rates) for seed 002 §二.16 `resource_statis`. Requests read from memory; rates come
//! from the deltas between consecutive cycles, never from a sleep inside a request.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::Failure;
use crate::host::HostRoot;
use crate::metrics::ProbeMetrics;
use crate::probe::{DynProbe, Keyed, ProbeId, Sample, cpu, memory, networkio, port_status};

/// How much history the ring keeps (the seed limits `statis_period` to 60 s).
pub const HISTORY: Duration = Duration::from_secs(60);

/// A probe that failed in a cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeFailure {
    /// Its seed return-code family.
    pub failure: Failure,
    /// What went wrong.
    pub detail: String,
}

/// One cycle's readings.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Unix time the cycle ran.
    pub utc: i64,
    /// Each probe's reading or failure, by probe.
    pub samples: BTreeMap<ProbeId, Result<Sample, ProbeFailure>>,
    /// CPU busy percent since the previous cycle (since boot in the first cycle).
    pub cpu_utilization: Option<f64>,
    /// Durations of the probes that read the host in this cycle, by probe (a probe whose
    /// last reading was reused has none).
    pub durations: BTreeMap<ProbeId, Duration>,
}

impl Snapshot {
    /// The reading of probe `id`, or its failure; `None` when the probe is not registered.
    pub fn sample(&self, id: ProbeId) -> Option<&Result<Sample, ProbeFailure>> {
        self.samples.get(&id)
    }

    /// The reading of type `R` (its probe is [`Keyed::ID`]) when that probe succeeded.
    pub fn reading<R: Keyed>(&self) -> Option<&R> {
        reading_in(&self.samples)
    }
}

/// The reading of type `R` among `samples` when its probe succeeded.
fn reading_in<R: Keyed>(samples: &BTreeMap<ProbeId, Result<Sample, ProbeFailure>>) -> Option<&R> {
    samples.get(&R::ID)?.as_ref().ok().and_then(R::from_sample)
}

/// Bytes per second received and sent by one interface over one cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NicRate {
    /// Received bytes per second.
    pub recv: f64,
    /// Sent bytes per second.
    pub send: f64,
}

/// What one cycle adds to the 60 s history.
#[derive(Debug, Clone, PartialEq)]
pub struct StatisPoint {
    /// Monotonic time of the cycle, seconds since the sampler started.
    pub at: f64,
    /// CPU busy percent over the cycle.
    pub cpu: Option<f64>,
    /// Memory used percent at the cycle.
    pub memory: Option<f64>,
    /// NIC byte rates over the cycle.
    pub nics: BTreeMap<String, NicRate>,
}

#[derive(Debug, Default)]
struct Previous {
    at: f64,
    cpu: Option<cpu::CpuTimes>,
    networkio: Option<networkio::NetworkIo>,
}

/// A reading kept for reuse and the monotonic time (seconds) it was made.
type Kept = (f64, Result<Sample, ProbeFailure>);

#[derive(Debug, Default)]
struct Memory {
    latest: Option<Arc<Snapshot>>,
    history: VecDeque<StatisPoint>,
}

/// Runs the probes and remembers what they saw.
pub struct Sampler {
    host: HostRoot,
    probes: Vec<Arc<dyn DynProbe>>,
    metrics: Option<Arc<ProbeMetrics>>,
    started: Instant,
    previous: Mutex<Option<Previous>>,
    memory: RwLock<Memory>,
    /// Last error per probe, so a persistent failure is logged once, not every cycle.
    last_errors: Mutex<BTreeMap<ProbeId, String>>,
    /// Last reading and its time of the probes that are not read every cycle.
    kept: Mutex<BTreeMap<ProbeId, Kept>>,
    /// `port_status` counts shared for a second.
    recent_ports: port_status::Recent,
}

impl Sampler {
    /// A sampler over `probes` reading `host`.
    pub fn new(
        host: HostRoot,
        probes: Vec<Arc<dyn DynProbe>>,
        metrics: Option<Arc<ProbeMetrics>>,
    ) -> Self {
        Self {
            host,
            probes,
            metrics,
            started: Instant::now(),
            previous: Mutex::new(None),
            memory: RwLock::new(Memory::default()),
            last_errors: Mutex::new(BTreeMap::new()),
            kept: Mutex::new(BTreeMap::new()),
            recent_ports: port_status::Recent::default(),
        }
    }

    /// ESTABLISHED connections by local port for `ports`, asked when requested (seed 002
    /// §二.11 `port_status` is a query, not part of the cycle) and shared for
    /// [`port_status::FRESH`]; recorded in the probe metrics as probe `port_status`.
    pub fn port_status(&self, ports: &[u16]) -> Result<port_status::Established, ProbeFailure> {
        let started = Instant::now();
        if let Some(counts) = self.recent_ports.cached(ports, started) {
            if let Some(metrics) = &self.metrics {
                metrics.observe("port_status", started.elapsed(), true);
            }
            return Ok(counts);
        }
        let query = || {
            self.recent_ports
                .established(&self.host, ports, Instant::now())
                .map_err(|e| ProbeFailure {
                    failure: Failure::Network,
                    detail: e.to_string(),
                })
        };
        // The kernel walks its whole connection table (milliseconds on a host with a big
        // one): on the multi-threaded runtime the worker hands its other tasks over meanwhile.
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(query)
            }
            _ => query(),
        };
        if let Some(metrics) = &self.metrics {
            metrics.observe("port_status", started.elapsed(), result.is_ok());
        }
        result
    }

    /// The latest snapshot, `None` before the first cycle.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.memory.read().ok().and_then(|m| m.latest.clone())
    }

    /// The history points of the last `period` seconds, oldest first, counted back from the
    /// newest point.
    pub fn history(&self, period: Duration) -> Vec<StatisPoint> {
        let Ok(memory) = self.memory.read() else {
            return Vec::new();
        };
        let Some(newest) = memory.history.back().map(|p| p.at) else {
            return Vec::new();
        };
        let from = newest - period.as_secs_f64();
        memory
            .history
            .iter()
            .filter(|p| p.at > from + 1e-6)
            .cloned()
            .collect()
    }

    /// One cycle now (blocking: probes read files and may run a command).
    pub fn cycle_now(&self) -> Arc<Snapshot> {
        let utc = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        self.cycle_at(self.started.elapsed().as_secs_f64(), utc)
    }

    /// One cycle at a given monotonic time (seconds) and Unix time; tests drive time this way.
    pub fn cycle_at(&self, at: f64, utc: i64) -> Arc<Snapshot> {
        let cycle_started = Instant::now();
        let mut samples = BTreeMap::new();
        let mut durations = BTreeMap::new();
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        for probe in &self.probes {
            let id = probe.id();
            if let Some(period) = probe.refresh()
                && let Some((read_at, reading)) = kept.get(&id)
                && at >= *read_at
                && at - read_at < period.as_secs_f64()
            {
                samples.insert(id, reading.clone());
                continue;
            }
            let started = Instant::now();
            let result = probe.collect(&self.host).map_err(|e| ProbeFailure {
                failure: probe.failure(),
                detail: e.to_string(),
            });
            let took = started.elapsed();
            if let Some(metrics) = &self.metrics {
                metrics.observe(id.name(), took, result.is_ok());
            }
            self.log_transition(id, &result);
            durations.insert(id, took);
            if probe.refresh().is_some() {
                kept.insert(id, (at, result.clone()));
            }
            samples.insert(id, result);
        }
        drop(kept);

        let cpu_now = reading_in::<cpu::CpuTimes>(&samples).copied();
        let netio_now = reading_in::<networkio::NetworkIo>(&samples).cloned();
        let memory_now = reading_in::<memory::MemInfo>(&samples).map(memory::MemInfo::utilization);

        let mut previous = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        let prev = previous.take();
        let cpu_utilization = cpu_now
            .as_ref()
            .map(|now| cpu::utilization(prev.as_ref().and_then(|p| p.cpu.as_ref()), now));
        let point = prev.as_ref().map(|p| {
            let elapsed = at - p.at;
            StatisPoint {
                at,
                cpu: match (&p.cpu, &cpu_now) {
                    (Some(_), Some(_)) => cpu_utilization,
                    _ => None,
                },
                memory: memory_now,
                nics: match (&p.networkio, &netio_now) {
                    (Some(before), Some(after)) if elapsed > 0.0 => rates(before, after, elapsed),
                    _ => BTreeMap::new(),
                },
            }
        });
        *previous = Some(Previous {
            at,
            cpu: cpu_now,
            networkio: netio_now,
        });
        drop(previous);

        let snapshot = Arc::new(Snapshot {
            utc,
            samples,
            cpu_utilization,
            durations,
        });
        if let Ok(mut memory) = self.memory.write() {
            memory.latest = Some(snapshot.clone());
            if let Some(point) = point {
                memory.history.push_back(point);
            }
            let horizon = at - HISTORY.as_secs_f64();
            while memory.history.front().is_some_and(|p| p.at <= horizon) {
                memory.history.pop_front();
            }
        }
        if let Some(metrics) = &self.metrics {
            metrics.observe_cycle(cycle_started.elapsed());
        }
        snapshot
    }

    fn log_transition(&self, id: ProbeId, result: &Result<Sample, ProbeFailure>) {
        let mut last = self.last_errors.lock().unwrap_or_else(|e| e.into_inner());
        let probe = id.name();
        match result {
            Err(e) if last.get(&id) != Some(&e.detail) => {
                tracing::warn!(probe, error = %e.detail, "probe failed");
                last.insert(id, e.detail.clone());
            }
            Ok(_) if last.remove(&id).is_some() => {
                tracing::info!(probe, "probe recovered");
            }
            _ => {}
        }
    }

    /// Runs a cycle every `interval` until the task is dropped, the first one `interval` from
    /// now: the caller has run one at start ([`Sampler::cycle_now`]), and a second one at once
    /// would be a second reading of the same moment (reported twice, its rates over
    /// milliseconds).
    pub async fn run(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let sampler = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || sampler.cycle_now()).await {
                tracing::error!(error = %e, "sampling cycle aborted");
            }
        }
    }
}

/// Per-second byte rates between two counter readings; counters that went backwards
/// (interface re-created) count as 0.
fn rates(
    before: &networkio::NetworkIo,
    after: &networkio::NetworkIo,
    elapsed: f64,
) -> BTreeMap<String, NicRate> {
    after
        .iter()
        .filter_map(|(name, now)| {
            let then = before.get(name)?;
            Some((
                name.clone(),
                NicRate {
                    recv: now.bytes_recv.saturating_sub(then.bytes_recv) as f64 / elapsed,
                    send: now.bytes_send.saturating_sub(then.bytes_send) as f64 / elapsed,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProbeError;

    /// A probe whose readings are scripted.
    struct Scripted {
        id: ProbeId,
        readings: Mutex<VecDeque<Sample>>,
        refresh: Option<Duration>,
    }

    impl DynProbe for Scripted {
        fn id(&self) -> ProbeId {
            self.id
        }
        fn failure(&self) -> Failure {
            Failure::Cpu
        }
        fn refresh(&self) -> Option<Duration> {
            self.refresh
        }
        fn collect(&self, _host: &HostRoot) -> Result<Sample, ProbeError> {
            self.readings
                .lock()
                .unwrap()
                .pop_front()
                .ok_or_else(|| ProbeError::Command("script ended".into()))
        }
    }

    fn cpu(busy: u64, total: u64) -> Sample {
        Sample::Cpu(cpu::CpuTimes {
            numbers: 2,
            busy,
            total,
            boot_time: None,
        })
    }

    fn nic(recv: u64, send: u64) -> Sample {
        Sample::NetworkIo(
            [(
                "eth0".to_owned(),
                networkio::NicCounters {
                    bytes_recv: recv,
                    bytes_send: send,
                },
            )]
            .into(),
        )
    }

    fn sampler(cpus: Vec<Sample>, nics: Vec<Sample>) -> Sampler {
        Sampler::new(
            HostRoot::new("/nonexistent"),
            vec![
                Arc::new(Scripted {
                    id: ProbeId::Cpu,
                    readings: Mutex::new(cpus.into()),
                    refresh: None,
                }),
                Arc::new(Scripted {
                    id: ProbeId::NetworkIo,
                    readings: Mutex::new(nics.into()),
                    refresh: None,
                }),
            ],
            None,
        )
    }

    #[test]
    fn rates_and_utilization_come_from_consecutive_cycles() {
        let s = sampler(
            vec![cpu(0, 100), cpu(50, 200), cpu(50, 300)],
            vec![nic(0, 0), nic(1000, 500), nic(1000, 2500)],
        );
        let first = s.cycle_at(0.0, 10);
        assert_eq!(first.cpu_utilization, Some(0.0));
        assert!(s.history(HISTORY).is_empty(), "first cycle has no delta");
        s.cycle_at(1.0, 11);
        s.cycle_at(3.0, 13);
        let points = s.history(HISTORY);
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].cpu, Some(50.0));
        assert_eq!(
            points[0].nics["eth0"],
            NicRate {
                recv: 1000.0,
                send: 500.0
            }
        );
        assert_eq!(points[1].cpu, Some(0.0));
        assert_eq!(
            points[1].nics["eth0"],
            NicRate {
                recv: 0.0,
                send: 1000.0
            }
        );
        assert_eq!(s.latest().unwrap().utc, 13);
    }

    #[test]
    fn history_keeps_sixty_seconds_and_periods_count_back_from_the_newest_point() {
        let n = 80;
        let s = sampler(
            (0..n).map(|i| cpu(i, i * 10)).collect(),
            (0..n).map(|i| nic(i, i)).collect(),
        );
        for i in 0..n {
            s.cycle_at(i as f64, i as i64);
        }
        assert_eq!(s.history(HISTORY).len(), 60);
        assert_eq!(s.history(Duration::from_secs(15)).len(), 15);
        assert_eq!(s.history(Duration::from_secs(1)).len(), 1);
    }

    #[test]
    fn a_probe_with_a_refresh_period_is_read_once_per_period_and_reused_between() {
        let vms = |n| Sample::Vm(crate::probe::vm::VmCount { numbers: n });
        let s = Sampler::new(
            HostRoot::new("/nonexistent"),
            vec![Arc::new(Scripted {
                id: ProbeId::Vm,
                readings: Mutex::new(vec![vms(1), vms(2)].into()),
                refresh: Some(Duration::from_secs(10)),
            })],
            None,
        );
        let count = |snap: &Snapshot| {
            snap.reading::<crate::probe::vm::VmCount>()
                .map(|v| v.numbers)
        };
        let first = s.cycle_at(0.0, 0);
        assert_eq!(count(&first), Some(1));
        assert!(first.durations.contains_key(&ProbeId::Vm));
        let reused = s.cycle_at(9.5, 9);
        assert_eq!(count(&reused), Some(1));
        assert!(
            !reused.durations.contains_key(&ProbeId::Vm),
            "not read again"
        );
        assert_eq!(count(&s.cycle_at(10.0, 10)), Some(2));
        assert_eq!(count(&s.cycle_at(15.0, 15)), Some(2));
        // the script is exhausted: the failure is read at the next period and kept as well
        assert_eq!(count(&s.cycle_at(20.0, 20)), None);
        assert_eq!(count(&s.cycle_at(21.0, 21)), None);
    }

    #[test]
    fn a_failing_probe_is_remembered_with_its_failure() {
        let s = sampler(vec![], vec![]);
        let snap = s.cycle_at(0.0, 0);
        let Some(Err(failure)) = snap.sample(ProbeId::Cpu) else {
            panic!("cpu should have failed");
        };
        assert_eq!(failure.failure, Failure::Cpu);
        assert!(failure.detail.contains("script ended"));
        assert_eq!(snap.cpu_utilization, None);
    }
}
