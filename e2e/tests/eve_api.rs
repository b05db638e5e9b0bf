//! The Eve resource API (seed 004) on a real kube-apiserver: every write path goes through the
//! API server (its CRD validation is the API's), reads come from the operator's reflector
//! caches, If-Match is carried as the resourceVersion precondition.
//!
//! The operator runs with its controllers idle (another holder keeps the leader Lease), so
//! nothing but these requests changes the objects and every ETag is the test's own.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use opsplane_e2e::{Cluster, Process, apply_crds, eventually, free_port, workspace_bin};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const TOKEN: &str = "e2e-eve-token-0123456789";

struct Env {
    client: kube::Client,
    base: String,
    http: reqwest::Client,
    _operator: Process,
}

async fn env(name: &str) -> Env {
    env_with(name, &Cluster::shared().kubeconfig).await
}

/// The operator of `env`, talking to the API server through `kubeconfig`.
async fn env_with(name: &str, kubeconfig: &std::path::Path) -> Env {
    let cluster = Cluster::shared();
    let client = cluster.client().await.expect("kube client");
    apply_crds(&client).await.expect("CRDs");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [name.to_string(), format!("{name}-lease")] {
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        let _ = namespaces.create(&PostParams::default(), &obj).await;
    }
    // A Lease someone else holds for an hour: this operator serves the API only.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &format!("{name}-lease"));
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "opsplane-operator"},
        "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600,
                 "renewTime": jiff::Timestamp::now().to_string(), "acquireTime": jiff::Timestamp::now().to_string()}
    }))
    .unwrap();
    let _ = leases.create(&PostParams::default(), &lease).await;
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("opsplane-e2e-eve-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut operator = Command::new(workspace_bin("opsplane-operator").expect("operator binary"));
    operator
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--identity",
            name,
            "--lease-namespace",
            &format!("{name}-lease"),
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("OPSPLANE_STORE_PATH", dir.join("store.redb"))
        .env("OPSPLANE_TOKEN", TOKEN)
        .env("OPSPLANE_RATE_LIMIT", "off")
        .env("OPSPLANE_LOG", "info,kube=warn");
    let operator = Process::spawn(name, operator).expect("operator starts");
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let http = reqwest::Client::new();
    eventually(
        "the API to serve from synced caches",
        Duration::from_secs(30),
        || {
            let http = http.clone();
            let url = format!("{base}/services");
            async move {
                let r = http.get(url).bearer_auth(TOKEN).send().await.ok()?;
                (r.status() == 200).then_some(())
            }
        },
    )
    .await
    .expect("API up");
    Env {
        client,
        base,
        http,
        _operator: operator,
    }
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn etag(&self) -> String {
        self.headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim_matches('"')
            .to_string()
    }
}

impl Env {
    async fn send(
        &self,
        method: Method,
        path: &str,
        if_match: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(e) = if_match {
            r = r.header("if-match", e);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let response = r.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, None).await
    }

    /// `POST /services` of one object.
    async fn post_service(&self, object: Value) -> Answer {
        self.send(Method::POST, "/services", None, Some(&object))
            .await
    }

    /// Waits until the cache shows `path` answering `status` (reads lag writes by a watch event).
    async fn settled(&self, path: &str, status: u16) -> Answer {
        eventually(
            &format!("GET {path} to answer {status}"),
            Duration::from_secs(10),
            || async {
                let a = self.get(path).await;
                (a.status == status).then_some(a)
            },
        )
        .await
        .expect("the cache follows the write")
    }
}

fn services_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("opsplane.io", "v1alpha1", "MonitoredService"),
        "monitoredservices",
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn service(ns: &str, name: &str, interval: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": ns},
           "spec": {"url": format!("http://127.0.0.1:9/{name}"), "checkInterval": interval}})
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_go_through_the_api_server_with_preconditions_versions_tombstones_and_the_oplog() {
    let env = env("e2e-eve-crud").await;
    let ns = "e2e-eve-crud";

    // POST creates the object in the API server.
    let created = env.post_service(service(ns, "web", "30s")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let in_cluster = services_api(&env.client, ns)
        .get("web")
        .await
        .expect("the object exists");
    assert_eq!(in_cluster.data["spec"]["checkInterval"], "30s");
    let etag1 = created.etag();
    let item = env.settled(&format!("/services/{ns}/web"), 200).await;
    assert_eq!(item.etag(), etag1);
    assert_eq!(
        item.body["metadata"]["resourceVersion"].as_str(),
        in_cluster.metadata.resource_version.as_deref()
    );

    // The API server's validation is the API's: 422 with _issues keyed by field path.
    let bad = env.post_service(service(ns, "bad", "soon")).await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    let issues = bad.body["_issues"].as_object().expect("_issues");
    assert!(
        issues.keys().any(|k| k.starts_with("spec.checkInterval")),
        "{issues:?}"
    );
    // A rule that spans fields (CEL): url and serviceRef together.
    let both = json!({"metadata": {"name": "both", "namespace": ns},
                      "spec": {"url": "http://a/", "serviceRef": {"name": "x", "port": "http"}}});
    let bad = env.send(Method::POST, "/services", None, Some(&both)).await;
    assert_eq!(bad.status, 422, "{}", bad.body);

    // PATCH without If-Match 428, stale 412, right 200 — and the API server has the change.
    let patch = json!({"spec": {"checkInterval": "10s"}});
    assert_eq!(
        env.send(
            Method::PATCH,
            &format!("/services/{ns}/web"),
            None,
            Some(&patch)
        )
        .await
        .status,
        428
    );
    assert_eq!(
        env.send(
            Method::PATCH,
            &format!("/services/{ns}/web"),
            Some("stale"),
            Some(&patch)
        )
        .await
        .status,
        412
    );
    let patched = env
        .send(
            Method::PATCH,
            &format!("/services/{ns}/web"),
            Some(&etag1),
            Some(&patch),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    // Server-Timing: the API server's write and the store's record, both taken.
    let timing = patched.headers["server-timing"].to_str().unwrap();
    let parts: Vec<(&str, f64)> = timing
        .split(", ")
        .map(|p| {
            let (name, dur) = p.split_once(";dur=").expect(timing);
            (name, dur.parse().expect(timing))
        })
        .collect();
    assert_eq!(parts.len(), 2, "{timing}");
    assert_eq!((parts[0].0, parts[1].0), ("write", "record"), "{timing}");
    assert!(parts[0].1 > 0.0 && parts[1].1 > 0.0, "{timing}");
    let etag2 = patched.etag();
    // Straight after the write, before the cache may have it: the next write with the new ETag
    // is accepted (the API server is asked when the cache does not match).
    let put = env
        .send(
            Method::PUT,
            &format!("/services/{ns}/web"),
            Some(&etag2),
            Some(&json!({"spec": {"url": "http://127.0.0.1:9/other", "checkInterval": "20s"}})),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let etag3 = put.etag();
    let obj = services_api(&env.client, ns).get("web").await.unwrap();
    assert_eq!(
        obj.data["spec"],
        json!({"url": "http://127.0.0.1:9/other", "checkInterval": "20s"})
    );
    assert_eq!(
        obj.metadata.annotations.as_ref().unwrap()["opsplane.io/version"],
        "3"
    );
    // A stale ETag on PATCH is refused by the precondition even though the cache may lag.
    assert_eq!(
        env.send(
            Method::PATCH,
            &format!("/services/{ns}/web"),
            Some(&etag1),
            Some(&patch)
        )
        .await
        .status,
        412
    );

    // Versions kept in the store.
    eventually(
        "the cache to reach version 3",
        Duration::from_secs(10),
        || async {
            (env.get(&format!("/services/{ns}/web")).await.body["_version"] == 3).then_some(())
        },
    )
    .await
    .unwrap();
    let all = env
        .get(&format!("/services/{ns}/web?version=all"))
        .await
        .body;
    let intervals: Vec<&str> = all["_items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["spec"]["checkInterval"].as_str().unwrap())
        .collect();
    assert_eq!(intervals, ["30s", "10s", "20s"]);

    // Soft delete: gone from the API server, 404 with the document here, restored by PATCH.
    let deleted = env
        .send(
            Method::DELETE,
            &format!("/services/{ns}/web"),
            Some(&etag3),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert!(
        services_api(&env.client, ns)
            .get_opt("web")
            .await
            .unwrap()
            .is_none()
    );
    let gone = env.settled(&format!("/services/{ns}/web"), 404).await;
    assert_eq!(gone.body["_deleted"], true);
    let tomb = gone.body["_etag"].as_str().unwrap().to_string();
    let restored = env
        .send(
            Method::PATCH,
            &format!("/services/{ns}/web"),
            Some(&tomb),
            Some(&json!({"spec": {"checkInterval": "15s"}})),
        )
        .await;
    assert_eq!(restored.status, 200, "{}", restored.body);
    let back = services_api(&env.client, ns)
        .get("web")
        .await
        .expect("re-created in the cluster");
    assert_eq!(back.data["spec"]["checkInterval"], "15s");
    assert_eq!(back.data["spec"]["url"], "http://127.0.0.1:9/other");

    // The oplog: each write with the principal's name.
    let oplog = env.get("/oplog?max_results=100").await.body;
    let ops: Vec<(&str, &str)> = oplog["_items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["i"] == format!("{ns}/web"))
        .map(|e| (e["o"].as_str().unwrap(), e["u"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [
            ("POST", "admin"),
            ("PATCH", "admin"),
            ("PUT", "admin"),
            ("DELETE", "admin"),
            ("PATCH", "admin")
        ]
    );
    assert!(!oplog.to_string().contains(TOKEN));

    // An object made with kubectl-like tools is served from the cache too.
    let direct: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "opsplane.io/v1alpha1", "kind": "MonitoredService",
        "metadata": {"name": "direct", "namespace": ns},
        "spec": {"url": "http://127.0.0.1:9/d", "checkInterval": "30s"}}))
    .unwrap();
    services_api(&env.client, ns)
        .create(&PostParams::default(), &direct)
        .await
        .unwrap();
    let seen = env.settled(&format!("/services/{ns}/direct"), 200).await;
    assert_eq!(seen.body["_version"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_post_with_one_invalid_item_creates_nothing() {
    let env = env("e2e-eve-bulk").await;
    let ns = "e2e-eve-bulk";
    let items = json!([
        service(ns, "a", "10s"),
        service(ns, "b", "10 seconds"),
        service(ns, "c", "10s")
    ]);
    let bulk = env
        .send(Method::POST, "/services", None, Some(&items))
        .await;
    assert_eq!(bulk.status, 422, "{}", bulk.body);
    assert_eq!(bulk.body["_items"][0]["_status"], "OK");
    assert_eq!(bulk.body["_items"][1]["_status"], "ERR");
    assert!(
        bulk.body["_items"][1]["_issues"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("spec.checkInterval"))
    );
    let list = services_api(&env.client, ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(list.items.is_empty(), "the dry run created nothing");
    let good = json!([service(ns, "a", "10s"), service(ns, "c", "10s")]);
    let bulk = env.send(Method::POST, "/services", None, Some(&good)).await;
    assert_eq!(bulk.status, 201, "{}", bulk.body);
    assert_eq!(
        services_api(&env.client, ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    // A list with an item that already exists: 422, the new one is not created either.
    let again = json!([service(ns, "d", "10s"), service(ns, "a", "10s")]);
    let bulk = env
        .send(Method::POST, "/services", None, Some(&again))
        .await;
    assert_eq!(bulk.status, 422, "{}", bulk.body);
    assert!(
        services_api(&env.client, ns)
            .get_opt("d")
            .await
            .unwrap()
            .is_none()
    );
}

/// A bulk insert whose items all pass the dry run but whose second create is refused by the API
/// server (a ResourceQuota of one MonitoredService: a dry run does not use up quota, the first
/// real create does): the first item is deleted again, the answer is the API server's refusal,
/// and neither the oplog nor the versions keep a trace.
#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_post_whose_later_create_is_refused_rolls_back_what_it_created() {
    let env = env("e2e-eve-rollback").await;
    let ns = "e2e-eve-rollback";
    let quotas: Api<ResourceQuota> = Api::namespaced(env.client.clone(), ns);
    let hard = json!({"count/monitoredservices.opsplane.io": "1"});
    let quota: ResourceQuota = serde_json::from_value(
        json!({"metadata": {"name": "one-service"}, "spec": {"hard": hard}}),
    )
    .unwrap();
    let _ = quotas.create(&PostParams::default(), &quota).await;
    // No kube-controller-manager runs here: the test gives the quota the status its controller
    // would, so that the API server's quota admission counts against it.
    quotas
        .patch_status(
            "one-service",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"hard": hard,
                                             "used": {"count/monitoredservices.opsplane.io": "0"}}})),
        )
        .await
        .expect("quota status");
    let items = json!([service(ns, "first", "10s"), service(ns, "second", "10s")]);
    let bulk = env
        .send(Method::POST, "/services", None, Some(&items))
        .await;
    assert_eq!(bulk.status, 403, "{}", bulk.body);
    let message = bulk.body["_error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("refused") && message.contains("exceeded quota"),
        "{}",
        bulk.body
    );
    // The first item was created, then deleted again.
    let left = services_api(&env.client, ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        left.items.is_empty(),
        "rolled back: {:?}",
        left.items
            .iter()
            .map(|o| o.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    let item = env.settled(&format!("/services/{ns}/first"), 404).await;
    assert_ne!(
        item.body["_deleted"], true,
        "a rolled-back item is no tombstone"
    );
    let oplog = env.get("/oplog?max_results=100").await.body;
    assert_eq!(oplog["_meta"]["total"], 0, "{oplog}");
    assert_eq!(
        env.get(&format!("/services/{ns}/first?version=all"))
            .await
            .status,
        404
    );
}

/// A TCP relay to the API server that can be cut (connections dropped, new ones refused) and
/// restored on the same port.
struct Relay {
    port: u16,
    upstream: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(upstream: std::net::SocketAddr) -> Relay {
        let mut relay = Relay {
            port: free_port(),
            upstream,
            task: None,
        };
        relay.restore().await;
        relay
    }

    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("relay port");
        let upstream = self.upstream;
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                conns.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Drops every relayed connection and the listener (a JoinSet aborts its tasks on drop).
    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// While the API server cannot be reached, reads keep coming from the caches and every write
/// answers 502 in Eve's envelope, with nothing half-done: no object, no oplog entry, no
/// version. Once it is back, the same write succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn writes_answer_502_while_the_api_server_is_unreachable_and_nothing_is_half_done() {
    let cluster = Cluster::shared();
    let upstream: std::net::SocketAddr = cluster
        .server
        .trim_start_matches("https://")
        .parse()
        .expect("the API server's address");
    let mut relay = Relay::start(upstream).await;
    let kubeconfig = std::env::temp_dir().join(format!(
        "opsplane-e2e-eve-relay-{}.kubeconfig",
        std::process::id()
    ));
    let text = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    assert!(
        text.contains(&cluster.server),
        "kubeconfig names the server"
    );
    std::fs::write(
        &kubeconfig,
        text.replace(
            &cluster.server,
            &format!("https://127.0.0.1:{}", relay.port),
        ),
    )
    .unwrap();
    let env = env_with("e2e-eve-upstream", &kubeconfig).await;
    let ns = "e2e-eve-upstream";
    let created = env.post_service(service(ns, "kept", "10s")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let kept = env.settled(&format!("/services/{ns}/kept"), 200).await;

    relay.cut().await;
    let post = env.post_service(service(ns, "new", "10s")).await;
    assert_eq!(post.status, 502, "{}", post.body);
    assert_eq!(post.body["_status"], "ERR", "{}", post.body);
    assert_eq!(post.body["_error"]["code"], 502, "{}", post.body);
    let patch = env
        .send(
            Method::PATCH,
            &format!("/services/{ns}/kept"),
            Some(&kept.etag()),
            Some(&json!({"spec": {"checkInterval": "20s"}})),
        )
        .await;
    assert_eq!(patch.status, 502, "{}", patch.body);
    let delete = env
        .send(
            Method::DELETE,
            &format!("/services/{ns}/kept"),
            Some(&kept.etag()),
            None,
        )
        .await;
    assert_eq!(delete.status, 502, "{}", delete.body);
    // Reads are served from the cache meanwhile, unchanged.
    let read = env.get(&format!("/services/{ns}/kept")).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.etag(), kept.etag());
    assert_eq!(read.body["spec"]["checkInterval"], "10s");
    // Only the create before the cut is in the oplog.
    let oplog = env.get("/oplog?max_results=100").await.body;
    assert_eq!(oplog["_meta"]["total"], 1, "{oplog}");

    relay.restore().await;
    let patch = eventually(
        "the PATCH to succeed once the API server is back",
        Duration::from_secs(30),
        || async {
            let a = env
                .send(
                    Method::PATCH,
                    &format!("/services/{ns}/kept"),
                    Some(&kept.etag()),
                    Some(&json!({"spec": {"checkInterval": "20s"}})),
                )
                .await;
            (a.status == 200).then_some(a)
        },
    )
    .await
    .expect("writes work again");
    assert_eq!(patch.body["_status"], "OK");
    let direct = services_api(&env.client, ns).get("kept").await.unwrap();
    assert_eq!(direct.data["spec"]["checkInterval"], "20s");
    assert!(
        services_api(&env.client, ns)
            .get_opt("new")
            .await
            .unwrap()
            .is_none()
    );
    let _ = std::fs::remove_file(&kubeconfig);
}

#[tokio::test(flavor = "multi_thread")]
async fn of_concurrent_patches_with_one_etag_exactly_one_wins_on_the_api_server() {
    let env = env("e2e-eve-race").await;
    let ns = "e2e-eve-race";
    let created = env.post_service(service(ns, "race", "10s")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let etag = created.etag();
    env.settled(&format!("/services/{ns}/race"), 200).await;
    let patches = (0..12).map(|i| {
        let etag = etag.clone();
        let env = &env;
        async move {
            let body = json!({"spec": {"checkInterval": format!("{}s", i + 2)}});
            env.send(
                Method::PATCH,
                &format!("/services/{ns}/race"),
                Some(&etag),
                Some(&body),
            )
            .await
            .status
        }
    });
    let statuses = futures::future::join_all(patches).await;
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let lost = statuses
        .iter()
        .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((won, lost), (1, 11), "{statuses:?}");
    let obj = services_api(&env.client, ns).get("race").await.unwrap();
    assert_eq!(
        obj.metadata.annotations.unwrap()["opsplane.io/version"],
        "2",
        "one write landed"
    );
}
