//! The `network` endpoint in network namespaces built for the test: a veth pair with one end in
//! the daemon's namespace (10.77.<n>.2/24) and the other in a second namespace acting as the
//! gateway (10.77.<n>.1), a default route and a per-namespace resolv.conf. The host's own
//! network is never touched: the test talks to the daemon through a socket made inside its
//! namespace. The daemon runs under `ip netns exec` and must read all of it back exactly.
//! Needs root and iproute2. Namespaces and files are removed in all cases.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{connect_in, ip};

struct Netns {
    name: String,
    gateway: String,
    daemon: Option<Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting the namespaces deletes the veth pair with them.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.gateway])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

#[test]
fn network_reads_addresses_route_and_dns_of_its_namespace_exactly() {
    let n = std::process::id() % 200 + 20;
    let ns = Netns {
        name: format!("opsplane-nd-{}", std::process::id()),
        gateway: format!("opsplane-ndgw-{}", std::process::id()),
        daemon: None,
    };
    let inner = format!("ndi{}", std::process::id() % 100_000);
    let net = format!("10.77.{n}");
    let mut ns = ns;
    let outer = format!("ndo{}", std::process::id() % 100_000);
    ip(&["netns", "add", &ns.name]);
    ip(&["netns", "add", &ns.gateway]);
    ip(&[
        "-n",
        &ns.gateway,
        "link",
        "add",
        &outer,
        "type",
        "veth",
        "peer",
        "name",
        &inner,
    ]);
    ip(&["-n", &ns.gateway, "link", "set", &inner, "netns", &ns.name]);
    ip(&[
        "-n",
        &ns.gateway,
        "addr",
        "add",
        &format!("{net}.1/24"),
        "dev",
        &outer,
    ]);
    ip(&["-n", &ns.gateway, "link", "set", &outer, "up"]);
    ip(&[
        "-n",
        &ns.name,
        "addr",
        "add",
        &format!("{net}.2/24"),
        "dev",
        &inner,
    ]);
    ip(&["-n", &ns.name, "link", "set", &inner, "up"]);
    ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
    ip(&[
        "-n",
        &ns.name,
        "route",
        "add",
        "default",
        "via",
        &format!("{net}.1"),
    ]);
    std::fs::create_dir_all(format!("/etc/netns/{}", ns.name)).unwrap();
    std::fs::write(
        format!("/etc/netns/{}/resolv.conf", ns.name),
        format!("nameserver {net}.53\nnameserver {net}.54\n"),
    )
    .unwrap();
    let mac = String::from_utf8(
        Command::new("ip")
            .args(["-n", &ns.name, "-o", "link", "show", &inner])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split_whitespace()
    .skip_while(|w| *w != "link/ether")
    .nth(1)
    .unwrap()
    .to_owned();

    let addr = format!("{net}.2:6666");
    ns.daemon = Some(
        Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(env!("CARGO_BIN_EXE_opsplane-node-daemon"))
            .args([
                "--listen",
                &addr,
                "--nics",
                &inner,
                "--sample-interval",
                "200ms",
            ])
            .env("OPSPLANE_TOKEN", "t")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        if let Some(s) = connect_in(&ns.name, &addr) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "daemon in the namespace did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /api/v1/monitor/network HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["code"], 0, "{v}");
    let data = v["data"].as_object().unwrap();
    assert_eq!(data.len(), 2, "only the NIC and utc: {v}");
    let nic = &data[&inner];
    assert_eq!(nic["ip"], format!("{net}.2"));
    assert_eq!(nic["mask"], "255.255.255.0");
    assert_eq!(nic["gateway"], format!("{net}.1"));
    assert_eq!(nic["dns1"], format!("{net}.53"));
    assert_eq!(nic["dns2"], format!("{net}.54"));
    assert_eq!(nic["mac"], mac);
    assert_eq!(nic["stat"], true);
    assert_eq!(nic["speed"], 10000);
}
