//! The drain's I/O (what `kubectl drain` does, and kured before a reboot): reading a Node and
//! the pods bound to it, cordoning and uncordoning, and evicting through the Eviction API
//! (`pods/eviction`), which honours PodDisruptionBudgets — a refusal (429) is reported with the
//! budgets that cover the pod, never overridden by a delete. What to do is decided in
//! [`super::decide`]; this module only does it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::{Api, Client};
use serde_json::json;

use super::NodeInfo;
use super::decide::{EvictionOutcome, PodInfo};

/// How long one eviction call may take.
pub const EVICTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The annotation a cordon of the operator's leaves on the Node: the task's name. Only a node
/// carrying the task's own name is uncordoned by it, so a node someone else cordoned stays so.
pub const CORDON_ANNOTATION: &str = "opsplane.io/cordoned-by";

/// A Node as the decision needs it.
pub fn node_info(node: &Node) -> NodeInfo {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    NodeInfo {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        ready,
        unschedulable: node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        cordoned_by: node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CORDON_ANNOTATION).cloned()),
    }
}

/// A pod as the drain needs it.
pub fn pod_info(pod: &Pod) -> PodInfo {
    let meta = &pod.metadata;
    PodInfo {
        name: format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        ),
        labels: meta.labels.clone().unwrap_or_default(),
        daemon_set: meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "DaemonSet" && o.controller == Some(true)),
        mirror: meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror")),
        finished: matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ),
        terminating: meta.deletion_timestamp.is_some(),
    }
}

/// The pods bound to `node`.
pub async fn pods_on(client: &Client, node: &str) -> Result<Vec<PodInfo>, kube::Error> {
    let api: Api<Pod> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    Ok(list.items.iter().map(pod_info).collect())
}

/// Uncordons every node whose cordon names a NodeTask that no longer exists (deleted while it
/// drained or held the node, or while the operator was down): a deleted task releases nothing
/// more, and leaves no node unschedulable either. Each candidate's task is looked up again
/// right before (a task created since the list is not mistaken for a deleted one). Returns the
/// nodes released.
pub async fn release_orphaned_cordons(client: &Client) -> Result<Vec<String>, kube::Error> {
    let tasks: Api<opsplane_resources::NodeTask> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let mut released = Vec::new();
    for node in nodes.list(&ListParams::default()).await?.items {
        let info = node_info(&node);
        let Some(task) = info.cordoned_by else {
            continue;
        };
        if tasks.get_metadata_opt(&task).await?.is_some() {
            continue;
        }
        uncordon(client, &info.name, &task).await?;
        tracing::info!(node = %info.name, %task, "released the cordon of a deleted task");
        released.push(info.name);
    }
    Ok(released)
}

/// Marks the node unschedulable, with the task's name in [`CORDON_ANNOTATION`].
pub async fn cordon(client: &Client, node: &str, task: &str) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = json!({
        "metadata": {"annotations": {CORDON_ANNOTATION: task}},
        "spec": {"unschedulable": true}
    });
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(%node, %task, "node cordoned");
    Ok(())
}

/// Marks the node schedulable again and removes the annotation — only when the task's own
/// cordon is still there (a Node gone is nothing to uncordon).
pub async fn uncordon(client: &Client, node: &str, task: &str) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let Some(current) = api.get_opt(node).await? else {
        return Ok(());
    };
    if node_info(&current).cordoned_by.as_deref() != Some(task) {
        return Ok(());
    }
    let patch = json!({
        "metadata": {
            "annotations": {CORDON_ANNOTATION: null},
            // Fails (409) if the Node changed since the read: the next reconcile looks again.
            "resourceVersion": current.metadata.resource_version,
        },
        "spec": {"unschedulable": false}
    });
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(%node, %task, "node uncordoned");
    Ok(())
}

/// The PodDisruptionBudgets of the pod's namespace whose selector matches its labels, as
/// `namespace/name`.
async fn budgets_covering(
    client: &Client,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<String> {
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = api.list(&ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .iter()
        .filter(|pdb| {
            pdb.spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .and_then(|s| Selector::try_from(s).ok())
                .is_some_and(|s| s.matches(labels))
        })
        .map(|pdb| {
            format!(
                "{namespace}/{}",
                pdb.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

/// Evicts one pod through the Eviction API, with `grace_period_seconds` when set.
pub async fn evict(
    client: &Client,
    pod: &PodInfo,
    grace_period_seconds: Option<i64>,
) -> EvictionOutcome {
    let Some((namespace, name)) = pod.name.split_once('/') else {
        return EvictionOutcome::Failed(format!("{:?} is not namespace/name", pod.name));
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    // The Eviction body is written here rather than by kube's `Api::evict`: kube 5.0 sends the
    // delete options as `delete_options`, a key the API server drops, so a grace period would
    // be ignored without a word.
    let mut body = serde_json::json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": namespace},
    });
    if let Some(grace) = grace_period_seconds {
        body["deleteOptions"] = serde_json::json!({"gracePeriodSeconds": grace});
    }
    let params = PostParams::default();
    let call = api.create_subresource::<_, serde_json::Value>("eviction", name, &params, &body);
    let Ok(answer) = tokio::time::timeout(EVICTION_TIMEOUT, call).await else {
        return EvictionOutcome::Failed(format!(
            "no answer within {}s",
            EVICTION_TIMEOUT.as_secs()
        ));
    };
    match answer {
        Ok(_) => {
            tracing::info!(pod = %pod.name, "pod evicted");
            EvictionOutcome::Evicted
        }
        Err(kube::Error::Api(e)) if e.code == 404 => EvictionOutcome::Gone,
        Err(kube::Error::Api(e)) if e.code == 429 => {
            let budgets = budgets_covering(client, namespace, &pod.labels).await;
            tracing::info!(pod = %pod.name, ?budgets, message = %e.message, "eviction refused by a disruption budget");
            EvictionOutcome::Blocked {
                budgets,
                message: e.message,
            }
        }
        Err(e) => {
            tracing::warn!(pod = %pod.name, error = %e, "eviction failed");
            EvictionOutcome::Failed(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_set_mirror_and_finished_pods_do_not_count_for_a_drain() {
        // A pod named ns/p with `extra` merged into its metadata, and `status`.
        let pod = |extra: serde_json::Value, status: serde_json::Value| -> Pod {
            let mut metadata = json!({"name": "p", "namespace": "ns"});
            if let (Some(m), Some(e)) = (metadata.as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
            serde_json::from_value(json!({"metadata": metadata, "status": status})).unwrap()
        };
        let plain = pod_info(&pod(json!({}), json!({})));
        assert!(plain.counts() && !plain.terminating);
        assert_eq!(plain.name, "ns/p");
        let ds = pod_info(&pod(
            json!({"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "u", "controller": true}]}),
            json!({}),
        ));
        assert!(ds.daemon_set && !ds.counts());
        let rs = pod_info(&pod(
            json!({"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "u", "controller": true}]}),
            json!({}),
        ));
        assert!(rs.counts());
        let mirror = pod_info(&pod(
            json!({"annotations": {"kubernetes.io/config.mirror": "x"}}),
            json!({}),
        ));
        assert!(!mirror.counts());
        let done = pod_info(&pod(json!({}), json!({"phase": "Succeeded"})));
        assert!(!done.counts());
        let going = pod_info(&pod(
            json!({"deletionTimestamp": "2027-01-15T08:00:00Z"}),
            json!({}),
        ));
        assert!(going.counts() && going.terminating);
    }

    #[test]
    fn a_node_is_ready_only_with_ready_true_and_names_its_cordon() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n", "annotations": {CORDON_ANNOTATION: "reboot"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let info = node_info(&node);
        assert!(info.ready && info.unschedulable);
        assert_eq!(info.cordoned_by.as_deref(), Some("reboot"));
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}
        }))
        .unwrap();
        let info = node_info(&node);
        assert!(!info.ready && !info.unschedulable && info.cordoned_by.is_none());
    }
}
