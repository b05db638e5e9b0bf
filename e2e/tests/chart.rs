//! The Helm chart lints clean, renders in its main variants with least-privilege RBAC, and
//! documents every value. (Installing it on a real API server is in `cluster.rs`.)

use std::process::Command;

use opsplane_e2e::{helm, repo_root};
use serde_json::Value;

/// `helm template <release>` with `--set`s: the output, or helm's error.
fn template(release: &str, sets: &[&str]) -> Result<String, String> {
    let chart = repo_root().join("charts/opsplane");
    let mut command = Command::new(helm().expect("helm"));
    command
        .args(["template", release])
        .arg(&chart)
        .args(["--namespace", "opsplane-system"]);
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command.output().expect("helm template");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn render_release(release: &str, sets: &[&str]) -> Vec<Value> {
    let text =
        template(release, sets).unwrap_or_else(|e| panic!("helm template {sets:?} failed: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn render(sets: &[&str]) -> Vec<Value> {
    render_release("opsplane", sets)
}

#[test]
fn values_schema_refuses_bad_values_at_template_time_naming_the_value() {
    let cases = [
        (vec!["operator.replicas=0"], "/operator/replicas"),
        (vec!["operator.port=70000"], "/operator/port"),
        (
            vec!["nodeDaemon.allowDisruptive=yes"],
            "/nodeDaemon/allowDisruptive",
        ),
        (vec!["nodeDeamon.enabled=false"], "nodeDeamon"),
        (vec!["image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (
            vec!["store.retention.hours=forever"],
            "/store/retention/hours",
        ),
        (
            vec!["redis.externalUrl=http://redis:6379"],
            "/redis/externalUrl",
        ),
        (
            vec!["nodeDaemon.fileDeletePrefixes={relative}"],
            "/nodeDaemon/fileDeletePrefixes/0",
        ),
        (
            vec!["nodeDaemon.fileDeletePrefixes={/var/tmp/../../etc}"],
            "/nodeDaemon/fileDeletePrefixes/0",
        ),
        (
            vec!["nodeDaemon.services={ssh d}"],
            "/nodeDaemon/services/0",
        ),
        (vec!["nodeDaemon.hostExec="], "/nodeDaemon/hostExec"),
    ];
    for (sets, field) in cases {
        let error = template("opsplane", &sets).expect_err(&format!("{sets:?} must be refused"));
        assert!(
            error.contains("values don't meet the specifications of the schema")
                && error.contains(field),
            "{sets:?}: expected a schema error naming {field}: {error}"
        );
    }
}

#[test]
fn no_shared_store_for_several_operator_replicas_is_refused() {
    let error = template("opsplane", &["redis.enabled=false"])
        .expect_err("redis.enabled=false with 2 replicas and no external Redis");
    assert!(
        error.contains("redis.enabled=false with operator.replicas=2 and no external Redis")
            && error.contains("redis.externalUrl"),
        "{error}"
    );
    for sets in [
        vec!["redis.enabled=false", "operator.replicas=1"],
        vec![
            "redis.enabled=false",
            "redis.externalUrl=redis://redis.example:6379/0",
        ],
        vec!["redis.enabled=false", "redis.existingSecret=redis-url"],
    ] {
        assert!(
            template("opsplane", &sets).is_ok(),
            "{sets:?} is a working setup"
        );
    }
}

#[test]
fn any_release_name_renders_names_of_at_most_63_characters() {
    // Helm allows release names up to 53 characters.
    let release = "a-release-name-of-fifty-three-characters-for-opsplan";
    let release = &format!("{release}x")[..53];
    for sets in [vec![], vec!["nodeDaemon.allowDisruptive=true"]] {
        for object in render_release(release, &sets) {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            assert!(
                name.len() <= 63,
                "{} {name} is {} characters",
                object["kind"],
                name.len()
            );
        }
    }
}

#[test]
fn user_roles_aggregate_into_view_edit_and_admin() {
    let objects = render(&[]);
    let role = |suffix: &str| {
        objects
            .iter()
            .find(|o| {
                o["kind"] == "ClusterRole"
                    && o["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.ends_with(suffix))
            })
            .unwrap_or_else(|| panic!("no ClusterRole *{suffix}"))
    };
    let aggregates = |o: &Value| {
        let mut to: Vec<String> = o["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let k = k.strip_prefix("rbac.authorization.k8s.io/aggregate-to-")?;
                (*v == "true").then(|| k.to_string())
            })
            .collect();
        to.sort();
        to
    };
    assert_eq!(aggregates(role("-view")), ["admin", "edit", "view"]);
    assert_eq!(aggregates(role("-edit")), ["admin", "edit"]);
    assert_eq!(aggregates(role("-admin")), ["admin"]);
    let off = render(&["rbac.aggregateToDefaultRoles=false"]);
    assert!(
        !off.iter().any(|o| o["kind"] == "ClusterRole"
            && o["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-view"))),
        "aggregateToDefaultRoles=false renders no user roles"
    );
}

#[test]
fn helm_lint_strict_is_clean() {
    let output = Command::new(helm().expect("helm"))
        .args(["lint", "--strict"])
        .arg(repo_root().join("charts/opsplane"))
        .output()
        .expect("helm lint");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "helm lint failed:\n{text}");
    assert!(text.contains("0 chart(s) failed"), "{text}");
}

#[test]
fn rbac_grants_no_wildcards_in_any_variant() {
    for sets in [
        vec![],
        vec![
            "redis.enabled=false",
            "redis.externalUrl=redis://redis.example:6379/0",
        ],
        vec!["nodeDaemon.allowDisruptive=true"],
        vec!["auth.existingSecret=my-token"],
    ] {
        let objects = render(&sets);
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        for expected in [
            "Deployment",
            "DaemonSet",
            "ClusterRole",
            "ClusterRoleBinding",
            "ServiceAccount",
            "Service",
        ] {
            assert!(
                kinds.contains(&expected),
                "{sets:?}: no {expected} rendered ({kinds:?})"
            );
        }
        for object in objects
            .iter()
            .filter(|o| matches!(o["kind"].as_str(), Some("ClusterRole" | "Role")))
        {
            for rule in object["rules"].as_array().into_iter().flatten() {
                for key in ["verbs", "resources", "apiGroups"] {
                    let values = rule[key].as_array().cloned().unwrap_or_default();
                    assert!(
                        !values.iter().any(|v| v == "*"),
                        "{sets:?}: wildcard {key} in {}",
                        object["metadata"]["name"]
                    );
                }
            }
        }
    }
}

#[test]
fn operator_runs_two_replicas_with_leader_election_identity_and_probes() {
    let objects = render(&[]);
    let operator = objects
        .iter()
        .find(|o| {
            o["kind"] == "Deployment"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.contains("operator"))
        })
        .expect("operator Deployment");
    assert_eq!(operator["spec"]["replicas"], 2);
    let container = &operator["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for name in [
        "POD_NAME",
        "POD_NAMESPACE",
        "OPSPLANE_TOKEN",
        "OPSPLANE_REDIS_URL",
    ] {
        assert!(env.contains(&name), "operator env lacks {name}: {env:?}");
    }
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let daemon = objects
        .iter()
        .find(|o| o["kind"] == "DaemonSet")
        .expect("node-daemon DaemonSet");
    let container = &daemon["spec"]["template"]["spec"]["containers"][0];
    let node_name = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
}

#[test]
fn node_daemon_may_only_read_node_tasks_and_patch_their_status() {
    let objects = render(&[]);
    let role = objects
        .iter()
        .find(|o| {
            o["kind"] == "ClusterRole"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-node-daemon"))
        })
        .expect("node-daemon ClusterRole");
    let mut grants: Vec<String> = Vec::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        for group in rule["apiGroups"].as_array().into_iter().flatten() {
            for resource in rule["resources"].as_array().into_iter().flatten() {
                for verb in rule["verbs"].as_array().into_iter().flatten() {
                    grants.push(format!(
                        "{}/{}:{}",
                        group.as_str().unwrap_or("?"),
                        resource.as_str().unwrap_or("?"),
                        verb.as_str().unwrap_or("?")
                    ));
                }
            }
        }
    }
    grants.sort();
    assert_eq!(
        grants,
        [
            "opsplane.io/nodetasks/status:patch",
            "opsplane.io/nodetasks:list",
            "opsplane.io/nodetasks:watch",
        ]
    );
    // The watcher is on, and the settings reach the daemon under the names it reads.
    let daemon = objects
        .iter()
        .find(|o| o["kind"] == "DaemonSet")
        .expect("node-daemon DaemonSet");
    let env = &daemon["spec"]["template"]["spec"]["containers"][0]["env"];
    let value = |name: &str| {
        env.as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(value("OPSPLANE_NODE_TASKS"), Some(Value::from("auto")));
    assert!(value("OPSPLANE_ALLOW_DELETE_PREFIX").is_none());
    let objects = render(&[
        "nodeDaemon.fileDeletePrefixes={/var/tmp/a,/srv/b}",
        "nodeDaemon.nodeTasks=false",
    ]);
    let daemon = objects
        .iter()
        .find(|o| o["kind"] == "DaemonSet")
        .expect("node-daemon DaemonSet");
    let env = &daemon["spec"]["template"]["spec"]["containers"][0]["env"];
    let value = |name: &str| {
        env.as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        value("OPSPLANE_ALLOW_DELETE_PREFIX"),
        Some(Value::from("/var/tmp/a,/srv/b"))
    );
    assert_eq!(value("OPSPLANE_NODE_TASKS"), Some(Value::from("off")));
}

#[test]
fn every_value_in_values_yaml_is_commented() {
    let text = std::fs::read_to_string(repo_root().join("charts/opsplane/values.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut undocumented = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let is_key = !trimmed.starts_with('#')
            && !trimmed.starts_with("- ")
            && trimmed
                .split_once(':')
                .is_some_and(|(k, _)| !k.is_empty() && !k.contains(' ') && !k.contains('"'));
        if !is_key {
            continue;
        }
        // A key is documented by the comment line right above it, or by a trailing comment.
        let previous = lines[..index]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim_start());
        let documented = previous.is_some_and(|p| p.starts_with('#')) || trimmed.contains(" # ");
        if !documented {
            undocumented.push(format!("{}: {}", index + 1, line));
        }
    }
    assert!(
        undocumented.is_empty(),
        "values without a comment:\n{}",
        undocumented.join("\n")
    );
}

/// The node-daemons' `/metrics` carries the host inventory: by default the DaemonSet gets the
/// metrics token from its own Secret and the ServiceMonitor sends it; `nodeDaemon.openMetrics`
/// opens it and the ServiceMonitor sends nothing (issue 16, 9).
#[test]
fn node_daemon_metrics_need_the_metrics_token_unless_opened() {
    let render_monitoring = |sets: &[&str]| -> Vec<Value> {
        let mut command = Command::new(helm().expect("helm"));
        command
            .args(["template", "opsplane"])
            .arg(repo_root().join("charts/opsplane"))
            .args(["--namespace", "opsplane-system"])
            .args(["--api-versions", "monitoring.coreos.com/v1"])
            .args(["--set", "serviceMonitor.enabled=true"]);
        for set in sets {
            command.args(["--set", set]);
        }
        let output = command.output().expect("helm template");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        serde_yaml::Deserializer::from_str(&text)
            .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
            .filter(|v| !v.is_null())
            .collect()
    };
    let env_of = |objects: &[Value], name: &str| -> Value {
        let daemon = objects
            .iter()
            .find(|o| o["kind"] == "DaemonSet")
            .expect("DaemonSet");
        daemon["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let node_monitor = |objects: &[Value]| -> Value {
        objects
            .iter()
            .find(|o| {
                o["kind"] == "ServiceMonitor"
                    && o["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.ends_with("-node-daemon"))
            })
            .expect("node-daemon ServiceMonitor")["spec"]["endpoints"][0]
            .clone()
    };

    let objects = render_monitoring(&[]);
    assert!(
        objects.iter().any(|o| o["kind"] == "Secret"
            && o["metadata"]["name"] == "opsplane-metrics-token"
            && o["data"]["token"].is_string()),
        "a metrics token Secret"
    );
    assert_eq!(
        env_of(&objects, "OPSPLANE_METRICS_TOKEN")["valueFrom"]["secretKeyRef"]["name"],
        "opsplane-metrics-token"
    );
    assert_eq!(env_of(&objects, "OPSPLANE_OPEN_METRICS")["value"], "false");
    let endpoint = node_monitor(&objects);
    assert_eq!(endpoint["authorization"]["type"], "Bearer", "{endpoint:?}");
    assert_eq!(
        endpoint["authorization"]["credentials"]["name"],
        "opsplane-metrics-token"
    );

    let objects = render_monitoring(&["auth.existingMetricsSecret=scrape"]);
    assert!(
        !objects
            .iter()
            .any(|o| o["metadata"]["name"] == "opsplane-metrics-token"),
        "an existing Secret is used, not created"
    );
    assert_eq!(
        node_monitor(&objects)["authorization"]["credentials"]["name"],
        "scrape"
    );

    let objects = render_monitoring(&["nodeDaemon.openMetrics=true"]);
    assert_eq!(env_of(&objects, "OPSPLANE_OPEN_METRICS")["value"], "true");
    assert!(node_monitor(&objects)["authorization"].is_null());
}

/// The node-daemon's container and pod spec rendered with `sets`.
fn node_daemon(sets: &[&str]) -> Value {
    render(sets)
        .into_iter()
        .find(|o| o["kind"] == "DaemonSet")
        .unwrap_or_else(|| panic!("{sets:?}: no node-daemon DaemonSet"))
}

#[test]
fn node_daemon_reaches_its_host_only_as_far_as_each_combination_of_values_needs() {
    let nsenter = "nsenter --target 1 --mount --uts --ipc --net --pid --";
    for disruptive in [false, true] {
        for services in [None, Some("{libvirtd,sshd}")] {
            for prefixes in [None, Some("{/var/tmp/a/,/srv/b}")] {
                let mut sets = vec![format!("nodeDaemon.allowDisruptive={disruptive}")];
                if let Some(services) = services {
                    sets.push(format!("nodeDaemon.services={services}"));
                }
                if let Some(prefixes) = prefixes {
                    sets.push(format!("nodeDaemon.fileDeletePrefixes={prefixes}"));
                }
                let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
                let host_access = disruptive || services.is_some();
                let daemon = node_daemon(&sets);
                let pod = &daemon["spec"]["template"]["spec"];
                let container = &pod["containers"][0];
                let env = |name: &str| {
                    container["env"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|e| e["name"] == name)
                        .map(|e| e["value"].clone())
                };

                // systemctl and the power command go through nsenter exactly when needed.
                assert_eq!(
                    env("OPSPLANE_HOST_EXEC"),
                    host_access.then(|| Value::from(nsenter)),
                    "{sets:?}"
                );
                assert_eq!(
                    env("OPSPLANE_SERVICES"),
                    services.map(|_| Value::from("libvirtd,sshd")),
                    "{sets:?}"
                );
                assert_eq!(
                    env("OPSPLANE_ALLOW_DISRUPTIVE"),
                    Some(Value::from(disruptive.to_string()))
                );
                assert_eq!(pod["hostPID"], true, "{sets:?}");

                // Capabilities: none beyond what nsenter and netlink need, and only then.
                let security = &container["securityContext"];
                assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
                let mut added: Vec<&str> = security["capabilities"]["add"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                added.sort();
                let mut expected: Vec<&str> = Vec::new();
                if host_access {
                    expected.extend(["SYS_ADMIN", "SYS_CHROOT", "SYS_PTRACE"]);
                }
                if disruptive {
                    expected.push("NET_ADMIN");
                }
                expected.sort();
                assert_eq!(added, expected, "{sets:?}");
                assert_eq!(
                    security["appArmorProfile"]["type"] == "Unconfined",
                    host_access,
                    "{sets:?}: AppArmor unconfined only for nsenter"
                );
                assert_ne!(security["privileged"], true, "{sets:?}: never privileged");
                assert_eq!(security["allowPrivilegeEscalation"], false);
                assert_eq!(security["readOnlyRootFilesystem"], true);

                // Mounts: the host read-only; writable are the state directory, the
                // configured delete prefixes (at the same place under /host) and, for IP
                // tasks, the network-config directory - nothing else.
                let volumes: Vec<&Value> = pod["volumes"].as_array().unwrap().iter().collect();
                let host_path = |name: &str| {
                    volumes
                        .iter()
                        .find(|v| v["name"] == name)
                        .and_then(|v| v["hostPath"]["path"].as_str())
                        .unwrap_or_else(|| panic!("{sets:?}: no hostPath volume {name}"))
                        .to_owned()
                };
                let mut writable: Vec<(String, String)> = Vec::new();
                for mount in container["volumeMounts"].as_array().unwrap() {
                    let name = mount["name"].as_str().unwrap();
                    let path = mount["mountPath"].as_str().unwrap();
                    if mount["readOnly"] == true {
                        assert_eq!((name, path), ("host-root", "/host"), "{sets:?}");
                        assert_eq!(host_path(name), "/");
                        continue;
                    }
                    writable.push((path.to_owned(), host_path(name)));
                }
                writable.sort();
                let mut expected: Vec<(String, String)> =
                    vec![("/var/lib/opsplane".into(), "/var/lib/opsplane".into())];
                if prefixes.is_some() {
                    expected.push(("/host/var/tmp/a".into(), "/var/tmp/a".into()));
                    expected.push(("/host/srv/b".into(), "/srv/b".into()));
                }
                if disruptive {
                    expected.push((
                        "/host-network-config".into(),
                        "/etc/opsplane/network".into(),
                    ));
                }
                expected.sort();
                assert_eq!(writable, expected, "{sets:?}");
                assert_eq!(
                    volumes.len(),
                    expected.len() + 1,
                    "{sets:?}: a volume per mount, no more"
                );
                assert_eq!(
                    env("OPSPLANE_ALLOW_DELETE_PREFIX"),
                    prefixes.map(|_| Value::from("/var/tmp/a/,/srv/b")),
                    "{sets:?}"
                );
            }
        }
    }
}

#[test]
fn host_access_without_host_pid_is_refused_naming_the_values() {
    for set in [
        "nodeDaemon.allowDisruptive=true",
        "nodeDaemon.services={sshd}",
    ] {
        let error = template("opsplane", &[set, "nodeDaemon.hostPID=false"])
            .expect_err("hostPID=false with host access");
        assert!(
            error.contains("nodeDaemon.hostPID=false") && error.contains("nsenter"),
            "{set}: {error}"
        );
    }
    let daemon = node_daemon(&["nodeDaemon.hostPID=false"]);
    assert_eq!(daemon["spec"]["template"]["spec"]["hostPID"], false);
}
