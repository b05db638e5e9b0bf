//! The typed query parameters of the monitoring API, parsed (and refused, naming the
//! parameter) before any handler runs. Each query type implements [`FromQuery`]; handlers take
//! [`Params<T>`], whose rejection is a [`MonitoringError`] in GeoNode's envelope.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use opsplane_store::catalog::{self, MetricDef};
use opsplane_store::query::{self, GroupBy, Window};

use super::MonitoringError;

/// A query string as a typed value.
pub trait FromQuery: Sized {
    /// Parses `q`; the first wrong parameter is named in the error.
    fn from_query(q: &HashMap<String, String>) -> Result<Self, MonitoringError>;
}

/// The extractor of a [`FromQuery`] type.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: FromQuery> FromRequestParts<S> for Params<T> {
    type Rejection = MonitoringError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(q) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| MonitoringError::bad("query", e.body_text()))?;
        T::from_query(&q).map(Params)
    }
}

/// The value of `name`, treating an empty one as absent (GeoNode's forms send `?label=`).
fn given<'q>(q: &'q HashMap<String, String>, name: &str) -> Option<&'q str> {
    q.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// A time parameter in milliseconds since the epoch.
fn time(q: &HashMap<String, String>, name: &'static str) -> Result<Option<i64>, MonitoringError> {
    given(q, name)
        .map(|v| query::parse_time(name, v))
        .transpose()
        .map_err(Into::into)
}

fn metric_name(q: &HashMap<String, String>) -> Result<Option<&'static MetricDef>, MonitoringError> {
    match given(q, "metric_name") {
        None => Ok(None),
        Some(name) => catalog::metric(name).map(Some).ok_or_else(|| {
            MonitoringError::bad(
                "metric_name",
                format!("unknown metric {name:?}; see /monitoring/api/metrics/"),
            )
        }),
    }
}

/// Most entries one `/resources/` or `/labels/` answer lists unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 1000;
/// Most entries one answer may list at all.
pub const MAX_PAGE: usize = 10_000;

/// `offset` and `limit` of a registry list: its answer is bounded (a registry may be large).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Page {
    /// Entries skipped, in id order.
    pub offset: usize,
    /// Entries listed at most.
    pub limit: usize,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            offset: 0,
            limit: DEFAULT_PAGE,
        }
    }
}

fn count(
    q: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<usize>, MonitoringError> {
    given(q, name)
        .map(|v| {
            v.parse::<usize>().map_err(|_| {
                MonitoringError::bad(name, format!("{v:?} is not a non-negative whole number"))
            })
        })
        .transpose()
}

impl FromQuery for Page {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, MonitoringError> {
        let limit = count(q, "limit")?.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(MonitoringError::bad(
                "limit",
                format!("must be from 1 to {MAX_PAGE}"),
            ));
        }
        Ok(Page {
            offset: count(q, "offset")?.unwrap_or(0),
            limit,
        })
    }
}

/// The `metric_name` / `valid_from` / `valid_to` filter of `/resources/` and `/labels/`, and
/// the page of the list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeenQuery {
    /// Only what this metric was recorded for.
    pub metric: Option<&'static MetricDef>,
    /// Only what was seen at or after this time (ms).
    pub from_ms: Option<i64>,
    /// Only what was seen at or before this time (ms).
    pub to_ms: Option<i64>,
    /// Which entries of the list.
    pub page: Page,
}

impl SeenQuery {
    /// Whether no filter was given (everything passes).
    pub fn is_empty(&self) -> bool {
        self.metric.is_none() && self.from_ms.is_none() && self.to_ms.is_none()
    }
}

impl FromQuery for SeenQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, MonitoringError> {
        Ok(SeenQuery {
            metric: metric_name(q)?,
            from_ms: time(q, "valid_from")?,
            to_ms: time(q, "valid_to")?,
            page: Page::from_query(q)?,
        })
    }
}

/// `/resources/`: the seen filter and `resource_type`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourcesQuery {
    /// The metric / time filter.
    pub seen: SeenQuery,
    /// Only resources of this type.
    pub resource_type: Option<String>,
}

impl FromQuery for ResourcesQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, MonitoringError> {
        Ok(ResourcesQuery {
            seen: SeenQuery::from_query(q)?,
            resource_type: given(q, "resource_type").map(str::to_owned),
        })
    }
}

/// `/event_types/?ows_service=`: `Some(true)` machine-made events, `Some(false)` request events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EventTypesQuery {
    /// The seed's boolean filter.
    pub ows_service: Option<bool>,
}

impl FromQuery for EventTypesQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, MonitoringError> {
        let ows_service = match q.get("ows_service").map(String::as_str) {
            None | Some("") => None,
            Some("true" | "True" | "1") => Some(true),
            Some("false" | "False" | "0") => Some(false),
            Some(other) => {
                return Err(MonitoringError::bad(
                    "ows_service",
                    format!("{other:?} is not one of True, true, False, false, 0, 1"),
                ));
            }
        };
        Ok(EventTypesQuery { ows_service })
    }
}

/// `/exceptions/?valid_from&valid_to&last&limit&error_type&service_name&service_type&resource`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionsQuery {
    /// From (ms).
    pub from_ms: Option<i64>,
    /// To (ms).
    pub to_ms: Option<i64>,
    /// At most this many, newest first.
    pub limit: usize,
    /// GeoNode's filters by error type, service name and service type.
    pub filter: opsplane_store::ExceptionFilter,
    /// Only exceptions of requests that touched this resource.
    pub resource: Option<ResourceParam>,
}

impl ExceptionsQuery {
    /// Parses `q` against the clock reading `now_ms` (for `last`).
    pub fn parse(q: &HashMap<String, String>, now_ms: i64) -> Result<Self, MonitoringError> {
        let mut from_ms = time(q, "valid_from")?;
        let mut to_ms = time(q, "valid_to")?;
        if let Some(v) = given(q, "last") {
            let last = v
                .parse::<i64>()
                .ok()
                .filter(|s| (MIN_SECONDS..=MAX_LAST_SECONDS).contains(s))
                .ok_or_else(|| {
                    MonitoringError::bad(
                        "last",
                        format!("{v:?} is not a whole number of seconds of at least {MIN_SECONDS}"),
                    )
                })?;
            if from_ms.is_some() || to_ms.is_some() {
                return Err(MonitoringError::bad(
                    "last",
                    "Cannot use last and valid_from/valid_to at the same time",
                ));
            }
            from_ms = Some(now_ms - last * 1000);
            to_ms = Some(now_ms);
        }
        let limit = match given(q, "limit") {
            None => 100,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=10_000).contains(l))
                .ok_or_else(|| {
                    MonitoringError::bad("limit", format!("{v:?} is not between 1 and 10000"))
                })?,
        };
        Ok(ExceptionsQuery {
            from_ms,
            to_ms,
            limit,
            filter: opsplane_store::ExceptionFilter {
                error_type: given(q, "error_type").map(str::to_owned),
                service: given(q, "service_name").map(str::to_owned),
                service_type: given(q, "service_type").map(str::to_owned),
                resource: None,
            },
            resource: given(q, "resource")
                .map(|v| ResourceParam::parse("resource", v))
                .transpose()?,
        })
    }
}

impl FromQuery for ExceptionsQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, MonitoringError> {
        ExceptionsQuery::parse(q, jiff::Timestamp::now().as_millisecond())
    }
}

/// A `resource` parameter: GeoNode's resource id or `type=name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceParam {
    /// By id.
    Id(u32),
    /// By type and name (`dataset=roads`).
    Named(String, String),
}

impl ResourceParam {
    /// Parses `v`, naming `param` when it is neither form.
    pub fn parse(param: &str, v: &str) -> Result<ResourceParam, MonitoringError> {
        if let Some((t, n)) = v.split_once('=') {
            if !n.is_empty() {
                return Ok(ResourceParam::Named(t.to_string(), n.to_string()));
            }
        } else if let Some(id) = v.parse::<u32>().ok().filter(|id| *id > 0) {
            return Ok(ResourceParam::Id(id));
        }
        Err(MonitoringError::bad(
            param,
            format!("{v} is not valid resource description: a resource id or type=name"),
        ))
    }
}

/// `metric_data`'s parameters, checked in the order a client sees its mistakes named:
/// group_by, valid_to, valid_from, last, the window, interval, resource, event_type. What
/// needs the registries (service, service_type, label, user, resource, resource_type) is
/// resolved — and refused when unknown — by the service function.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricDataQuery {
    /// How rows are grouped.
    pub group_by: GroupBy,
    /// The aligned window (periods counted from 00:00, seed 001).
    pub window: Window,
    /// Only this resource.
    pub resource: Option<ResourceParam>,
    /// Only this event type (`all` means no filter; `other`, `OWS:ALL`, `check:all` the
    /// types they cover).
    pub event_type: Option<String>,
    /// Only this label, by id or name.
    pub label: Option<String>,
    /// Only labels of this user name (unknown: no filter, as GeoNode).
    pub user: Option<String>,
    /// Only this service.
    pub service: Option<String>,
    /// Only services of this type.
    pub service_type: Option<String>,
    /// Only resources of this type.
    pub resource_type: Option<String>,
}

/// Longest `last` accepted: ten years.
const MAX_LAST_SECONDS: i64 = 10 * 365 * 86_400;

/// Shortest `last` and `interval`: GeoNode's collection period.
const MIN_SECONDS: i64 = 60;

impl MetricDataQuery {
    /// Parses `q` against the clock reading `now_ms` (the default `valid_to`).
    ///
    /// Defaults where seed 001 gives none are GeoNode 4.4.5's: `interval` 60 s (3600 s when
    /// the window is longer than a day), the window one interval back from `valid_to`.
    pub fn parse(q: &HashMap<String, String>, now_ms: i64) -> Result<Self, MonitoringError> {
        let group_by = GroupBy::parse(q.get("group_by").map(String::as_str))?;
        let valid_to = time(q, "valid_to")?;
        let valid_from = time(q, "valid_from")?;
        let last = match given(q, "last") {
            None => None,
            Some(v) => Some(
                v.parse::<i64>()
                    .ok()
                    .filter(|s| (MIN_SECONDS..=MAX_LAST_SECONDS).contains(s))
                    .ok_or_else(|| {
                        MonitoringError::bad(
                            "last",
                            format!(
                                "{v:?} is not a whole number of seconds; ensure this value is greater than or equal to {MIN_SECONDS}"
                            ),
                        )
                    })?,
            ),
        };
        if last.is_some() && (valid_from.is_some() || valid_to.is_some()) {
            return Err(MonitoringError::bad(
                "last",
                "Cannot use last and valid_from/valid_to at the same time",
            ));
        }
        let interval = match given(q, "interval") {
            None => None,
            Some(v) => Some(
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && x.fract() == 0.0 && *x > 0.0 && *x < 1e10)
                    .map(|x| x as i64)
                    .ok_or_else(|| {
                        MonitoringError::bad(
                            "interval",
                            format!("{v:?} is not a positive whole number of seconds"),
                        )
                    })?,
            ),
        };
        let to_ms = valid_to.unwrap_or(now_ms);
        let from_ms = match (valid_from, last) {
            (Some(f), _) => f,
            (None, Some(l)) => to_ms - l * 1000,
            (None, None) => to_ms - interval.unwrap_or(MIN_SECONDS) * 1000,
        };
        if from_ms > to_ms {
            return Err(MonitoringError::bad("valid_from", "is after valid_to"));
        }
        let interval =
            interval.unwrap_or_else(|| query::default_interval((to_ms - from_ms) / 1000));
        let window = Window::align(from_ms, to_ms, interval)?;
        let resource = given(q, "resource")
            .map(|v| ResourceParam::parse("resource", v))
            .transpose()?;
        let event_type = match given(q, "event_type") {
            None | Some("all") => None,
            Some(v) => {
                if catalog::event_type(v).is_none() {
                    return Err(MonitoringError::bad(
                        "event_type",
                        format!("Event Type {v} doesn't exist; see /monitoring/api/event_types/"),
                    ));
                }
                Some(v.to_owned())
            }
        };
        if given(q, "service").is_some() && given(q, "service_type").is_some() {
            return Err(MonitoringError::bad(
                "service_type",
                "Cannot use service and service_type at the same time",
            ));
        }
        Ok(MetricDataQuery {
            group_by,
            window,
            resource,
            event_type,
            label: given(q, "label").map(str::to_owned),
            user: given(q, "user").map(str::to_owned),
            service: given(q, "service").map(str::to_owned),
            service_type: given(q, "service_type").map(str::to_owned),
            resource_type: given(q, "resource_type").map(str::to_owned),
        })
    }
}

impl FromQuery for MetricDataQuery {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, MonitoringError> {
        MetricDataQuery::parse(q, jiff::Timestamp::now().as_millisecond())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn param_of(e: MonitoringError) -> String {
        match e {
            MonitoringError::BadParameter { param, .. } => param,
            other => panic!("not a parameter error: {other:?}"),
        }
    }

    const NOON: i64 = 1_764_590_400_000; // 2025-12-01T12:00:00Z

    #[test]
    fn metric_data_defaults_to_one_interval_before_now_as_geonode() {
        let query = MetricDataQuery::parse(&q(&[]), NOON).unwrap();
        assert_eq!(query.group_by, GroupBy::Label);
        assert_eq!(query.window.end, NOON / 1000);
        assert_eq!(query.window.start, NOON / 1000 - 60);
        assert_eq!(query.window.interval, 60);
        assert_eq!(query.event_type, None);
        let query = MetricDataQuery::parse(&q(&[("interval", "3600")]), NOON).unwrap();
        assert_eq!(query.window.start, NOON / 1000 - 3600);
        // A window longer than a day without an interval: GeoNode's 3600 s.
        let query = MetricDataQuery::parse(&q(&[("last", "172800")]), NOON).unwrap();
        assert_eq!(query.window.interval, 3600);
        let query = MetricDataQuery::parse(&q(&[("last", "86400")]), NOON).unwrap();
        assert_eq!(query.window.interval, 60);
    }

    #[test]
    fn last_is_at_least_60_and_not_with_valid_from_or_to() {
        assert_eq!(
            param_of(MetricDataQuery::parse(&q(&[("last", "59")]), NOON).unwrap_err()),
            "last"
        );
        for other in ["valid_from", "valid_to"] {
            let e = MetricDataQuery::parse(&q(&[("last", "600"), (other, "2025-12-01")]), NOON)
                .unwrap_err();
            assert_eq!(param_of(e), "last", "{other}");
        }
    }

    #[test]
    fn resource_is_an_id_or_type_equals_name() {
        let parse = |v: &str| MetricDataQuery::parse(&q(&[("resource", v)]), NOON);
        assert_eq!(parse("7").unwrap().resource, Some(ResourceParam::Id(7)));
        assert_eq!(
            parse("dataset=geonode:roads").unwrap().resource,
            Some(ResourceParam::Named(
                "dataset".into(),
                "geonode:roads".into()
            ))
        );
        for bad in ["0", "x", "dataset="] {
            assert_eq!(param_of(parse(bad).unwrap_err()), "resource", "{bad}");
        }
    }

    #[test]
    fn metric_data_names_the_first_wrong_parameter() {
        for (pairs, param) in [
            (vec![("group_by", "everything")], "group_by"),
            (vec![("last", "-5")], "last"),
            (vec![("last", "x"), ("interval", "y")], "last"),
            (vec![("interval", "1.5")], "interval"),
            (vec![("resource", "0")], "resource"),
            (vec![("event_type", "nope")], "event_type"),
            (
                vec![
                    ("valid_from", "2025-12-02T00:00:00"),
                    ("valid_to", "2025-12-01T00:00:00"),
                ],
                "valid_from",
            ),
        ] {
            let error = MetricDataQuery::parse(&q(&pairs), NOON).unwrap_err();
            assert_eq!(param_of(error), param, "{pairs:?}");
        }
    }

    #[test]
    fn empty_values_and_event_type_all_mean_no_filter() {
        let query = MetricDataQuery::parse(
            &q(&[("label", ""), ("event_type", "all"), ("service", "")]),
            NOON,
        )
        .unwrap();
        assert_eq!(query.label, None);
        assert_eq!(query.event_type, None);
        assert_eq!(query.service, None);
    }

    #[test]
    fn ows_service_takes_the_seeds_spellings_only() {
        let parse = |v: &str| EventTypesQuery::from_query(&q(&[("ows_service", v)]));
        assert_eq!(parse("True").unwrap().ows_service, Some(true));
        assert_eq!(parse("0").unwrap().ows_service, Some(false));
        assert_eq!(parse("").unwrap().ows_service, None);
        assert_eq!(param_of(parse("yes").unwrap_err()), "ows_service");
    }

    #[test]
    fn exceptions_limit_is_bounded() {
        assert_eq!(ExceptionsQuery::from_query(&q(&[])).unwrap().limit, 100);
        assert_eq!(
            param_of(ExceptionsQuery::from_query(&q(&[("limit", "10001")])).unwrap_err()),
            "limit"
        );
    }
}
