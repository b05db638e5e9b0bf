//! `metric_data`'s service function: from a parsed [`MetricDataQuery`] to the rendered answer.
//! Gathers the ids the filters name, reads the buckets (rolling up first when hours are read),
//! folds them, and names the ids of the rows; the handler only parses and renders.

use std::collections::HashMap;

use opsplane_store::catalog::MetricDef;
use opsplane_store::model::split_resource_key;
use opsplane_store::query::{self, GroupBy};
use opsplane_store::{Kind, Resolution, SeriesFilter, StoreError};

use super::params::MetricDataQuery;
use crate::api::geonode;
use crate::recorder::Recorder;

/// The series filter of `query`, or `None` when a filter names something never recorded (the
/// answer is then empty intervals without reading any bucket).
async fn series_filter(
    recorder: &Recorder,
    query: &MetricDataQuery,
    resources: &[opsplane_store::RegistryEntry],
) -> Result<Option<SeriesFilter>, StoreError> {
    let mut filter = SeriesFilter::default();
    for (kind, name, slot) in [
        (Kind::Service, &query.service, &mut filter.services),
        (Kind::Label, &query.label, &mut filter.labels),
        (Kind::EventType, &query.event_type, &mut filter.event_types),
    ] {
        if let Some(name) = name {
            match recorder.existing_id(kind, name).await? {
                Some(id) => *slot = Some(vec![id]),
                None => return Ok(None),
            }
        }
    }
    if let Some(t) = &query.resource_type {
        filter.resources = Some(
            resources
                .iter()
                .filter(|e| split_resource_key(&e.name).0 == t)
                .map(|e| e.id)
                .filter(|id| query.resource.is_none_or(|r| r == *id))
                .collect(),
        );
    } else if let Some(r) = query.resource {
        filter.resources = Some(vec![r]);
    }
    Ok(Some(filter))
}

/// Id → name of the registry of `kind`, read only when `needed`.
async fn names_of(
    recorder: &Recorder,
    kind: Kind,
    needed: bool,
) -> Result<HashMap<u32, String>, StoreError> {
    if !needed {
        return Ok(HashMap::new());
    }
    Ok(recorder
        .store()
        .entries(kind)
        .await?
        .into_iter()
        .map(|e| (e.id, e.name))
        .collect())
}

/// The JSON body of `GET /monitoring/api/metric_data/<def>/` for `query`.
pub async fn answer(
    recorder: &Recorder,
    def: &'static MetricDef,
    query: &MetricDataQuery,
) -> Result<Vec<u8>, StoreError> {
    let store = recorder.store();
    let group_by = query.group_by;
    let window = &query.window;
    let by_resource = matches!(group_by, GroupBy::Resource | GroupBy::ResourceNoLabel);
    // The resource registry is read only when a filter or the rows need it.
    let resources = if query.resource_type.is_some() || by_resource {
        store.entries(Kind::Resource).await?
    } else {
        Vec::new()
    };
    let metric_id = recorder.existing_id(Kind::Metric, def.name).await?;
    let filter = match metric_id {
        Some(_) => series_filter(recorder, query, &resources).await?,
        None => None,
    };
    let buckets = match (metric_id, filter) {
        (Some(metric_id), Some(filter)) => {
            let resolution = window.resolution();
            if resolution == Resolution::Hour {
                // Read-your-writes: roll up whatever arrived since the background roll-up ran.
                store.rollup().await?;
            }
            store
                .buckets(metric_id, resolution, window.start, window.end, &filter)
                .await?
        }
        _ => Vec::new(),
    };
    let intervals = query::fold(&buckets, window, def.kind, def.minute_extrema(), group_by);
    let names = geonode::Names {
        labels: names_of(
            recorder,
            Kind::Label,
            matches!(group_by, GroupBy::Label | GroupBy::Resource),
        )
        .await?,
        resources: resources
            .iter()
            .map(|e| {
                let (t, n) = split_resource_key(&e.name);
                (e.id, (t.to_string(), n.to_string()))
            })
            .collect(),
        event_types: names_of(
            recorder,
            Kind::EventType,
            matches!(group_by, GroupBy::EventType | GroupBy::EventTypeOnLabel),
        )
        .await?,
    };
    Ok(geonode::metric_data(
        &geonode::MetricData {
            metric: def.name,
            metric_type: def.kind.as_str(),
            unit: def.unit,
            from: window.start,
            to: window.end,
            interval: window.interval,
            label: query.label.as_deref(),
            resource_with_id: group_by == GroupBy::ResourceNoLabel,
        },
        &intervals,
        &names,
    ))
}
