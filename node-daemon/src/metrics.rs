//! `/metrics` in the Prometheus text format: the daemon's own metrics (info, probe durations,
//! probe errors, cycle duration) through a `prometheus::Registry`, and the host data of the
//! latest snapshot, each probe's reading writing its own families through [`Exposition`]
//! with Prometheus naming (base units in names, `_total` counters).

use std::fmt::Write as _;
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::sampler::Snapshot;

/// Metrics about the probes themselves.
pub struct ProbeMetrics {
    duration: GaugeVec,
    errors: IntCounterVec,
    success: IntGaugeVec,
    cycle: Histogram,
}

impl ProbeMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let duration = GaugeVec::new(
            Opts::new(
                "opsplane_node_probe_duration_seconds",
                "How long the probe took in the last sampling cycle",
            ),
            &["probe"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "opsplane_node_probe_errors_total",
                "Sampling cycles in which the probe failed",
            ),
            &["probe"],
        )?;
        let success = IntGaugeVec::new(
            Opts::new(
                "opsplane_node_probe_success",
                "1 when the probe succeeded in the last cycle",
            ),
            &["probe"],
        )?;
        let cycle = Histogram::with_opts(
            HistogramOpts::new(
                "opsplane_node_sample_cycle_duration_seconds",
                "Duration of a full sampling cycle (all probes)",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(success.clone()))?;
        registry.register(Box::new(cycle.clone()))?;
        Ok(Self {
            duration,
            errors,
            success,
            cycle,
        })
    }

    /// Records one probe run.
    pub fn observe(&self, probe: &str, took: Duration, ok: bool) {
        self.duration
            .with_label_values(&[probe])
            .set(took.as_secs_f64());
        self.success.with_label_values(&[probe]).set(i64::from(ok));
        let errors = self.errors.with_label_values(&[probe]);
        if !ok {
            errors.inc();
        }
    }

    /// Records one full cycle.
    pub fn observe_cycle(&self, took: Duration) {
        self.cycle.observe(took.as_secs_f64());
    }
}

/// The `opsplane_node_daemon_info` gauge.
pub fn info(registry: &Registry, node: &str) -> Result<(), prometheus::Error> {
    let info = IntGauge::with_opts(
        Opts::new(
            "opsplane_node_daemon_info",
            "Build and node of this node-daemon",
        )
        .const_label("version", env!("CARGO_PKG_VERSION"))
        .const_label("node", node),
    )?;
    info.set(1);
    registry.register(Box::new(info))
}

/// The registry's metrics followed by the host metrics of `snapshot`.
pub fn render(registry: &Registry, snapshot: Option<&Snapshot>) -> String {
    let mut buffer = Vec::new();
    let mut text = match TextEncoder::new().encode(&registry.gather(), &mut buffer) {
        Ok(()) => String::from_utf8(buffer).unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode metrics");
            String::new()
        }
    };
    if let Some(snapshot) = snapshot {
        host_metrics(&mut text, snapshot);
    }
    text
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn sample_line(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// The labels of one sample: `(name, value)` pairs.
pub type Labels<'a> = Vec<(&'a str, String)>;

/// Host metric families being written in the Prometheus text format; each probe's reading
/// writes its own ([`crate::probe::Reading::write_metrics`]).
pub struct Exposition<'o> {
    out: &'o mut String,
}

impl<'o> Exposition<'o> {
    /// Writes families at the end of `out`.
    pub fn new(out: &'o mut String) -> Self {
        Self { out }
    }

    /// A gauge family; nothing when `samples` is empty.
    pub fn gauge<'a, I>(&mut self, name: &str, help: &str, samples: I)
    where
        I: IntoIterator<Item = (Labels<'a>, f64)>,
    {
        self.family(name, "gauge", help, samples);
    }

    /// A counter family (`name` ends in `_total`); nothing when `samples` is empty.
    pub fn counter<'a, I>(&mut self, name: &str, help: &str, samples: I)
    where
        I: IntoIterator<Item = (Labels<'a>, f64)>,
    {
        self.family(name, "counter", help, samples);
    }

    fn family<'a, I>(&mut self, name: &str, kind: &str, help: &str, samples: I)
    where
        I: IntoIterator<Item = (Labels<'a>, f64)>,
    {
        let mut lines = String::new();
        for (labels, value) in samples {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            sample_line(&mut lines, name, &labels, value);
        }
        if lines.is_empty() {
            return;
        }
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self.out.push_str(&lines);
    }
}

/// Every successful reading of `snapshot` writes its families, in probe order.
fn host_metrics(out: &mut String, snapshot: &Snapshot) {
    let mut exposition = Exposition::new(out);
    for sample in snapshot.samples.values().filter_map(|r| r.as_ref().ok()) {
        sample.write_metrics(snapshot, &mut exposition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample_line(&mut out, "m", &[("model", "a\"b\\c\nd")], 1.0);
        assert_eq!(out, "m{model=\"a\\\"b\\\\c\\nd\"} 1\n");
    }
}
