//! Golden tests: the probes read the fixture host trees under `tests/fixtures/<name>/host`
//! (a KVM host with several disks, NICs and QEMU processes; a minimal VM), two sampling
//! cycles 2 s apart (`later/` replaces counters before the second), and every seed 002 §二
//! endpoint's `data` must equal `golden/<endpoint>.json`. `UPDATE_GOLDEN=1` rewrites the
//! golden files (review the diff).

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use opsplane_node_daemon::host::{FsUsage, HostCalls, HostRoot, Ipv4Assignment};
use opsplane_node_daemon::monitor::{self, Endpoint, Limits};
use opsplane_node_daemon::probe::{self, ProbeSettings};
use opsplane_node_daemon::sampler::{Sampler, Snapshot};
use serde_json::{Value, json};

/// The fixture's non-file facts.
#[derive(Debug)]
struct FixtureCalls {
    root: PathBuf,
    usage: BTreeMap<&'static str, FsUsage>,
    addresses: BTreeMap<String, Ipv4Assignment>,
}

impl HostCalls for FixtureCalls {
    fn fs_usage(&self, path: &Path) -> io::Result<FsUsage> {
        let relative = path.strip_prefix(&self.root).unwrap().display().to_string();
        let mount = format!("/{}", relative.trim_end_matches('/'));
        self.usage
            .get(mount.as_str())
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, mount))
    }
    fn ipv4_addresses(&self) -> io::Result<BTreeMap<String, Ipv4Assignment>> {
        Ok(self.addresses.clone())
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            let _ = std::fs::remove_file(&target);
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn usage(total: u64, free: u64, available: u64) -> FsUsage {
    FsUsage {
        total,
        free,
        available,
    }
}

fn assignment(ip: [u8; 4], mask: [u8; 4]) -> Ipv4Assignment {
    Ipv4Assignment {
        address: Ipv4Addr::from(ip),
        netmask: Ipv4Addr::from(mask),
    }
}

/// A sampler over a copy of fixture `name` after two cycles 2 s apart, and the second snapshot.
fn sample_twice(
    name: &str,
    calls: impl FnOnce(PathBuf) -> FixtureCalls,
    services: &[&str],
) -> (tempfile::TempDir, Sampler, Arc<Snapshot>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("host");
    std::fs::create_dir_all(&root).unwrap();
    copy_tree(&fixture(name).join("host"), &root);
    let systemctl = root.join("usr/bin/systemctl");
    let host = HostRoot::with_calls(&root, Arc::new(calls(root.clone())));
    let settings = ProbeSettings {
        services: services.iter().map(|s| (*s).to_owned()).collect(),
        systemctl: vec![systemctl.display().to_string()],
        nics: None,
        service_interval: Duration::from_secs(10),
    };
    let sampler = Sampler::new(host, probe::registry(&settings), None);
    sampler.cycle_at(100.0, 1_576_751_518);
    copy_tree(&fixture(name).join("later"), &root);
    let snapshot = sampler.cycle_at(102.0, 1_576_751_520);
    (tmp, sampler, snapshot)
}

/// Samples the fixture twice and renders every endpoint.
fn render_all(name: &str, calls: impl FnOnce(PathBuf) -> FixtureCalls, services: &[&str]) {
    let (_tmp, sampler, snapshot) = sample_twice(name, calls, services);

    let mut rendered = BTreeMap::new();
    for endpoint in monitor::ENDPOINTS {
        let data = match endpoint.parse().unwrap() {
            Endpoint::PortStatus => monitor::port_status(
                &sampler,
                &monitor::parse_ports(&json!({"ports": "5900,5901,5902,22"})).unwrap(),
                Limits { port_threshold: 4 },
            ),
            Endpoint::ResourceStatis => {
                monitor::resource_statis(&sampler, &snapshot, Duration::from_secs(15))
            }
            Endpoint::Probe(id) => monitor::probe_data(id, &snapshot),
        };
        let data = data.unwrap_or_else(|e| panic!("{name}/{endpoint}: {e}"));
        rendered.insert(*endpoint, data);
    }

    let golden_dir = fixture(name).join("golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (endpoint, data) in rendered {
        let path = golden_dir.join(format!("{endpoint}.json"));
        let pretty = serde_json::to_string_pretty(&data).unwrap() + "\n";
        if update {
            std::fs::create_dir_all(&golden_dir).unwrap();
            std::fs::write(&path, &pretty).unwrap();
            continue;
        }
        let golden: Value = serde_json::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap();
        assert_eq!(
            data,
            golden,
            "{name}/{endpoint} differs from {}:\n{pretty}",
            path.display()
        );
    }
}

/// The KVM host fixture's non-file facts.
fn kvm_host(root: PathBuf) -> FixtureCalls {
    FixtureCalls {
        root,
        usage: [
            ("/", usage(53_660_876_800, 34_125_987_840, 34_125_987_840)),
            ("/boot", usage(1_063_256_064, 816_463_872, 816_463_872)),
            (
                "/var/lib/libvirt/images",
                usage(1_920_383_410_176, 1_500_000_000_000, 1_500_000_000_000),
            ),
            // ext4 keeps 5 % for root: free > available
            (
                "/data disk",
                usage(960_197_124_096, 900_000_000_000, 851_990_265_856),
            ),
        ]
        .into(),
        addresses: [
            ("lo".to_owned(), assignment([127, 0, 0, 1], [255, 0, 0, 0])),
            (
                "br0".to_owned(),
                assignment([172, 16, 1, 33], [255, 255, 255, 0]),
            ),
            (
                "virbr0".to_owned(),
                assignment([192, 168, 122, 1], [255, 255, 255, 0]),
            ),
        ]
        .into(),
    }
}

/// The services the KVM host fixture is asked about.
const KVM_SERVICES: &[&str] = &["libvirtd", "sshd", "httpd", "yzy-monitor"];

#[test]
fn kvm_host_fixture_answers_every_endpoint_like_the_golden_files() {
    render_all("kvm-host", kvm_host, KVM_SERVICES);
}

#[test]
fn minimal_vm_fixture_answers_every_endpoint_like_the_golden_files() {
    render_all(
        "minimal-vm",
        |root| FixtureCalls {
            root,
            usage: [("/", usage(21_003_583_488, 15_000_000_000, 13_925_109_760))].into(),
            addresses: [(
                "eth0".to_owned(),
                assignment([10, 0, 2, 15], [255, 255, 255, 0]),
            )]
            .into(),
        },
        &[],
    );
}

#[test]
fn an_unreadable_host_fails_each_endpoint_with_its_seed_code() {
    let empty = tempfile::tempdir().unwrap();
    let host = HostRoot::with_calls(
        empty.path(),
        Arc::new(FixtureCalls {
            root: empty.path().to_owned(),
            usage: BTreeMap::new(),
            addresses: BTreeMap::new(),
        }),
    );
    let settings = ProbeSettings {
        services: vec!["libvirtd".into()],
        systemctl: vec![empty.path().join("no-systemctl").display().to_string()],
        nics: None,
        service_interval: Duration::from_secs(10),
    };
    let sampler = Sampler::new(host, probe::registry(&settings), None);
    let snapshot = sampler.cycle_at(0.0, 1);
    let expected = [
        ("cpu", 40001),
        ("cpuvt", 40001),
        ("memory", 40101),
        ("disk", 40201),
        ("diskio", 40201),
        ("network", 40301),
        ("networkio", 40301),
        ("vm", 40502),
        ("hardware", 40401),
        ("service", 40501),
    ];
    for (endpoint, code) in expected {
        let err = monitor::probe_data(endpoint.parse().unwrap(), &snapshot).unwrap_err();
        assert_eq!(err.code(), code, "{endpoint}: {err}");
    }
    let err = monitor::port_status(&sampler, &[5900], Limits { port_threshold: 4 }).unwrap_err();
    assert_eq!(err.code(), 40301, "{err}");
    // one cycle gives no interval yet; the next cycle has no CPU reading either
    let err = monitor::resource_statis(&sampler, &snapshot, Duration::from_secs(15)).unwrap_err();
    assert_eq!(err.code(), 99999, "{err}");
    let snapshot = sampler.cycle_at(1.0, 2);
    let err = monitor::resource_statis(&sampler, &snapshot, Duration::from_secs(15)).unwrap_err();
    assert_eq!(err.code(), 40001, "{err}");
}

/// `text`'s metric families (a `# HELP` line, its `# TYPE` line and its samples), in order
/// of name: Prometheus gives the order of families no meaning.
fn families(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || out.is_empty() {
            out.push(String::new());
        }
        if let Some(family) = out.last_mut() {
            family.push_str(line);
            family.push('\n');
        }
    }
    out.sort();
    out
}

/// The KVM host's `/metrics` host families and its two seed 002 §四 report bodies, byte for
/// byte as sent, must equal `golden/metrics.prom` and `golden/report-{resource,service}.json`.
#[test]
fn kvm_host_fixture_metrics_and_reports_match_the_golden_files() {
    use opsplane_node_daemon::reporter::{Reporter, ReporterConfig, TimerState};
    let (_tmp, _sampler, snapshot) = sample_twice("kvm-host", kvm_host, KVM_SERVICES);
    let metrics =
        opsplane_node_daemon::metrics::render(&prometheus::Registry::new(), Some(&snapshot));
    let state = TimerState {
        addr: "http://192.0.2.1:8080/".into(),
        node_uuid: "123142342342342342343".into(),
        paused: false,
    };
    let reporter = Reporter::new(
        ReporterConfig {
            initial: state.clone(),
            interval: Duration::from_secs(30),
            queue_limit: 10,
            state_file: None,
            token: None,
            hostname: "zhouli33".into(),
            ip: "172.16.1.33".into(),
        },
        &prometheus::Registry::new(),
    )
    .unwrap();
    let reports = reporter.reports(&snapshot, &state);
    assert_eq!(reports.len(), 2);
    let golden_dir = fixture("kvm-host").join("golden");
    let mut outputs = vec![("metrics.prom", metrics.clone())];
    for (kind, report) in ["resource", "service"].into_iter().zip(&reports) {
        outputs.push((
            if kind == "resource" {
                "report-resource.json"
            } else {
                "report-service.json"
            },
            serde_json::to_string(report).unwrap() + "\n",
        ));
    }
    for (file, text) in outputs {
        let path = golden_dir.join(file);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let golden =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if file == "metrics.prom" {
            assert_eq!(
                families(&text),
                families(&golden),
                "{file} differs:\n{text}"
            );
        } else {
            assert_eq!(text, golden, "{file} differs");
        }
    }
}

/// The reports the daemon builds from the KVM host, sent as JSON, read back by the operator's
/// parser (`NodeReport::from_slice`) as the same typed report, every section present.
#[test]
fn kvm_host_reports_read_back_as_the_operator_reads_them() {
    use opsplane_node_daemon::reporter::{Reporter, ReporterConfig, TimerState};
    use opsplane_resources::node_report::{NodeReport, ReportBody};
    let (_tmp, _sampler, snapshot) = sample_twice("kvm-host", kvm_host, KVM_SERVICES);
    let state = TimerState {
        addr: "http://192.0.2.1:8080/".into(),
        node_uuid: "uuid-1".into(),
        paused: false,
    };
    let reporter = Reporter::new(
        ReporterConfig {
            initial: state.clone(),
            interval: Duration::from_secs(30),
            queue_limit: 10,
            state_file: None,
            token: None,
            hostname: "kvm-1".into(),
            ip: "192.0.2.10".into(),
        },
        &prometheus::Registry::new(),
    )
    .unwrap();
    for report in reporter.reports(&snapshot, &state) {
        let wire = serde_json::to_vec(&report).unwrap();
        let read = NodeReport::from_slice(&wire).unwrap();
        assert_eq!(read, report);
        assert_eq!((read.hostname.as_str(), read.utc), ("kvm-1", 1_576_751_520));
        match read.body {
            ReportBody::Resource(data) => {
                assert!(data.cpu.is_some() && data.memory.is_some());
                assert_eq!(data.disk.map(|d| d.len()), Some(4));
                assert!(data.diskio.is_some_and(|d| !d.is_empty()));
                assert!(data.networkio.is_some_and(|n| n.contains_key("lo")));
                assert_eq!(data.vm, None, "the daemon sends no vm section");
            }
            ReportBody::Service(states) => assert_eq!(states.len(), KVM_SERVICES.len()),
        }
    }
}
