//! Active reports (seed 002 §四) and the report timer (§三.4, TimerHandler).
//!
//! On every tick the daemon queues a resource report and a service report with the seed's body
//! (`hostname, ip, utc, type, node_uuid, data`: [`NodeReport`], the type the operator reads
//! them with), built from the typed readings of the latest snapshot, and a sender delivers the queue in order to the
//! configured address. While the receiver is down, reports wait in a bounded queue and go out in
//! order when it returns; when the queue is full the oldest report is dropped, counted in
//! `opsplane_node_reports_dropped_total` and logged. TimerHandler `update` changes the address
//! and node_uuid, `pause` / `resume` stop and restart the timer; the timer's state is persisted
//! in the state directory so it survives a restart.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opsplane_resources::node_report::{NodeReport, ReportBody, ResourceData};
use prometheus::{IntCounter, IntGauge, Registry};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::probe::{cpu, disk, diskio, memory, networkio, service};
use crate::sampler::{Sampler, Snapshot};

/// The timer's persisted state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerState {
    /// Where reports go (`http://host:port/`); empty: reports are not sent.
    pub addr: String,
    /// The node's UUID in reports.
    pub node_uuid: String,
    /// Whether the timer is paused.
    pub paused: bool,
}

/// Reporter settings.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// Initial state (flags), used when nothing is persisted.
    pub initial: TimerState,
    /// Report interval.
    pub interval: Duration,
    /// How many reports wait at most while the receiver is down.
    pub queue_limit: usize,
    /// Where the timer state is persisted (`<state_dir>/report-timer.json`); `None`: not persisted.
    pub state_file: Option<PathBuf>,
    /// Bearer token sent with reports.
    pub token: Option<String>,
    /// Host name in reports.
    pub hostname: String,
    /// IP in reports.
    pub ip: String,
}

struct Counters {
    sent: IntCounter,
    dropped: IntCounter,
    failures: IntCounter,
    queued: IntGauge,
}

/// The report timer and queue.
pub struct Reporter {
    config: ReporterConfig,
    state: Mutex<TimerState>,
    queue: Mutex<VecDeque<NodeReport>>,
    wake: Notify,
    counters: Counters,
}

/// Why a timer state could not be stored.
#[derive(Debug, thiserror::Error)]
#[error("cannot persist the report timer to {path}: {source}")]
pub struct PersistError {
    path: String,
    #[source]
    source: std::io::Error,
}

impl Reporter {
    /// Creates the reporter, loading a persisted state when there is one.
    pub fn new(
        config: ReporterConfig,
        registry: &Registry,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let persisted = config
            .state_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str::<TimerState>(&t).ok());
        let state = persisted.unwrap_or_else(|| config.initial.clone());
        let counters = Counters {
            sent: IntCounter::new(
                "opsplane_node_reports_sent_total",
                "Reports delivered to the receiver",
            )?,
            dropped: IntCounter::new(
                "opsplane_node_reports_dropped_total",
                "Reports dropped because the queue was full while the receiver was down",
            )?,
            failures: IntCounter::new(
                "opsplane_node_report_failures_total",
                "Failed report deliveries (retried)",
            )?,
            queued: IntGauge::new(
                "opsplane_node_reports_queued",
                "Reports waiting for delivery",
            )?,
        };
        registry.register(Box::new(counters.sent.clone()))?;
        registry.register(Box::new(counters.dropped.clone()))?;
        registry.register(Box::new(counters.failures.clone()))?;
        registry.register(Box::new(counters.queued.clone()))?;
        Ok(Arc::new(Self {
            config,
            state: Mutex::new(state),
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            counters,
        }))
    }

    /// The current timer state.
    pub fn state(&self) -> TimerState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn change(&self, f: impl FnOnce(&mut TimerState)) -> Result<(), PersistError> {
        let snapshot = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut state);
            state.clone()
        };
        if let Some(path) = &self.config.state_file {
            let err = |source| PersistError {
                path: path.display().to_string(),
                source,
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            // Write then rename: a crash never leaves half a file.
            let tmp = path.with_extension("json.tmp");
            let text = serde_json::to_string(&snapshot).unwrap_or_default();
            std::fs::write(&tmp, text).map_err(err)?;
            std::fs::rename(&tmp, path).map_err(err)?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// TimerHandler update: new address and node_uuid.
    pub fn update(&self, addr: String, node_uuid: String) -> Result<(), PersistError> {
        self.change(|s| {
            s.addr = addr;
            s.node_uuid = node_uuid;
        })
    }

    /// TimerHandler pause / resume.
    pub fn set_paused(&self, paused: bool) -> Result<(), PersistError> {
        self.change(|s| s.paused = paused)
    }

    fn enqueue(&self, report: NodeReport) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= self.config.queue_limit {
            queue.pop_front();
            self.counters.dropped.inc();
            tracing::warn!(
                limit = self.config.queue_limit,
                "report queue full: dropped the oldest report"
            );
        }
        queue.push_back(report);
        self.counters.queued.set(queue.len() as i64);
        drop(queue);
        self.wake.notify_one();
    }

    /// The two seed §四 reports of a snapshot: resource, then service. A section whose
    /// probe failed in the cycle is left out; the service report of a failed `service`
    /// probe has no states.
    pub fn reports(&self, snapshot: &Snapshot, state: &TimerState) -> [NodeReport; 2] {
        let resources = ResourceData {
            cpu: snapshot
                .reading::<cpu::CpuTimes>()
                .map(|t| t.report(snapshot)),
            disk: snapshot.reading::<disk::Disks>().map(disk::report),
            diskio: snapshot.reading::<diskio::DiskIo>().cloned(),
            memory: snapshot
                .reading::<memory::MemInfo>()
                .map(memory::MemInfo::report),
            networkio: snapshot.reading::<networkio::NetworkIo>().cloned(),
            vm: None,
        };
        let services = snapshot
            .reading::<service::Services>()
            .cloned()
            .unwrap_or_default();
        let report = |body| NodeReport {
            hostname: self.config.hostname.clone(),
            ip: self.config.ip.clone(),
            utc: snapshot.utc,
            node_uuid: state.node_uuid.clone(),
            body,
        };
        [
            report(ReportBody::Resource(resources)),
            report(ReportBody::Service(services)),
        ]
    }

    /// Queues reports on every tick while not paused.
    pub async fn run_timer(self: Arc<Self>, sampler: Arc<Sampler>) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let state = self.state();
            if state.paused || state.addr.is_empty() {
                continue;
            }
            if let Some(snapshot) = sampler.latest() {
                for report in self.reports(&snapshot, &state) {
                    self.enqueue(report);
                }
            }
        }
    }

    /// Delivers the queue in order; a failed delivery is retried (the report stays first).
    pub async fn run_sender(self: Arc<Self>) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, "cannot build the report HTTP client; reports are not sent");
                return;
            }
        };
        let mut backoff = Duration::from_millis(200);
        loop {
            let next = self
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .front()
                .cloned();
            let Some(report) = next else {
                self.wake.notified().await;
                continue;
            };
            let addr = self.state().addr;
            let mut request = client.post(&addr).json(&report);
            if let Some(token) = &self.config.token {
                request = request.bearer_auth(token);
            }
            match request.send().await.and_then(|r| r.error_for_status()) {
                Ok(_) => {
                    let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                    queue.pop_front();
                    self.counters.queued.set(queue.len() as i64);
                    self.counters.sent.inc();
                    backoff = Duration::from_millis(200);
                }
                Err(error) => {
                    self.counters.failures.inc();
                    tracing::warn!(%addr, %error, retry_in = ?backoff, "report delivery failed; kept in the queue");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.wake.notified() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
