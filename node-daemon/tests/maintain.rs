//! The node-daemon's `/maintain/v1` over real TCP on the real binary: its listener's
//! connections (protocol `node`) counted and closed per client host, the token, memory free,
//! and a log level raised at run time changing what the daemon logs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

const TOKEN: &str = "node-maintain-token";

/// One request on `stream` (kept alive); `(status, body)`, `None` once the server closed it.
fn send(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Option<(u16, String)> {
    let auth = token
        .map(|t| format!("x-polaris-token: {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length: ").map(str::to_owned))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if rest.len() >= len {
                return Some((head.get(9..12)?.parse().ok()?, rest[..len].to_owned()));
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// `method /maintain/v1/log/outputlevel` with the token and `body` on `stream`.
fn log_level(stream: &mut TcpStream, method: &str, body: &str) -> (u16, String) {
    send(
        stream,
        method,
        "/maintain/v1/log/outputlevel",
        Some(TOKEN),
        body,
    )
    .unwrap()
}

fn connect(from: &str, to: &str) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(to.parse().unwrap()).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

#[test]
fn the_node_listener_is_counted_closed_and_its_log_level_changed_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let state = dir.path().join("state");
    let daemon = common::start_logging(
        &["--log", "info", "--state-dir", state.to_str().unwrap()],
        &[("OPSPLANE_TOKEN", TOKEN)],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let addr = daemon.addr.clone();
    let mut me = connect("127.0.0.1", &addr);
    let mut a = connect("127.0.0.2", &addr);
    let mut b = connect("127.0.0.3", &addr);
    for s in [&mut a, &mut b] {
        assert_eq!(send(s, "GET", "/healthz", None, "").unwrap().0, 200);
    }

    // The token: none, wrong, right.
    let path = "/maintain/v1/apiserver/conn?protocol=node";
    assert_eq!(send(&mut me, "GET", path, None, "").unwrap().0, 401);
    assert_eq!(
        send(&mut me, "GET", path, Some("wrong"), "").unwrap().0,
        401
    );
    let (status, body) = send(&mut me, "GET", path, Some(TOKEN), "").unwrap();
    assert_eq!(status, 200, "{body}");
    let count: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(count["Protocol"], "node");
    assert_eq!(count["Total"], 3, "{count}");
    assert_eq!(count["Host"]["127.0.0.2"], 1);
    let (status, body) = send(
        &mut me,
        "GET",
        "/maintain/v1/apiserver/conn?protocol=http",
        Some(TOKEN),
        "",
    )
    .unwrap();
    assert_eq!((status, body.as_str()), (400, "not found the protocol"));

    // Closing 127.0.0.2's connections leaves 127.0.0.3's.
    let (status, _) = send(
        &mut me,
        "POST",
        "/maintain/v1/apiserver/conn/close",
        Some(TOKEN),
        r#"[{"protocol": "node", "host": "127.0.0.2"}]"#,
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(send(&mut a, "GET", "/healthz", None, "").is_none());
    assert_eq!(send(&mut b, "GET", "/healthz", None, "").unwrap().0, 200);

    let (status, body) =
        send(&mut me, "POST", "/maintain/v1/memory/free", Some(TOKEN), "").unwrap();
    assert_eq!((status, body.as_str()), (200, ""));

    // Accepted connections are logged at debug under `apiserver`: raise it, see them.
    let accepted = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("connection accepted")
            .count()
    };
    assert_eq!(accepted(), 0);
    let (status, body) = log_level(
        &mut me,
        "PUT",
        r#"{"scope": "apiserver", "level": "debug"}"#,
    );
    assert_eq!((status, body.as_str()), (200, "\"ok\""));
    drop(TcpStream::connect(&addr).unwrap());
    assert!(
        common::wait_for(Duration::from_secs(5), || accepted() >= 1),
        "no debug line after raising the level"
    );
    let (_, body) = log_level(&mut me, "GET", "");
    let levels: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(levels["apiserver"], "debug");
    assert_eq!(levels["probes"], "info");
    let (status, body) = log_level(&mut me, "POST", r#"{"scope": "nope", "level": "debug"}"#);
    assert_eq!((status, body.as_str()), (400, "invalid scope name"));
}
