//! Kubernetes tokens on the operator's API, against the real kube-apiserver: a ServiceAccount
//! token is authenticated by TokenReview and each request is allowed or refused by
//! SubjectAccessReview on the opsplane.io resource and verb of the route, as RBAC says — one
//! ServiceAccount bound to a ClusterRole that may list monitoredservices, one bound to nothing,
//! and two that may create NodeTasks, one of them disruptive ones too (`disrupt nodetasks`).

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, PostParams};
use opsplane_e2e::{Cluster, Process, apply_crds, eventually, free_port, workspace_bin};
use opsplane_serve::testing;
use serde_json::json;

const NS: &str = "auth-e2e";

fn request(port: u16, method: &str, path: &str, token: &str, body: &str) -> Option<(u16, String)> {
    let auth = format!("Bearer {token}");
    let e = testing::request(
        ("127.0.0.1", port),
        method,
        path,
        &[("authorization", &auth)],
        body,
    );
    e.ok().map(|e| (e.status, e.response))
}

async fn create<K>(api: &Api<K>, value: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value).expect("a valid object");
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating an object: {e}"),
    }
}

async fn token_of(client: &kube::Client, name: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    create(&accounts, json!({"metadata": {"name": name}})).await;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("a ServiceAccount token")
        .status
        .and_then(|s| s.token)
        .expect("a token in the status")
}

#[tokio::test(flavor = "multi_thread")]
async fn service_account_tokens_are_authorised_by_rbac_per_route() {
    let cluster = Cluster::shared();
    let client = cluster.client().await.expect("kube client");
    apply_crds(&client).await.expect("CRDs");
    create(
        &Api::<Namespace>::all(client.clone()),
        json!({"metadata": {"name": NS}}),
    )
    .await;
    create(
        &Api::<ClusterRole>::all(client.clone()),
        json!({"metadata": {"name": "auth-e2e-msvc-reader"},
               "rules": [{"apiGroups": ["opsplane.io"], "resources": ["monitoredservices"], "verbs": ["get", "list"]}]}),
    )
    .await;
    create(
        &Api::<ClusterRoleBinding>::all(client.clone()),
        json!({"metadata": {"name": "auth-e2e-msvc-reader"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "auth-e2e-msvc-reader"},
               "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": NS}]}),
    )
    .await;
    // NodeTasks: one account may create them, another may also run disruptive commands
    // (the `disrupt` verb on nodetasks, what the admin role means for Kubernetes callers).
    for (role, verbs) in [
        ("auth-e2e-task-writer", json!(["create"])),
        ("auth-e2e-task-disrupter", json!(["create", "disrupt"])),
    ] {
        create(
            &Api::<ClusterRole>::all(client.clone()),
            json!({"metadata": {"name": role},
                   "rules": [{"apiGroups": ["opsplane.io"], "resources": ["nodetasks"], "verbs": verbs}]}),
        )
        .await;
        let account = role.trim_start_matches("auth-e2e-task-");
        create(
            &Api::<ClusterRoleBinding>::all(client.clone()),
            json!({"metadata": {"name": role},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                   "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NS}]}),
        )
        .await;
    }
    let reader = token_of(&client, "reader").await;
    let nobody = token_of(&client, "nobody").await;
    let writer = token_of(&client, "writer").await;
    let disrupter = token_of(&client, "disrupter").await;

    let port = free_port();
    let mut command = Command::new(workspace_bin("opsplane-operator").expect("operator binary"));
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--identity", "auth-e2e", "--lease-namespace", NS])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env(
            "OPSPLANE_STORE_PATH",
            opsplane_e2e::operator_store_path("auth-e2e"),
        )
        .env("OPSPLANE_TOKEN", "auth-e2e-admin-token-0123")
        .env("OPSPLANE_LOG", "info,kube=warn");
    let _operator = Process::spawn("operator", command).expect("operator starts");
    eventually("the operator serves", Duration::from_secs(30), || async {
        request(port, "GET", "/healthz", "x", "").filter(|(s, _)| *s == 200)
    })
    .await
    .expect("healthz");

    // RBAC allows the reader to list MonitoredServices: the Eve list answers.
    let (status, response) = request(port, "GET", "/api/v1/services", &reader, "").unwrap();
    assert_eq!(status, 200, "{response}");
    // ...but not to post events: 403 in GeoNode's envelope, naming what was refused.
    let (status, response) = request(
        port,
        "POST",
        "/monitoring/api/ingest/",
        &reader,
        r#"[{"service": "x", "status": 200}]"#,
    )
    .unwrap();
    assert_eq!(status, 403, "{response}");
    assert!(
        response.contains("system:serviceaccount:auth-e2e:reader")
            && response.contains("create events"),
        "{response}"
    );
    // NodeTasks: a harmless command needs `create nodetasks`; a disruptive one `disrupt` too,
    // asked of SubjectAccessReview before anything is created.
    let task = |name: &str, handler: &str, command: &str| {
        let mut spec =
            json!({"nodeNames": ["auth-e2e-nowhere"], "handler": handler, "command": command});
        if handler == "ServiceHandler" {
            spec["data"] = json!({"service": ["auth-e2e.service"]});
        }
        json!({"metadata": {"name": name}, "spec": spec}).to_string()
    };
    let tasks = Api::<kube::api::DynamicObject>::all_with(
        client.clone(),
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("opsplane.io", "v1alpha1", "NodeTask"),
            "nodetasks",
        ),
    );
    // (who, task, handler, command, status, the account the refusal names)
    let cases = [
        (
            &writer,
            "auth-e2e-start",
            "ServiceHandler",
            "start",
            201,
            None,
        ),
        (
            &writer,
            "auth-e2e-reboot-1",
            "OsHandler",
            "reboot",
            403,
            Some("writer"),
        ),
        // The reader may not create tasks at all.
        (
            &reader,
            "auth-e2e-start-2",
            "ServiceHandler",
            "start",
            403,
            Some("reader"),
        ),
        (
            &disrupter,
            "auth-e2e-reboot-2",
            "OsHandler",
            "reboot",
            201,
            None,
        ),
    ];
    for (token, name, handler, command, want, refused) in cases {
        let (status, response) = request(
            port,
            "POST",
            "/api/v1/tasks",
            token,
            &task(name, handler, command),
        )
        .unwrap();
        assert_eq!(status, want, "{name}: {response}");
        if let Some(account) = refused {
            assert!(
                response.contains(&format!("system:serviceaccount:auth-e2e:{account}")),
                "{name}: {response}"
            );
        }
        if handler == "OsHandler" && want == 403 {
            assert!(response.contains("disruptive"), "{name}: {response}");
        }
        // Created exactly when allowed.
        let exists = tasks.get_opt(name).await.unwrap().is_some();
        assert_eq!(exists, want == 201, "{name}");
    }
    // A ServiceAccount bound to nothing may read nothing.
    let (status, response) = request(port, "GET", "/api/v1/services", &nobody, "").unwrap();
    assert_eq!(status, 403, "{response}");
    // A token the API server does not know is no credential at all.
    let (status, response) = request(
        port,
        "GET",
        "/api/v1/services",
        "not-a-kubernetes-token",
        "",
    )
    .unwrap();
    assert_eq!(status, 401, "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{response}"
    );
}
