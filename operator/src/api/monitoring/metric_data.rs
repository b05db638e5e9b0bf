//! `metric_data`'s service function: from a parsed [`MetricDataQuery`] to the rendered answer.
//! Resolves what the filters name (and refuses, naming the parameter, what does not exist),
//! reads the buckets (rolling up first when hours are read), keeps the samples the grouping
//! counts ([`Scope`]), folds them, and names the ids of the rows; the handler only parses and
//! renders.

use std::collections::{HashMap, HashSet};

use opsplane_store::catalog::{self, MetricDef};
use opsplane_store::model::{resource_key, split_resource_key};
use opsplane_store::query::{self, Fold, GroupBy, Scope};
use opsplane_store::{Kind, RegistryEntry, Resolution, SeriesFilter};

use super::MonitoringError;
use super::params::{MetricDataQuery, ResourceParam};
use crate::api::geonode;
use crate::recorder::Recorder;

/// The GeoNode host service types under which every reporting node is also listed.
pub const GEONODE_HOST_TYPES: [&str; 2] = ["hostgeonode", "hostgeoserver"];

/// The opsplane service a GeoNode host service name (`<host>-hostgeonode`) stands for.
pub fn host_service_of(name: &str) -> Option<String> {
    GEONODE_HOST_TYPES.iter().find_map(|t| {
        name.strip_suffix(t)
            .and_then(|h| h.strip_suffix('-'))
            .filter(|h| !h.is_empty())
            .map(|h| format!("host:{h}"))
    })
}

/// Service types a `service_type` filter accepts: those of the catalog, GeoNode's own and any
/// a service was registered with.
fn known_service_type(services: &[RegistryEntry], t: &str) -> bool {
    catalog::METRICS
        .iter()
        .any(|m| m.service_types.contains(&t))
        || ["geonode", "geoserver"].contains(&t)
        || services.iter().any(|s| s.attrs["type"] == t)
}

/// The id of `name` in `entries`, or of the entry whose id `name` spells.
fn by_id_or_name(entries: &[RegistryEntry], name: &str) -> Option<u32> {
    entries
        .iter()
        .find(|e| e.name == name)
        .or_else(|| {
            let id: u32 = name.parse().ok()?;
            entries.iter().find(|e| e.id == id)
        })
        .map(|e| e.id)
}

/// What the registries say about a query: the series filter, the label users, the names.
struct Resolved {
    filter: SeriesFilter,
    /// Label id → user index (1-based into `user_names`).
    users: HashMap<u32, u32>,
    user_names: Vec<String>,
    labels: Vec<RegistryEntry>,
    event_types: HashMap<u32, String>,
    resources: Vec<RegistryEntry>,
}

async fn resolve(
    recorder: &Recorder,
    query: &MetricDataQuery,
) -> Result<Resolved, MonitoringError> {
    let store = recorder.store();
    let mut filter = SeriesFilter::default();
    let needs_services = query.service.is_some() || query.service_type.is_some();
    let services = if needs_services {
        store.entries(Kind::Service).await?
    } else {
        Vec::new()
    };
    if let Some(name) = &query.service {
        let stored = host_service_of(name).unwrap_or_else(|| name.clone());
        let id = services
            .iter()
            .find(|e| e.name == stored)
            .map(|e| e.id)
            .ok_or_else(|| {
                MonitoringError::bad("service", format!("Service {name} does not exist"))
            })?;
        filter.services = Some(vec![id]);
    }
    if let Some(t) = &query.service_type {
        if !known_service_type(&services, t) {
            return Err(MonitoringError::bad(
                "service_type",
                format!("Service Type {t} does not exist"),
            ));
        }
        // GeoNode's host service types are every reporting node's `host:<name>` service.
        let wanted = if GEONODE_HOST_TYPES.contains(&t.as_str()) {
            "host"
        } else {
            t.as_str()
        };
        filter.services = Some(
            services
                .iter()
                .filter(|s| s.attrs["type"] == wanted)
                .map(|s| s.id)
                .collect(),
        );
    }
    let needs_labels =
        query.label.is_some() || query.user.is_some() || query.group_by.needs_users();
    let labels = if needs_labels {
        store.entries(Kind::Label).await?
    } else {
        Vec::new()
    };
    if let Some(label) = &query.label {
        let id = by_id_or_name(&labels, label).ok_or_else(|| {
            MonitoringError::bad("label", format!("Invalid label value: {label}"))
        })?;
        filter.labels = Some(vec![id]);
    }
    let mut user_names: Vec<String> = Vec::new();
    let mut users = HashMap::new();
    for l in &labels {
        if let Some(u) = l.attrs["user"].as_str() {
            let index = match user_names.iter().position(|n| n == u) {
                Some(i) => i,
                None => {
                    user_names.push(u.to_string());
                    user_names.len() - 1
                }
            };
            users.insert(l.id, index as u32 + 1);
        }
    }
    // GeoNode: a user name no label carries is no filter at all.
    if let Some(user) = &query.user
        && user_names.iter().any(|n| n == user)
    {
        let of_user: Vec<u32> = labels
            .iter()
            .filter(|l| l.attrs["user"] == user.as_str())
            .map(|l| l.id)
            .collect();
        filter.labels = Some(match filter.labels.take() {
            Some(only) => only.into_iter().filter(|id| of_user.contains(id)).collect(),
            None => of_user,
        });
    }
    let event_entries = store.entries(Kind::EventType).await?;
    if let Some(name) = &query.event_type {
        let def = catalog::event_type(name).ok_or_else(|| {
            MonitoringError::bad("event_type", format!("Event Type {name} doesn't exist"))
        })?;
        filter.event_types = Some(
            event_entries
                .iter()
                .filter(|e| {
                    if def.aggregate {
                        def.covers(&e.name)
                    } else {
                        e.name == def.name
                    }
                })
                .map(|e| e.id)
                .collect(),
        );
    }
    let needs_resources =
        query.resource.is_some() || query.resource_type.is_some() || query.group_by.by_resource();
    let resources = if needs_resources {
        store.entries(Kind::Resource).await?
    } else {
        Vec::new()
    };
    if let Some(t) = &query.resource_type {
        let known = catalog::resource_type(t)
            || resources
                .iter()
                .any(|e| catalog::resource_type_matches(t, split_resource_key(&e.name).0));
        if !known {
            return Err(MonitoringError::bad(
                "resource_type",
                format!(
                    "Select a valid choice. {t} is not one of the available choices; see /monitoring/api/resource_types/"
                ),
            ));
        }
        filter.resources = Some(
            resources
                .iter()
                .filter(|e| catalog::resource_type_matches(t, split_resource_key(&e.name).0))
                .map(|e| e.id)
                .collect(),
        );
    }
    if let Some(r) = &query.resource {
        let id = match r {
            ResourceParam::Id(id) => resources.iter().find(|e| e.id == *id).map(|e| e.id),
            ResourceParam::Named(t, n) => {
                let key = resource_key(t, n);
                // The exact type first, then the same name under its other name
                // (`layer=roads` finds `dataset=roads`).
                resources
                    .iter()
                    .find(|e| e.name == key)
                    .or_else(|| {
                        resources.iter().find(|e| {
                            let (et, en) = split_resource_key(&e.name);
                            en == n && catalog::resource_type_matches(t, et)
                        })
                    })
                    .map(|e| e.id)
            }
        };
        let id = id.ok_or_else(|| {
            let text = match r {
                ResourceParam::Id(id) => id.to_string(),
                ResourceParam::Named(t, n) => format!("{t}={n}"),
            };
            MonitoringError::bad(
                "resource",
                format!("MonitoredResource matching query does not exist: {text}"),
            )
        })?;
        filter.resources = Some(match filter.resources.take() {
            Some(of_type) => of_type.into_iter().filter(|r| *r == id).collect(),
            None => vec![id],
        });
    }
    Ok(Resolved {
        filter,
        users,
        user_names,
        labels,
        event_types: event_entries.into_iter().map(|e| (e.id, e.name)).collect(),
        resources,
    })
}

/// The JSON body of `GET /monitoring/api/metric_data/<def>/` for `query`.
pub async fn answer(
    recorder: &Recorder,
    def: &'static MetricDef,
    query: &MetricDataQuery,
) -> Result<Vec<u8>, MonitoringError> {
    let store = recorder.store();
    let group_by = query.group_by;
    let window = &query.window;
    let resolved = resolve(recorder, query).await?;
    let metric_id = recorder.existing_id(Kind::Metric, def.stored).await?;
    let buckets = match metric_id {
        Some(metric_id) => {
            let resolution = window.resolution();
            if resolution == Resolution::Hour {
                // Read-your-writes: roll up whatever arrived since the background roll-up ran.
                store.rollup().await?;
            }
            store
                .buckets(
                    metric_id,
                    resolution,
                    window.start,
                    window.end,
                    &resolved.filter,
                )
                .await?
        }
        None => Vec::new(),
    };
    let resource_filtered = query.resource.is_some() || query.resource_type.is_some();
    let scope = Scope::of(def.per_request, group_by, resource_filtered);
    // Checks and node reports are stored once per observation (with their instance as the
    // resource): plain totals read them whole.
    let once: HashSet<u32> = resolved
        .event_types
        .iter()
        .filter(|(_, n)| n.starts_with("check:") || n.as_str() == "node:report")
        .map(|(id, _)| *id)
        .collect();
    let buckets: Vec<_> = buckets
        .into_iter()
        .filter(|b| {
            scope.keeps(b) || (scope == Scope::Requests && once.contains(&b.key.event_type))
        })
        .collect();
    let intervals = query::fold_with(
        &buckets,
        window,
        &Fold {
            kind: def.kind,
            minute_extrema: def.minute_extrema(),
            distinct_per_resource: def.distinct_per_resource(),
            group_by,
            users: &resolved.users,
            event_types: &resolved.event_types,
        },
    );
    let label_users: HashMap<u32, &str> = resolved
        .users
        .iter()
        .filter_map(|(label, user)| {
            Some((
                *label,
                resolved.user_names.get(*user as usize - 1)?.as_str(),
            ))
        })
        .collect();
    let names = geonode::Names {
        labels: resolved
            .labels
            .iter()
            .map(|e| (e.id, e.name.clone()))
            .collect(),
        label_users: label_users
            .into_iter()
            .map(|(l, u)| (l, u.to_string()))
            .collect(),
        users: resolved
            .user_names
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u32 + 1, n.clone()))
            .collect(),
        resources: resolved
            .resources
            .iter()
            .map(|e| {
                let (t, n) = split_resource_key(&e.name);
                (e.id, (t.to_string(), n.to_string()))
            })
            .collect(),
        event_types: resolved.event_types,
    };
    let labels_needed = matches!(group_by, GroupBy::Label | GroupBy::Resource);
    let names = if labels_needed && names.labels.is_empty() {
        geonode::Names {
            labels: store
                .entries(Kind::Label)
                .await?
                .into_iter()
                .map(|e| (e.id, e.name))
                .collect(),
            ..names
        }
    } else {
        names
    };
    Ok(geonode::metric_data(
        &geonode::MetricData {
            metric: def.name,
            metric_type: def.reported.as_str(),
            unit: def.unit,
            from: window.start,
            to: window.end,
            interval: window.interval,
            label: query.label.as_deref(),
            group_by,
        },
        &intervals,
        &names,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geonode_host_services_name_the_node_service() {
        assert_eq!(
            host_service_of("zhouli33-hostgeonode").as_deref(),
            Some("host:zhouli33")
        );
        assert_eq!(
            host_service_of("a-b-hostgeoserver").as_deref(),
            Some("host:a-b")
        );
        assert_eq!(host_service_of("-hostgeonode"), None);
        assert_eq!(host_service_of("shop"), None);
    }
}
