//! MonitoredService controller: check each service on its interval and keep its status truthful.
//!
//! `reconcile` resolves the instances (the url, or the ready and not-ready endpoints of the
//! referenced Service's EndpointSlices), runs a [`check_round`] over them when one is due,
//! writes status through the status subresource, and requeues at the service's next slot.
//! [`check_round`] is shared with standalone mode: check every instance, record the results in
//! the metric store, decide the status and, when it will be written, refresh its availability.
//! [`decide_status`] is the pure part: from the previous status and the results, what status
//! should be; [`service_not_found_status`] is the status of a serviceRef naming no Service.
//! Whenever `Available` is False, `lastError` says why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use opsplane_resources::status::{status_patch, truncate};
use opsplane_resources::{
    InstanceStatus, MonitoredService, MonitoredServiceSpec, MonitoredServiceStatus,
};
use serde_json::json;
use tracing::instrument;

use super::{Context, Error};
use crate::check::{self, Clients, InstanceResult, Probe, ProbeKind, Target};
use crate::metrics::Metrics;
use crate::recorder::Recorder;

/// Field manager name of the status writes.
pub const FIELD_MANAGER: &str = "opsplane-operator";

fn condition(
    kind: &str,
    up: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    let status = if up { "True" } else { "False" };
    // lastTransitionTime moves only when the status flips.
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// What status should be after a round of checks. Pure: no I/O, no clock.
pub fn decide_status(
    previous: Option<&MonitoredServiceStatus>,
    generation: Option<i64>,
    results: &[InstanceResult],
    now: Timestamp,
) -> MonitoredServiceStatus {
    let previous_conditions = previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let healthy: Vec<&InstanceResult> = results.iter().filter(|r| r.healthy).collect();
    let failing: Vec<&InstanceResult> = results.iter().filter(|r| !r.healthy).collect();
    let describe = |rs: &[&InstanceResult]| {
        rs.iter()
            .map(|r| format!("{} ({})", r.address, r.error.as_deref().unwrap_or("failed")))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let (available, reason, message) = if results.is_empty() {
        (
            false,
            "NoInstances",
            "no instances to check: the Service has no endpoints".to_string(),
        )
    } else if failing.is_empty() {
        (
            true,
            "ChecksPassing",
            format!(
                "{} of {} instances pass their checks",
                healthy.len(),
                results.len()
            ),
        )
    } else if healthy.is_empty() {
        (
            false,
            "AllInstancesFailing",
            format!("every instance fails its check: {}", describe(&failing)),
        )
    } else {
        (
            true,
            "SomeInstancesFailing",
            format!(
                "{} of {} instances pass their checks",
                healthy.len(),
                results.len()
            ),
        )
    };
    let degraded = !healthy.is_empty() && !failing.is_empty();
    let (degraded_reason, degraded_message) = if degraded {
        (
            "InstancesFailing",
            format!(
                "{} of {} instances fail: {}",
                failing.len(),
                results.len(),
                describe(&failing)
            ),
        )
    } else {
        (
            "NotDegraded",
            "no instance is failing while others pass".to_string(),
        )
    };
    let latency_ms = healthy
        .iter()
        .map(|r| r.latency.as_millis() as u64)
        .max()
        .or_else(|| results.iter().map(|r| r.latency.as_millis() as u64).max());
    let last_error = match failing.first() {
        Some(r) => format!("{}: {}", r.address, r.error.as_deref().unwrap_or("failed")),
        // Unavailable without a failing instance (none to check): the condition says why.
        None if !available => message.clone(),
        None => String::new(),
    };
    let stamp = now.to_string();
    MonitoredServiceStatus {
        observed_generation: generation,
        last_check: Some(stamp.clone()),
        latency_ms,
        // Kept until the caller refreshes it from the store.
        availability: previous.and_then(|p| p.availability.clone()),
        last_error,
        conditions: vec![
            condition(
                "Available",
                available,
                reason,
                message,
                generation,
                previous_conditions,
                now,
            ),
            condition(
                "Degraded",
                degraded,
                degraded_reason,
                degraded_message,
                generation,
                previous_conditions,
                now,
            ),
        ],
        instances: results
            .iter()
            .map(|r| InstanceStatus {
                address: r.address.clone(),
                ready: r.ready,
                healthy: r.healthy,
                latency_ms: Some(r.latency.as_millis() as u64),
                last_check: Some(stamp.clone()),
                error: r.error.clone(),
            })
            .collect(),
        // The caller sets it from the spec (this decision does not read the spec).
        ops_api: previous.and_then(|p| p.ops_api.clone()),
    }
}

/// The status of a service whose `serviceRef` names a Service that does not exist in its
/// namespace: unavailable (reason `ServiceNotFound`), with `lastError` saying so, no instances.
/// Pure.
pub fn service_not_found_status(
    previous: Option<&MonitoredServiceStatus>,
    generation: Option<i64>,
    namespace: &str,
    service: &str,
    now: Timestamp,
) -> MonitoredServiceStatus {
    let previous_conditions = previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let message = format!(
        "Service {service:?} not found in namespace {namespace:?}: spec.serviceRef.name must name \
         a Service in the MonitoredService's namespace"
    );
    MonitoredServiceStatus {
        observed_generation: generation,
        last_check: Some(now.to_string()),
        latency_ms: None,
        availability: previous.and_then(|p| p.availability.clone()),
        last_error: message.clone(),
        conditions: vec![
            condition(
                "Available",
                false,
                "ServiceNotFound",
                message,
                generation,
                previous_conditions,
                now,
            ),
            condition(
                "Degraded",
                false,
                "NotDegraded",
                "no instance is failing while others pass".to_string(),
                generation,
                previous_conditions,
                now,
            ),
        ],
        instances: Vec::new(),
        ops_api: previous.and_then(|p| p.ops_api.clone()),
    }
}

/// The instances behind a serviceRef, from the Service's EndpointSlices: every address of every
/// endpoint, ready or not, on the referenced port.
pub fn endpoint_targets(spec: &MonitoredServiceSpec, slices: &[EndpointSlice]) -> Vec<Target> {
    let Some(service_ref) = &spec.service_ref else {
        return Vec::new();
    };
    let path = service_ref.path.clone().unwrap_or_else(|| "/".to_string());
    let tcp = spec.tcp.is_some();
    let mut targets = Vec::new();
    for slice in slices {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| match &service_ref.port {
                IntOrString::Int(n) => p.port == Some(*n),
                IntOrString::String(name) => p.name.as_deref() == Some(name.as_str()),
            });
        let Some(port) = port.and_then(|p| p.port) else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            for ip in &endpoint.addresses {
                let host = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip.clone()
                };
                let address = format!("{host}:{port}");
                let probe = if tcp {
                    Probe::Tcp {
                        address: address.clone(),
                    }
                } else {
                    Probe::Http {
                        url: format!("http://{address}{path}"),
                        http: spec.http.clone().unwrap_or_default(),
                    }
                };
                targets.push(Target {
                    address,
                    ready,
                    probe,
                });
            }
        }
    }
    targets.sort_by(|a, b| a.address.cmp(&b.address));
    targets.dedup_by(|a, b| a.address == b.address);
    targets
}

/// What a check round needs besides the service: the HTTP clients, the metrics, and the metric
/// store the results go to. The operator's [`Context`] and standalone mode each lend theirs.
#[derive(Clone, Copy)]
pub struct Checker<'a> {
    /// HTTP clients for the checks.
    pub clients: &'a Clients,
    /// Where check durations, results and store errors are counted.
    pub metrics: &'a Metrics,
    /// Where check results go as metrics and exceptions.
    pub store: &'a Recorder,
}

impl<'a> From<&'a Context> for Checker<'a> {
    fn from(ctx: &'a Context) -> Self {
        Checker {
            clients: &ctx.clients,
            metrics: &ctx.metrics,
            store: &ctx.store,
        }
    }
}

/// Where a round's status goes, which decides when it is worth writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusSink {
    /// The status subresource: written only when [`status_needs_write`] says so, so that
    /// healthy services cost the API server little.
    ApiServer,
    /// Standalone mode's memory: every round's status is kept.
    Memory,
}

/// One round of checks of one service: check every target concurrently (counted in the
/// metrics), record the results in the metric store, and decide the status. Returns the status
/// to write — with its availability refreshed from the store — or `None` when `sink` does not
/// need this round's status (nothing a user reads changed, see [`status_needs_write`]).
#[instrument(skip_all, fields(service = %key, instances = targets.len()))]
pub async fn check_round(
    checker: Checker<'_>,
    key: &str,
    spec: &MonitoredServiceSpec,
    targets: &[Target],
    previous: Option<&MonitoredServiceStatus>,
    generation: Option<i64>,
    sink: StatusSink,
) -> Option<MonitoredServiceStatus> {
    let timing = spec.timing();
    let results = join_all(
        targets
            .iter()
            .map(|t| check::run(t, timing.timeout, checker.clients)),
    )
    .await;
    for r in &results {
        checker.metrics.observe_check(key, r);
    }
    // Every target of a service is checked the same way (url, or serviceRef with or without tcp).
    if let Some(kind) = targets.first().map(|t| t.probe.kind()) {
        record_checks(checker, key, spec, kind, &results).await;
    }
    let now = Timestamp::now();
    let mut status = decide_status(previous, generation, &results, now);
    status.ops_api = spec.ops_api();
    if sink == StatusSink::ApiServer && !status_needs_write(previous, &status, now) {
        tracing::debug!(
            available = results.iter().any(|r| r.healthy),
            "checked; status unchanged"
        );
        return None;
    }
    status.availability = availability(checker, key).await;
    tracing::debug!(available = results.iter().any(|r| r.healthy), "checked");
    Some(status)
}

/// Records a round of `kind` checks in the metric store (`check.up`, `response.time`,
/// `response.status`, exceptions for failures). A store failure is logged and counted; it never
/// fails the check or the reconcile.
async fn record_checks(
    checker: Checker<'_>,
    key: &str,
    spec: &MonitoredServiceSpec,
    kind: ProbeKind,
    results: &[InstanceResult],
) {
    if results.is_empty() {
        return;
    }
    let interval = spec.timing().interval;
    let service_type = spec.service_type.as_deref().unwrap_or("check");
    if let Err(error) = checker
        .store
        .checks(
            key,
            service_type,
            interval.as_secs(),
            kind.as_str(),
            results,
        )
        .await
    {
        checker.metrics.store_error("checks");
        tracing::warn!(%error, "could not store check results");
    }
}

/// The service's availability over the last 24 hours for status (`"99.95"`); `None` when the
/// store has no checks of it yet or cannot be read (logged and counted).
async fn availability(checker: Checker<'_>, key: &str) -> Option<String> {
    match checker.store.availability(key).await {
        Ok(a) => a.map(|p| format!("{p:.2}")),
        Err(error) => {
            checker.metrics.store_error("availability");
            tracing::warn!(%error, "could not read availability");
            None
        }
    }
}

/// Where in its interval a service is checked: a stable offset derived from its uid, so that
/// many services with the same interval are spread over it instead of firing together.
pub fn phase(uid: &str, interval: Duration) -> Duration {
    // FNV-1a: stable across processes and releases (std's hasher is randomly seeded).
    let hash = uid.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let interval_ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(hash % interval_ms)
}

/// How long from `now` (since the Unix epoch) until the service's next slot. Slots sit at
/// `phase + k * interval` on the wall clock, so the schedule never drifts, whatever checks cost.
pub fn until_next_slot(now: Duration, phase: Duration, interval: Duration) -> Duration {
    let interval_ms = interval.as_millis().max(1);
    let into_period =
        (now.as_millis() + interval_ms - phase.as_millis() % interval_ms) % interval_ms;
    Duration::from_millis((interval_ms - into_period) as u64)
}

/// How long from `elapsed` after a moment that was `slot_delay` before a slot until the next
/// slot still ahead: the same answer as [`until_next_slot`] at that later moment, without
/// reading the clock again.
pub fn remaining_until_slot(
    slot_delay: Duration,
    elapsed: Duration,
    interval: Duration,
) -> Duration {
    if elapsed < slot_delay {
        return slot_delay - elapsed;
    }
    let interval_ms = interval.as_millis().max(1);
    let past = (elapsed - slot_delay).as_millis() % interval_ms;
    Duration::from_millis((interval_ms - past) as u64)
}

/// Whether a check is due now: never checked, the instance set changed (EndpointSlice update),
/// or at least half an interval passed since the last check (a slot, or a takeover after
/// failover). Pure.
pub fn check_due(
    since_last_check: Option<Duration>,
    interval: Duration,
    targets: &[Target],
    previous: Option<&MonitoredServiceStatus>,
) -> bool {
    let Some(since) = since_last_check else {
        return true;
    };
    let mut checked: Vec<&str> = previous
        .map(|s| s.instances.iter().map(|i| i.address.as_str()).collect())
        .unwrap_or_default();
    let mut current: Vec<&str> = targets.iter().map(|t| t.address.as_str()).collect();
    checked.sort_unstable();
    current.sort_unstable();
    checked != current || since >= interval / 2
}

fn available(status: Option<&MonitoredServiceStatus>) -> Option<bool> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .map(|c| c.status == "True")
}

/// The event to publish when availability changes: Down on any change to unavailable
/// (including the first check), Up on a recovery; nothing while it stays the same.
pub fn transition_event(
    before: Option<&MonitoredServiceStatus>,
    after: &MonitoredServiceStatus,
) -> Option<Event> {
    let was = available(before);
    let now = available(Some(after))?;
    if was == Some(now) || (was.is_none() && now) {
        return None;
    }
    let message = after
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    Some(if now {
        Event {
            type_: EventType::Normal,
            reason: "ServiceUp".into(),
            note: Some(format!("service is available again: {message}")),
            action: "Check".into(),
            secondary: None,
        }
    } else {
        Event {
            type_: EventType::Warning,
            reason: "ServiceDown".into(),
            note: Some(truncate(&message, 1000)),
            action: "Check".into(),
            secondary: None,
        }
    })
}

/// How long an unchanged status may go unwritten: `lastCheck` is refreshed at least this often,
/// so 1,000 healthy services cost the API server at most 1,000 writes a minute.
pub const STATUS_REFRESH: Duration = Duration::from_secs(60);

/// What a user reads in a status, without the parts that move on every check (lastCheck and
/// latencies).
fn visible(status: &MonitoredServiceStatus) -> serde_json::Value {
    let conditions: Vec<_> = status
        .conditions
        .iter()
        .map(|c| (&c.type_, &c.status, &c.reason, &c.message))
        .collect();
    let instances: Vec<_> = status
        .instances
        .iter()
        .map(|i| (&i.address, i.ready, i.healthy, &i.error))
        .collect();
    json!([
        status.observed_generation,
        status.last_error,
        conditions,
        instances,
        status.ops_api
    ])
}

/// Whether `new` must be written: something a user reads changed, or the stored status is
/// older than [`STATUS_REFRESH`]. Pure.
pub fn status_needs_write(
    old: Option<&MonitoredServiceStatus>,
    new: &MonitoredServiceStatus,
    now: Timestamp,
) -> bool {
    let Some(old) = old else {
        return true;
    };
    let stale = old
        .last_check
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .and_then(|t| Duration::try_from(now.duration_since(t)).ok())
        .is_none_or(|age| age >= STATUS_REFRESH);
    stale || visible(old) != visible(new)
}

fn since_epoch() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// `namespace/name`: how logs, metrics and the store name a service.
fn key_of(obj: &MonitoredService) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Reconciles one MonitoredService: resolve its instances, check them when due, write status,
/// publish an event on an availability change, and come back at its next slot.
#[instrument(skip_all, fields(service = %key_of(&obj), generation = obj.metadata.generation))]
pub async fn reconcile(obj: Arc<MonitoredService>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer("MonitoredService");
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key = key_of(&obj);
    let uid = obj.uid().unwrap_or_else(|| key.clone());
    let interval = obj.spec.timing().interval;
    // The next slot, read off the wall clock once; every way out requeues for it.
    let started = Instant::now();
    let slot_delay = until_next_slot(since_epoch(), phase(&uid, interval), interval);
    let next_slot = || {
        Action::requeue(remaining_until_slot(
            slot_delay,
            started.elapsed(),
            interval,
        ))
    };
    let targets = match check::url_target(&obj.spec) {
        Some(target) => vec![target],
        None => {
            let service_name = obj
                .spec
                .service_ref
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_default();
            let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
            if services.get_opt(&service_name).await?.is_none() {
                let mut status = service_not_found_status(
                    obj.status.as_ref(),
                    obj.metadata.generation,
                    &namespace,
                    &service_name,
                    Timestamp::now(),
                );
                status.ops_api = obj.spec.ops_api();
                write_status(&ctx, &obj, &namespace, &name, &status, Timestamp::now()).await?;
                return Ok(next_slot());
            }
            let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &namespace);
            let selector = format!("kubernetes.io/service-name={service_name}");
            let list = slices
                .list(&ListParams::default().labels(&selector))
                .await?;
            endpoint_targets(&obj.spec, &list.items)
        }
    };
    // This process's own record of the last check; after a failover, the status's lastCheck.
    let since_last_check = ctx
        .last_checks
        .lock()
        .ok()
        .and_then(|m| m.get(&uid).map(|t| t.elapsed()))
        .or_else(|| {
            let last: Timestamp = obj.status.as_ref()?.last_check.as_ref()?.parse().ok()?;
            let since = Timestamp::now().duration_since(last);
            Some(Duration::try_from(since).unwrap_or_default())
        });
    if !check_due(since_last_check, interval, &targets, obj.status.as_ref()) {
        return Ok(next_slot());
    }
    // Lateness against the slot this check belongs to (0 for checks run off-slot on a change).
    let lateness = interval.saturating_sub(slot_delay);
    if lateness < interval / 2 {
        ctx.metrics.observe_lateness(lateness);
    }
    if let Ok(mut map) = ctx.last_checks.lock() {
        map.insert(uid.clone(), Instant::now());
    }
    let Some(status) = check_round(
        Checker::from(ctx.as_ref()),
        &key,
        &obj.spec,
        &targets,
        obj.status.as_ref(),
        obj.metadata.generation,
        StatusSink::ApiServer,
    )
    .await
    else {
        return Ok(next_slot());
    };
    patch_status(&ctx, &obj, &namespace, &name, &status).await?;
    Ok(next_slot())
}

/// Writes `status` when [`status_needs_write`] says so (for a status made without a check
/// round, which decides that itself).
async fn write_status(
    ctx: &Context,
    obj: &MonitoredService,
    namespace: &str,
    name: &str,
    status: &MonitoredServiceStatus,
    now: Timestamp,
) -> Result<(), Error> {
    if status_needs_write(obj.status.as_ref(), status, now) {
        patch_status(ctx, obj, namespace, name, status).await?;
    }
    Ok(())
}

/// Applies `status` and publishes the availability event of the change, if any.
async fn patch_status(
    ctx: &Context,
    obj: &MonitoredService,
    namespace: &str,
    name: &str,
    status: &MonitoredServiceStatus,
) -> Result<(), Error> {
    let api: Api<MonitoredService> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&status_patch::<MonitoredService>(status)),
    )
    .await?;
    ctx.metrics.status_written();
    if let Some(event) = transition_event(obj.status.as_ref(), status) {
        let reference = obj.object_ref(&());
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, "could not publish the availability event");
        }
    }
    Ok(())
}

/// On error: log, count, retry soon (bounded by the check interval).
#[instrument(skip_all, fields(service = %key_of(&obj), generation = obj.metadata.generation))]
pub fn error_policy(obj: Arc<MonitoredService>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error("MonitoredService");
    tracing::warn!(%error, "reconcile failed");
    Action::requeue(obj.spec.timing().interval.min(Duration::from_secs(10)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    fn result(address: &str, healthy: bool, ms: u64) -> InstanceResult {
        InstanceResult {
            address: address.into(),
            ready: true,
            healthy,
            latency: Duration::from_millis(ms),
            status: Some(if healthy { 200 } else { 503 }),
            error: (!healthy).then(|| "HTTP 503, expected 2xx".to_string()),
            failure: (!healthy).then_some(check::Failure::UnexpectedResponse),
        }
    }

    fn cond<'a>(s: &'a MonitoredServiceStatus, kind: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == kind).unwrap()
    }

    #[test]
    fn all_healthy_is_available_and_not_degraded() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let s = decide_status(
            None,
            Some(3),
            &[result("a:1", true, 5), result("b:1", true, 9)],
            now,
        );
        assert_eq!(cond(&s, "Available").status, "True");
        assert_eq!(cond(&s, "Degraded").status, "False");
        assert_eq!(s.latency_ms, Some(9));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.last_error, "");
        assert_eq!(s.last_check.as_deref(), Some("2027-01-15T08:00:00Z"));
    }

    #[test]
    fn one_failing_instance_degrades_and_is_named() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let s = decide_status(
            None,
            Some(1),
            &[result("a:1", true, 5), result("b:1", false, 9)],
            now,
        );
        assert_eq!(cond(&s, "Available").status, "True");
        let degraded = cond(&s, "Degraded");
        assert_eq!(degraded.status, "True");
        assert!(degraded.message.contains("b:1"), "{}", degraded.message);
        assert!(s.last_error.starts_with("b:1"));
    }

    #[test]
    fn no_healthy_instance_is_unavailable_and_transition_time_is_kept_while_unchanged() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let t1 = Timestamp::from_second(1_800_000_030).unwrap();
        let down = decide_status(None, Some(1), &[result("a:1", false, 5)], t0);
        assert_eq!(cond(&down, "Available").status, "False");
        assert_eq!(cond(&down, "Available").reason, "AllInstancesFailing");
        let still_down = decide_status(Some(&down), Some(1), &[result("a:1", false, 5)], t1);
        assert_eq!(
            cond(&still_down, "Available").last_transition_time,
            Time(t0)
        );
        let up = decide_status(Some(&still_down), Some(1), &[result("a:1", true, 5)], t1);
        assert_eq!(cond(&up, "Available").last_transition_time, Time(t1));
        let none = decide_status(Some(&up), Some(1), &[], t1);
        assert_eq!(cond(&none, "Available").reason, "NoInstances");
    }

    #[test]
    fn last_error_is_set_whenever_available_is_false() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let rounds: [&[InstanceResult]; 4] = [
            &[result("a:1", false, 5)],
            &[],
            &[result("a:1", true, 5), result("b:1", false, 9)],
            &[result("a:1", true, 5)],
        ];
        for results in rounds {
            let s = decide_status(None, Some(1), results, t0);
            let available = cond(&s, "Available").status == "True";
            assert_eq!(
                s.last_error.is_empty(),
                available && results.iter().all(|r| r.healthy),
                "{results:?}: lastError {:?}",
                s.last_error
            );
        }
        let none = decide_status(None, Some(1), &[], t0);
        assert_eq!(none.last_error, cond(&none, "Available").message);
    }

    #[test]
    fn a_service_ref_to_a_missing_service_says_it_is_not_found() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let t1 = Timestamp::from_second(1_800_000_030).unwrap();
        let up = decide_status(None, Some(1), &[result("a:1", true, 5)], t0);
        let s = service_not_found_status(Some(&up), Some(2), "shop", "web", t1);
        let available = cond(&s, "Available");
        assert_eq!(
            (available.status.as_str(), available.reason.as_str()),
            ("False", "ServiceNotFound")
        );
        assert_eq!(
            s.last_error,
            "Service \"web\" not found in namespace \"shop\": spec.serviceRef.name must name a \
             Service in the MonitoredService's namespace"
        );
        assert_eq!(available.message, s.last_error);
        assert!(s.instances.is_empty());
        assert_eq!(available.last_transition_time, Time(t1));
        let event = transition_event(Some(&up), &s).expect("down event");
        assert_eq!(event.reason, "ServiceDown");
        // Unchanged a round later: not rewritten within the refresh period.
        let again = service_not_found_status(Some(&s), Some(2), "shop", "web", t1);
        assert!(!status_needs_write(Some(&s), &again, t1));
    }

    #[test]
    fn phases_spread_services_over_the_interval_and_stay_stable() {
        let interval = Duration::from_secs(10);
        let phases: Vec<Duration> = (0..1000)
            .map(|i| phase(&format!("uid-{i}"), interval))
            .collect();
        assert!(phases.iter().all(|p| *p < interval));
        assert_eq!(phase("uid-7", interval), phases[7]);
        // Every second of the interval gets a share: no burst.
        for second in 0..10 {
            let n = phases.iter().filter(|p| p.as_secs() == second).count();
            assert!(
                (50..=150).contains(&n),
                "second {second} has {n} of 1000 services"
            );
        }
    }

    #[test]
    fn next_slot_is_on_the_phase_grid_and_never_drifts() {
        let interval = Duration::from_secs(10);
        let phase = Duration::from_millis(3_250);
        // 1000.000 s since the epoch: 1000 % 10 = 0, next slot at 1003.250.
        assert_eq!(
            until_next_slot(Duration::from_secs(1000), phase, interval),
            Duration::from_millis(3_250)
        );
        // Just after a slot: the next is one interval later, not interval + check time.
        assert_eq!(
            until_next_slot(Duration::from_millis(1_003_400), phase, interval),
            Duration::from_millis(9_850)
        );
        // Exactly on a slot: the following one.
        assert_eq!(
            until_next_slot(Duration::from_millis(1_003_250), phase, interval),
            interval
        );
    }

    #[test]
    fn the_slot_computed_once_is_still_the_next_slot_when_the_round_ends() {
        let interval = Duration::from_secs(10);
        let phase = Duration::from_millis(3_250);
        let start = Duration::from_millis(1_001_000);
        let slot_delay = until_next_slot(start, phase, interval);
        // (elapsed since the slot was computed, why)
        let cases = [
            (0, "at once: the slot itself"),
            (1_500, "a quick round: the rest of the wait"),
            (2_250, "a round that ends on the slot: the one after"),
            (4_000, "a round that overran the slot: the one after"),
            (
                27_000,
                "a round that overran several slots: the next still ahead",
            ),
        ];
        for (elapsed_ms, why) in cases {
            let elapsed = Duration::from_millis(elapsed_ms);
            assert_eq!(
                remaining_until_slot(slot_delay, elapsed, interval),
                until_next_slot(start + elapsed, phase, interval),
                "{why}"
            );
        }
    }

    #[test]
    fn a_check_is_due_when_never_done_half_an_interval_old_or_the_instances_changed() {
        let interval = Duration::from_secs(10);
        let t = |a: &str| Target {
            address: a.into(),
            ready: true,
            probe: Probe::Tcp { address: a.into() },
        };
        let before = decide_status(
            None,
            Some(1),
            &[result("a:1", true, 1)],
            Timestamp::UNIX_EPOCH,
        );
        assert!(check_due(None, interval, &[t("a:1")], None));
        assert!(!check_due(
            Some(Duration::from_secs(1)),
            interval,
            &[t("a:1")],
            Some(&before)
        ));
        assert!(check_due(
            Some(Duration::from_secs(5)),
            interval,
            &[t("a:1")],
            Some(&before)
        ));
        assert!(check_due(
            Some(Duration::from_secs(1)),
            interval,
            &[t("a:1"), t("b:1")],
            Some(&before)
        ));
        assert!(check_due(
            Some(Duration::from_secs(1)),
            interval,
            &[],
            Some(&before)
        ));
    }

    #[test]
    fn unchanged_status_is_written_at_most_once_a_minute() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let first = decide_status(None, Some(1), &[result("a:1", true, 5)], t0);
        assert!(status_needs_write(None, &first, t0));
        // Same picture 10 s later, only latency moved: no write.
        let later = decide_status(
            Some(&first),
            Some(1),
            &[result("a:1", true, 9)],
            t0 + jiff::SignedDuration::from_secs(10),
        );
        assert!(!status_needs_write(
            Some(&first),
            &later,
            t0 + jiff::SignedDuration::from_secs(10)
        ));
        // A minute after the stored lastCheck: refresh.
        let minute = t0 + jiff::SignedDuration::from_secs(60);
        assert!(status_needs_write(Some(&first), &later, minute));
        // Anything a user reads changes: write at once.
        let down = decide_status(
            Some(&first),
            Some(1),
            &[result("a:1", false, 5)],
            t0 + jiff::SignedDuration::from_secs(1),
        );
        assert!(status_needs_write(
            Some(&first),
            &down,
            t0 + jiff::SignedDuration::from_secs(1)
        ));
        let new_generation = decide_status(
            Some(&first),
            Some(2),
            &[result("a:1", true, 5)],
            t0 + jiff::SignedDuration::from_secs(1),
        );
        assert!(status_needs_write(
            Some(&first),
            &new_generation,
            t0 + jiff::SignedDuration::from_secs(1)
        ));
        let more = decide_status(
            Some(&first),
            Some(1),
            &[result("a:1", true, 5), result("b:1", true, 5)],
            t0 + jiff::SignedDuration::from_secs(1),
        );
        assert!(status_needs_write(
            Some(&first),
            &more,
            t0 + jiff::SignedDuration::from_secs(1)
        ));
    }

    #[test]
    fn events_fire_on_down_and_on_recovery_only() {
        let now = Timestamp::UNIX_EPOCH;
        let up = decide_status(None, Some(1), &[result("a:1", true, 1)], now);
        let down = decide_status(Some(&up), Some(1), &[result("a:1", false, 1)], now);
        assert!(
            transition_event(None, &up).is_none(),
            "first check up: nothing to say"
        );
        assert!(transition_event(Some(&up), &up).is_none());
        let went_down = transition_event(Some(&up), &down).expect("down event");
        assert_eq!(went_down.reason, "ServiceDown");
        assert_eq!(went_down.type_, EventType::Warning);
        assert!(went_down.note.unwrap().contains("a:1"));
        assert!(transition_event(Some(&down), &down).is_none());
        assert_eq!(
            transition_event(Some(&down), &up).expect("up event").reason,
            "ServiceUp"
        );
        assert_eq!(
            transition_event(None, &down)
                .expect("first check down")
                .reason,
            "ServiceDown"
        );
    }

    #[test]
    fn endpoint_targets_follow_the_named_port_and_keep_readiness() {
        let spec: MonitoredServiceSpec = serde_json::from_value(serde_json::json!({
            "serviceRef": {"name": "web", "port": "http", "path": "/health"}
        }))
        .unwrap();
        let slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Some(vec![
                Endpoint {
                    addresses: vec!["10.0.0.7".into()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Endpoint {
                    addresses: vec!["10.0.0.8".into()],
                    conditions: Some(EndpointConditions {
                        ready: Some(false),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ports: Some(vec![
                EndpointPort {
                    name: Some("metrics".into()),
                    port: Some(9090),
                    ..Default::default()
                },
                EndpointPort {
                    name: Some("http".into()),
                    port: Some(8000),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let targets = endpoint_targets(&spec, &[slice]);
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].address, "10.0.0.7:8000");
        assert!(targets[0].ready);
        assert!(!targets[1].ready);
        match &targets[0].probe {
            Probe::Http { url, .. } => assert_eq!(url, "http://10.0.0.7:8000/health"),
            other => panic!("expected an HTTP probe, got {other:?}"),
        }
    }
}
