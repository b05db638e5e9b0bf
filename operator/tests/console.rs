//! The console as served by the real binary over TCP: the page and everything it loads (its
//! stylesheets, scripts and every ES module they import, followed recursively) fit the first-load
//! budget of 300 KB as sent (gzip), every file is found, and nothing is loaded from elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

mod common;

/// The first-load budget of issue 15, compressed bytes on the wire.
const BUDGET: usize = 300 * 1024;

/// `src="..."` / `href="..."` of the page, and `from "./x.js"` / `import "./x.js"` of a module.
fn references(text: &str, html: bool) -> Vec<String> {
    let pattern = if html {
        regex::Regex::new(r#"(?:src|href)="([^"]+)""#).unwrap()
    } else {
        regex::Regex::new(r#"(?:from|import)\s*"([^"]+)""#).unwrap()
    };
    pattern
        .captures_iter(text)
        .map(|c| c[1].to_string())
        .filter(|r| !r.starts_with('#') && !r.starts_with("data:"))
        .collect()
}

#[tokio::test]
async fn the_first_load_fits_the_budget_compressed_and_loads_nothing_from_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, "").unwrap();
    let listen = common::free_addr();
    let mut command = common::standalone(listen, &config, dir.path());
    command
        .env("OPSPLANE_TOKEN", "console-budget-token-0123")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _operator = common::spawn_listening(&mut command, listen);
    // reqwest without its gzip feature: bodies arrive as sent.
    let http = reqwest::Client::new();
    let base = url::Url::parse(&format!("http://{listen}/ui/")).unwrap();

    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    let mut queue = vec![base.clone()];
    let mut seen = BTreeSet::new();
    while let Some(url) = queue.pop() {
        if !seen.insert(url.clone()) {
            continue;
        }
        assert_eq!(
            url.origin(),
            base.origin(),
            "{url} is loaded from elsewhere (no CDN, no network beyond opsplane)"
        );
        let response = http
            .get(url.clone())
            .header("accept-encoding", "gzip, deflate, br")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let encoding = response
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_string());
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        let wire = response.bytes().await.unwrap();
        sent.insert(url.path().to_string(), wire.len());
        let text = match encoding.as_deref() {
            Some("gzip") => {
                let mut out = String::new();
                std::io::Read::read_to_string(
                    &mut flate2::read::GzDecoder::new(&wire[..]),
                    &mut out,
                )
                .unwrap();
                out
            }
            None => String::from_utf8_lossy(&wire).into_owned(),
            Some(other) => panic!("{url}: unexpected content-encoding {other}"),
        };
        if wire.len() > 1024 {
            assert_eq!(
                encoding.as_deref(),
                Some("gzip"),
                "{url} is sent uncompressed"
            );
        }
        let html = content_type.starts_with("text/html");
        let module = url.path().ends_with(".js") && url.path().contains("/js/");
        if html || module {
            for r in references(&text, html) {
                queue.push(url.join(&r).unwrap());
            }
        }
    }
    let total: usize = sent.values().sum();
    eprintln!("first load, bytes as sent: {total} in {sent:#?}");
    for must in [
        "/ui/",
        "/ui/js/app.js",
        "/ui/vendor/uPlot.iife.min.js",
        "/ui/app.css",
    ] {
        assert!(sent.contains_key(must), "{must} not loaded: {sent:?}");
    }
    assert!(
        sent.keys().any(|p| p.starts_with("/ui/js/views/")),
        "the views are imported: {sent:?}"
    );
    assert!(
        total <= BUDGET,
        "first load is {total} bytes, over {BUDGET}: {sent:#?}"
    );
}
