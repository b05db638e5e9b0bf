//! NodeTasks in a cluster, end to end on the real kube-apiserver harness: one operator and three
//! node-daemons (node-a, node-b, node-c), each daemon in its own network namespace with its own
//! host root (so a file path or an address exists per node), Node objects with labels created by
//! the test. Power and systemctl are recording scripts; IP changes happen only inside the test's
//! namespaces; the host is never touched.
//!
//! The cases share the operator and daemons (two operators would both reconcile every NodeTask),
//! so they run in order inside one test; each is its own function named for its behaviour.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use opsplane_e2e::{Cluster, NetNs, Process, apply_crds, eventually, free_port, workspace_bin};
use serde_json::{Value, json};

const TOKEN: &str = "e2e-token-0123456789";
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn tasks(client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("opsplane.io", "v1alpha1", "NodeTask"),
            "nodetasks",
        ),
    )
}

fn ntask(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "opsplane.io/v1alpha1", "kind": "NodeTask",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("NodeTask object")
}

fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).expect("writing a script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One simulated node: its namespace, host root, state directory and daemon.
struct SimNode {
    name: &'static str,
    netns: NetNs,
    kubeconfig: PathBuf,
    root: PathBuf,
    state: PathBuf,
    dir: PathBuf,
    subnet: String,
    ip_config: bool,
    daemon: Option<Process>,
}

impl SimNode {
    fn new(cluster: &Cluster, base: &Path, name: &'static str, index: u32) -> SimNode {
        let netns = NetNs::create(
            &format!("ont-{}-{}", std::process::id() % 100_000, name),
            &[],
        )
        .expect("network namespace");
        let ns = netns.name.clone();
        // A NIC of the node's own: eth0 (a veth whose peer stays in the same namespace).
        ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "peer0", "up"]);
        let subnet = format!("10.79.{}", 10 + index);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{subnet}.2/24"),
            "dev",
            "eth0",
        ]);
        let dir = base.join(name);
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("srv/data")).expect("host root");
        std::fs::create_dir_all(root.join("srv/keep")).expect("host root");
        for link in ["proc", "sys", "etc", "dev", "run"] {
            std::os::unix::fs::symlink(Path::new("/").join(link), root.join(link))
                .expect("host root link");
        }
        let kubeconfig = netns
            .kubeconfig_for(cluster)
            .expect("kubeconfig inside the namespace");
        SimNode {
            name,
            netns,
            kubeconfig,
            root,
            state: dir.join("state"),
            dir,
            subnet,
            ip_config: name == "node-b",
            daemon: None,
        }
    }

    fn start(&mut self, base: &Path) {
        let mut command = self
            .netns
            .command(&workspace_bin("opsplane-node-daemon").expect("node-daemon binary"));
        command
            .args(["--listen", "127.0.0.1:6666", "--sample-interval", "1s"])
            .arg("--host-root")
            .arg(&self.root)
            .arg("--state-dir")
            .arg(&self.state)
            .args(["--allow-disruptive", "--allow-delete-prefix", "/srv/data"])
            .arg("--power-command")
            .arg(base.join("power.sh"))
            .args(["--power-delay", "0s"])
            .arg("--systemctl")
            .arg(base.join("systemctl.sh"))
            .args(["--node-tasks", "on", "--time-zone", "UTC"])
            .env("NODE_NAME", self.name)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("OPSPLANE_TOKEN", TOKEN)
            .env("OPSPLANE_LOG", "info,kube=warn");
        if self.ip_config {
            command.arg("--ip-config-dir").arg(self.dir.join("ifcfg"));
        }
        self.daemon = Some(Process::spawn(self.name, command).expect("node-daemon starts"));
    }

    /// Like a power cut: SIGKILL, no goodbye.
    fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.signal(9);
            let _ = daemon.wait_exit(Duration::from_secs(10));
        }
    }

    /// `ip -o addr` of eth0 inside the node's namespace.
    fn addresses(&self) -> String {
        ip(&[
            "-n",
            &self.netns.name,
            "-o",
            "-4",
            "addr",
            "show",
            "dev",
            "eth0",
        ])
    }
}

struct Env {
    client: kube::Client,
    base: PathBuf,
    nodes: Vec<SimNode>,
    _operator: Process,
}

impl Env {
    fn node(&mut self, name: &str) -> &mut SimNode {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("a simulated node")
    }

    fn log(&self, file: &str) -> Vec<String> {
        std::fs::read_to_string(self.base.join(file))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

async fn setup() -> Env {
    let cluster = Cluster::shared();
    let client = cluster.client().await.expect("kube client");
    apply_crds(&client).await.expect("CRDs");
    let base = std::env::temp_dir().join(format!("opsplane-ntask-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("test directory");
    write_script(
        &base.join("power.sh"),
        &format!(
            "#!/bin/sh\necho \"$(date +%s.%N) $NODE_NAME $*\" >> {}/power.log\n",
            base.display()
        ),
    );
    // Records every call; a unit named `slow` takes 6 s to start (the restart-mid-task case).
    write_script(
        &base.join("systemctl.sh"),
        &format!(
            "#!/bin/sh\necho \"$(date +%s.%N) $NODE_NAME $*\" >> {}/systemctl.log\ncase \"$*\" in *slow*) sleep 6;; esac\nexit 0\n",
            base.display()
        ),
    );
    let nodes_api: Api<Node> = Api::all(client.clone());
    let labels = [
        ("node-a", "storage"),
        ("node-b", "kvm"),
        ("node-c", "storage"),
    ];
    for (name, role) in labels {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"role": role, "opsplane-e2e": "ntask"}}
        }))
        .expect("Node object");
        match nodes_api.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating Node {name}: {e}"),
        }
    }
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "e2e-ntask"}})).expect("namespace");
    let _ = ns_api.create(&PostParams::default(), &ns).await;
    let mut operator = Command::new(workspace_bin("opsplane-operator").expect("operator binary"));
    operator
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args([
            "--identity",
            "operator-ntask",
            "--lease-namespace",
            "e2e-ntask",
        ])
        .env("KUBECONFIG", &cluster.kubeconfig)
        // Its own embedded store: the default path is shared by every operator on the machine.
        .env("OPSPLANE_STORE_PATH", base.join("store.redb"))
        .env("OPSPLANE_TOKEN", TOKEN)
        .env("OPSPLANE_LOG", "info,kube=warn");
    let operator = Process::spawn("operator-ntask", operator).expect("operator starts");
    let mut nodes: Vec<SimNode> = NODES
        .iter()
        .enumerate()
        .map(|(i, n)| SimNode::new(cluster, &base, n, i as u32))
        .collect();
    for node in &mut nodes {
        std::fs::write(node.root.join("srv/data/old.log"), "old").expect("file");
        std::fs::write(node.root.join("srv/keep/keep.log"), "keep").expect("file");
        node.start(&base);
    }
    // Timings start from a running system: every daemon serving (its watcher is spawned before
    // the node API binds) and the operator leading.
    for node in &nodes {
        eventually(
            &format!("{} serving", node.name),
            Duration::from_secs(60),
            || async {
                node.netns
                    .get("127.0.0.1:6666", "/healthz")
                    .filter(|r| r.contains(" 200 "))
            },
        )
        .await
        .expect("node-daemon serving");
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "e2e-ntask");
    eventually("the operator to lead", Duration::from_secs(30), || async {
        let lease = leases.get_opt("opsplane-operator").await.ok().flatten()?;
        (lease.spec?.holder_identity.as_deref() == Some("operator-ntask")).then_some(())
    })
    .await
    .expect("operator leads");
    Env {
        client,
        base,
        nodes,
        _operator: operator,
    }
}

async fn status_of(api: &Api<DynamicObject>, name: &str) -> Option<Value> {
    api.get(name).await.ok().map(|o| o.data["status"].clone())
}

/// Creates the task and waits for a final phase; returns the status and the time from the
/// object's creation (the create call answered) to the final phase observed. The create call
/// itself is timed apart: the first NodeTask on a fresh API server takes it ~2 s (schema and
/// CEL warm-up), which is the API server's, not the rollout's.
async fn run_to_end(env: &Env, name: &str, spec: Value, limit: Duration) -> (Value, Duration) {
    let api = tasks(&env.client);
    let calling = Instant::now();
    api.create(&PostParams::default(), &ntask(name, spec))
        .await
        .unwrap_or_else(|e| panic!("creating NodeTask {name}: {e}"));
    let started = Instant::now();
    eprintln!(
        "e2e: created NodeTask {name} at {} ({:.3}s for the create call)",
        jiff::Timestamp::now(),
        (started - calling).as_secs_f64()
    );
    let finished = eventually(&format!("NodeTask {name} to finish"), limit, || async {
        let s = status_of(&api, name).await?;
        matches!(
            s["phase"].as_str(),
            Some("Succeeded" | "Failed" | "PartiallyFailed")
        )
        .then_some(s)
    })
    .await;
    match finished {
        Ok(status) => {
            eprintln!(
                "e2e: NodeTask {name} {} at {}",
                status["phase"],
                jiff::Timestamp::now()
            );
            (status, started.elapsed())
        }
        Err(e) => panic!("{e:#}; last status: {:?}", status_of(&api, name).await),
    }
}

fn node_entry<'a>(status: &'a Value, node: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == node))
        .unwrap_or_else(|| panic!("no status entry for {node} in {status}"))
}

fn planned(status: &Value) -> Vec<String> {
    status["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|e| e["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn a_safe_task_runs_on_all_three_nodes_once_with_phase_events(env: &Env) -> Duration {
    let (status, took) = run_to_end(
        env,
        "start-web",
        json!({"nodeNames": NODES, "handler": "ServiceHandler", "command": "start", "data": {"service": ["web"]}}),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(status["phase"], "Succeeded", "{status}");
    for node in NODES {
        let entry = node_entry(&status, node);
        assert_eq!(entry["phase"], "Succeeded", "{status}");
        assert_eq!(entry["code"], 0);
        assert_eq!(entry["msg"], "成功");
        assert!(entry["startedAt"].is_string() && entry["finishedAt"].is_string());
        let runs = env
            .log("systemctl.log")
            .iter()
            .filter(|l| l.contains(&format!(" {node} start -- web")))
            .count();
        assert_eq!(runs, 1, "{node} ran `systemctl start web` {runs} times");
    }
    // A Kubernetes Event on each phase transition.
    let events: Api<KubeEvent> = Api::all(env.client.clone());
    let reasons = eventually("phase events", Duration::from_secs(20), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let reasons: Vec<String> = list
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("start-web"))
            .filter_map(|e| e.reason.clone())
            .collect();
        (reasons.iter().any(|r| r == "Running") && reasons.iter().any(|r| r == "Succeeded"))
            .then_some(reasons)
    })
    .await
    .expect("Running and Succeeded events of start-web");
    eprintln!("e2e: events of start-web: {reasons:?}");
    took
}

async fn delete_file_runs_only_on_selected_nodes_and_only_inside_the_prefix(env: &Env) {
    let (status, _) = run_to_end(
        env,
        "delete-old-log",
        json!({"nodeSelector": {"matchLabels": {"role": "storage"}}, "handler": "FileHandler",
               "command": "delete_file", "data": {"file_name": "/srv/data/old.log"},
               "maxUnavailable": 3}),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(status["phase"], "Succeeded", "{status}");
    assert_eq!(planned(&status), ["node-a", "node-c"]);
    for node in &env.nodes {
        let exists = node.root.join("srv/data/old.log").exists();
        assert_eq!(
            exists,
            node.name == "node-b",
            "{}: old.log exists = {exists}",
            node.name
        );
    }
    let (status, _) = run_to_end(
        env,
        "delete-outside",
        json!({"nodeSelector": {"matchLabels": {"role": "storage"}}, "handler": "FileHandler",
               "command": "delete_file", "data": {"file_name": "/srv/data/../keep/keep.log"},
               "maxUnavailable": 3}),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(status["phase"], "Failed", "{status}");
    for node in ["node-a", "node-c"] {
        let entry = node_entry(&status, node);
        assert_eq!(entry["phase"], "Failed");
        assert_eq!(entry["code"], 30004);
        let msg = entry["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains("is not under an allowed prefix") && msg.contains("/srv/data"),
            "{msg}"
        );
    }
    for node in &env.nodes {
        assert!(
            node.root.join("srv/keep/keep.log").exists(),
            "{}",
            node.name
        );
    }
}

async fn a_command_not_allowed_by_configuration_fails_clearly_and_nothing_runs(env: &Env) {
    // node-a runs without --ip-config-dir: IP tasks are refused there.
    let before = env.nodes[0].addresses();
    let (status, _) = run_to_end(
        env,
        "add-ip-refused",
        json!({"nodeNames": ["node-a"], "handler": "NetworkHandler", "command": "add_ip",
               "data": {"name": "eth0:0", "ip": "10.79.10.34", "netmask": "255.255.255.0"}}),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(status["phase"], "Failed", "{status}");
    let entry = node_entry(&status, "node-a");
    assert_eq!(entry["code"], 30004);
    let msg = entry["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("refused by the node-daemon configuration") && msg.contains("--ip-config-dir"),
        "{msg}"
    );
    assert_eq!(
        env.nodes[0].addresses(),
        before,
        "node-a's addresses changed"
    );
    assert!(!env.nodes[0].addresses().contains("10.79.10.34"));
}

async fn ip_tasks_change_only_node_b(env: &Env) {
    let b = &env.nodes[1];
    let new_ip = format!("{}.34", b.subnet);
    let (status, _) = run_to_end(
        env,
        "add-ip-b",
        json!({"nodeNames": ["node-b"], "handler": "NetworkHandler", "command": "add_ip",
               "data": {"name": "eth0:0", "ip": new_ip, "netmask": "255.255.255.0"}}),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(status["phase"], "Succeeded", "{status}");
    let addresses = b.addresses();
    assert!(
        addresses
            .lines()
            .any(|l| l.contains(&format!("inet {new_ip}/24")) && l.contains("eth0:0")),
        "{addresses}"
    );
    for other in [&env.nodes[0], &env.nodes[2]] {
        assert!(!other.addresses().contains(&new_ip), "{}", other.name);
    }
    assert!(b.dir.join("ifcfg/ifcfg-eth0:0").exists());

    let (status, _) = run_to_end(
        env,
        "exchange-ip-b",
        json!({"nodeNames": ["node-b"], "handler": "NetworkHandler", "command": "exchange_ip",
               "data": {"name1": "eth0", "name2": "eth0:0"}}),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(status["phase"], "Succeeded", "{status}");
    let addresses = b.addresses();
    let old_ip = format!("{}.2", b.subnet);
    assert!(
        addresses
            .lines()
            .any(|l| l.contains(&format!("inet {old_ip}/24")) && l.contains("eth0:0")),
        "after exchange, eth0:0 holds the old address: {addresses}"
    );
    assert!(
        addresses
            .lines()
            .any(|l| l.contains(&format!("inet {new_ip}/24")) && !l.contains("eth0:0")),
        "after exchange, eth0 holds the new address: {addresses}"
    );

    let (status, _) = run_to_end(
        env,
        "delete-ip-b",
        json!({"nodeNames": ["node-b"], "handler": "NetworkHandler", "command": "delete_ip",
               "data": {"name": "eth0:0"}}),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(status["phase"], "Succeeded", "{status}");
    let addresses = b.addresses();
    assert!(!addresses.contains("eth0:0"), "{addresses}");
    assert!(
        !addresses.contains(&format!("inet {old_ip}/")),
        "{addresses}"
    );
    assert!(
        addresses.contains(&format!("inet {new_ip}/24")),
        "{addresses}"
    );
    for other in [&env.nodes[0], &env.nodes[2]] {
        assert!(!other.addresses().contains("eth0:0"), "{}", other.name);
    }
}

async fn a_daemon_restarted_mid_task_does_not_run_it_twice(env: &mut Env) {
    let api = tasks(&env.client);
    api.create(
        &PostParams::default(),
        &ntask(
            "start-slow",
            json!({"nodeNames": ["node-c"], "handler": "ServiceHandler", "command": "start", "data": {"service": ["slow"]}}),
        ),
    )
    .await
    .expect("creating start-slow");
    let ran = |env: &Env| {
        env.log("systemctl.log")
            .iter()
            .filter(|l| l.contains(" node-c start -- slow"))
            .count()
    };
    eventually(
        "node-c to start `slow`",
        Duration::from_secs(30),
        || async { (ran(env) == 1).then_some(()) },
    )
    .await
    .expect("start-slow runs on node-c");
    let base = env.base.clone();
    let node = env.node("node-c");
    node.kill();
    node.start(&base);
    let status = eventually("start-slow to finish", Duration::from_secs(60), || async {
        let s = status_of(&api, "start-slow").await?;
        matches!(s["phase"].as_str(), Some("Failed" | "Succeeded")).then_some(s)
    })
    .await
    .expect("start-slow finishes");
    assert_eq!(status["phase"], "Failed", "{status}");
    let msg = node_entry(&status, "node-c")["msg"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("does not run a task twice"), "{msg}");
    // Longer than the script's 6 s: a second run would have been recorded by now.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        ran(env),
        1,
        "`systemctl start slow` ran again after the restart"
    );
}

/// Rolling reboot: every time the recording power command runs on a node, the test cuts that
/// node's daemon (SIGKILL) and starts it again, as a reboot would.
async fn reboot_rolls_strictly_one_node_at_a_time(env: &mut Env) -> Duration {
    let api = tasks(&env.client);
    api.create(
        &PostParams::default(),
        &ntask(
            "rolling-reboot",
            json!({"nodeNames": NODES, "handler": "OsHandler", "command": "reboot"}),
        ),
    )
    .await
    .expect("creating rolling-reboot");
    let started = Instant::now();
    let mut rebooted: Vec<String> = Vec::new();
    let mut back_at: Vec<(String, jiff::Timestamp)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        assert!(Instant::now() < deadline, "rolling reboot did not finish");
        let lines: Vec<String> = env
            .log("power.log")
            .into_iter()
            .filter(|l| l.ends_with(" reboot"))
            .collect();
        for line in lines.iter().skip(rebooted.len()) {
            let node = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let base = env.base.clone();
            let sim = env.node(&node);
            sim.kill();
            tokio::time::sleep(Duration::from_millis(300)).await;
            sim.start(&base);
            back_at.push((node.clone(), jiff::Timestamp::now()));
            rebooted.push(line.clone());
        }
        if let Some(s) = status_of(&api, "rolling-reboot").await
            && matches!(
                s["phase"].as_str(),
                Some("Succeeded" | "Failed" | "PartiallyFailed")
            )
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = started.elapsed();
    assert_eq!(status["phase"], "Succeeded", "{status}");
    // Exactly one reboot per node, in plan order, each after the previous node came back.
    let times: Vec<(f64, String)> = rebooted
        .iter()
        .map(|l| {
            let mut parts = l.split_whitespace();
            let t: f64 = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0.0);
            (t, parts.next().unwrap_or_default().to_string())
        })
        .collect();
    let order: Vec<&str> = times.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(order, NODES, "one reboot per node, in order: {rebooted:?}");
    for i in 1..times.len() {
        let previous = &times[i - 1].1;
        let finished: jiff::Timestamp = node_entry(&status, previous)["finishedAt"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("finishedAt of the previous node");
        let finished = finished.as_nanosecond() as f64 / 1e9;
        let restarted = back_at[i - 1].1.as_nanosecond() as f64 / 1e9;
        eprintln!(
            "e2e: {} rebooted at {:.3}; {previous} restarted at {restarted:.3}, reported back at {finished:.3}",
            times[i].1, times[i].0
        );
        assert!(
            times[i].0 > restarted && times[i].0 > finished,
            "{} rebooted at {} before {previous} was back (restarted {restarted}, reported {finished})",
            times[i].1,
            times[i].0
        );
    }
    for node in NODES {
        let msg = node_entry(&status, node)["msg"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            msg.contains("reported back after OsHandler/reboot"),
            "{msg}"
        );
    }
    // No second reboot anywhere once the daemons are back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = env
        .log("power.log")
        .iter()
        .filter(|l| l.ends_with(" reboot"))
        .count();
    assert_eq!(total, 3, "reboots recorded: {:?}", env.log("power.log"));
    took
}

#[tokio::test(flavor = "multi_thread")]
async fn node_tasks_run_on_their_nodes_once_and_disruptive_ones_one_node_at_a_time() {
    let mut env = setup().await;
    let safe = a_safe_task_runs_on_all_three_nodes_once_with_phase_events(&env).await;
    delete_file_runs_only_on_selected_nodes_and_only_inside_the_prefix(&env).await;
    a_command_not_allowed_by_configuration_fails_clearly_and_nothing_runs(&env).await;
    ip_tasks_change_only_node_b(&env).await;
    a_daemon_restarted_mid_task_does_not_run_it_twice(&mut env).await;
    let rolling = reboot_rolls_strictly_one_node_at_a_time(&mut env).await;
    eprintln!(
        "e2e: NodeTask created → all nodes Succeeded: 3-node ServiceHandler start {:.2}s; rolling reboot of 3 nodes {:.2}s (each simulated reboot: SIGKILL, 300 ms, daemon start)",
        safe.as_secs_f64(),
        rolling.as_secs_f64()
    );
    for node in &mut env.nodes {
        node.kill();
    }
    let _ = std::fs::remove_dir_all(&env.base);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_node_task_is_rejected_at_create_by_the_crd_schema() {
    let client = Cluster::shared().client().await.expect("kube client");
    apply_crds(&client).await.expect("CRDs");
    let api = tasks(&client);
    for (name, spec, expected) in [
        (
            "bad-command",
            json!({"nodeNames": ["node-a"], "handler": "OsHandler", "command": "delete_file"}),
            "spec.command is not a command of spec.handler",
        ),
        (
            "bad-path",
            json!({"nodeNames": ["node-a"], "handler": "FileHandler", "command": "delete_file", "data": {"file_name": "relative/path"}}),
            "spec.data.file_name",
        ),
        (
            "no-targets",
            json!({"handler": "TimerHandler", "command": "pause"}),
            "a NodeTask needs targets",
        ),
        (
            "bad-unavailable",
            json!({"nodeNames": ["node-a"], "handler": "OsHandler", "command": "reboot", "maxUnavailable": 0}),
            "spec.maxUnavailable",
        ),
    ] {
        match api.create(&PostParams::default(), &ntask(name, spec)).await {
            Ok(_) => panic!("{name} was accepted"),
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 422, "{name}: {}", e.message);
                assert!(e.message.contains(expected), "{name}: {}", e.message);
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
}
