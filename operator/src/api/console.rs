//! `/ui/`: the web console (`console/` at the top of the repository; its README says what it
//! shows and how its one third-party piece, uPlot, is vendored from npm).
//!
//! The files under `console/web/` are embedded in the binary by `rust-embed` (also in debug
//! builds, so tests serve what a release serves) and answered here, gzip-compressed when the
//! client accepts it (compressed once, at the first request), with an `ETag` (the file's
//! SHA-256) and `Cache-Control: no-cache`, so a reload costs a 304 per file. The files are
//! public — they hold no data: every number the console shows it reads from the existing APIs
//! (`/api/v1`, `/monitoring/api`) with the user's own credential, under the same roles.
//!
//! `GET /` redirects browsers (an `Accept` naming `text/html`) to `/ui/`; `POST /` stays the
//! node-report endpoint ([`super::report`], whose rules include [`root_rule`]).

use std::collections::HashMap;
use std::io::Write;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use opsplane_serve::auth::{Access, Need};
use opsplane_serve::guard::Rule;

use super::{ApiError, AppState};

/// Where the console is served.
pub const PREFIX: &str = "/ui/";

/// The files of `console/web/`, embedded at build time.
#[derive(rust_embed::Embed)]
#[folder = "../console/web/"]
struct Files;

/// The content security policy of the console's page: its own scripts, styles and API only
/// (no inline script, no other origin) — a page holding a credential loads nothing else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// One embedded file, ready to answer.
struct Asset {
    body: &'static [u8],
    gzip: Option<Vec<u8>>,
    etag: HeaderValue,
    content_type: HeaderValue,
}

/// Every embedded file by its path under `console/web/`, made once.
fn assets() -> &'static HashMap<String, Asset> {
    static ASSETS: OnceLock<HashMap<String, Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        Files::iter()
            .filter_map(|path| {
                let file = Files::get(&path)?;
                let body: &'static [u8] = match file.data {
                    std::borrow::Cow::Borrowed(b) => b,
                    // Only without `debug-embed`: read from disk, kept for the process's life.
                    std::borrow::Cow::Owned(v) => Vec::leak(v),
                };
                let etag = HeaderValue::from_str(&format!(
                    "\"{}\"",
                    hex::encode(file.metadata.sha256_hash())
                ))
                .ok()?;
                let content_type = HeaderValue::from_str(&content_type(&path)).ok()?;
                Some((
                    path.to_string(),
                    Asset {
                        body,
                        gzip: gzip(body),
                        etag,
                        content_type,
                    },
                ))
            })
            .collect()
    })
}

/// The MIME type of `path`; text types carry `charset=utf-8`.
fn content_type(path: &str) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    if mime.type_() == mime_guess::mime::TEXT || mime.subtype() == mime_guess::mime::JAVASCRIPT {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.essence_str().to_string()
    }
}

/// `body` gzip-compressed at the best level, when that makes it smaller.
fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body).ok()?;
    let compressed = encoder.finish().ok()?;
    (compressed.len() < body.len()).then_some(compressed)
}

/// Whether `Accept-Encoding` allows gzip (a `q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// The answer for the embedded file `path`, or 404.
fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = assets().get(path) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no file {PREFIX}{path} in the console"),
        )
            .into_response();
    };
    let mut response = if not_modified(headers, &asset.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match &asset.gzip {
            Some(gz) if accepts_gzip(headers) => {
                let mut r = Body::from(gz.clone()).into_response();
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            _ => Body::from(asset.body).into_response(),
        }
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, asset.content_type.clone());
    h.insert(header::ETAG, asset.etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path == "index.html" {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

/// The console's routes, all public (static files; no data).
pub fn rules() -> Vec<Rule> {
    ["/ui", "/ui/", "/ui/{*path}"]
        .into_iter()
        .map(|route| {
            Rule::new(
                Method::GET,
                route,
                Access::new(Need::Public, "console", "get"),
            )
        })
        .collect()
}

/// `GET /`'s rule, part of the report API's table (the route `/` is that API's).
pub fn root_rule() -> Rule {
    Rule::new(
        Method::GET,
        "/",
        Access::new(Need::Public, "console", "get"),
    )
}

/// `GET /`: a browser (its `Accept` names `text/html`) is sent to the console; anything else is
/// told where things are, in Eve's envelope.
#[utoipa::path(get, path = "/", tag = "console", security(()),
    responses((status = 303, description = "a browser (`Accept: text/html`): to the console at `/ui/`"),
              (status = 404, description = "anything else: nothing here, in Eve's envelope", body = Object)))]
pub async fn root(headers: HeaderMap) -> Response {
    let browser = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/html"))
        });
    if browser {
        Redirect::to(PREFIX).into_response()
    } else {
        ApiError::NotFound.into_response()
    }
}

/// `GET /ui`: to `/ui/`.
#[utoipa::path(get, path = "/ui", tag = "console", security(()),
    responses((status = 308, description = "to `/ui/`")))]
pub async fn bare() -> Redirect {
    Redirect::permanent(PREFIX)
}

/// `GET /ui/`: the console's page (its data comes from the APIs with the user's credential).
#[utoipa::path(get, path = "/ui/", tag = "console", security(()),
    responses((status = 200, description = "the console's page", content_type = "text/html", body = String),
              (status = 304, description = "not modified (`If-None-Match`)")))]
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /ui/<file>`: one of the console's files, embedded in the binary.
#[utoipa::path(get, path = "/ui/{path}", tag = "console", security(()),
    params(("path" = String, Path, description = "a file of the console")),
    responses((status = 200, description = "the file", body = String),
              (status = 304, description = "not modified (`If-None-Match`)"),
              (status = 404, description = "no such file", content_type = "text/plain", body = String)))]
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

/// The console router (`/ui`, `/ui/`, `/ui/<file>`), plain-text errors.
pub fn router(state: &AppState) -> Router<AppState> {
    let routes = Router::new()
        .route("/ui", get(bare))
        .route("/ui/", get(index))
        .route("/ui/{*path}", get(file));
    state
        .api("console", super::plain_text, rules())
        .wrap(routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::testing::TestApp;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        assert!(accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "gzip, deflate, br"
        )])));
        assert!(accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "*")])));
        assert!(!accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "gzip;q=0, br"
        )])));
        assert!(!accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "br")])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn every_embedded_file_has_a_type_and_the_page_is_there() {
        let assets = assets();
        let index = assets.get("index.html").expect("index.html is embedded");
        assert_eq!(index.content_type, "text/html; charset=utf-8");
        assert_eq!(
            assets["vendor/uPlot.iife.min.js"].content_type,
            "text/javascript; charset=utf-8"
        );
        assert!(
            assets.keys().any(|p| p.ends_with(".js")),
            "{:?}",
            assets.keys()
        );
    }

    #[tokio::test]
    async fn get_root_redirects_browsers_and_post_root_still_takes_reports() {
        let app = TestApp::new(false).await;
        let request = axum::http::Request::get("/")
            .header(
                header::ACCEPT,
                "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
            )
            .body(Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(app.router.clone(), request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()[header::LOCATION], "/ui/");
        // curl's */* is not a browser: Eve's 404, no redirect.
        let (status, headers, body) = app.call(Method::GET, "/", None, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(!headers.contains_key(header::LOCATION));
        assert_eq!(body["_status"], "ERR", "{body}");
        // The report endpoint is unchanged: no credential is still 401, a bad body 400.
        let (status, _, _) = app.call(Method::POST, "/", None, "{}").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, body) = app
            .call(Method::POST, "/", Some("reporter-token"), "{}")
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }

    #[tokio::test]
    async fn files_are_public_compressed_and_revalidated_by_etag() {
        let app = TestApp::new(false).await;
        let call = |path: &str, extra: Vec<(header::HeaderName, String)>| {
            let mut request = axum::http::Request::get(path);
            for (k, v) in extra {
                request = request.header(k, v);
            }
            tower::ServiceExt::oneshot(app.router.clone(), request.body(Body::empty()).unwrap())
        };
        let response = call("/ui/", vec![(header::ACCEPT_ENCODING, "gzip".into())])
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        assert!(
            response
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY)
        );
        let etag = response.headers()[header::ETAG]
            .to_str()
            .unwrap()
            .to_string();
        let compressed = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let mut html = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&compressed[..]),
            &mut html,
        )
        .unwrap();
        assert!(html.contains("<title>opsplane</title>"), "{html}");
        let response = call("/ui/", vec![(header::IF_NONE_MATCH, etag)])
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        let response = call("/ui", vec![]).await.unwrap();
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        let response = call("/ui/nothing.js", vec![]).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let response = call("/ui/../Cargo.toml", vec![]).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
