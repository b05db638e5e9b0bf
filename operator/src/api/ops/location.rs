//! Where the ops API lives and what the OpenAPI document says (seed 000 `base_url` and
//! `route`, as UtilMeta 2.8.1's `Operations.ops_api` and `OpenAPI.get_rel_paths` do):
//!
//! - ops_api = base_url + route (`url_join`: one slash between), or route itself when it is an
//!   absolute URL; without `--base-url` the base is `http://<listen address>`.
//! - The ops API is served at the path of ops_api, with or without a trailing slash.
//! - The document's `servers` is exactly `[{"url": base_url}]`; its paths are re-based to
//!   base_url's path: that prefix is stripped, and every path outside it is dropped (the
//!   platform cannot reach it) and named in one warning at start. The ops API itself is left
//!   out, as UtilMeta leaves its `OperationsAPI` out.

use std::net::SocketAddr;

use serde_json::{Value, json};
use url::Url;

/// `--base-url` / `--ops-route` that cannot be used; the message names the flag.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// `--base-url` is not an absolute http(s) URL.
    #[error("--base-url {given:?} must be an absolute http(s) URL (e.g. https://example.org/api)")]
    BaseUrl {
        /// What was given.
        given: String,
    },
    /// `--ops-route` names no path below the root.
    #[error(
        "--ops-route {given:?} must name a path below / (e.g. ops) or an absolute http(s) URL with one"
    )]
    Route {
        /// What was given.
        given: String,
    },
}

/// The ops API's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// `servers[0].url` of the document, as configured (no trailing slash added or removed
    /// beyond the one `url_join` drops).
    pub base_url: String,
    /// The URL advertised to the platform.
    pub ops_api: String,
    /// The path the ops routes are mounted under, without a trailing slash (`/ops`).
    pub mount: String,
}

fn http_url(text: &str) -> Option<Url> {
    Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// UtilMeta's `url_join`: one slash between base and route.
fn url_join(base: &str, route: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        route.trim_start_matches('/')
    )
}

/// Works out the addresses from `--base-url`, `--ops-route` and the listen address.
pub fn locate(
    base_url: Option<&str>,
    route: &str,
    listen: SocketAddr,
) -> Result<Location, LocationError> {
    let base_url = match base_url {
        Some(given) => {
            http_url(given).ok_or_else(|| LocationError::BaseUrl {
                given: given.to_owned(),
            })?;
            given.trim_end_matches('/').to_owned()
        }
        None => format!("http://{listen}"),
    };
    let ops_api = if http_url(route).is_some() {
        route.to_owned()
    } else {
        url_join(&base_url, route)
    };
    let mount = http_url(&ops_api)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| LocationError::Route {
            given: route.to_owned(),
        })?;
    Ok(Location {
        base_url,
        ops_api,
        mount,
    })
}

impl Location {
    /// The path part of base_url, without a trailing slash (empty for an origin).
    pub fn base_path(&self) -> String {
        http_url(&self.base_url)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default()
    }

    /// Whether `path` is the ops API's (its mount or below it).
    pub fn is_ops(&self, path: &str) -> bool {
        path == self.mount || path.starts_with(&format!("{}/", self.mount))
    }

    /// The document as the platform sees it: `servers: [{url: base_url}]`, paths re-based to
    /// base_url's path, the ops API's own paths left out. Returns the paths dropped for lying
    /// outside base_url.
    pub fn rebase(&self, document: &mut Value) -> Vec<String> {
        self.rebase_with(document, false)
    }

    /// [`Location::rebase`], keeping the ops API's own paths when `keep_ops` (opsplane's own
    /// `/openapi.json` describes every API, the ops API included).
    pub fn rebase_with(&self, document: &mut Value, keep_ops: bool) -> Vec<String> {
        let base = self.base_path();
        let mut dropped = Vec::new();
        if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
            let old = std::mem::take(paths);
            for (path, item) in old {
                if !keep_ops && self.is_ops(&path) {
                    continue;
                }
                let rebased = if base.is_empty() {
                    Some(path.clone())
                } else if path == base {
                    Some("/".to_owned())
                } else {
                    path.strip_prefix(&format!("{base}/"))
                        .map(|rest| format!("/{rest}"))
                };
                match rebased {
                    Some(rebased) => {
                        paths.insert(rebased, item);
                    }
                    None => dropped.push(path),
                }
            }
        }
        document["servers"] = json!([{"url": self.base_url}]);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> SocketAddr {
        "127.0.0.1:8080".parse().unwrap()
    }

    /// The rows of UtilMeta's table (docs: reference/utilmeta-ops.md §2).
    #[test]
    fn ops_api_is_base_url_plus_route_unless_route_is_absolute() {
        for (route, base, ops_api, mount) in [
            (
                "ops",
                Some("https://blog.mysite.com/api"),
                "https://blog.mysite.com/api/ops",
                "/api/ops",
            ),
            (
                "ops",
                Some("https://blog.mysite.com"),
                "https://blog.mysite.com/ops",
                "/ops",
            ),
            (
                "/ops",
                Some("https://blog.mysite.com/api/v2"),
                "https://blog.mysite.com/api/v2/ops",
                "/api/v2/ops",
            ),
            (
                "https://ops.mysite.com/x/ops",
                Some("https://blog.mysite.com/api"),
                "https://ops.mysite.com/x/ops",
                "/x/ops",
            ),
            (
                "ops/",
                Some("http://192.0.2.2:8080/api"),
                "http://192.0.2.2:8080/api/ops/",
                "/api/ops",
            ),
            ("ops", None, "http://127.0.0.1:8080/ops", "/ops"),
        ] {
            let l = locate(base, route, listen()).unwrap();
            assert_eq!(l.ops_api, ops_api, "{route} {base:?}");
            assert_eq!(l.mount, mount, "{route} {base:?}");
        }
    }

    #[test]
    fn a_base_url_without_a_scheme_or_a_route_at_the_root_is_refused_naming_the_flag() {
        let e = locate(Some("blog.mysite.com/api"), "ops", listen()).unwrap_err();
        assert!(e.to_string().contains("--base-url"), "{e}");
        let e = locate(Some("ftp://x/api"), "ops", listen()).unwrap_err();
        assert!(e.to_string().contains("--base-url"), "{e}");
        let e = locate(Some("https://x.org"), "/", listen()).unwrap_err();
        assert!(e.to_string().contains("--ops-route"), "{e}");
    }

    #[test]
    fn paths_are_rebased_to_base_url_and_the_rest_dropped_and_named() {
        let l = locate(Some("https://example.org/api"), "ops", listen()).unwrap();
        let mut doc = json!({"paths": {
            "/api/v1/services": {"get": {}}, "/api": {"get": {}}, "/healthz": {"get": {}},
            "/apiary": {"get": {}}, "/api/ops/openapi": {"get": {}}}});
        let dropped = l.rebase(&mut doc);
        let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
        assert_eq!(paths, ["/", "/v1/services"]);
        assert_eq!(dropped, ["/apiary", "/healthz"]);
        assert_eq!(doc["servers"], json!([{"url": "https://example.org/api"}]));
    }

    #[test]
    fn an_origin_base_url_keeps_every_path_but_the_ops_api() {
        let l = locate(None, "ops", listen()).unwrap();
        let mut doc = json!({"paths": {"/healthz": {"get": {}}, "/ops/openapi": {"get": {}},
                                       "/openapi.json": {"get": {}}}});
        assert!(l.rebase(&mut doc).is_empty());
        let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
        assert_eq!(paths, ["/healthz", "/openapi.json"]);
        assert_eq!(doc["servers"], json!([{"url": "http://127.0.0.1:8080"}]));
    }
}
