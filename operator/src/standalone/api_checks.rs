//! Standalone: the checks of the MonitoredServices created through the API (issue 11). The
//! config file's services are checked by [`super::run`]; these live as documents in the store
//! (`objects/services`), so they are followed here: every `poll` the documents are listed, a
//! check task is started for each new service or spec (a new generation), and stopped for each
//! deleted one.
//!
//! A task checks its service every `checkInterval`, the first time one interval after it was
//! created or changed (so a client that writes right after its create still holds the current
//! ETag), records the results in the metric store like every other check, and writes the status
//! into the document only when [`status_needs_write`] says so: as on the API server, a status
//! write is a new `resourceVersion`, made with the revision it read as its precondition, so a
//! user's write in between wins and the check writes again next round.
//!
//! [`status_needs_write`]: crate::controller::monitored_service::status_needs_write

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opsplane_resources::{MonitoredService, MonitoredServiceStatus};
use opsplane_store::{Expect, Store, Written};

use crate::api::resources::backend::collection;
use crate::api::resources::objects::Kind;
use crate::check::{self, Clients};
use crate::controller::monitored_service::{Checker, StatusSink, check_round};
use crate::metrics::Metrics;
use crate::recorder::Recorder;

/// Follows the API-created services in `store` until dropped.
pub async fn run(
    store: Arc<dyn Store>,
    clients: Clients,
    metrics: Metrics,
    recorder: Recorder,
    poll: Duration,
) {
    let services = collection(Kind::Services);
    // id → (generation checked, its task; none when that generation has no URL to check)
    let mut tasks: HashMap<String, (i64, Option<tokio::task::JoinHandle<()>>)> = HashMap::new();
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let documents = match store.documents(&services).await {
            Ok(documents) => documents,
            Err(error) => {
                tracing::debug!(%error, "cannot list the API's services; trying again");
                continue;
            }
        };
        let mut live = std::collections::HashSet::new();
        for doc in documents {
            let generation = doc.body["metadata"]["generation"].as_i64().unwrap_or(1);
            // Already checked at this generation: nothing to read again.
            if tasks.get(&doc.id).is_some_and(|(seen, task)| {
                *seen == generation && task.as_ref().is_none_or(|t| !t.is_finished())
            }) {
                live.insert(doc.id);
                continue;
            }
            let Ok(service) = serde_json::from_value::<MonitoredService>(doc.body) else {
                tracing::warn!(id = %doc.id, "an API-created MonitoredService cannot be read back; not checked");
                continue;
            };
            live.insert(doc.id.clone());
            if let Some((_, Some(old))) = tasks.remove(&doc.id) {
                old.abort();
            }
            let Some(target) = check::url_target(&service.spec) else {
                // A serviceRef only: no endpoints to resolve without a cluster. Remembered for
                // this generation, so the document is not read again every poll.
                tracing::debug!(id = %doc.id, "an API-created MonitoredService without a URL is not checked standalone");
                tasks.insert(doc.id, (generation, None));
                continue;
            };
            let task = tokio::spawn(check_one(
                doc.id.clone(),
                service,
                target,
                store.clone(),
                clients.clone(),
                metrics.clone(),
                recorder.clone(),
            ));
            tasks.insert(doc.id, (generation, Some(task)));
        }
        tasks.retain(|id, (_, task)| {
            let keep = live.contains(id);
            if !keep && let Some(task) = task {
                task.abort();
            }
            keep
        });
    }
}

/// Checks one service (as it was at `generation`) every interval, writing its status.
async fn check_one(
    id: String,
    service: MonitoredService,
    target: check::Target,
    store: Arc<dyn Store>,
    clients: Clients,
    metrics: Metrics,
    recorder: Recorder,
) {
    let services = collection(Kind::Services);
    let interval = service.spec.timing().interval;
    let generation = service.metadata.generation;
    let checker = Checker {
        clients: &clients,
        metrics: &metrics,
        store: &recorder,
    };
    loop {
        tokio::time::sleep(interval).await;
        let Ok(Some(doc)) = store.document(&services, &id).await else {
            // Gone, or the store is down: the lister stops or restarts this task.
            continue;
        };
        let previous: Option<MonitoredServiceStatus> =
            serde_json::from_value(doc.body["status"].clone()).ok();
        let Some(status) = check_round(
            checker,
            &id,
            &service.spec,
            std::slice::from_ref(&target),
            previous.as_ref(),
            generation,
            StatusSink::ApiServer,
        )
        .await
        else {
            continue;
        };
        let mut body = doc.body;
        if body["metadata"]["generation"].as_i64() != generation {
            // Changed while it was checked: the next task writes the new spec's status.
            continue;
        }
        body["status"] = match serde_json::to_value(&status) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if let Some(meta) = body["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        match store
            .put_document(&services, &id, &body, Expect::Revision(doc.revision))
            .await
        {
            Ok(Written::Done(_)) => {}
            // A user's write came first: theirs stands; this status is written next round.
            Ok(Written::Conflict(_)) => {}
            Err(error) => tracing::debug!(%error, id, "cannot write a check status"),
        }
    }
}
