//! Rendering and the HTTP behaviour around every `/api/v1` answer (seed 004 "Rendering",
//! "JSONP", "CORS Cross-Origin Resource Sharing", "HTTP Method Overriding", "Cache Control",
//! "Pretty printing"), as one layer outside the auth layer so that its answers (401, 403, 405,
//! 429) get the same treatment:
//!
//! - `X-HTTP-Method-Override` on a POST turns it into the named method ([`method_override`],
//!   a layer of the whole router since it must act before routing).
//! - `OPTIONS` is answered here: 200, `Allow`, and the CORS headers of a preflight.
//! - Handlers answer JSON; this layer turns it into XML when `Accept` prefers XML (Eve's layout),
//!   into JSONP when `callback` is given (a name that is not a JavaScript identifier is a 400),
//!   and indents it for `?pretty`.
//! - `Cache-Control` / `Expires` on every GET and HEAD answer, per resource.
//! - CORS: an allowed `Origin` (listed, or matching the configured regex) is echoed with
//!   `Vary: Origin` and the `Access-Control-*` headers Eve sends.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// The configurable parts of the Eve API.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Origins allowed by CORS (`*` allows any).
    pub cors_origins: Vec<String>,
    /// Origins allowed by CORS, as a regular expression matched against the whole origin.
    pub cors_origin_regex: Option<regex::Regex>,
    /// `Cache-Control` per resource (`services`, ...) and `*` for the others; none: no header.
    pub cache_control: HashMap<String, String>,
    /// `Expires` seconds from now per resource and `*`.
    pub cache_expires: HashMap<String, u64>,
}

/// `X_HEADERS` of Eve: the request headers a cross-origin client may send.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, If-Match, If-None-Match, If-Modified-Since, X-HTTP-Method-Override";
/// `X_EXPOSE_HEADERS`.
const EXPOSE_HEADERS: &str = "ETag, Last-Modified, Location, X-Total-Count, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset";
/// `X_MAX_AGE`.
const MAX_AGE: &str = "21600";

impl Settings {
    fn allows_origin(&self, origin: &str) -> bool {
        self.cors_origins.iter().any(|o| o == "*" || o == origin)
            || self
                .cors_origin_regex
                .as_ref()
                .is_some_and(|re| re.find(origin).is_some_and(|m| m.as_str() == origin))
    }

    fn lookup<'a, T>(map: &'a HashMap<String, T>, resource: &str) -> Option<&'a T> {
        map.get(resource).or_else(|| map.get("*"))
    }
}

/// The resource a request path under `/api/v1` is about (`services`, ...; `` for the root).
fn resource_of(path: &str) -> &str {
    path.trim_start_matches("/api/v1")
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
}

/// How the answer is to be rendered.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// Eve's XML, with this content type.
    Xml(&'static str),
    /// `callback(json)`.
    Jsonp(String),
}

fn wants_xml(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    // The first of the listed types that we render wins (q-values are rare from Eve clients).
    for part in accept.split(',') {
        let kind = part.split(';').next().unwrap_or("").trim();
        match kind {
            "application/json" | "application/*" | "*/*" => return None,
            "application/xml" => return Some("application/xml; charset=utf-8"),
            "text/xml" => return Some("text/xml; charset=utf-8"),
            _ => {}
        }
    }
    None
}

fn query_params(uri: &axum::http::Uri) -> HashMap<String, String> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

fn is_js_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.')
        && !name.ends_with('.')
        && name.len() <= 128
}

/// The methods each route answers, for `Allow` and `Access-Control-Allow-Methods`.
fn methods_of(rules: &[opsplane_serve::guard::Rule], route: &str) -> String {
    let mut methods: Vec<&str> = rules
        .iter()
        .filter(|r| r.route == route)
        .map(|r| r.method.as_str())
        .collect();
    if methods.contains(&"GET") {
        methods.push("HEAD");
    }
    methods.push("OPTIONS");
    methods.join(", ")
}

fn set(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// What the layer needs: the settings and the API's rules.
#[derive(Clone)]
pub struct Layer {
    /// Settings.
    pub settings: Arc<Settings>,
    /// The API's rules (for `Allow` on OPTIONS).
    pub rules: Arc<Vec<opsplane_serve::guard::Rule>>,
}

/// `X-HTTP-Method-Override` on a POST under `/api/v1`: the request goes on as the named
/// method. A layer of the whole router, because it must act before routing picks a handler by
/// method.
pub async fn method_override(mut request: Request, next: Next) -> Response {
    if request.method() == Method::POST
        && request.uri().path().starts_with("/api/v1/")
        && let Some(target) = request
            .headers()
            .get("x-http-method-override")
            .and_then(|v| v.to_str().ok())
            .and_then(|m| Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()).ok())
    {
        *request.method_mut() = target;
    }
    next.run(request).await
}

/// The layer function (see the module doc).
pub async fn layer(State(layer): State<Layer>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let resource = resource_of(&path).to_owned();
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let cors = |headers: &mut HeaderMap, methods: Option<&str>| {
        let Some(origin) = origin.as_deref() else {
            return;
        };
        if !layer.settings.allows_origin(origin) {
            return;
        }
        set(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        set(headers, header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
        set(
            headers,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            EXPOSE_HEADERS,
        );
        set(headers, header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
        if let Some(methods) = methods {
            set(headers, header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
    };
    let methods = route.as_deref().map(|r| methods_of(&layer.rules, r));
    if request.method() == Method::OPTIONS {
        let Some(methods) = methods else {
            return next.run(request).await;
        };
        let mut response = StatusCode::OK.into_response();
        set(response.headers_mut(), header::ALLOW, &methods);
        cors(response.headers_mut(), Some(&methods));
        return response;
    }
    let method = request.method().clone();
    let params = query_params(request.uri());
    let pretty = params.contains_key("pretty");
    let format = match params.get("callback") {
        Some(name) if !is_js_identifier(name) => {
            let mut response = super::ApiError::envelope(
                StatusCode::BAD_REQUEST,
                &format!("callback: {name:?} is not a JavaScript identifier"),
            );
            cors(response.headers_mut(), methods.as_deref());
            return response;
        }
        Some(name) => Format::Jsonp(name.clone()),
        None => match wants_xml(request.headers()) {
            Some(kind) => Format::Xml(kind),
            None => Format::Json,
        },
    };
    let response = next.run(request).await;
    let (mut parts, body) = response.into_parts();
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let mut body = Body::new(body);
    if is_json && (format != Format::Json || pretty) && method != Method::HEAD {
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(b) => b,
            Err(_) => axum::body::Bytes::new(),
        };
        let (kind, text) = match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => render(&format, pretty, &value),
            Err(_) => ("application/json".to_string(), bytes.to_vec()),
        };
        set(&mut parts.headers, header::CONTENT_TYPE, &kind);
        parts.headers.remove(header::CONTENT_LENGTH);
        body = Body::from(text);
    }
    if method == Method::GET || method == Method::HEAD {
        if let Some(cc) = Settings::lookup(&layer.settings.cache_control, &resource) {
            set(&mut parts.headers, header::CACHE_CONTROL, cc);
        }
        if let Some(secs) = Settings::lookup(&layer.settings.cache_expires, &resource) {
            let at = jiff::Timestamp::now().as_second() + i64::try_from(*secs).unwrap_or(0);
            set(
                &mut parts.headers,
                header::EXPIRES,
                &super::conditional::http_date(at),
            );
        }
    }
    cors(&mut parts.headers, methods.as_deref());
    Response::from_parts(parts, body)
}

/// Renders `value` in `format`: `(content type, bytes)`.
pub fn render(format: &Format, pretty: bool, value: &Value) -> (String, Vec<u8>) {
    let json = || {
        if pretty {
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
            let _ = serde::Serialize::serialize(value, &mut ser);
            out
        } else {
            serde_json::to_vec(value).unwrap_or_default()
        }
    };
    match format {
        Format::Json => ("application/json".into(), json()),
        Format::Jsonp(name) => {
            let mut out = format!("{name}(").into_bytes();
            out.extend(json());
            out.push(b')');
            ("application/json".into(), out)
        }
        Format::Xml(kind) => ((*kind).into(), xml::document(value).into_bytes()),
    }
}

/// Eve's XML layout: a `<resource href title>` root with `<link rel href title/>` children for
/// the links, `<_meta>`, one nested `<resource>` per item, fields as elements sorted by name,
/// booleans as Python writes them.
pub mod xml {
    use serde_json::{Map, Value};

    fn escape(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&apos;"),
                c => out.push(c),
            }
        }
        out
    }

    /// An element name for a JSON key (characters XML does not allow become `_`).
    fn name(key: &str) -> String {
        let mut out: String = key
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || "_-.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.') {
            out.insert(0, '_');
        }
        out
    }

    fn scalar(v: &Value) -> String {
        match v {
            Value::Bool(true) => "True".into(),
            Value::Bool(false) => "False".into(),
            Value::Null => String::new(),
            Value::String(s) => escape(s),
            other => escape(&other.to_string()),
        }
    }

    fn link(rel: &str, l: &Value, out: &mut String) {
        let attr = |k: &str| escape(l.get(k).and_then(Value::as_str).unwrap_or(""));
        out.push_str(&format!(
            "<link rel=\"{}\" href=\"{}\" title=\"{}\" />",
            escape(rel),
            attr("href"),
            attr("title")
        ));
    }

    fn element(key: &str, v: &Value, out: &mut String) {
        let tag = name(key);
        match v {
            Value::Array(items) => {
                for item in items {
                    element(key, item, out);
                }
            }
            Value::Object(map) => {
                out.push_str(&format!("<{tag}>"));
                fields(map, out);
                out.push_str(&format!("</{tag}>"));
            }
            other => out.push_str(&format!("<{tag}>{}</{tag}>", scalar(other))),
        }
    }

    fn fields(map: &Map<String, Value>, out: &mut String) {
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        for key in keys {
            element(key, &map[key], out);
        }
    }

    fn resource(value: &Value, out: &mut String) {
        let empty = Map::new();
        let map = value.as_object().unwrap_or(&empty);
        let links = map.get("_links").and_then(Value::as_object);
        match links.and_then(|l| l.get("self")) {
            Some(me) => out.push_str(&format!(
                "<resource href=\"{}\" title=\"{}\">",
                escape(me.get("href").and_then(Value::as_str).unwrap_or("")),
                escape(me.get("title").and_then(Value::as_str).unwrap_or(""))
            )),
            None => out.push_str("<resource>"),
        }
        if let Some(links) = links {
            let mut rels: Vec<&String> = links.keys().filter(|k| *k != "self").collect();
            rels.sort();
            for rel in rels {
                match &links[rel] {
                    Value::Array(many) => many.iter().for_each(|l| link(rel, l, out)),
                    one => link(rel, one, out),
                }
            }
        }
        if let Some(Value::Array(items)) = map.get("_items") {
            for item in items {
                resource(item, out);
            }
        }
        let rest: Map<String, Value> = map
            .iter()
            .filter(|(k, _)| *k != "_links" && *k != "_items")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        fields(&rest, out);
        out.push_str("</resource>");
    }

    /// The XML document of an answer.
    pub fn document(value: &Value) -> String {
        let mut out = String::from("<?xml version='1.0' encoding='utf-8'?>\n");
        resource(value, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_follows_eves_layout() {
        let page = json!({
            "_items": [{"_id": "a/b", "spec": {"dryRun": false, "n": [1, 2]},
                        "_links": {"self": {"href": "services/a/b", "title": "MonitoredService"}}}],
            "_meta": {"total": 1, "page": 1, "max_results": 25},
            "_links": {"self": {"href": "services", "title": "services"},
                       "parent": {"href": "/", "title": "home"}}
        });
        let text = xml::document(&page);
        assert_eq!(
            text,
            "<?xml version='1.0' encoding='utf-8'?>\n<resource href=\"services\" title=\"services\">\
<link rel=\"parent\" href=\"/\" title=\"home\" />\
<resource href=\"services/a/b\" title=\"MonitoredService\"><_id>a/b</_id><spec><dryRun>False</dryRun><n>1</n><n>2</n></spec></resource>\
<_meta><max_results>25</max_results><page>1</page><total>1</total></_meta></resource>"
        );
        let error =
            xml::document(&json!({"_status": "ERR", "_error": {"code": 404, "message": "<x>"}}));
        assert!(error.ends_with("<resource><_error><code>404</code><message>&lt;x&gt;</message></_error><_status>ERR</_status></resource>"), "{error}");
    }

    #[test]
    fn jsonp_and_pretty() {
        let (kind, body) = render(&Format::Jsonp("cb".into()), false, &json!({"a": 1}));
        assert_eq!(
            (kind.as_str(), body.as_slice()),
            ("application/json", &b"cb({\"a\":1})"[..])
        );
        let (_, body) = render(&Format::Json, true, &json!({"a": 1}));
        assert_eq!(String::from_utf8(body).unwrap(), "{\n    \"a\": 1\n}");
        assert!(is_js_identifier("jQuery_1.cb$"));
        assert!(!is_js_identifier("alert(1)"));
        assert!(!is_js_identifier("1x"));
        assert!(!is_js_identifier(""));
    }

    #[test]
    fn cors_allows_listed_and_matching_origins_only() {
        let settings = Settings {
            cors_origins: vec!["https://a.example".into()],
            cors_origin_regex: Some(regex::Regex::new(r"https://.*\.corp\.example").unwrap()),
            ..Settings::default()
        };
        assert!(settings.allows_origin("https://a.example"));
        assert!(settings.allows_origin("https://x.corp.example"));
        assert!(!settings.allows_origin("https://x.corp.example.evil"));
        assert!(!settings.allows_origin("https://b.example"));
    }

    #[test]
    fn accept_picks_xml_only_when_preferred() {
        let mut h = HeaderMap::new();
        assert_eq!(wants_xml(&h), None);
        h.insert(header::ACCEPT, HeaderValue::from_static("application/xml"));
        assert_eq!(wants_xml(&h), Some("application/xml; charset=utf-8"));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, application/xml"),
        );
        assert_eq!(wants_xml(&h), None);
        assert_eq!(resource_of("/api/v1/services/a/b"), "services");
    }
}
