//! The Helm chart lints clean, renders in its main variants with least-privilege RBAC, and
//! documents every value. (Installing it on a real API server is in `cluster.rs`.)

use std::process::Command;

use opsplane_e2e::{helm, repo_root};
use serde_json::Value;

fn render(sets: &[&str]) -> Vec<Value> {
    let chart = repo_root().join("charts/opsplane");
    let mut command = Command::new(helm().expect("helm"));
    command
        .args(["template", "opsplane"])
        .arg(&chart)
        .args(["--namespace", "opsplane-system"]);
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command.output().expect("helm template");
    assert!(
        output.status.success(),
        "helm template {sets:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
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
            "opsplane.io/nodetasks:get",
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
