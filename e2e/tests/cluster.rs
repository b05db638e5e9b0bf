//! End-to-end tests against a real kube-apiserver: CRD validation, helm install, and leader
//! failover of two operator processes. One harness serves all tests of this file.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use opsplane_e2e::{
    Cluster, NetNs, Process, apply_crds, eventually, free_port, helm, repo_root, workspace_bin,
};
use serde_json::{Value, json};

async fn setup() -> kube::Client {
    let cluster = Cluster::shared();
    let client = cluster.client().await.expect("kube client for the harness");
    apply_crds(&client)
        .await
        .expect("CRDs applied and Established");
    client
}

async fn namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("opsplane.io", "v1alpha1", kind),
        plural,
    )
}

fn services(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &resource("MonitoredService", "monitoredservices"),
    )
}

fn tasks(client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &resource("NodeTask", "nodetasks"))
}

fn msvc(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "opsplane.io/v1alpha1", "kind": "MonitoredService",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

fn ntask(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "opsplane.io/v1alpha1", "kind": "NodeTask",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

/// The API server's refusal message of `create`, or a panic if it was accepted.
async fn rejection(api: &Api<DynamicObject>, obj: &DynamicObject) -> String {
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => panic!(
            "the API server accepted an invalid object: {}",
            serde_json::to_string(obj).unwrap()
        ),
        Err(kube::Error::Api(e)) => {
            assert_eq!(
                e.code, 422,
                "expected 422 Invalid, got {}: {}",
                e.code, e.message
            );
            e.message
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crds_are_established_and_valid_resources_are_accepted() {
    let client = setup().await;
    namespace(&client, "e2e-valid").await;
    let created = services(&client, "e2e-valid")
        .create(
            &PostParams::default(),
            &msvc(
                "geonode",
                json!({
                    "type": "geonode", "environment": "production", "checkInterval": "30s",
                    "timeout": "5s", "url": "https://geonode.example.org/health",
                    "http": {"method": "GET", "expectedStatus": [200], "bodyContains": "ok"},
                    "baseUrl": "https://geonode.example.org/api", "route": "ops"
                }),
            ),
        )
        .await
        .expect("the SPEC's MonitoredService example is accepted");
    assert_eq!(created.data["spec"]["checkInterval"], "30s");
    // Defaults come from the schema.
    let defaulted = services(&client, "e2e-valid")
        .create(
            &PostParams::default(),
            &msvc(
                "by-ref",
                json!({"serviceRef": {"name": "web", "port": "http"}, "tcp": {}}),
            ),
        )
        .await
        .expect("a serviceRef MonitoredService is accepted");
    assert_eq!(defaulted.data["spec"]["checkInterval"], "30s");
    // No schema default for timeout: the operator applies the smaller of 5s and the interval
    // (a defaulted 5s would be held to the rule against checkInterval).
    assert_eq!(defaulted.data["spec"].get("timeout"), None);

    let task = tasks(&client)
        .create(
            &PostParams::default(),
            &ntask(
                "restart-libvirtd",
                json!({
                    "nodeNames": ["node-a"], "nodeSelector": {"matchLabels": {"role": "kvm"}},
                    "handler": "ServiceHandler", "command": "restart",
                    "data": {"service": ["libvirtd"]}, "maxUnavailable": 1, "dryRun": false
                }),
            ),
        )
        .await
        .expect("the SPEC's NodeTask example is accepted");
    assert_eq!(task.data["spec"]["handler"], "ServiceHandler");
    for (name, spec) in [
        (
            "shutdown3",
            json!({"nodeNames": ["node-a"], "handler": "CrontabHandler", "command": "setup_shutdown",
            "data": {"task_name": "shutdown3", "exec_minute": "55", "exec_hour": "3", "exec_weekly": "1,2"}}),
        ),
        (
            "add-ip",
            json!({"nodeSelector": {"matchLabels": {"role": "kvm"}}, "handler": "NetworkHandler", "command": "add_ip",
            "data": {"name": "eth0:0", "ip": "172.16.1.34", "netmask": "255.255.255.0", "gateway": "172.16.1.254", "dns1": "8.8.8.8"}}),
        ),
        (
            "pause-reports",
            json!({"nodeNames": ["node-a"], "handler": "TimerHandler", "command": "pause"}),
        ),
    ] {
        tasks(&client)
            .create(&PostParams::default(), &ntask(name, spec))
            .await
            .unwrap_or_else(|e| panic!("seed 002 task {name} should be accepted: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_check_interval_needs_no_timeout_but_a_longer_written_timeout_is_refused() {
    let client = setup().await;
    namespace(&client, "e2e-timeout").await;
    let msvcs = services(&client, "e2e-timeout");
    for (name, interval) in [("every-1s", "1s"), ("every-2s", "2s"), ("every-4s", "4s")] {
        let created = msvcs
            .create(
                &PostParams::default(),
                &msvc(name, json!({"url": "http://a/", "checkInterval": interval})),
            )
            .await
            .unwrap_or_else(|e| {
                panic!("checkInterval {interval} without a timeout should be accepted: {e}")
            });
        assert_eq!(created.data["spec"]["checkInterval"], interval);
        assert_eq!(created.data["spec"].get("timeout"), None, "{name}");
    }
    msvcs
        .create(
            &PostParams::default(),
            &msvc(
                "timeout-equal",
                json!({"url": "http://a/", "checkInterval": "2s", "timeout": "2s"}),
            ),
        )
        .await
        .expect("a written timeout equal to checkInterval is accepted");
    let refused = rejection(
        &msvcs,
        &msvc(
            "timeout-longer",
            json!({"url": "http://a/", "checkInterval": "2s", "timeout": "5s"}),
        ),
    )
    .await;
    assert!(
        refused.contains("spec.timeout: Invalid value")
            && refused.contains("spec.timeout must not be longer than spec.checkInterval"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crd_schema_rejects_invalid_resources_with_a_message_naming_the_field() {
    let client = setup().await;
    namespace(&client, "e2e-invalid").await;
    let msvcs = services(&client, "e2e-invalid");
    let service_cases = [
        (
            json!({"url": "http://a/", "serviceRef": {"name": "web", "port": 80}}),
            "exactly one of spec.url or spec.serviceRef",
        ),
        (json!({}), "exactly one of spec.url or spec.serviceRef"),
        (
            json!({"url": "http://a/", "checkInterval": "500ms", "timeout": "100ms"}),
            "spec.checkInterval: Invalid value",
        ),
        (
            json!({"url": "http://a/", "checkInterval": "soon"}),
            "spec.checkInterval: Invalid value",
        ),
        (
            json!({"url": "http://a/", "http": {"method": "FETCH"}}),
            "spec.http.method: Unsupported value",
        ),
        (
            json!({"url": "http://a/", "checkInterval": "2s", "timeout": "5s"}),
            "spec.timeout: Invalid value",
        ),
        (
            json!({"url": "http://a/", "http": {"expectedStatus": [700]}}),
            "spec.http.expectedStatus[0]",
        ),
        (json!({"url": "ftp://a/"}), "spec.url: Invalid value"),
        (
            json!({"url": "tcp://a:1", "http": {}}),
            "spec.url: Invalid value",
        ),
    ];
    for (index, (spec, expected)) in service_cases.into_iter().enumerate() {
        let message = rejection(&msvcs, &msvc(&format!("bad-{index}"), spec.clone())).await;
        assert!(
            message.contains(expected),
            "spec {spec}: expected {expected:?} in {message:?}"
        );
    }
    let at_least = rejection(
        &msvcs,
        &msvc(
            "too-often",
            json!({"url": "http://a/", "checkInterval": "500ms", "timeout": "100ms"}),
        ),
    )
    .await;
    assert!(
        at_least.contains("checkInterval must be at least 1s"),
        "{at_least}"
    );

    let ntasks = tasks(&client);
    let task_cases = [
        (
            json!({"nodeNames": ["a"], "handler": "OsHandler", "command": "delete_file"}),
            "spec.command: Invalid value",
        ),
        (
            json!({"handler": "OsHandler", "command": "reboot"}),
            "a NodeTask needs targets",
        ),
        (
            json!({"nodeNames": ["a"], "handler": "FooHandler", "command": "reboot"}),
            "spec.handler: Unsupported value",
        ),
        (
            json!({"nodeNames": ["a"], "handler": "CrontabHandler", "command": "setup_shutdown"}),
            "spec.data: Required value",
        ),
        (
            json!({"nodeNames": ["a"], "handler": "CrontabHandler", "command": "setup_shutdown",
            "data": {"task_name": "x1", "exec_hour": "25", "exec_minute": "0", "exec_weekly": "1"}}),
            "spec.data.exec_hour: Invalid value",
        ),
        (
            json!({"nodeNames": ["a"], "handler": "NetworkHandler", "command": "add_ip",
            "data": {"name": "eth0:0", "ip": "300.1.1.1", "netmask": "255.255.255.0"}}),
            "ip must be an IP address",
        ),
        (
            json!({"nodeNames": ["a"], "handler": "FileHandler", "command": "delete_file", "data": {"file_name": "relative/path"}}),
            "spec.data.file_name: Invalid value",
        ),
        (
            json!({"nodeNames": ["a"], "handler": "OsHandler", "command": "reboot", "maxUnavailable": 0}),
            "spec.maxUnavailable: Invalid value",
        ),
        (
            json!({"nodeNames": ["a"], "handler": "ServiceHandler", "command": "stop", "data": {"service": []}}),
            "spec.data: Required value",
        ),
    ];
    for (index, (spec, expected)) in task_cases.into_iter().enumerate() {
        let message = rejection(&ntasks, &ntask(&format!("bad-{index}"), spec.clone())).await;
        assert!(
            message.contains(expected),
            "spec {spec}: expected {expected:?} in {message:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_creates_every_rendered_object() {
    let cluster = Cluster::shared();
    let client = setup().await;
    let helm = helm().expect("helm");
    let chart = repo_root().join("charts/opsplane");
    let output = Command::new(&helm)
        .args(["install", "opsplane"])
        .arg(&chart)
        .args([
            "--namespace",
            "opsplane-system",
            "--create-namespace",
            "--kubeconfig",
        ])
        .arg(&cluster.kubeconfig)
        .args(["--timeout", "2m"])
        .output()
        .expect("running helm");
    assert!(
        output.status.success(),
        "helm install failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Every object the chart renders exists on the server.
    let manifest = Command::new(&helm)
        .args([
            "get",
            "manifest",
            "opsplane",
            "--namespace",
            "opsplane-system",
            "--kubeconfig",
        ])
        .arg(&cluster.kubeconfig)
        .output()
        .expect("helm get manifest");
    assert!(manifest.status.success());
    let text = String::from_utf8(manifest.stdout).unwrap();
    let mut kinds = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = match serde::Deserialize::deserialize(doc) {
            Ok(v) => v,
            Err(e) => panic!("manifest does not parse: {e}"),
        };
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(value.clone()).unwrap();
        let types = obj.types.clone().expect("typed object");
        let (group, version) = types
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", &types.api_version));
        let gvk = GroupVersionKind::gvk(group, version, &types.kind);
        let (ar, caps) = kube::discovery::pinned_kind(&client, &gvk)
            .await
            .expect("kind is served");
        let name = obj.metadata.name.clone().unwrap();
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            Api::namespaced_with(client.clone(), "opsplane-system", &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        api.get(&name)
            .await
            .unwrap_or_else(|e| panic!("{} {name} is missing: {e}", types.kind));
        kinds.push(types.kind);
    }
    for expected in [
        "Deployment",
        "DaemonSet",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Secret",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "chart rendered no {expected}: {kinds:?}"
        );
    }
    // No RBAC rule grants wildcards.
    assert!(
        !text.contains("\"*\"") && !text.contains("- '*'") && !text.contains("- \"*\""),
        "wildcard in rendered RBAC"
    );
}

fn operator(cluster: &Cluster, identity: &str, namespace: &str, listen: u16) -> Process {
    let mut command = Command::new(workspace_bin("opsplane-operator").expect("operator binary"));
    command
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args([
            "--identity",
            identity,
            "--lease-namespace",
            namespace,
            "--lease-duration-seconds",
            "6",
        ])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env(
            "OPSPLANE_STORE_PATH",
            opsplane_e2e::operator_store_path(identity),
        )
        .env("OPSPLANE_TOKEN", "e2e-token-0123456789")
        .env("OPSPLANE_LOG", "info,kube=warn");
    Process::spawn(identity, command).expect("operator starts")
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("opsplane-operator")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

async fn last_check(api: &Api<DynamicObject>, name: &str) -> Option<jiff::Timestamp> {
    let obj = api.get(name).await.ok()?;
    obj.data["status"]["lastCheck"].as_str()?.parse().ok()
}

/// A GET with the token; `None` while nothing listens or the answer is cut.
fn http_get(port: u16, path: &str, token: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_failover_hands_checks_to_the_standby_operator() {
    let cluster = Cluster::shared();
    let client = setup().await;
    let ns = "e2e-failover";
    namespace(&client, ns).await;
    let target_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    instance(listener, target_up.clone());
    let msvcs = services(&client, ns);
    msvcs
        .create(
            &PostParams::default(),
            &msvc("web", json!({"url": format!("http://{target}/health"), "checkInterval": "1s", "timeout": "500ms"})),
        )
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);

    let (port_a, port_b) = (free_port(), free_port());
    let mut a = operator(cluster, "operator-a", ns, port_a);
    eventually(
        "operator-a to hold the Lease",
        Duration::from_secs(30),
        || async { (holder(&leases).await.as_deref() == Some("operator-a")).then_some(()) },
    )
    .await
    .unwrap();
    let status = eventually(
        "status from operator-a",
        Duration::from_secs(30),
        || async {
            let obj = msvcs.get("web").await.ok()?;
            let status = obj.data.get("status")?.clone();
            let available = status["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Available")?
                .clone();
            (available["status"] == "True").then_some(status)
        },
    )
    .await
    .unwrap();
    assert_eq!(status["observedGeneration"], 1);
    assert!(status["latencyMs"].is_u64(), "{status}");
    assert!(status["lastCheck"].is_string(), "{status}");
    assert_eq!(status["instances"][0]["address"], target.to_string());

    // The standby serves the API too, but does not lead.
    let mut b = operator(cluster, "operator-b", ns, port_b);
    let listed = eventually("operator-b's API", Duration::from_secs(20), || async {
        let response = http_get(port_b, "/api/v1/services", "e2e-token-0123456789")?;
        response.starts_with("HTTP/1.1 200").then_some(response)
    })
    .await
    .unwrap();
    assert!(listed.contains("\"name\":\"web\""), "{listed}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holder(&leases).await.as_deref(), Some("operator-a"));
    let metrics_b = http_get(port_b, "/metrics", "").expect("operator-b serves /metrics");
    assert!(metrics_b.contains("opsplane_leader 0"), "{metrics_b}");
    let rss = a.rss_kib().unwrap_or(0);
    eprintln!(
        "e2e: operator idle RSS {:.1} MiB (leader, one service at 1s)",
        rss as f64 / 1024.0
    );

    // Crash the leader: the standby takes over once the Lease expires.
    let killed_at = Instant::now();
    let killed_ts = jiff::Timestamp::now();
    a.signal(9).unwrap();
    a.wait_exit(Duration::from_secs(5)).unwrap();
    eventually(
        "operator-b to take the Lease",
        Duration::from_secs(30),
        || async { (holder(&leases).await.as_deref() == Some("operator-b")).then_some(()) },
    )
    .await
    .unwrap();
    let takeover = killed_at.elapsed();
    eventually(
        "checks resumed by operator-b",
        Duration::from_secs(15),
        || async {
            let metrics = http_get(port_b, "/metrics", "")?;
            metrics
                .lines()
                .any(|l| {
                    l.starts_with(
                        "opsplane_check_duration_seconds_count{service=\"e2e-failover/web\"}",
                    )
                })
                .then_some(())
        },
    )
    .await
    .unwrap();
    let resumed = killed_at.elapsed();
    // The new leader keeps status truthful: a failure is written at once, not after a minute.
    target_up.store(false, std::sync::atomic::Ordering::SeqCst);
    eventually(
        "operator-b to write the outage",
        Duration::from_secs(10),
        || async {
            let obj = msvcs.get("web").await.ok()?;
            let available = condition(obj.data.get("status")?, "Available")?;
            (available["status"] == "False" && last_check(&msvcs, "web").await? > killed_ts)
                .then_some(())
        },
    )
    .await
    .unwrap();
    eprintln!(
        "e2e: failover after SIGKILL of the leader: Lease taken over in {:.1}s, checks resumed in {:.1}s (lease duration 6s)",
        takeover.as_secs_f64(),
        resumed.as_secs_f64()
    );
    assert!(
        resumed < Duration::from_secs(6 + 10),
        "failover took {resumed:?}"
    );

    // A graceful stop releases the Lease: a new candidate takes over without waiting it out.
    let port_c = free_port();
    let _c = operator(cluster, "operator-c", ns, port_c);
    // 3 s: not a multiple of the 2 s retry period, so the measurement below is not phase-aligned
    // with operator-c's retries.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        holder(&leases).await.as_deref(),
        Some("operator-b"),
        "the standby must not lead while the leader renews"
    );
    let stopped_at = Instant::now();
    b.signal(15).unwrap();
    let exit = b.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(exit.success(), "operator-b exit status {exit}");
    eventually(
        "operator-c to take the released Lease",
        Duration::from_secs(15),
        || async { (holder(&leases).await.as_deref() == Some("operator-c")).then_some(()) },
    )
    .await
    .unwrap();
    let graceful = stopped_at.elapsed();
    eprintln!(
        "e2e: failover after SIGTERM of the leader: {:.1}s",
        graceful.as_secs_f64()
    );
    assert!(
        graceful < Duration::from_secs(6),
        "a released Lease should be taken before it would expire: {graceful:?}"
    );
}

/// An HTTP instance on a listener, answering 200 "ok" while `healthy`, else 503.
fn instance(listener: TcpListener, healthy: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let answer: &[u8] = if healthy.load(std::sync::atomic::Ordering::SeqCst) {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            } else {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndown"
            };
            let _ = stream.write_all(answer);
        }
    });
}

fn condition(status: &Value, kind: &str) -> Option<Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn service_ref_instances_from_endpointslices_are_checked_one_by_one_with_events() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let cluster = Cluster::shared();
    let client = setup().await;
    let ns = "e2e-endpoints";
    namespace(&client, ns).await;
    // Instances get real addresses (192.0.2.0/24, TEST-NET-1) in a network namespace of the
    // test's own; the operator runs in it too. (EndpointSlices refuse loopback addresses.)
    let netns = NetNs::create(
        &format!("opsplane-e2e-{}", std::process::id()),
        &["192.0.2.2", "192.0.2.3", "192.0.2.4"],
    )
    .expect("network namespace for the instances");
    let port = 8080;
    let (a_up, b_up, c_up) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    );
    instance(netns.listen(("192.0.2.2", port)).unwrap(), a_up.clone());
    instance(netns.listen(("192.0.2.3", port)).unwrap(), b_up.clone());
    instance(netns.listen(("192.0.2.4", port)).unwrap(), c_up.clone());
    let slices: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("discovery.k8s.io", "v1", "EndpointSlice"),
            "endpointslices",
        ),
    );
    let slice = |addresses: &[&str]| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": addresses.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        }))
        .unwrap()
    };
    // The Service the EndpointSlices belong to: without a selector, so its slices are the
    // test's own (no endpoint controller runs here). The operator checks it exists.
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": port, "protocol": "TCP"}]}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("Service");
    slices
        .create(&PostParams::default(), &slice(&["192.0.2.2", "192.0.2.3"]))
        .await
        .expect("EndpointSlice");
    let msvcs = services(&client, ns);
    msvcs
        .create(&PostParams::default(), &msvc("web", json!({"serviceRef": {"name": "web", "port": "http", "path": "/health"}, "checkInterval": "1s", "timeout": "500ms"})))
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let kubeconfig = netns
        .kubeconfig_for(cluster)
        .expect("kubeconfig inside the namespace");
    let mut command = netns.command(&workspace_bin("opsplane-operator").expect("operator binary"));
    command
        .args([
            "--listen",
            "127.0.0.1:8081",
            "--identity",
            "operator-endpoints",
        ])
        .args(["--lease-namespace", ns])
        .env("KUBECONFIG", &kubeconfig)
        .env(
            "OPSPLANE_STORE_PATH",
            opsplane_e2e::operator_store_path("operator-endpoints"),
        )
        .env("OPSPLANE_TOKEN", "e2e-token-0123456789")
        .env("OPSPLANE_LOG", "info,kube=warn");
    let _operator = Process::spawn("operator-endpoints", command).expect("operator starts");
    eventually("the operator to lead", Duration::from_secs(30), || async {
        (holder(&leases).await.as_deref() == Some("operator-endpoints")).then_some(())
    })
    .await
    .unwrap();
    let status = |want: &'static dyn Fn(&Value) -> bool| {
        let msvcs = msvcs.clone();
        async move {
            eventually("status", Duration::from_secs(20), || async {
                let obj = msvcs.get("web").await.ok()?;
                let status = obj.data.get("status")?.clone();
                want(&status).then_some(status)
            })
            .await
        }
    };
    // Both instances healthy: Available, not Degraded, each listed.
    let healthy = status(&|s: &Value| {
        condition(s, "Available").is_some_and(|c| c["status"] == "True")
            && s["instances"].as_array().is_some_and(|i| i.len() == 2)
    })
    .await
    .unwrap();
    assert_eq!(condition(&healthy, "Degraded").unwrap()["status"], "False");
    assert_eq!(
        healthy["instances"][0]["address"],
        format!("192.0.2.2:{port}")
    );

    // One instance fails: Degraded, naming it.
    b_up.store(false, Ordering::SeqCst);
    let degraded =
        status(&|s: &Value| condition(s, "Degraded").is_some_and(|c| c["status"] == "True"))
            .await
            .unwrap();
    let message = condition(&degraded, "Degraded").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains(&format!("192.0.2.3:{port}")), "{message}");
    assert_eq!(condition(&degraded, "Available").unwrap()["status"], "True");
    // Availability comes from the store's check.up aggregates: a failed instance check
    // pulls it below 100 %.
    let percent = |s: &Value| -> f64 {
        s["availability"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no availability in {s}"))
    };
    assert!((0.0..=100.0).contains(&percent(&healthy)), "{healthy}");
    assert!(percent(&degraded) < 100.0, "{degraded}");

    // All fail: unavailable, and a ServiceDown event.
    a_up.store(false, Ordering::SeqCst);
    status(&|s: &Value| condition(s, "Available").is_some_and(|c| c["status"] == "False"))
        .await
        .unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let reason_seen = |reason: &'static str| {
        let events = events.clone();
        async move {
            eventually(reason, Duration::from_secs(15), || async {
                let list = events.list(&Default::default()).await.ok()?;
                list.items
                    .iter()
                    .any(|e| {
                        e.reason.as_deref() == Some(reason)
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
                    })
                    .then_some(())
            })
            .await
        }
    };
    reason_seen("ServiceDown").await.unwrap();

    // Recovery: available again, with a ServiceUp event.
    a_up.store(true, Ordering::SeqCst);
    b_up.store(true, Ordering::SeqCst);
    status(&|s: &Value| {
        condition(s, "Available").is_some_and(|c| c["status"] == "True")
            && condition(s, "Degraded").is_some_and(|c| c["status"] == "False")
    })
    .await
    .unwrap();
    reason_seen("ServiceUp").await.unwrap();

    // The EndpointSlice changes: the checked instances follow.
    let mut changed = slices.get("web-1").await.unwrap();
    changed.data["endpoints"] =
        json!([{"addresses": ["192.0.2.4"], "conditions": {"ready": true}}]);
    slices
        .replace("web-1", &PostParams::default(), &changed)
        .await
        .unwrap();
    let moved = status(&|s: &Value| s["instances"].as_array().is_some_and(|i| i.len() == 1))
        .await
        .unwrap();
    assert_eq!(
        moved["instances"][0]["address"],
        format!("192.0.2.4:{port}")
    );

    // Deleting the service stops its checks: the operator's check count for it stands still.
    let checks = || -> Option<u64> {
        let metrics = netns.get("127.0.0.1:8081", "/metrics")?;
        metrics.lines().find_map(|l| {
            l.strip_prefix("opsplane_check_duration_seconds_count{service=\"e2e-endpoints/web\"} ")
                .and_then(|v| v.trim().parse().ok())
        })
    };
    assert!(
        checks().is_some_and(|n| n > 0),
        "the operator counted no checks"
    );
    msvcs.delete("web", &Default::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_delete = checks().expect("metrics after delete");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        checks(),
        Some(after_delete),
        "checks went on after the MonitoredService was deleted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_daemon_variant_is_accepted_by_the_api_server_as_rendered() {
    let cluster = Cluster::shared();
    let client = setup().await;
    let ns = "opsplane-daemon-variants";
    namespace(&client, ns).await;
    let kubectl = opsplane_e2e::Kubectl::new(&cluster.kubeconfig).expect("kubectl");
    let variants: [(&str, &[&str]); 4] = [
        ("plain", &[]),
        ("services", &["nodeDaemon.services={libvirtd,sshd}"]),
        (
            "delete",
            &["nodeDaemon.fileDeletePrefixes={/var/tmp/a,/srv/b}"],
        ),
        (
            "all",
            &[
                "nodeDaemon.allowDisruptive=true",
                "nodeDaemon.services={libvirtd}",
                "nodeDaemon.fileDeletePrefixes={/var/tmp/a}",
            ],
        ),
    ];
    for (release, sets) in variants {
        let mut command = Command::new(helm().expect("helm"));
        command
            .args(["template", release])
            .arg(repo_root().join("charts/opsplane"))
            .args([
                "--namespace",
                ns,
                "--show-only",
                "templates/node-daemon.yaml",
            ]);
        for set in sets {
            command.args(["--set", set]);
        }
        let output = command.output().expect("helm template");
        assert!(output.status.success(), "{sets:?}: {output:?}");
        let manifest = String::from_utf8(output.stdout).unwrap();
        // Strict field validation: a field the server does not know is an error, not dropped.
        kubectl
            .run(
                &["create", "--validate=strict", "--namespace", ns, "-f", "-"],
                Some(&manifest),
            )
            .and_then(|o| o.ok())
            .unwrap_or_else(|e| panic!("{sets:?}: the API server refused the DaemonSet: {e}"));
        let stored: Value = serde_json::from_str(
            &kubectl
                .ok(&[
                    "get",
                    "daemonset",
                    &format!("{release}-opsplane-node-daemon"),
                    "--namespace",
                    ns,
                    "-o",
                    "json",
                ])
                .expect("kubectl get"),
        )
        .unwrap();
        let security = &stored["spec"]["template"]["spec"]["containers"][0]["securityContext"];
        let host_access = release == "services" || release == "all";
        assert_eq!(
            security["appArmorProfile"]["type"] == "Unconfined",
            host_access,
            "{release}: {security}"
        );
        let added = security["capabilities"]["add"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            added.contains(&Value::from("SYS_PTRACE")),
            host_access,
            "{release}"
        );
        let mounts =
            stored["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].to_string();
        assert_eq!(
            mounts.contains("/host/var/tmp/a"),
            release == "delete" || release == "all",
            "{release}: {mounts}"
        );
    }
}
