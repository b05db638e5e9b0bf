//! NodeTasks in a cluster, end to end on the real kube-apiserver harness: one operator and three
//! node-daemons (node-a, node-b, node-c), each daemon in its own network namespace with its own
//! host root (so a file path or an address exists per node), Node objects with labels created by
//! the test. Power and systemctl are recording scripts; IP changes happen only inside the test's
//! namespaces; the host is never touched.
//!
//! The cases share the operator and daemons (two operators would both reconcile every NodeTask),
//! so they run in order inside one test; each is its own function named for its behaviour.
//!
//! The API server has no kubelet, scheduler or disruption controller: the test plays their
//! parts — it marks the Nodes Ready (and NotReady while "rebooting"), gives each simulated node
//! a boot id of its own (a new one on every simulated reboot), binds pods to Nodes by
//! `spec.nodeName`, deletes a pod once it was evicted (as a kubelet would when its containers
//! stopped), and writes a PodDisruptionBudget's status (as the disruption controller would).
//! The evictions themselves are the API server's own (`pods/eviction`, budgets honoured).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use opsplane_e2e::{Cluster, NetNs, Process, apply_crds, eventually, free_port, workspace_bin};
use serde_json::{Value, json};

const TOKEN: &str = "e2e-token-0123456789";
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// The namespace of the pods bound to the simulated nodes.
const PODS_NS: &str = "e2e-drain";
/// How often the operator looks again at a NodeTask in motion (`--node-task-poll`).
const POLL: &str = "300ms";

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

/// `<root>/proc`: the host's /proc (by symlinks, so `net` and `self` still resolve in the
/// reading process), except `sys/kernel/random/boot_id`, a file of the node's own — what a
/// simulated reboot changes. Process directories are left out.
fn proc_with_own_boot_id(root: &Path) {
    fn mirror(from: &Path, to: &Path, except: &str) {
        std::fs::create_dir_all(to).expect("proc directory");
        for entry in std::fs::read_dir(from).expect("reading /proc").flatten() {
            let name = entry.file_name();
            let text = name.to_string_lossy();
            if text == except || text.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let _ = std::os::unix::fs::symlink(from.join(&name), to.join(&name));
        }
    }
    let proc = root.join("proc");
    mirror(Path::new("/proc"), &proc, "sys");
    mirror(Path::new("/proc/sys"), &proc.join("sys"), "kernel");
    mirror(
        Path::new("/proc/sys/kernel"),
        &proc.join("sys/kernel"),
        "random",
    );
    mirror(
        Path::new("/proc/sys/kernel/random"),
        &proc.join("sys/kernel/random"),
        "boot_id",
    );
    new_boot_id(root);
}

/// Writes a new boot id into the node's `proc/sys/kernel/random/boot_id`; returns it.
fn new_boot_id(root: &Path) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let id = format!(
        "00000000-0000-4000-8000-{:012x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    std::fs::write(
        root.join("proc/sys/kernel/random/boot_id"),
        format!("{id}\n"),
    )
    .expect("boot id");
    id
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
        for link in ["sys", "etc", "dev", "run"] {
            std::os::unix::fs::symlink(Path::new("/").join(link), root.join(link))
                .expect("host root link");
        }
        proc_with_own_boot_id(&root);
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
    evicted: Arc<Mutex<Vec<Evicted>>>,
    upstream: Upstream,
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
    for name in NODES {
        set_ready(&client, name, true).await;
    }
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for name in ["e2e-ntask", PODS_NS] {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        let _ = ns_api.create(&PostParams::default(), &ns).await;
    }
    // No controller-manager makes the `default` ServiceAccount a pod needs.
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("sa");
    let _ = Api::<ServiceAccount>::namespaced(client.clone(), PODS_NS)
        .create(&PostParams::default(), &sa)
        .await;
    let mut operator = Command::new(workspace_bin("opsplane-operator").expect("operator binary"));
    operator
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args([
            "--identity",
            "operator-ntask",
            "--lease-namespace",
            "e2e-ntask",
            "--node-task-poll",
            POLL,
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
    let evicted = start_kubelet(client.clone());
    Env {
        client,
        base,
        nodes,
        evicted,
        upstream: start_upstream(),
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

/// A simulated reboot of `node`: the daemon is cut (SIGKILL), the Node goes NotReady, the host
/// gets a new boot id, and the daemon starts again; the Node is left NotReady (the caller makes
/// it Ready, as the kubelet would once up). Returns when the daemon was started.
async fn reboot_node(env: &mut Env, node: &str) -> jiff::Timestamp {
    let base = env.base.clone();
    let client = env.client.clone();
    let sim = env.node(node);
    sim.kill();
    set_ready(&client, node, false).await;
    new_boot_id(&sim.root);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.start(&base);
    jiff::Timestamp::now()
}

/// Rolling reboot with drain: each node is cordoned and its pod evicted (the DaemonSet's pod
/// stays) before its reboot; every time the recording power command runs on a node the test
/// reboots it ([`reboot_node`]); the next node starts only once the rebooted one is back with a
/// new boot id *and* Ready — the test holds Ready back for a second after the daemon reported
/// and checks that nothing moved meanwhile; each node is uncordoned once back.
async fn reboot_drains_and_rolls_strictly_one_node_at_a_time(env: &mut Env) -> Duration {
    for node in NODES {
        bind_pod(&env.client, &format!("web-{node}"), node, "web", false).await;
        bind_pod(&env.client, &format!("agent-{node}"), node, "agent", true).await;
    }
    let api = tasks(&env.client);
    api.create(
        &PostParams::default(),
        &ntask(
            "rolling-reboot",
            json!({"nodeNames": NODES, "handler": "OsHandler", "command": "reboot",
                   "drain": {"gracePeriodSeconds": 7}}),
        ),
    )
    .await
    .expect("creating rolling-reboot");
    let started = Instant::now();
    let mut rebooted: Vec<String> = Vec::new();
    let mut back_at: Vec<(String, jiff::Timestamp)> = Vec::new();
    let mut ready_at: Vec<f64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        assert!(Instant::now() < deadline, "rolling reboot did not finish");
        let lines = reboots(env);
        for line in lines
            .iter()
            .skip(rebooted.len())
            .cloned()
            .collect::<Vec<_>>()
        {
            let node = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let restarted = reboot_node(env, &node).await;
            back_at.push((node.clone(), restarted));
            rebooted.push(line.clone());
            // Back means back: the daemon reports its new boot id, but the Node is not Ready
            // yet — nothing more may start.
            let entry = eventually(
                &format!("{node} to report back"),
                Duration::from_secs(30),
                || async {
                    let s = status_of(&api, "rolling-reboot").await?;
                    let e = node_entry(&s, &node).clone();
                    e["bootIdAfter"].is_string().then_some(e)
                },
            )
            .await
            .expect("the daemon reports back");
            assert_ne!(entry["bootIdAfter"], entry["bootIdBefore"], "{entry}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            let s = status_of(&api, "rolling-reboot").await.unwrap_or_default();
            let position = NODES.iter().position(|n| *n == node).unwrap_or(0);
            if let Some(next) = NODES.get(position + 1) {
                assert!(
                    node_entry(&s, next)["drainStartedAt"].is_null(),
                    "{next} started while {node} was not Ready: {s}"
                );
                assert_eq!(
                    cordon_of(&env.client, next).await,
                    (false, None),
                    "{next} cordoned early"
                );
            }
            assert_eq!(s["phase"], "Running", "{s}");
            assert_eq!(
                cordon_of(&env.client, &node).await,
                (true, Some("rolling-reboot".into())),
                "{node} stays cordoned until it is Ready"
            );
            ready_at.push(jiff::Timestamp::now().as_nanosecond() as f64 / 1e9);
            set_ready(&env.client, &node, true).await;
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
    let evicted = env
        .evicted
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (i, (rebooted_at, node)) in times.iter().enumerate() {
        // Its pod was evicted (with the spec's grace period) while the node was cordoned,
        // after the previous node was Ready again and before this node's reboot.
        let mine: Vec<&Evicted> = evicted.iter().filter(|e| &e.node == node).collect();
        assert_eq!(
            mine.len(),
            1,
            "{node}: one eviction, the DaemonSet's pod stays: {mine:?}"
        );
        let e = mine[0];
        assert_eq!(e.pod, format!("web-{node}"));
        assert_eq!(e.grace, Some(7), "{e:?}");
        assert!(
            e.node_cordoned,
            "{node} was not cordoned when its pod was evicted"
        );
        assert!(
            e.at < *rebooted_at,
            "{node} rebooted before its pod was gone"
        );
        if i > 0 {
            let previous = &times[i - 1].1;
            let finished: jiff::Timestamp = node_entry(&status, previous)["finishedAt"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("finishedAt of the previous node");
            let finished = finished.as_nanosecond() as f64 / 1e9;
            let restarted = back_at[i - 1].1.as_nanosecond() as f64 / 1e9;
            eprintln!(
                "e2e: {node} drained at {:.3}, rebooted at {rebooted_at:.3}; {previous} restarted at {restarted:.3}, reported back at {finished:.3}, Ready at {:.3}",
                e.at,
                ready_at[i - 1]
            );
            assert!(
                *rebooted_at > restarted && *rebooted_at > finished,
                "{node} rebooted at {rebooted_at} before {previous} was back (restarted {restarted}, reported {finished})"
            );
            assert!(
                e.at > ready_at[i - 1],
                "{node} drained before {previous} was Ready"
            );
        }
    }
    for node in NODES {
        let entry = node_entry(&status, node);
        let msg = entry["msg"].as_str().unwrap_or_default().to_string();
        assert!(
            msg.contains("reported back after OsHandler/reboot"),
            "{msg}"
        );
        assert!(entry["doneAt"].is_string(), "{entry}");
        assert_eq!(
            cordon_of(&env.client, node).await,
            (false, None),
            "{node} uncordoned"
        );
    }
    let agents = Api::<Pod>::namespaced(env.client.clone(), PODS_NS)
        .list(&ListParams::default().labels("app=agent"))
        .await
        .expect("pods");
    assert_eq!(agents.items.len(), 3, "the DaemonSet's pods stay");
    // No second reboot anywhere once the daemons are back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        reboots(env).len(),
        3,
        "reboots recorded: {:?}",
        env.log("power.log")
    );
    took
}

/// A PodDisruptionBudget that refuses the eviction holds the task (Waiting condition and an
/// Event naming the budget), never forces; once the budget allows a disruption (the test writes
/// its status, as the disruption controller would) the drain goes on and the reboot runs.
async fn a_pod_disruption_budget_blocks_the_drain_and_the_task_waits(env: &mut Env) -> Duration {
    let started = Instant::now();
    bind_pod(&env.client, "db-0", "node-a", "db", false).await;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), PODS_NS);
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "db-pdb"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}
    }))
    .expect("PDB object");
    let created = pdbs
        .create(&PostParams::default(), &pdb)
        .await
        .expect("creating the PDB");
    let generation = created.metadata.generation.unwrap_or(1);
    let pdb_status = |allowed: i32| {
        json!({"status": {"observedGeneration": generation, "disruptionsAllowed": allowed,
            "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}})
    };
    pdbs.patch_status(
        "db-pdb",
        &PatchParams::default(),
        &Patch::Merge(&pdb_status(0)),
    )
    .await
    .expect("PDB status");
    let before = reboots(env).len();
    tasks(&env.client)
        .create(
            &PostParams::default(),
            &ntask(
                "reboot-pdb",
                json!({"nodeNames": ["node-a"], "handler": "OsHandler", "command": "reboot"}),
            ),
        )
        .await
        .expect("creating reboot-pdb");
    let status = held(env, "reboot-pdb", "PodDisruptionBudget").await;
    let (_, message) = waiting_of(&status);
    assert!(
        message.contains("e2e-drain/db-pdb") && message.contains("e2e-drain/db-0"),
        "{message}"
    );
    assert_eq!(status["phase"], "Running", "{status}");
    let note = node_entry(&status, "node-a")["note"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(note.contains("db-pdb"), "{note}");
    eventually(
        "the PodDisruptionBudget event",
        Duration::from_secs(20),
        || async {
            event_reasons(env, "reboot-pdb")
                .await
                .into_iter()
                .find(|(r, n)| r == "PodDisruptionBudget" && n.contains("e2e-drain/db-pdb"))
        },
    )
    .await
    .expect("an Event naming the budget");
    // Held, not forced: the pod is still there, the node cordoned, no reboot.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pod = Api::<Pod>::namespaced(env.client.clone(), PODS_NS)
        .get("db-0")
        .await
        .expect("db-0");
    assert!(
        pod.metadata.deletion_timestamp.is_none(),
        "db-0 was deleted despite its budget"
    );
    assert_eq!(
        cordon_of(&env.client, "node-a").await,
        (true, Some("reboot-pdb".into()))
    );
    assert_eq!(
        reboots(env).len(),
        before,
        "node-a rebooted with its budget refusing"
    );
    // The budget allows one disruption now: the drain goes on.
    pdbs.patch_status(
        "db-pdb",
        &PatchParams::default(),
        &Patch::Merge(&pdb_status(1)),
    )
    .await
    .expect("PDB status");
    eventually("node-a's reboot", Duration::from_secs(30), || async {
        (reboots(env).len() > before).then_some(())
    })
    .await
    .expect("node-a reboots once drained");
    reboot_node(env, "node-a").await;
    set_ready(&env.client, "node-a", true).await;
    let status = wait_end(env, "reboot-pdb", Duration::from_secs(60)).await;
    assert_eq!(status["phase"], "Succeeded", "{status}");
    assert!(
        env.evicted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|e| e.pod == "db-0")
    );
    assert_eq!(cordon_of(&env.client, "node-a").await, (false, None));
    let _ = pdbs.delete("db-pdb", &DeleteParams::default()).await;
    started.elapsed()
}

/// A task deleted while its drain is held (a budget refuses the eviction) releases nothing
/// more and leaves no node cordoned: the operator uncordons a node whose cordon names a task
/// that no longer exists.
async fn a_task_deleted_mid_drain_leaves_no_node_cordoned(env: &mut Env) -> Duration {
    let started = Instant::now();
    bind_pod(&env.client, "cache-0", "node-c", "cache", false).await;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), PODS_NS);
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "cache-pdb"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "cache"}}}
    }))
    .expect("PDB object");
    let created = pdbs
        .create(&PostParams::default(), &pdb)
        .await
        .expect("creating the PDB");
    pdbs.patch_status(
        "cache-pdb",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {
            "observedGeneration": created.metadata.generation.unwrap_or(1),
            "disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}})),
    )
    .await
    .expect("PDB status");
    let before = reboots(env).len();
    tasks(&env.client)
        .create(
            &PostParams::default(),
            &ntask(
                "reboot-deleted",
                json!({"nodeNames": ["node-c"], "handler": "OsHandler", "command": "reboot"}),
            ),
        )
        .await
        .expect("creating reboot-deleted");
    held(env, "reboot-deleted", "PodDisruptionBudget").await;
    assert_eq!(
        cordon_of(&env.client, "node-c").await,
        (true, Some("reboot-deleted".into()))
    );
    tasks(&env.client)
        .delete("reboot-deleted", &DeleteParams::default())
        .await
        .expect("deleting reboot-deleted");
    eventually(
        "node-c uncordoned after its task was deleted",
        Duration::from_secs(30),
        || async { (cordon_of(&env.client, "node-c").await == (false, None)).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    // The budget lets the pod go now; nothing evicts or reboots it any more.
    pdbs.patch_status(
        "cache-pdb",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"disruptionsAllowed": 1}})),
    )
    .await
    .expect("PDB status");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(reboots(env).len(), before, "a deleted task rebooted node-c");
    assert!(
        !env.evicted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|e| e.pod == "cache-0"),
        "a deleted task evicted cache-0"
    );
    let _ = pdbs.delete("cache-pdb", &DeleteParams::default()).await;
    let _ = Api::<Pod>::namespaced(env.client.clone(), PODS_NS)
        .delete("cache-0", &DeleteParams::default().grace_period(0))
        .await;
    started.elapsed()
}

/// `HH:MM` of `now + minutes` in UTC.
fn hh_mm(minutes: i64) -> String {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(minutes);
    t.to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%H:%M")
        .to_string()
}

/// A window later today keeps the task Pending with a condition saying when it may start (and
/// nothing runs); a window around now lets the same command run.
async fn a_window_in_the_future_keeps_the_task_pending_and_a_window_now_lets_it_run(
    env: &Env,
) -> Duration {
    let started = Instant::now();
    let api = tasks(&env.client);
    let opens = hh_mm(120);
    let ran = |unit: &str| {
        env.log("systemctl.log")
            .iter()
            .filter(|l| l.contains(unit))
            .count()
    };
    api.create(
        &PostParams::default(),
        &ntask(
            "window-later",
            json!({"nodeNames": ["node-b"], "handler": "ServiceHandler",
            "command": "start", "data": {"service": ["later"]},
            "window": {"start": opens, "end": hh_mm(180), "timeZone": "UTC"}}),
        ),
    )
    .await
    .expect("creating window-later");
    let status = held(env, "window-later", "OutsideWindow").await;
    assert_eq!(status["phase"], "Pending", "{status}");
    let (_, message) = waiting_of(&status);
    assert!(
        message.contains("may start at") && message.contains(&opens),
        "{message}"
    );
    let (status, _) = run_to_end(
        env,
        "window-now",
        json!({"nodeNames": ["node-b"], "handler": "ServiceHandler", "command": "start",
               "data": {"service": ["now"]},
               "window": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                          "start": hh_mm(-60), "end": hh_mm(60), "timeZone": "UTC"}}),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(status["phase"], "Succeeded", "{status}");
    assert_eq!(ran("start -- now"), 1);
    let s = status_of(&api, "window-later").await.expect("window-later");
    assert_eq!(s["phase"], "Pending", "{s}");
    assert_eq!(ran("start -- later"), 0, "the task outside its window ran");
    // Deleting the held task releases nothing more.
    api.delete("window-later", &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ran("start -- later"), 0, "a deleted task ran");
    started.elapsed()
}

/// `spec.paused` keeps every node waiting (nothing runs); unpaused, the task runs.
async fn paused_stops_releases_until_unpaused(env: &Env) -> Duration {
    let started = Instant::now();
    let api = tasks(&env.client);
    let ran = || {
        env.log("systemctl.log")
            .iter()
            .filter(|l| l.contains("restart -- paused"))
            .count()
    };
    api.create(
        &PostParams::default(),
        &ntask(
            "restart-paused",
            json!({"nodeNames": ["node-a", "node-c"], "handler": "ServiceHandler",
            "command": "restart", "data": {"service": ["paused"]}, "paused": true}),
        ),
    )
    .await
    .expect("creating restart-paused");
    let status = held(env, "restart-paused", "Paused").await;
    assert_eq!(status["phase"], "Pending", "{status}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ran(), 0, "a paused task ran");
    api.patch(
        "restart-paused",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"paused": false}})),
    )
    .await
    .expect("unpause");
    let status = wait_end(env, "restart-paused", Duration::from_secs(30)).await;
    assert_eq!(status["phase"], "Succeeded", "{status}");
    assert_eq!(ran(), 2);
    started.elapsed()
}

/// A node whose daemon never comes back after the reboot fails after `nodeTimeout`, and the
/// next node is never released.
async fn a_node_that_never_comes_back_fails_after_its_timeout(env: &mut Env) -> Duration {
    let started = Instant::now();
    let before = reboots(env).len();
    tasks(&env.client)
        .create(
            &PostParams::default(),
            &ntask(
                "reboot-lost",
                json!({"nodeNames": ["node-b", "node-c"], "handler": "OsHandler",
                "command": "reboot", "nodeTimeout": "4s"}),
            ),
        )
        .await
        .expect("creating reboot-lost");
    eventually("node-b's reboot", Duration::from_secs(30), || async {
        (reboots(env).len() > before).then_some(())
    })
    .await
    .expect("node-b reboots");
    // Powered off for good: the daemon never starts again, the Node goes NotReady.
    env.node("node-b").kill();
    set_ready(&env.client, "node-b", false).await;
    let timed = Instant::now();
    let status = wait_end(env, "reboot-lost", Duration::from_secs(30)).await;
    eprintln!(
        "e2e: reboot-lost failed {:.2}s after node-b went away (nodeTimeout 4s)",
        timed.elapsed().as_secs_f64()
    );
    assert_eq!(status["phase"], "Failed", "{status}");
    let b = node_entry(&status, "node-b");
    assert_eq!(b["reason"], "NodeTimeout", "{b}");
    assert!(
        b["note"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.nodeTimeout (4s)"),
        "{b}"
    );
    let c = node_entry(&status, "node-c");
    assert_eq!(c["reason"], "RolloutStopped", "{c}");
    assert!(
        c["releasedAt"].is_null() && c["drainStartedAt"].is_null(),
        "{c}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        reboots(env).len(),
        before + 1,
        "node-c was rebooted: {:?}",
        reboots(env)
    );
    // Not known to be well: node-b stays cordoned. Bring it back for what follows.
    assert_eq!(
        cordon_of(&env.client, "node-b").await,
        (true, Some("reboot-lost".into()))
    );
    let base = env.base.clone();
    let sim = env.node("node-b");
    new_boot_id(&sim.root);
    sim.start(&base);
    set_ready(&env.client, "node-b", true).await;
    Api::<Node>::all(env.client.clone())
        .patch(
            "node-b",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"unschedulable": false}})),
        )
        .await
        .expect("uncordon node-b");
    started.elapsed()
}

/// A MonitoredService selected by `spec.gate.monitoredServices` that is not Available holds
/// the next release until it recovers; a firing Prometheus alert (the loopback server's
/// `/api/v1/alerts`) holds it too, while an alert the filter ignores does not.
async fn a_failing_monitored_service_or_a_firing_alert_holds_the_next_release(
    env: &Env,
) -> Duration {
    let started = Instant::now();
    let up = &env.upstream;
    up.healthy.store(false, Ordering::SeqCst);
    let services: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        PODS_NS,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("opsplane.io", "v1alpha1", "MonitoredService"),
            "monitoredservices",
        ),
    );
    let shop: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "opsplane.io/v1alpha1", "kind": "MonitoredService",
        "metadata": {"name": "shop", "labels": {"gate": "shop"}},
        "spec": {"url": format!("http://127.0.0.1:{}/health", up.port), "checkInterval": "1s", "timeout": "1s"}
    }))
    .expect("MonitoredService object");
    services
        .create(&PostParams::default(), &shop)
        .await
        .expect("creating shop");
    let ran = || {
        env.log("systemctl.log")
            .iter()
            .filter(|l| l.contains("restart -- gated"))
            .count()
    };
    let api = tasks(&env.client);
    api.create(
        &PostParams::default(),
        &ntask(
            "restart-gated",
            json!({"nodeNames": ["node-a", "node-b"], "handler": "ServiceHandler",
            "command": "restart", "data": {"service": ["gated"]},
            "gate": {"monitoredServices": {"matchLabels": {"gate": "shop"}},
                     "prometheus": {"url": format!("http://127.0.0.1:{}", up.port),
                                    "alertFilterRegexp": "^Watchdog$"}}}),
        ),
    )
    .await
    .expect("creating restart-gated");
    let status = held(env, "restart-gated", "MonitoredServiceNotAvailable").await;
    let (_, message) = waiting_of(&status);
    assert!(message.contains("e2e-drain/shop"), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ran(), 0, "released while the service was down");
    // The service recovers, but an alert fires: still held.
    up.firing.store(true, Ordering::SeqCst);
    up.healthy.store(true, Ordering::SeqCst);
    let status = held(env, "restart-gated", "AlertsFiring").await;
    let (_, message) = waiting_of(&status);
    assert!(
        message.contains("NodeDown") && !message.contains("Watchdog"),
        "{message}"
    );
    assert_eq!(ran(), 0, "released while an alert fired");
    eventually("the hold events", Duration::from_secs(20), || async {
        let reasons = event_reasons(env, "restart-gated").await;
        (reasons
            .iter()
            .any(|(r, _)| r == "MonitoredServiceNotAvailable")
            && reasons.iter().any(|(r, _)| r == "AlertsFiring"))
        .then_some(())
    })
    .await
    .expect("an Event for each hold");
    // Only the ignored Watchdog alert is left: the rollout goes on.
    up.firing.store(false, Ordering::SeqCst);
    let status = wait_end(env, "restart-gated", Duration::from_secs(30)).await;
    assert_eq!(status["phase"], "Succeeded", "{status}");
    assert_eq!(ran(), 2);
    let _ = services.delete("shop", &DeleteParams::default()).await;
    started.elapsed()
}

/// Sets the Node's Ready condition, as its kubelet would.
async fn set_ready(client: &kube::Client, node: &str, ready: bool) {
    let api: Api<Node> = Api::all(client.clone());
    let now = jiff::Timestamp::now().to_string();
    let status = json!({"status": {"conditions": [{
        "type": "Ready", "status": if ready { "True" } else { "False" },
        "reason": if ready { "KubeletReady" } else { "KubeletNotReady" },
        "message": "set by the e2e test", "lastHeartbeatTime": now, "lastTransitionTime": now
    }]}});
    api.patch_status(node, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("Ready of {node}: {e}"));
}

/// `spec.unschedulable` and the cordon annotation of a Node.
async fn cordon_of(client: &kube::Client, node: &str) -> (bool, Option<String>) {
    let api: Api<Node> = Api::all(client.clone());
    let n = api.get(node).await.expect("Node");
    (
        n.spec.and_then(|s| s.unschedulable).unwrap_or(false),
        n.metadata
            .annotations
            .and_then(|a| a.get("opsplane.io/cordoned-by").cloned()),
    )
}

/// A pod bound to `node` (no scheduler: `spec.nodeName` binds it), Running and Ready,
/// optionally owned by a DaemonSet.
async fn bind_pod(client: &kube::Client, name: &str, node: &str, app: &str, daemon_set: bool) {
    let mut metadata = json!({"name": name, "labels": {"app": app}});
    if daemon_set {
        metadata["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "DaemonSet",
            "name": "agent", "uid": "00000000-0000-0000-0000-00000000da01", "controller": true}]);
    }
    let pod: Pod = serde_json::from_value(json!({
        "metadata": metadata,
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 30,
                 "containers": [{"name": "c", "image": "registry.invalid/none"}]}
    }))
    .expect("Pod object");
    let api = Api::<Pod>::namespaced(client.clone(), PODS_NS);
    api.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("creating pod {name}: {e}"));
    // Running and Ready, as its kubelet would report: the Eviction API lets a Pending pod go
    // without asking its budget.
    let now = jiff::Timestamp::now().to_string();
    let status = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("status of pod {name}: {e}"));
}

/// A pod the test kubelet saw evicted.
#[derive(Debug, Clone)]
struct Evicted {
    pod: String,
    node: String,
    at: f64,
    grace: Option<i64>,
    node_cordoned: bool,
}

/// Plays the kubelet's part for evicted pods: a pod with a deletion timestamp is deleted at
/// once (its containers "stopped"), after noting when, with which grace period and whether its
/// Node was cordoned at that moment.
fn start_kubelet(client: kube::Client) -> Arc<Mutex<Vec<Evicted>>> {
    let seen: Arc<Mutex<Vec<Evicted>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        let api: Api<Pod> = Api::namespaced(client.clone(), PODS_NS);
        loop {
            if let Ok(list) = api.list(&ListParams::default()).await {
                for pod in list.items {
                    if pod.metadata.deletion_timestamp.is_none() {
                        continue;
                    }
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let node = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default();
                    let (cordoned, _) = cordon_of(&client, &node).await;
                    let at = jiff::Timestamp::now().as_nanosecond() as f64 / 1e9;
                    record
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Evicted {
                            pod: name.clone(),
                            node,
                            at,
                            grace: pod.metadata.deletion_grace_period_seconds,
                            node_cordoned: cordoned,
                        });
                    let _ = api
                        .delete(&name, &DeleteParams::default().grace_period(0))
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    seen
}

/// A small HTTP server on loopback: `/health` answers 200 or 503 (a MonitoredService's target),
/// `/api/v1/alerts` answers in Prometheus' alerts API shape with a firing `NodeDown` alert, or
/// only an ignored `Watchdog` one.
struct Upstream {
    port: u16,
    healthy: Arc<AtomicBool>,
    firing: Arc<AtomicBool>,
}

fn start_upstream() -> Upstream {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("upstream listener");
    let port = listener.local_addr().expect("address").port();
    let healthy = Arc::new(AtomicBool::new(true));
    let firing = Arc::new(AtomicBool::new(false));
    let (h, f) = (healthy.clone(), firing.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (h, f) = (h.clone(), f.clone());
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if head.starts_with("GET /api/v1/alerts") {
                    let mut alerts = vec![
                        json!({"labels": {"alertname": "Watchdog"}, "annotations": {},
                        "state": "firing", "activeAt": "2027-01-15T08:00:00Z", "value": "1e+00"}),
                    ];
                    if f.load(Ordering::SeqCst) {
                        alerts.push(json!({"labels": {"alertname": "NodeDown", "severity": "critical"},
                            "annotations": {}, "state": "firing", "activeAt": "2027-01-15T08:00:00Z", "value": "1e+00"}));
                    }
                    (
                        "200 OK",
                        json!({"status": "success", "data": {"alerts": alerts}}).to_string(),
                    )
                } else if h.load(Ordering::SeqCst) {
                    ("200 OK", "ok".to_string())
                } else {
                    ("503 Service Unavailable", "down".to_string())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Upstream {
        port,
        healthy,
        firing,
    }
}

fn waiting_of(status: &Value) -> (String, String) {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Waiting"))
        .map(|c| {
            (
                format!(
                    "{}/{}",
                    c["status"].as_str().unwrap_or(""),
                    c["reason"].as_str().unwrap_or("")
                ),
                c["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .unwrap_or_default()
}

/// Waits until the task's Waiting condition is True with `reason`; returns the status.
async fn held(env: &Env, name: &str, reason: &str) -> Value {
    let api = tasks(&env.client);
    eventually(
        &format!("{name} held by {reason}"),
        Duration::from_secs(30),
        || async {
            let s = status_of(&api, name).await?;
            (waiting_of(&s).0 == format!("True/{reason}")).then_some(s)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

async fn wait_end(env: &Env, name: &str, limit: Duration) -> Value {
    let api = tasks(&env.client);
    eventually(&format!("{name} to finish"), limit, || async {
        let s = status_of(&api, name).await?;
        matches!(
            s["phase"].as_str(),
            Some("Succeeded" | "Failed" | "PartiallyFailed")
        )
        .then_some(s)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

async fn event_reasons(env: &Env, task: &str) -> Vec<(String, String)> {
    let events: Api<KubeEvent> = Api::all(env.client.clone());
    events
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(task))
                .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

fn reboots(env: &Env) -> Vec<String> {
    env.log("power.log")
        .into_iter()
        .filter(|l| l.ends_with(" reboot"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn node_tasks_run_on_their_nodes_once_and_disruptive_ones_one_node_at_a_time() {
    let mut env = setup().await;
    let safe = a_safe_task_runs_on_all_three_nodes_once_with_phase_events(&env).await;
    delete_file_runs_only_on_selected_nodes_and_only_inside_the_prefix(&env).await;
    a_command_not_allowed_by_configuration_fails_clearly_and_nothing_runs(&env).await;
    ip_tasks_change_only_node_b(&env).await;
    a_daemon_restarted_mid_task_does_not_run_it_twice(&mut env).await;
    let rolling = reboot_drains_and_rolls_strictly_one_node_at_a_time(&mut env).await;
    let pdb = a_pod_disruption_budget_blocks_the_drain_and_the_task_waits(&mut env).await;
    let deleted = a_task_deleted_mid_drain_leaves_no_node_cordoned(&mut env).await;
    let window =
        a_window_in_the_future_keeps_the_task_pending_and_a_window_now_lets_it_run(&env).await;
    let paused = paused_stops_releases_until_unpaused(&env).await;
    let lost = a_node_that_never_comes_back_fails_after_its_timeout(&mut env).await;
    let gated = a_failing_monitored_service_or_a_firing_alert_holds_the_next_release(&env).await;
    eprintln!(
        "e2e: NodeTask created → all nodes Succeeded: 3-node ServiceHandler start {:.2}s; rolling reboot of 3 nodes with drain {:.2}s (each simulated reboot: SIGKILL, 300 ms, daemon start, Ready held back 1 s after the report)",
        safe.as_secs_f64(),
        rolling.as_secs_f64()
    );
    eprintln!(
        "e2e: scenario times: PDB blocks then allows {:.2}s (2 s held on purpose); task deleted mid-drain → node uncordoned {:.2}s (2 s held); window later/now + delete {:.2}s; paused then unpaused {:.2}s (2 s held); node never back, nodeTimeout 4s {:.2}s; MonitoredService + alert gates {:.2}s",
        pdb.as_secs_f64(),
        deleted.as_secs_f64(),
        window.as_secs_f64(),
        paused.as_secs_f64(),
        lost.as_secs_f64(),
        gated.as_secs_f64()
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
