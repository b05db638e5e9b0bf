//! The store conformance suite: every case runs against the embedded store (a redb file in a
//! temp dir) and against a real redis-server on a free loopback port, one per case.

use std::sync::Arc;

use opsplane_store::embedded::EmbeddedStore;
use opsplane_store::model::{HOUR, resource_key};
use opsplane_store::redis::RedisStore;
use opsplane_store::testing::RedisServer;
use opsplane_store::{
    Agg, ExceptionRecord, Expect, Kind, Resolution, Retention, Sample, SeriesFilter, SeriesKey,
    Store, Written,
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn retention() -> Retention {
    Retention {
        minutes: 2 * 86_400,
        hours: 90 * 86_400,
        exceptions: 30 * 86_400,
    }
}

/// A redis-server of the case's own (stopped when the returned guard drops) and a store on it.
async fn redis_store(case: &str, dir: &tempfile::TempDir) -> (Arc<dyn Store>, RedisServer) {
    let server = RedisServer::start(dir.path())
        .expect("redis-server must be installed (scripts/test.sh installs it)");
    let store =
        RedisStore::connect_with_prefix(&server.url(), &format!("test:{case}:"), retention())
            .await
            .expect("connect to the test redis-server");
    (Arc::new(store), server)
}

fn embedded_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(&dir.path().join("store.redb"), retention()).expect("open"))
}

/// A recent whole hour, so Redis' EXPIREAT keeps the data.
fn base_hour() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now / HOUR - 3) * HOUR
}

fn key(metric: u32, label: u32) -> SeriesKey {
    SeriesKey {
        metric,
        service: 1,
        resource: 0,
        label,
        event_type: 0,
    }
}

fn sample(key: SeriesKey, ts: i64, value: f64) -> Sample {
    Sample { key, ts, value }
}

async fn registry_ids_are_stable_and_per_kind(store: Arc<dyn Store>) {
    let a = store
        .ids(Kind::Label, &["GET", "PUT", "GET"])
        .await
        .unwrap();
    assert_eq!(a, vec![1, 2, 1]);
    let b = store.ids(Kind::Label, &["PUT", "lo"]).await.unwrap();
    assert_eq!(b, vec![2, 3]);
    let r = store
        .ids(Kind::Resource, &[&resource_key("url", "/maps/")])
        .await
        .unwrap();
    assert_eq!(r, vec![1], "each kind counts from 1");
    let names: Vec<String> = store
        .entries(Kind::Label)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{}={}", e.id, e.name))
        .collect();
    assert_eq!(names, ["1=GET", "2=PUT", "3=lo"]);
    assert_eq!(
        store.entry(Kind::Label, "PUT").await.unwrap().map(|e| e.id),
        Some(2)
    );
    assert!(store.entry(Kind::Label, "DELETE").await.unwrap().is_none());
    assert!(
        store.entry(Kind::Resource, "PUT").await.unwrap().is_none(),
        "kinds are separate"
    );
}

/// `ids_with` gives the entries it creates their attributes and leaves existing ones alone.
async fn ids_with_marks_only_the_entries_it_creates(store: Arc<dyn Store>) {
    store
        .upsert(Kind::Label, "old", &serde_json::json!({"user": "ann"}))
        .await
        .unwrap();
    let owner = serde_json::json!({"service": "shop"});
    let ids = store
        .ids_with(Kind::Label, &["old", "new", "new"], Some(&owner))
        .await
        .unwrap();
    assert_eq!(ids[1], ids[2]);
    assert_ne!(ids[0], ids[1]);
    let old = store.entry(Kind::Label, "old").await.unwrap().unwrap();
    assert_eq!(
        old.attrs,
        serde_json::json!({"user": "ann"}),
        "existing entry kept"
    );
    let new = store.entry(Kind::Label, "new").await.unwrap().unwrap();
    assert_eq!(new.attrs, owner);
    // Nothing is created when the attributes are not an object.
    assert!(matches!(
        store
            .ids_with(Kind::Label, &["bad"], Some(&serde_json::json!([1])))
            .await,
        Err(opsplane_store::StoreError::Invalid(_))
    ));
    assert!(store.entry(Kind::Label, "bad").await.unwrap().is_none());
    // Without attributes, as `ids`: an empty object.
    store.ids_with(Kind::Label, &["plain"], None).await.unwrap();
    let plain = store.entry(Kind::Label, "plain").await.unwrap().unwrap();
    assert_eq!(plain.attrs, serde_json::json!({}));
}

async fn upsert_merges_attributes(store: Arc<dyn Store>) {
    let id = store
        .upsert(
            Kind::Service,
            "web",
            &serde_json::json!({"type": "application", "check_interval": 60}),
        )
        .await
        .unwrap();
    let again = store
        .upsert(
            Kind::Service,
            "web",
            &serde_json::json!({"last_check": "2026-11-25T10:00:00"}),
        )
        .await
        .unwrap();
    assert_eq!(id, again);
    let entries = store.entries(Kind::Service).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        store.entry(Kind::Service, "web").await.unwrap().as_ref(),
        entries.first()
    );
    assert_eq!(
        entries[0].attrs,
        serde_json::json!({"type": "application", "check_interval": 60, "last_check": "2026-11-25T10:00:00"})
    );
    assert!(
        store
            .upsert(Kind::Service, "x", &serde_json::json!(1))
            .await
            .is_err()
    );
    assert_eq!(
        store.entries(Kind::Service).await.unwrap().len(),
        1,
        "nothing half-written"
    );
}

async fn ingest_folds_minutes_across_batches(store: Arc<dyn Store>) {
    let h = base_hour();
    let k = key(1, 1);
    store
        .ingest(&[
            sample(k, h + 5, 2.0),
            sample(k, h + 50, 7.0),
            sample(k, h + 61, 1.0),
        ])
        .await
        .unwrap();
    store.ingest(&[sample(k, h + 30, 0.5)]).await.unwrap();
    let rows = store
        .buckets(1, Resolution::Minute, h, h + HOUR, &SeriesFilter::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].start, rows[0].key), (h, k));
    let a = rows[0].agg;
    assert_eq!(
        (a.samples, a.sum, a.min, a.max, a.metric_count),
        (3, 9.5, 0.5, 7.0, 1)
    );
    assert_eq!((rows[1].start, rows[1].agg.sum), (h + 60, 1.0));
    // Other metrics and windows see nothing.
    assert!(
        store
            .buckets(2, Resolution::Minute, h, h + HOUR, &SeriesFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .buckets(
                1,
                Resolution::Minute,
                h + 120,
                h + HOUR,
                &SeriesFilter::default()
            )
            .await
            .unwrap()
            .is_empty()
    );
}

async fn rollup_builds_hours_and_follows_late_data(store: Arc<dyn Store>) {
    let h = base_hour();
    let k = key(1, 1);
    let mut batch = Vec::new();
    for minute in 0..10 {
        for _ in 0..=minute {
            batch.push(sample(k, h + minute * 60 + 1, 1.0));
        }
    }
    batch.push(sample(key(1, 2), h + HOUR + 10, 4.0));
    store.ingest(&batch).await.unwrap();
    assert_eq!(store.rollup().await.unwrap(), 2, "two hours were touched");
    assert_eq!(store.rollup().await.unwrap(), 0, "nothing left to roll");
    let rows = store
        .buckets(
            1,
            Resolution::Hour,
            h,
            h + 2 * HOUR,
            &SeriesFilter::default(),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let a: Agg = rows[0].agg;
    assert_eq!(
        (
            a.samples,
            a.sum,
            a.min,
            a.max,
            a.minute_min,
            a.minute_max,
            a.metric_count
        ),
        (55, 55.0, 1.0, 1.0, 1.0, 10.0, 10)
    );
    assert_eq!((rows[1].start, rows[1].key.label), (h + HOUR, 2));
    // A late sample for the first hour re-marks it; the roll-up includes it.
    store.ingest(&[sample(k, h + 59 * 60, 20.0)]).await.unwrap();
    assert_eq!(store.rollup().await.unwrap(), 1);
    let rows = store
        .buckets(1, Resolution::Hour, h, h + HOUR, &SeriesFilter::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].agg.samples,
            rows[0].agg.sum,
            rows[0].agg.max,
            rows[0].agg.minute_max,
            rows[0].agg.metric_count
        ),
        (56, 75.0, 20.0, 20.0, 11)
    );
}

async fn bucket_filters_select_series(store: Arc<dyn Store>) {
    let h = base_hour();
    let mut a = key(1, 1);
    a.resource = 5;
    a.event_type = 2;
    let mut b = key(1, 2);
    b.service = 9;
    store
        .ingest(&[sample(a, h, 1.0), sample(b, h, 2.0)])
        .await
        .unwrap();
    let only = |f: SeriesFilter| {
        let store = store.clone();
        async move {
            store
                .buckets(1, Resolution::Minute, h, h + 60, &f)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.agg.sum)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(only(SeriesFilter::default()).await, [1.0, 2.0]);
    assert_eq!(
        only(SeriesFilter {
            services: Some(vec![9]),
            ..Default::default()
        })
        .await,
        [2.0]
    );
    assert_eq!(
        only(SeriesFilter {
            resources: Some(vec![5]),
            ..Default::default()
        })
        .await,
        [1.0]
    );
    assert_eq!(
        only(SeriesFilter {
            labels: Some(vec![2]),
            ..Default::default()
        })
        .await,
        [2.0]
    );
    assert_eq!(
        only(SeriesFilter {
            event_types: Some(vec![2]),
            ..Default::default()
        })
        .await,
        [1.0]
    );
    assert!(
        only(SeriesFilter {
            labels: Some(vec![]),
            ..Default::default()
        })
        .await
        .is_empty()
    );
}

async fn seen_tracks_resources_and_labels_per_metric(store: Arc<dyn Store>) {
    let h = base_hour();
    let mut early = key(1, 1);
    early.resource = 1;
    let mut late = key(2, 2);
    late.resource = 2;
    store
        .ingest(&[sample(early, h, 1.0), sample(late, h + 2 * HOUR, 1.0)])
        .await
        .unwrap();
    let mut all = store.seen(Kind::Resource, None, None, None).await.unwrap();
    all.sort();
    assert_eq!(all, [1, 2]);
    assert_eq!(
        store
            .seen(Kind::Resource, Some(1), None, None)
            .await
            .unwrap(),
        [1]
    );
    assert_eq!(
        store.seen(Kind::Label, Some(2), None, None).await.unwrap(),
        [2]
    );
    assert_eq!(
        store
            .seen(Kind::Resource, None, Some(h + HOUR), None)
            .await
            .unwrap(),
        [2]
    );
    assert_eq!(
        store
            .seen(Kind::Resource, None, None, Some(h + HOUR))
            .await
            .unwrap(),
        [1]
    );
    assert!(
        store
            .seen(Kind::Label, Some(3), None, None)
            .await
            .unwrap()
            .is_empty()
    );
}

fn exception(service: &str, created_ms: i64, error_type: &str) -> ExceptionRecord {
    ExceptionRecord {
        id: 0,
        error_type: error_type.into(),
        error_message: format!("{error_type} happened"),
        error_data: "trace".into(),
        service: service.into(),
        service_type: "check".into(),
        created_ms,
        request: serde_json::json!({"request": {"path": "/x", "method": "GET"}}),
    }
}

async fn exceptions_are_numbered_listed_and_pruned(store: Arc<dyn Store>) {
    let h = base_hour();
    let first = store
        .add_exception(&exception("a", h * 1000, "check.timeout"))
        .await
        .unwrap();
    let second = store
        .add_exception(&exception("b", (h + 60) * 1000 + 5, "check.status"))
        .await
        .unwrap();
    assert_eq!((first, second), (1, 2));
    let listed = store.exceptions(None, None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|e| e.id).collect::<Vec<_>>(),
        [2, 1],
        "newest first"
    );
    assert_eq!(store.exceptions(None, None, 1).await.unwrap().len(), 1);
    assert_eq!(
        store.exceptions(Some(h + 30), None, 10).await.unwrap()[0].id,
        2
    );
    let detail = store.exception(2).await.unwrap().unwrap();
    assert_eq!(detail.error_type, "check.status");
    assert_eq!(detail.created_ms, (h + 60) * 1000 + 5);
    assert_eq!(detail.request["request"]["path"], "/x");
    assert!(store.exception(99).await.unwrap().is_none());
    // Exceptions older than the retention go.
    store.prune(h + 30 * 86_400 + 30).await.unwrap();
    assert_eq!(
        store
            .exceptions(None, None, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        [2]
    );
}

async fn invalid_samples_write_nothing(store: Arc<dyn Store>) {
    let h = base_hour();
    let err = store
        .ingest(&[sample(key(1, 1), h, 1.0), sample(key(1, 1), h, f64::NAN)])
        .await;
    assert!(err.is_err());
    assert!(
        store
            .buckets(1, Resolution::Minute, h, h + 60, &SeriesFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// What the store would not keep (older than the 1-minute retention) or could not sum (values
/// no measurement has) is refused on both backends alike, and nothing of the batch is written
/// (Redis used to acknowledge old samples and expire them at once).
async fn samples_outside_retention_or_range_are_refused(store: Arc<dyn Store>) {
    let h = base_hour();
    let too_old = h - retention().minutes - HOUR;
    for bad in [
        sample(key(1, 1), too_old, 1.0),
        sample(key(1, 1), h, 1e300),
        sample(key(1, 1), h, -1e300),
    ] {
        let err = store
            .ingest(&[sample(key(1, 1), h, 1.0), bad])
            .await
            .expect_err("refused");
        assert!(
            matches!(err, opsplane_store::StoreError::Invalid(_)),
            "{err}"
        );
    }
    assert_eq!(store.retention(), retention());
    for from in [too_old - too_old % HOUR, h] {
        assert!(
            store
                .buckets(
                    1,
                    Resolution::Minute,
                    from,
                    from + HOUR,
                    &SeriesFilter::default()
                )
                .await
                .unwrap()
                .is_empty()
        );
    }
    // The oldest minute still kept is accepted.
    let edge = jiff::Timestamp::now().as_second() - retention().minutes + 120;
    store.ingest(&[sample(key(1, 1), edge, 1.0)]).await.unwrap();
}

async fn concurrent_ingestion_loses_nothing(store: Arc<dyn Store>) {
    let h = base_hour();
    let mut tasks = Vec::new();
    for t in 0..8i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let batch: Vec<Sample> = (0..40i64)
                    .map(|j| {
                        sample(
                            key(1, 1 + (j % 3) as u32),
                            h + ((t * 25 + i + j) % 120) * 30,
                            1.0,
                        )
                    })
                    .collect();
                store.ingest(&batch).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rows = store
        .buckets(
            1,
            Resolution::Minute,
            h,
            h + 2 * HOUR,
            &SeriesFilter::default(),
        )
        .await
        .unwrap();
    let total: u64 = rows.iter().map(|r| r.agg.samples).sum();
    let sum: f64 = rows.iter().map(|r| r.agg.sum).sum();
    assert_eq!(total, 8 * 25 * 40);
    assert_eq!(sum, 8000.0);
    store.rollup().await.unwrap();
    let hours = store
        .buckets(
            1,
            Resolution::Hour,
            h,
            h + 2 * HOUR,
            &SeriesFilter::default(),
        )
        .await
        .unwrap();
    assert_eq!(hours.iter().map(|r| r.agg.samples).sum::<u64>(), 8000);
}

async fn rate_hits_count_per_key_within_a_window(store: Arc<dyn Store>) {
    let now = 1_764_590_400; // a window boundary for 60 s windows
    for n in 1..=3 {
        let hit = store
            .rate_hit("ip:10.0.0.1:GET", 60, now + 5)
            .await
            .unwrap();
        assert_eq!(
            hit,
            opsplane_store::RateHit {
                count: n,
                reset: now + 60
            }
        );
    }
    // Another key, or another method, counts on its own.
    assert_eq!(
        store
            .rate_hit("ip:10.0.0.2:GET", 60, now)
            .await
            .unwrap()
            .count,
        1
    );
    assert_eq!(
        store
            .rate_hit("ip:10.0.0.1:POST", 60, now)
            .await
            .unwrap()
            .count,
        1
    );
    // The next window starts again at one.
    let next = store
        .rate_hit("ip:10.0.0.1:GET", 60, now + 60)
        .await
        .unwrap();
    assert_eq!(
        next,
        opsplane_store::RateHit {
            count: 1,
            reset: now + 120
        }
    );
}

async fn rate_hits_are_atomic_under_concurrency(store: Arc<dyn Store>) {
    let now = 1_764_590_400;
    let hits = futures::future::join_all((0..200).map(|_| {
        let store = store.clone();
        async move {
            store
                .rate_hit("user:ci:PATCH", 60, now)
                .await
                .unwrap()
                .count
        }
    }))
    .await;
    let mut counts: Vec<u64> = hits;
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=200).collect::<Vec<u64>>(),
        "every count handed out once"
    );
}

async fn removed_entries_leave_the_registry_and_the_seen_records(store: Arc<dyn Store>) {
    let h = base_hour();
    let metric = store.ids(Kind::Metric, &["check.up"]).await.unwrap()[0];
    let names = [
        resource_key("instance", "10.0.0.1:80"),
        resource_key("instance", "10.0.0.2:80"),
    ];
    let ids = store
        .ids(Kind::Resource, &[&names[0], &names[1]])
        .await
        .unwrap();
    store
        .upsert(Kind::Resource, &names[0], &serde_json::json!({"a": 1}))
        .await
        .unwrap();
    let samples: Vec<Sample> = ids
        .iter()
        .map(|id| {
            let mut k = key(metric, 0);
            k.resource = *id;
            sample(k, h, 1.0)
        })
        .collect();
    store.ingest(&samples).await.unwrap();
    let removed = store
        .remove(Kind::Resource, &[&names[0], "instance|never-registered"])
        .await
        .unwrap();
    assert_eq!(removed, 1, "only existing entries count");
    assert!(
        store
            .entry(Kind::Resource, &names[0])
            .await
            .unwrap()
            .is_none()
    );
    let left: Vec<String> = store
        .entries(Kind::Resource)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(left, [names[1].clone()]);
    // Gone from the seen records, for any metric and for this one.
    assert_eq!(
        store.seen(Kind::Resource, None, None, None).await.unwrap(),
        [ids[1]]
    );
    assert_eq!(
        store
            .seen(Kind::Resource, Some(metric), None, None)
            .await
            .unwrap(),
        [ids[1]]
    );
    // Another kind with the same name is untouched; removing again is a no-op.
    store.ids(Kind::Host, &[&names[1]]).await.unwrap();
    assert_eq!(store.remove(Kind::Resource, &[&names[0]]).await.unwrap(), 0);
    assert_eq!(store.remove(Kind::Resource, &[&names[1]]).await.unwrap(), 1);
    assert!(store.entry(Kind::Host, &names[1]).await.unwrap().is_some());
    // A name registered again gets a new id.
    let again = store.ids(Kind::Resource, &[&names[0]]).await.unwrap()[0];
    assert!(again > ids[1], "{again} reuses an id");
}

async fn documents_are_written_only_when_the_expectation_holds(store: Arc<dyn Store>) {
    let body = serde_json::json!({"spec": {"url": "http://a/"}});
    let first = store
        .put_document("objects/services", "default/web", &body, Expect::Absent)
        .await
        .unwrap();
    let Written::Done(r1) = first else {
        panic!("create refused: {first:?}")
    };
    assert_eq!(
        store
            .put_document("objects/services", "default/web", &body, Expect::Absent)
            .await
            .unwrap(),
        Written::Conflict(Some(r1)),
        "a second create is refused with the current revision"
    );
    let changed = serde_json::json!({"spec": {"url": "http://b/"}});
    let Written::Done(r2) = store
        .put_document(
            "objects/services",
            "default/web",
            &changed,
            Expect::Revision(r1),
        )
        .await
        .unwrap()
    else {
        panic!("update at the current revision refused")
    };
    assert!(r2 > r1, "revisions grow: {r1} then {r2}");
    assert_eq!(
        store
            .put_document(
                "objects/services",
                "default/web",
                &body,
                Expect::Revision(r1)
            )
            .await
            .unwrap(),
        Written::Conflict(Some(r2)),
        "a stale revision is refused"
    );
    let doc = store
        .document("objects/services", "default/web")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((doc.revision, doc.body), (r2, changed));
    // Another collection with a prefix of this one's name holds nothing of it.
    store
        .put_document("objects/service", "x", &body, Expect::Any)
        .await
        .unwrap();
    store
        .put_document("objects/services", "a/first", &body, Expect::Any)
        .await
        .unwrap();
    let ids: Vec<String> = store
        .documents("objects/services")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, ["a/first", "default/web"]);
    assert_eq!(
        store
            .delete_document("objects/services", "default/web", Expect::Revision(r1))
            .await
            .unwrap(),
        Written::Conflict(Some(r2))
    );
    assert_eq!(
        store
            .delete_document("objects/services", "default/web", Expect::Revision(r2))
            .await
            .unwrap(),
        Written::Done(r2)
    );
    assert!(
        store
            .document("objects/services", "default/web")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .delete_document("objects/services", "default/web", Expect::Any)
            .await
            .unwrap(),
        Written::Conflict(None),
        "deleting what is not there"
    );
}

async fn concurrent_writers_at_one_revision_have_one_winner(store: Arc<dyn Store>) {
    let body = serde_json::json!({"n": 0});
    let Written::Done(r) = store
        .put_document("objects/tasks", "t", &body, Expect::Absent)
        .await
        .unwrap()
    else {
        panic!("create refused")
    };
    let outcomes = futures::future::join_all((0..20).map(|n| {
        let store = store.clone();
        async move {
            store
                .put_document(
                    "objects/tasks",
                    "t",
                    &serde_json::json!({"n": n}),
                    Expect::Revision(r),
                )
                .await
                .unwrap()
        }
    }))
    .await;
    let winners = outcomes
        .iter()
        .filter(|o| matches!(o, Written::Done(_)))
        .count();
    assert_eq!(winners, 1, "{outcomes:?}");
}

async fn logs_append_in_order_and_page(store: Arc<dyn Store>) {
    assert_eq!(store.log_len("oplog").await.unwrap(), 0);
    assert!(store.log("oplog", 0, 10).await.unwrap().is_empty());
    for n in 1..=5u64 {
        let seq = store
            .append("oplog", &serde_json::json!({"n": n}))
            .await
            .unwrap();
        assert_eq!(seq, n);
    }
    store
        .append(
            "versions/services/default/web",
            &serde_json::json!({"v": 1}),
        )
        .await
        .unwrap();
    assert_eq!(store.log_len("oplog").await.unwrap(), 5);
    let page = store.log("oplog", 1, 2).await.unwrap();
    assert_eq!(
        page.iter()
            .map(|e| (e.seq, e.body["n"].as_u64().unwrap()))
            .collect::<Vec<_>>(),
        [(2, 2), (3, 3)]
    );
    assert!(store.log("oplog", 5, 10).await.unwrap().is_empty());
    assert_eq!(
        store
            .log("versions/services/default/web", 0, 10)
            .await
            .unwrap()[0]
            .body,
        serde_json::json!({"v": 1})
    );
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$case(super::embedded_store(&dir)).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let (store, _server) = super::redis_store(stringify!($case), &dir).await;
                    super::$case(store).await;
                }
            )*
        }
    };
}

async fn exception_lists_filter_by_type_service_and_resource(store: Arc<dyn Store>) {
    use opsplane_store::ExceptionFilter;
    let h = base_hour();
    // 700 exceptions of service a, then one of b touching a resource: a filtered list finds
    // b's beyond the first page of candidates.
    for i in 0..700 {
        store
            .add_exception(&exception("a", (h + i) * 1000, "check.timeout"))
            .await
            .unwrap();
    }
    let mut b = exception("b", (h - 10) * 1000, "ValueError");
    b.service_type = "application".into();
    b.request = serde_json::json!({"resources": [{"type": "dataset", "name": "roads"}]});
    let b_id = store.add_exception(&b).await.unwrap();
    let ids = |list: Vec<opsplane_store::ExceptionRecord>| {
        list.into_iter().map(|e| e.id).collect::<Vec<_>>()
    };
    for filter in [
        ExceptionFilter {
            error_type: Some("ValueError".into()),
            ..Default::default()
        },
        ExceptionFilter {
            service: Some("b".into()),
            ..Default::default()
        },
        ExceptionFilter {
            service_type: Some("application".into()),
            ..Default::default()
        },
        ExceptionFilter {
            resource: Some(("dataset".into(), "roads".into())),
            ..Default::default()
        },
    ] {
        let found = store
            .exceptions_where(None, None, 5, &filter)
            .await
            .unwrap();
        assert_eq!(ids(found), [b_id], "{filter:?}");
    }
    let none = ExceptionFilter {
        resource: Some(("dataset".into(), "rivers".into())),
        ..Default::default()
    };
    assert!(
        store
            .exceptions_where(None, None, 5, &none)
            .await
            .unwrap()
            .is_empty()
    );
    let a = ExceptionFilter {
        service: Some("a".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(store.exceptions_where(None, None, 3, &a).await.unwrap()),
        [700, 699, 698],
        "newest first, at most the limit"
    );
}

async fn exceptions_are_deleted_by_id_all_at_once(store: Arc<dyn Store>) {
    let h = base_hour();
    for i in 0..4 {
        store
            .add_exception(&exception("a", (h + i) * 1000, "check.timeout"))
            .await
            .unwrap();
    }
    let ids = |list: Vec<ExceptionRecord>| list.into_iter().map(|e| e.id).collect::<Vec<_>>();
    // Unknown ids are skipped and not counted; the others go, from the list and by id.
    assert_eq!(store.delete_exceptions(&[2, 4, 99]).await.unwrap(), 2);
    assert_eq!(ids(store.exceptions(None, None, 10).await.unwrap()), [3, 1]);
    assert!(store.exception(2).await.unwrap().is_none());
    assert_eq!(
        ids(store.exceptions(Some(h + 1), None, 10).await.unwrap()),
        [3],
        "the time index lost the deleted ones too"
    );
    assert_eq!(store.delete_exceptions(&[]).await.unwrap(), 0);
    assert_eq!(store.delete_exceptions(&[2]).await.unwrap(), 0, "once only");
    // A new record gets a new id, never a deleted one's.
    let next = store
        .add_exception(&exception("a", (h + 9) * 1000, "check.timeout"))
        .await
        .unwrap();
    assert_eq!(next, 5);
    assert_eq!(store.delete_exceptions(&[1, 3, 5]).await.unwrap(), 3);
    assert!(store.exceptions(None, None, 10).await.unwrap().is_empty());
}

async fn supervisor_records_round_trip_and_write_conditionally(store: Arc<dyn Store>) {
    use opsplane_store::supervisors::{self, SupervisorRecord};
    assert!(supervisors::list(&*store).await.unwrap().is_empty());
    let pending = SupervisorRecord {
        id: "s1".into(),
        service: "opsplane".into(),
        base_url: "http://127.0.0.1:1/spv".into(),
        ops_api: "http://127.0.0.1:2/ops".into(),
        init_key: Some("{\"kty\":\"RSA\"}".into()),
        created_time: 1_800_000_000,
        ..SupervisorRecord::default()
    };
    let Written::Done(r1) = supervisors::put(&*store, &pending, Expect::Absent)
        .await
        .unwrap()
    else {
        panic!("create refused")
    };
    assert_eq!(
        supervisors::put(&*store, &pending, Expect::Absent)
            .await
            .unwrap(),
        Written::Conflict(Some(r1)),
        "one record per id"
    );
    let (rev, read) = supervisors::get(&*store, "s1").await.unwrap().unwrap();
    assert_eq!((rev, &read), (r1, &pending), "read back as written");
    let connected = SupervisorRecord {
        node_id: Some("node-1".into()),
        public_key: Some("{}".into()),
        init_key: None,
        connected: true,
        backup_urls: vec!["http://127.0.0.1:3/spv".into()],
        settings: serde_json::json!({"a": 1}),
        ..pending.clone()
    };
    let Written::Done(r2) = supervisors::put(&*store, &connected, Expect::Revision(r1))
        .await
        .unwrap()
    else {
        panic!("update at the current revision refused")
    };
    assert_eq!(
        supervisors::put(&*store, &pending, Expect::Revision(r1))
            .await
            .unwrap(),
        Written::Conflict(Some(r2)),
        "a stale writer loses"
    );
    let all = supervisors::list(&*store).await.unwrap();
    assert_eq!(all, vec![(r2, connected)]);
    assert!(
        supervisors::put(&*store, &SupervisorRecord::default(), Expect::Any)
            .await
            .is_err(),
        "no id, no record"
    );
    // A foreign document in the collection is reported as corrupt, not taken for a record.
    store
        .put_document(
            supervisors::COLLECTION,
            "bad",
            &serde_json::json!({"id": 3}),
            Expect::Any,
        )
        .await
        .unwrap();
    assert!(supervisors::get(&*store, "bad").await.is_err());
    store
        .delete_document(supervisors::COLLECTION, "bad", Expect::Any)
        .await
        .unwrap();
    assert_eq!(
        supervisors::remove(&*store, "s1", Expect::Revision(r2))
            .await
            .unwrap(),
        Written::Done(r2)
    );
    assert!(supervisors::get(&*store, "s1").await.unwrap().is_none());
}

conformance!(
    exceptions_are_deleted_by_id_all_at_once,
    exception_lists_filter_by_type_service_and_resource,
    rate_hits_count_per_key_within_a_window,
    rate_hits_are_atomic_under_concurrency,
    registry_ids_are_stable_and_per_kind,
    ids_with_marks_only_the_entries_it_creates,
    upsert_merges_attributes,
    ingest_folds_minutes_across_batches,
    rollup_builds_hours_and_follows_late_data,
    bucket_filters_select_series,
    seen_tracks_resources_and_labels_per_metric,
    removed_entries_leave_the_registry_and_the_seen_records,
    exceptions_are_numbered_listed_and_pruned,
    invalid_samples_write_nothing,
    samples_outside_retention_or_range_are_refused,
    concurrent_ingestion_loses_nothing,
    documents_are_written_only_when_the_expectation_holds,
    concurrent_writers_at_one_revision_have_one_winner,
    logs_append_in_order_and_page,
    supervisor_records_round_trip_and_write_conditionally,
);

/// The database holds documents and the oplog: owner only, new or found wider (issue 16).
#[tokio::test]
async fn embedded_store_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/store.redb");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    {
        let store = EmbeddedStore::open(&path, retention()).unwrap();
        store.ids(Kind::Label, &["a"]).await.unwrap();
    }
    assert_eq!(mode(&path), 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = EmbeddedStore::open(&path, retention()).unwrap();
    assert_eq!(mode(&path), 0o600, "an existing file is narrowed");
    assert_eq!(
        store.ids(Kind::Label, &["a"]).await.unwrap(),
        vec![1],
        "and keeps its data"
    );
}

#[tokio::test]
async fn embedded_store_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let h = base_hour();
    {
        let store = embedded_store(&dir);
        store.ids(Kind::Label, &["a", "b"]).await.unwrap();
        store.ingest(&[sample(key(1, 2), h, 3.0)]).await.unwrap();
        store
            .add_exception(&exception("s", h * 1000, "e"))
            .await
            .unwrap();
        store
            .put_document(
                "objects/services",
                "a/b",
                &serde_json::json!({"k": 1}),
                Expect::Absent,
            )
            .await
            .unwrap();
        store
            .append("oplog", &serde_json::json!({"o": "POST"}))
            .await
            .unwrap();
    }
    let store = embedded_store(&dir);
    let doc = store
        .document("objects/services", "a/b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.body["k"], 1);
    assert_eq!(store.log_len("oplog").await.unwrap(), 1);
    let Written::Done(next) = store
        .put_document(
            "objects/services",
            "a/c",
            &serde_json::json!({}),
            Expect::Absent,
        )
        .await
        .unwrap()
    else {
        panic!("create refused")
    };
    assert!(
        next > doc.revision,
        "the revision counter survived the reopen"
    );
    assert_eq!(store.ids(Kind::Label, &["b", "c"]).await.unwrap(), [2, 3]);
    let rows = store
        .buckets(1, Resolution::Minute, h, h + 60, &SeriesFilter::default())
        .await
        .unwrap();
    assert_eq!(rows[0].agg.sum, 3.0);
    assert_eq!(
        store.rollup().await.unwrap(),
        1,
        "the dirty mark survived too"
    );
    assert_eq!(
        store
            .add_exception(&exception("s", h * 1000, "e"))
            .await
            .unwrap(),
        2
    );
}

#[tokio::test]
async fn redis_store_reports_an_unreachable_server() {
    let port = free_port();
    let result = RedisStore::connect(&format!("redis://127.0.0.1:{port}/"), retention()).await;
    assert!(result.is_err(), "connecting to a closed port must fail");
}

/// Script calls (`EVALSHA`, and `EVAL` should the script cache be empty) Redis has run.
async fn script_calls(url: &str) -> u64 {
    let client = ::redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The rate limiter's hits that arrive together go to Redis together (issue 18): of 2,000
/// concurrent hits on a multi-threaded runtime, every count is handed out exactly once, far
/// fewer script calls than hits are made (a lone hit still goes at once), each window's key
/// gets its expiry, and a hit on a stopped Redis fails within the command timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rate_hits_are_batched_exact_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(dir.path()).expect("redis-server");
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::connect_with_prefix(&server.url(), "test:batch:", retention())
            .await
            .unwrap(),
    );
    let now = 1_764_590_400;
    // The first call loads the script; then a lone hit is one script call.
    store.rate_hit("u:warm:GET", 60, now).await.unwrap();
    let before = script_calls(&server.url()).await;
    assert_eq!(
        store.rate_hit("u:lone:GET", 60, now).await.unwrap().count,
        1
    );
    assert_eq!(script_calls(&server.url()).await - before, 1);

    const HITS: u64 = 2000;
    let before = script_calls(&server.url()).await;
    let tasks: Vec<_> = (0..HITS)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                // Two keys interleaved, so batches carry several keys.
                let key = if i % 2 == 0 { "u:a:GET" } else { "u:b:GET" };
                (key, store.rate_hit(key, 60, now).await.unwrap().count)
            })
        })
        .collect();
    let mut a = Vec::new();
    let mut b = Vec::new();
    for task in tasks {
        let (key, count) = task.await.unwrap();
        if key == "u:a:GET" {
            a.push(count)
        } else {
            b.push(count)
        }
    }
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, (1..=HITS / 2).collect::<Vec<_>>());
    assert_eq!(b, (1..=HITS / 2).collect::<Vec<_>>());
    let calls = script_calls(&server.url()).await - before;
    println!("{HITS} concurrent rate-limit hits took {calls} script calls");
    assert!(
        calls < HITS / 4,
        "{calls} script calls for {HITS} concurrent hits"
    );

    // The window's key expires (its lifetime is the window and a second).
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = ::redis::cmd("TTL")
        .arg(format!("test:batch:rl:u:a:GET:{now}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=61).contains(&ttl), "ttl {ttl}");

    // Redis gone: the hit fails (the breaker and the limiter's policy take it from there).
    drop(server);
    let started = std::time::Instant::now();
    assert!(store.rate_hit("u:a:GET", 60, now).await.is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}
