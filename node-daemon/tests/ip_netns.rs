//! The IP tasks (seed 002 §二.12–15) for real, inside a network namespace the test creates
//! with a veth NIC named `eth0` (its peer in the same namespace) (10.78.<n>.2/24). The daemon runs under `ip netns exec`, so its
//! netlink socket changes only that namespace; the test reads the result back with
//! `ip -j -n <ns> addr` and reads the ifcfg files. Covers add/update/exchange/delete, the seed
//! codes of bad requests with the addresses unchanged, a half-way failure rolled back (the
//! config file cannot be written after the addresses changed), and the configurations being
//! re-applied when the daemon starts. The host's network is never touched. Needs root and
//! iproute2.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::{audit_lines, connect_in, ip, post_on};

const TOKEN: &str = "ip-token";
const ADDR: &str = "127.0.0.1:6666";

static NEXT: AtomicU32 = AtomicU32::new(0);

struct Namespace {
    name: String,
    net: String,
    dir: tempfile::TempDir,
    daemon: Option<std::process::Child>,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.stop();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

impl Namespace {
    fn new() -> Namespace {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("opsplane-ip-{}-{n}", std::process::id());
        let net = format!("10.78.{}", (std::process::id() % 100) * 2 + n + 20);
        let ns = Namespace {
            name,
            net,
            dir: tempfile::tempdir().unwrap(),
            daemon: None,
        };
        ip(&["netns", "add", &ns.name]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ip(&[
            "-n", &ns.name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ]);
        ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{}.2/24", ns.net),
            "dev",
            "eth0",
        ]);
        ns
    }

    fn start(&mut self) {
        let cfg = self.dir.path().join("ifcfg");
        let state = self.dir.path().join("state");
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        self.daemon = Some(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .arg(env!("CARGO_BIN_EXE_opsplane-node-daemon"))
                .args(["--listen", ADDR, "--sample-interval", "200ms"])
                .arg("--ip-config-dir")
                .arg(&cfg)
                .arg("--state-dir")
                .arg(&state)
                .env("OPSPLANE_TOKEN", TOKEN)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while connect_in(&self.name, ADDR).is_none() {
            assert!(
                Instant::now() < deadline,
                "the daemon in {} did not listen",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn post(&self, endpoint: &str, body: Value) -> (u16, Value) {
        let stream = connect_in(&self.name, ADDR).expect("connect inside the namespace");
        post_on(stream, endpoint, TOKEN, &body.to_string())
    }

    /// `(address/prefix, label)` of eth0's IPv4 addresses, in the kernel's order.
    fn addrs(&self) -> Vec<(String, String)> {
        let out = ip(&["-j", "-n", &self.name, "-4", "addr", "show", "dev", "eth0"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]),
                    a["label"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    fn a(&self, host: u8, label: &str) -> (String, String) {
        (format!("{}.{host}/24", self.net), label.to_owned())
    }

    fn ip(&self, host: u8) -> String {
        format!("{}.{host}", self.net)
    }

    fn cfg(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("ifcfg").join(format!("ifcfg-{name}"))).ok()
    }

    fn body(&self, name: &str, host: u8) -> Value {
        json!({"name": name, "ip": self.ip(host), "netmask": "255.255.255.0",
               "gateway": self.ip(1), "dns1": "8.8.8.8", "dns2": "114.114.114.114"})
    }
}

#[test]
fn ip_tasks_change_addresses_inside_the_namespace_and_persist_ifcfg_files() {
    let mut ns = Namespace::new();
    ns.start();

    // add_ip: the seed's body, answered with the name; the address carries the label.
    let (status, v) = ns.post("add_ip", ns.body("eth0:0", 3));
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
    assert_eq!(v["data"], json!({"name": "eth0:0"}));
    assert_eq!(ns.addrs(), [ns.a(2, "eth0"), ns.a(3, "eth0:0")]);
    let file = ns.cfg("eth0:0").expect("ifcfg-eth0:0 written");
    for line in [
        "DEVICE=eth0:0",
        &format!("IPADDR={}", ns.ip(3)),
        "NETMASK=255.255.255.0",
        &format!("GATEWAY={}", ns.ip(1)),
        "DNS1=8.8.8.8",
        "DNS2=114.114.114.114",
    ] {
        assert!(
            file.lines().any(|l| l == line),
            "{line} missing in:\n{file}"
        );
    }

    // Bad requests: the right code, and nothing changes.
    let before = ns.addrs();
    let bad: Vec<(&str, Value, u16, i64, &str)> = vec![
        (
            "add_ip",
            ns.body("eth0:0", 4),
            400,
            30006,
            "exists; use update_ip",
        ),
        (
            "add_ip",
            ns.body("eth0:1", 3),
            400,
            30006,
            "already on eth0",
        ),
        (
            "add_ip",
            ns.body("eth9:0", 4),
            404,
            30003,
            "no network device \"eth9\"",
        ),
        (
            "add_ip",
            ns.body("eth0:0123456789ab", 4),
            400,
            30005,
            "IFNAMSIZ",
        ),
        (
            "add_ip",
            json!({"name": "eth0:1", "ip": "10.78.1.300", "netmask": "255.255.255.0"}),
            400,
            30006,
            "not an IPv4 address",
        ),
        (
            "add_ip",
            json!({"name": "eth0:1", "ip": ns.ip(4), "netmask": "255.255.0.255"}),
            400,
            30006,
            "not a netmask",
        ),
        (
            "add_ip",
            json!({"name": "eth0:1", "ip": ns.ip(4), "netmask": "255.255.255.0", "gateway": "192.0.2.1"}),
            400,
            30006,
            "gateway",
        ),
        ("update_ip", ns.body("eth0:5", 4), 400, 30006, "use add_ip"),
        (
            "delete_ip",
            json!({"name": "eth0:0", "ip": ns.ip(9)}),
            400,
            30006,
            "nothing deleted",
        ),
        (
            "delete_ip",
            json!({"name": "eth0:7"}),
            400,
            30006,
            "no IP configuration",
        ),
        (
            "exchange_ip",
            json!({"name1": "eth0", "name2": "eth0:7"}),
            400,
            30006,
            "no IP configuration",
        ),
    ];
    for (endpoint, body, status, code, why) in bad {
        let (got, v) = ns.post(endpoint, body.clone());
        assert_eq!(
            (got, v["code"].as_i64()),
            (status, Some(code)),
            "{endpoint} {body}: {v}"
        );
        assert!(
            v["msg"].as_str().unwrap().contains(why),
            "{endpoint} {body}: {v}"
        );
        assert_eq!(
            ns.addrs(),
            before,
            "{endpoint} {body} changed the addresses"
        );
    }
    assert!(ns.cfg("eth0:1").is_none() && ns.cfg("eth9:0").is_none());

    // update_ip moves the label to a new address.
    let (_, v) = ns.post("update_ip", ns.body("eth0:0", 4));
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(ns.addrs(), [ns.a(2, "eth0"), ns.a(4, "eth0:0")]);
    assert!(
        ns.cfg("eth0:0")
            .unwrap()
            .contains(&format!("IPADDR={}\n", ns.ip(4)))
    );

    // exchange_ip swaps the NIC's own address and the labelled one (seed example's answer).
    let (_, v) = ns.post("exchange_ip", json!({"name1": "eth0", "name2": "eth0:0"}));
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(v["data"], json!({"name1": "eth0:0", "name2": "eth0"}));
    assert_eq!(ns.addrs(), [ns.a(4, "eth0"), ns.a(2, "eth0:0")]);
    assert!(
        ns.cfg("eth0")
            .unwrap()
            .contains(&format!("IPADDR={}\n", ns.ip(4)))
    );
    let swapped = ns.cfg("eth0:0").unwrap();
    assert!(
        swapped.contains(&format!("IPADDR={}\n", ns.ip(2))),
        "{swapped}"
    );

    // The configurations are re-applied at start: a lost labelled address comes back.
    ns.stop();
    ip(&[
        "-n",
        &ns.name,
        "addr",
        "del",
        &format!("{}/24", ns.ip(2)),
        "dev",
        "eth0",
    ]);
    assert_eq!(ns.addrs(), [ns.a(4, "eth0")]);
    ns.start();
    assert_eq!(ns.addrs(), [ns.a(4, "eth0"), ns.a(2, "eth0:0")]);

    // delete_ip removes the address and its file; the NIC's own address stays.
    let (_, v) = ns.post("delete_ip", json!({"name": "eth0:0", "ip": ns.ip(2)}));
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(ns.addrs(), [ns.a(4, "eth0")]);
    assert!(ns.cfg("eth0:0").is_none());

    let audit = audit_lines(&ns.dir.path().join("state/task-audit.log"));
    let commands: Vec<&str> = audit
        .iter()
        .filter(|l| l["result"]["code"] == 0)
        .map(|l| l["what"]["command"].as_str().unwrap())
        .collect();
    assert_eq!(
        commands,
        ["add_ip", "update_ip", "exchange_ip", "delete_ip"]
    );
}

#[test]
fn a_failure_half_way_rolls_back_addresses_and_files() {
    let mut ns = Namespace::new();
    ns.start();
    let (_, v) = ns.post("add_ip", ns.body("eth0:0", 3));
    assert_eq!(v["code"], 0, "{v}");
    let before = ns.addrs();
    let file_before = ns.cfg("eth0:0").unwrap();

    // The addresses change, then the file cannot be written (a non-empty directory sits
    // where its temporary file goes): everything must be put back.
    let blocker = ns.dir.path().join("ifcfg/.ifcfg-eth0:0.tmp");
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    let (status, v) = ns.post("update_ip", ns.body("eth0:0", 9));
    assert_eq!((status, v["code"].as_i64()), (500, Some(99999)), "{v}");
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains("every change was rolled back"),
        "{v}"
    );
    assert_eq!(ns.addrs(), before);
    assert_eq!(ns.cfg("eth0:0").unwrap(), file_before);

    // exchange: both addresses are swapped and ifcfg-eth0 is written before ifcfg-eth0:0
    // fails; the swap is undone and ifcfg-eth0 (new) removed again.
    let (status, v) = ns.post("exchange_ip", json!({"name1": "eth0", "name2": "eth0:0"}));
    assert_eq!((status, v["code"].as_i64()), (500, Some(99999)), "{v}");
    assert_eq!(ns.addrs(), before, "the swap was not undone");
    assert!(ns.cfg("eth0").is_none(), "ifcfg-eth0 left behind");
    assert_eq!(ns.cfg("eth0:0").unwrap(), file_before);

    // With the obstacle gone the same request works: the rollback left a usable state.
    std::fs::remove_dir_all(&blocker).unwrap();
    let (_, v) = ns.post("exchange_ip", json!({"name1": "eth0", "name2": "eth0:0"}));
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(ns.addrs(), [ns.a(3, "eth0"), ns.a(2, "eth0:0")]);
}
