//! The operator's own Prometheus metrics, served at `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramTimer, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::check::InstanceResult;

/// What a failed store write was recording (`source` of `opsplane_store_errors_total`).
pub const STORE_ERROR_SOURCES: [&str; 7] = [
    "availability",
    "checks",
    "node_report",
    "node_tasks",
    "notifications",
    "prune",
    "rollup",
];

/// Every metric the operator exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    check_duration: HistogramVec,
    check_up: IntGaugeVec,
    check_errors: IntCounterVec,
    reconcile_total: IntCounterVec,
    reconcile_errors: IntCounterVec,
    reconcile_duration: HistogramVec,
    check_lateness: prometheus::Histogram,
    config_reloads: IntCounterVec,
    status_writes: prometheus::IntCounter,
    node_reports: IntCounterVec,
    events_ingested: prometheus::IntCounter,
    store_errors: IntCounterVec,
    store_operation_errors: IntCounterVec,
    node_last_report: prometheus::GaugeVec,
    node_task_transitions: IntCounterVec,
    notification_webhooks: IntCounterVec,
    /// 1 while this process holds the leader Lease (always 1 in standalone mode).
    pub leader: IntGauge,
    /// Requests of every API by route (`opsplane_http_*`).
    pub http: opsplane_serve::observe::RequestMetrics,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let check_duration = HistogramVec::new(
            HistogramOpts::new(
                "opsplane_check_duration_seconds",
                "Duration of one service check of one instance",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["service"],
        )?;
        let check_up = IntGaugeVec::new(
            Opts::new(
                "opsplane_check_up",
                "1 when the last check of the instance passed",
            ),
            &["service", "instance"],
        )?;
        let check_errors = IntCounterVec::new(
            Opts::new("opsplane_check_errors_total", "Failed checks by reason"),
            &["service", "reason"],
        )?;
        let reconcile_total = IntCounterVec::new(
            Opts::new("opsplane_reconcile_total", "Reconciles by resource kind"),
            &["kind"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "opsplane_reconcile_errors_total",
                "Failed reconciles by resource kind",
            ),
            &["kind"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "opsplane_reconcile_duration_seconds",
                "Duration of one reconcile",
            ),
            &["kind"],
        )?;
        let check_lateness = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "opsplane_check_lateness_seconds",
                "How late a scheduled check started against its slot",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "opsplane_config_reloads_total",
                "Standalone config file edits by result (ok, error: refused, last good config kept)",
            ),
            &["result"],
        )?;
        let status_writes = prometheus::IntCounter::new(
            "opsplane_status_writes_total",
            "MonitoredService status writes sent to the Kubernetes API",
        )?;
        let node_reports = IntCounterVec::new(
            Opts::new(
                "opsplane_node_reports_received_total",
                "Node reports received on POST /, by type",
            ),
            &["type"],
        )?;
        let events_ingested = prometheus::IntCounter::new(
            "opsplane_events_ingested_total",
            "Request events accepted by POST /monitoring/api/ingest/",
        )?;
        let store_errors = IntCounterVec::new(
            Opts::new(
                "opsplane_store_errors_total",
                "Failed writes to the metric store, by what was being recorded",
            ),
            &["source"],
        )?;
        let store_operation_errors = IntCounterVec::new(
            Opts::new(
                "opsplane_store_operation_errors_total",
                "Failed store calls of any caller, by store operation (ingest, document, rate_hit, ...); calls refused at once while the store is unreachable included",
            ),
            &["operation"],
        )?;
        let node_last_report = prometheus::GaugeVec::new(
            Opts::new(
                "opsplane_node_last_report_timestamp_seconds",
                "The utc (seconds since the epoch) of the last report received from a host",
            ),
            &["host"],
        )?;
        let node_task_transitions = IntCounterVec::new(
            Opts::new(
                "opsplane_node_task_transitions_total",
                "NodeTask phase transitions written, by the phase entered",
            ),
            &["phase"],
        )?;
        let notification_webhooks = IntCounterVec::new(
            Opts::new(
                "opsplane_notification_webhooks_total",
                "Calls of --notification-webhook by result (ok; error: refused, unreachable or timed out)",
            ),
            &["result"],
        )?;
        let leader = IntGauge::new(
            "opsplane_leader",
            "1 while this process runs the controllers (holds the leader Lease)",
        )?;
        registry.register(Box::new(check_duration.clone()))?;
        registry.register(Box::new(check_up.clone()))?;
        registry.register(Box::new(check_errors.clone()))?;
        registry.register(Box::new(reconcile_total.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(check_lateness.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(status_writes.clone()))?;
        registry.register(Box::new(node_reports.clone()))?;
        registry.register(Box::new(events_ingested.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        registry.register(Box::new(store_operation_errors.clone()))?;
        registry.register(Box::new(node_last_report.clone()))?;
        registry.register(Box::new(node_task_transitions.clone()))?;
        registry.register(Box::new(notification_webhooks.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        for result in ["ok", "error"] {
            notification_webhooks.with_label_values(&[result]);
        }
        // Series that alerts take `increase()` of exist from the start at 0: a counter first
        // seen at 1 would give no increase, and the alert would miss the first failure.
        for phase in [
            "Pending",
            "Running",
            "Succeeded",
            "Failed",
            "PartiallyFailed",
        ] {
            node_task_transitions.with_label_values(&[phase]);
        }
        for source in STORE_ERROR_SOURCES {
            store_errors.with_label_values(&[source]);
        }
        for kind in ["MonitoredService", "NodeTask"] {
            reconcile_total.with_label_values(&[kind]);
            reconcile_errors.with_label_values(&[kind]);
            reconcile_duration.with_label_values(&[kind]);
        }
        let http = opsplane_serve::observe::RequestMetrics::register(&registry)?;
        Ok(Self {
            registry,
            check_duration,
            check_up,
            check_errors,
            reconcile_total,
            reconcile_errors,
            reconcile_duration,
            check_lateness,
            config_reloads,
            status_writes,
            node_reports,
            events_ingested,
            store_errors,
            store_operation_errors,
            node_last_report,
            node_task_transitions,
            notification_webhooks,
            leader,
            http,
        })
    }

    /// Counts one call of the notification webhook.
    pub fn notification_webhook(&self, ok: bool) {
        self.notification_webhooks
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Counts request events accepted by the ingestion endpoint.
    pub fn events_ingested(&self, n: u64) {
        self.events_ingested.inc_by(n);
    }

    /// Counts a failed store write (`checks`, `node_report`, `rollup`, ...).
    pub fn store_error(&self, source: &str) {
        self.store_errors.with_label_values(&[source]).inc();
    }

    /// Counts a failed store call (every caller's: the store's circuit breaker reports them).
    pub fn store_operation_error(&self, operation: &str) {
        self.store_operation_errors
            .with_label_values(&[operation])
            .inc();
    }

    /// Records one check result.
    pub fn observe_check(&self, service: &str, result: &InstanceResult) {
        self.check_duration
            .with_label_values(&[service])
            .observe(result.latency.as_secs_f64());
        self.check_up
            .with_label_values(&[service, &result.address])
            .set(i64::from(result.healthy));
        if let Some(reason) = result.error_reason() {
            self.check_errors
                .with_label_values(&[service, reason])
                .inc();
        }
    }

    /// Counts a reconcile and times it until the returned guard drops.
    pub fn reconcile_timer(&self, kind: &str) -> HistogramTimer {
        self.reconcile_total.with_label_values(&[kind]).inc();
        self.reconcile_duration
            .with_label_values(&[kind])
            .start_timer()
    }

    /// Records how late a scheduled check started.
    pub fn observe_lateness(&self, lateness: std::time::Duration) {
        self.check_lateness.observe(lateness.as_secs_f64());
    }

    /// Counts a node report received.
    pub fn node_report(&self, kind: &str) {
        self.node_reports.with_label_values(&[kind]).inc();
    }

    /// Notes the `utc` of the latest report of `host` (alerts on hosts gone silent).
    pub fn node_seen(&self, host: &str, utc: i64) {
        let gauge = self.node_last_report.with_label_values(&[host]);
        // Reports may arrive out of order after a queue drains; keep the newest.
        if (utc as f64) > gauge.get() {
            gauge.set(utc as f64);
        }
    }

    /// Counts a NodeTask entering `phase` (Pending, Running, Succeeded, Failed,
    /// PartiallyFailed).
    pub fn node_task_transition(&self, phase: &str) {
        self.node_task_transitions.with_label_values(&[phase]).inc();
    }

    /// Counts a status write.
    pub fn status_written(&self) {
        self.status_writes.inc();
    }

    /// Counts a standalone config reload.
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Counts a failed reconcile.
    pub fn reconcile_error(&self, kind: &str) {
        self.reconcile_errors.with_label_values(&[kind]).inc();
    }

    /// The Prometheus text exposition of every metric.
    /// The registry every metric of this process is in (layers of other crates add theirs).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        if encoder
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}
