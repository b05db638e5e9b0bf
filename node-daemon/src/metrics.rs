//! `/metrics` in the Prometheus text format: the daemon's own metrics (info, probe durations,
//! probe errors, cycle duration) through a `prometheus::Registry`, and the host data of the
//! latest snapshot rendered with Prometheus naming (base units in names, `_total` counters).

use std::fmt::Write as _;
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::probe::Sample;
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

fn family<'a, I>(out: &mut String, name: &str, kind: &str, help: &str, samples: I)
where
    I: IntoIterator<Item = (Vec<(&'a str, String)>, f64)>,
{
    let mut lines = String::new();
    for (labels, value) in samples {
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sample_line(&mut lines, name, &labels, value);
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    out.push_str(&lines);
}

fn host_metrics(out: &mut String, snapshot: &Snapshot) {
    let ok = |name: &str| match snapshot.sample(name) {
        Some(Ok(sample)) => Some(sample),
        _ => None,
    };
    let none = Vec::new;
    if let Some(Sample::Cpu(t)) = ok("cpu") {
        family(
            out,
            "opsplane_node_cpu_logical_cores",
            "gauge",
            "Online logical CPU cores",
            [(none(), f64::from(t.numbers))],
        );
        if let Some(u) = snapshot.cpu_utilization {
            family(
                out,
                "opsplane_node_cpu_utilization_ratio",
                "gauge",
                "Busy share of all CPUs over the last sampling interval (0-1)",
                [(none(), u / 100.0)],
            );
        }
    }
    if let Some(Sample::CpuVt(vt)) = ok("cpuvt") {
        family(
            out,
            "opsplane_node_cpu_virtualization_supported",
            "gauge",
            "1 when the CPU has VT-x or AMD-V",
            [(none(), f64::from(u8::from(vt.cpuvt)))],
        );
    }
    if let Some(Sample::Memory(m)) = ok("memory") {
        family(
            out,
            "opsplane_node_memory_total_bytes",
            "gauge",
            "Memory size",
            [(none(), m.total as f64)],
        );
        family(
            out,
            "opsplane_node_memory_available_bytes",
            "gauge",
            "Memory available for new work (MemAvailable)",
            [(none(), m.available as f64)],
        );
        family(
            out,
            "opsplane_node_memory_utilization_ratio",
            "gauge",
            "Used share of memory (0-1)",
            [(none(), m.utilization() / 100.0)],
        );
    }
    if let Some(Sample::Disk(disks)) = ok("disk") {
        let label = |mount: &String, d: &crate::probe::disk::MountUsage| {
            vec![
                ("mountpoint", mount.clone()),
                ("type", d.disk_type.to_string()),
            ]
        };
        family(
            out,
            "opsplane_node_filesystem_size_bytes",
            "gauge",
            "Filesystem size",
            disks.iter().map(|(m, d)| (label(m, d), d.total as f64)),
        );
        family(
            out,
            "opsplane_node_filesystem_used_bytes",
            "gauge",
            "Filesystem bytes used",
            disks.iter().map(|(m, d)| (label(m, d), d.used as f64)),
        );
        family(
            out,
            "opsplane_node_filesystem_avail_bytes",
            "gauge",
            "Filesystem bytes available to unprivileged users",
            disks.iter().map(|(m, d)| (label(m, d), d.free as f64)),
        );
    }
    if let Some(Sample::DiskIo(io)) = ok("diskio") {
        family(
            out,
            "opsplane_node_disk_read_bytes_total",
            "counter",
            "Bytes read from the block device",
            io.iter()
                .map(|(d, c)| (vec![("device", d.clone())], c.read_bytes as f64)),
        );
        family(
            out,
            "opsplane_node_disk_written_bytes_total",
            "counter",
            "Bytes written to the block device",
            io.iter()
                .map(|(d, c)| (vec![("device", d.clone())], c.write_bytes as f64)),
        );
    }
    if let Some(Sample::NetworkIo(io)) = ok("networkio") {
        family(
            out,
            "opsplane_node_network_receive_bytes_total",
            "counter",
            "Bytes received by the interface",
            io.iter()
                .map(|(d, c)| (vec![("device", d.clone())], c.bytes_recv as f64)),
        );
        family(
            out,
            "opsplane_node_network_transmit_bytes_total",
            "counter",
            "Bytes sent by the interface",
            io.iter()
                .map(|(d, c)| (vec![("device", d.clone())], c.bytes_send as f64)),
        );
    }
    if let Some(Sample::Network(nics)) = ok("network") {
        family(
            out,
            "opsplane_node_network_up",
            "gauge",
            "1 when the physical NIC has carrier",
            nics.iter()
                .map(|(d, n)| (vec![("device", d.clone())], f64::from(u8::from(n.stat)))),
        );
        family(
            out,
            "opsplane_node_network_speed_bytes",
            "gauge",
            "Link speed of the physical NIC in bytes per second",
            nics.iter()
                .map(|(d, n)| (vec![("device", d.clone())], n.speed as f64 * 125_000.0)),
        );
        family(
            out,
            "opsplane_node_network_info",
            "gauge",
            "Addresses of the physical NIC",
            nics.iter().map(|(d, n)| {
                (
                    vec![
                        ("device", d.clone()),
                        ("address", n.mac.clone()),
                        ("ip", n.ip.clone()),
                        ("gateway", n.gateway.clone()),
                    ],
                    1.0,
                )
            }),
        );
    }
    if let Some(Sample::Vm(vm)) = ok("vm") {
        family(
            out,
            "opsplane_node_vms_running",
            "gauge",
            "Running QEMU/KVM virtual machines",
            [(none(), vm.numbers as f64)],
        );
    }
    if let Some(Sample::Service(services)) = ok("service") {
        family(
            out,
            "opsplane_node_service_running",
            "gauge",
            "1 when the configured service is running",
            services.iter().map(|(s, st)| {
                (
                    vec![("service", s.clone()), ("state", st.clone())],
                    f64::from(u8::from(st == "running")),
                )
            }),
        );
    }
    if let Some(Sample::Hardware(hw)) = ok("hardware") {
        let kinds = [
            ("cpu", &hw.cpu),
            ("disk", &hw.disk),
            ("gfxcard", &hw.gfxcard),
            ("memory", &hw.memory),
        ];
        family(
            out,
            "opsplane_node_hardware_devices",
            "gauge",
            "Hardware inventory: devices per kind and model",
            kinds.iter().flat_map(|(kind, inv)| {
                inv.iter().map(move |(model, n)| {
                    (
                        vec![("kind", (*kind).to_owned()), ("model", model.clone())],
                        *n as f64,
                    )
                })
            }),
        );
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
