//! Eve's envelopes (seed 004): `_items` / `_meta` / `_links` for collections,
//! `{"_status": "ERR", "_error": {...}}` for errors, `_issues` for validation failures (and
//! per-item `_status`/`_issues` of a bulk insert), the answers to writes and the API root's
//! HATEOAS links. Every one of them is built here.

use serde_json::{Value, json};

/// Default page size (Eve's `PAGINATION_DEFAULT`).
pub const DEFAULT_MAX_RESULTS: usize = 25;
/// Largest page a client may ask for (Eve's `PAGINATION_LIMIT`; larger asks are clamped to it).
pub const MAX_RESULTS_LIMIT: usize = 1000;

/// One page of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// 1-based page number.
    pub page: usize,
    /// Items per page.
    pub max_results: usize,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            page: 1,
            max_results: DEFAULT_MAX_RESULTS,
        }
    }
}

fn href(resource: &str, page: usize, max_results: usize) -> Value {
    let mut query = format!("{resource}?page={page}");
    if max_results != DEFAULT_MAX_RESULTS {
        query = format!("{query}&max_results={max_results}");
    }
    json!({"href": query, "title": resource})
}

/// Where `page` starts and ends among `total` items.
pub fn page_bounds(total: usize, page: Page) -> (usize, usize) {
    let start = (page.page - 1).saturating_mul(page.max_results).min(total);
    let end = start.saturating_add(page.max_results).min(total);
    (start, end)
}

/// The collection envelope of one page already cut from `total` items.
pub fn collection_page(resource: &str, items: Vec<Value>, total: usize, page: Page) -> Value {
    let last_page = total.div_ceil(page.max_results).max(1);
    let mut links = serde_json::Map::new();
    links.insert("parent".into(), json!({"href": "/", "title": "home"}));
    links.insert("self".into(), json!({"href": resource, "title": resource}));
    if page.page < last_page {
        links.insert(
            "next".into(),
            href(resource, page.page + 1, page.max_results),
        );
        links.insert("last".into(), href(resource, last_page, page.max_results));
    }
    if page.page > 1 {
        links.insert(
            "prev".into(),
            href(resource, page.page - 1, page.max_results),
        );
    }
    json!({
        "_items": items,
        "_meta": {"page": page.page, "max_results": page.max_results, "total": total},
        "_links": links,
    })
}

/// Eve's answer to a write that succeeded without a document to return.
pub fn ok() -> Value {
    json!({"_status": "OK"})
}

/// Eve's error body.
pub fn error(code: u16, message: &str) -> Value {
    json!({"_status": "ERR", "_error": {"code": code, "message": message}})
}

/// A validation failure (422): `_issues` by field path, with `_error`.
pub fn invalid(issues: &serde_json::Map<String, Value>) -> Value {
    json!({
        "_status": "ERR",
        "_issues": issues,
        "_error": {"code": 422, "message": "Insertion failure: 1 document(s) contain(s) error(s)"},
    })
}

/// A bulk insert refused as a whole (422): one `{"_status": "OK"}` or
/// `{"_status": "ERR", "_issues": {...}}` per item, in the order sent.
pub fn bulk_invalid(items: Vec<Value>) -> Value {
    let failed = items.iter().filter(|i| i["_status"] == "ERR").count();
    json!({
        "_status": "ERR",
        "_items": items,
        "_error": {"code": 422, "message": format!("Insertion failure: {failed} document(s) contain(s) error(s)")},
    })
}

/// One item of a bulk answer: valid (`OK`) or its issues.
pub fn item_status(issues: Option<&serde_json::Map<String, Value>>) -> Value {
    match issues {
        None => json!({"_status": "OK"}),
        Some(issues) => json!({"_status": "ERR", "_issues": issues}),
    }
}

/// The answer to a successful write of one item: its meta fields with `_status: OK`.
pub fn written(item: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in [
        "_id",
        "_etag",
        "_created",
        "_updated",
        "_version",
        "_latest_version",
        "_deleted",
        "_links",
    ] {
        if let Some(v) = item.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    out.insert("_status".into(), json!("OK"));
    Value::Object(out)
}

/// The answer to a bulk insert: every item's write answer.
pub fn bulk_written(items: Vec<Value>) -> Value {
    json!({"_status": "OK", "_items": items})
}

/// The API root: a `child` link per resource.
pub fn home(resources: &[&str]) -> Value {
    let children: Vec<Value> = resources
        .iter()
        .map(|r| json!({"href": r, "title": r}))
        .collect();
    json!({"_links": {"child": children}})
}

/// A soft-deleted item answered on its URL: 404 with the whole document, `_deleted: true`.
pub fn deleted(mut doc: Value) -> Value {
    doc["_deleted"] = json!(true);
    doc["_status"] = json!(["ERR"]);
    doc["_error"] = json!({"code": 404, "message": "the item was deleted; PUT or PATCH it with its _etag to restore it"});
    doc
}

/// A list of versions of one item (`?version=all|diffs`).
pub fn versions(resource: &str, id: &str, items: Vec<Value>) -> Value {
    let total = items.len();
    json!({
        "_items": items,
        "_meta": {"page": 1, "max_results": total, "total": total},
        "_links": {
            "self": {"href": format!("{resource}/{id}"), "title": resource},
            "parent": {"href": "/", "title": "home"},
            "collection": {"href": resource, "title": resource},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The envelope of `items` (all of them; the page is cut here).
    fn collection(resource: &str, items: Vec<Value>, page: Page) -> Value {
        let total = items.len();
        let (start, end) = page_bounds(total, page);
        collection_page(resource, items[start..end].to_vec(), total, page)
    }

    #[test]
    fn collection_cuts_pages_and_links_neighbours() {
        let items: Vec<Value> = (0..30).map(|i| json!({"n": i})).collect();
        let first = collection("services", items.clone(), Page::default());
        assert_eq!(first["_items"].as_array().unwrap().len(), 25);
        assert_eq!(
            first["_meta"],
            json!({"page": 1, "max_results": 25, "total": 30})
        );
        assert_eq!(first["_links"]["next"]["href"], "services?page=2");
        assert_eq!(first["_links"]["last"]["href"], "services?page=2");
        assert!(first["_links"].get("prev").is_none());
        let second = collection(
            "services",
            items,
            Page {
                page: 2,
                max_results: 25,
            },
        );
        assert_eq!(second["_items"].as_array().unwrap().len(), 5);
        assert_eq!(second["_items"][0]["n"], 25);
        assert_eq!(second["_links"]["prev"]["href"], "services?page=1");
        assert!(second["_links"].get("next").is_none());
    }

    #[test]
    fn pages_past_the_end_are_empty_not_errors() {
        let page = collection(
            "tasks",
            vec![json!(1)],
            Page {
                page: 9,
                max_results: 10,
            },
        );
        assert_eq!(page["_items"], json!([]));
        assert_eq!(page["_meta"]["total"], 1);
    }
}
