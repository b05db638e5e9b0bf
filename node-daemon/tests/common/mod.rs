//! What the node-daemon's integration tests share: the real binary started on a free loopback
//! port, waited for, and killed when dropped.

#![allow(dead_code)] // each test file uses its own part

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running node-daemon, killed on drop.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:<port>` of its node API.
    pub addr: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback address.
pub fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    format!("127.0.0.1:{port}")
}

/// Starts the binary with `--listen <free addr>`, the arguments and the environment given, and
/// waits until it listens. A free port can be taken by another test's process between choosing
/// it and binding it (the tests run in parallel); a daemon that exits for that is started
/// again on another port.
pub fn start(args: &[&str], env: &[(&str, &str)]) -> Daemon {
    for _ in 0..2 {
        if let Some(daemon) = try_start(args, env, Stdio::null()) {
            return daemon;
        }
    }
    try_start(args, env, Stdio::null()).expect("node-daemon exited at start (three times)")
}

/// [`start`] with the daemon's stderr (its log) going to `stderr`.
pub fn start_logging(args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Daemon {
    try_start(args, env, stderr).expect("node-daemon exited at start")
}

/// One start; `None` when the process exited instead of serving (its port was taken).
fn try_start(args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Option<Daemon> {
    let addr = free_addr();
    let mut command = Command::new(env!("CARGO_BIN_EXE_opsplane-node-daemon"));
    command.args(["--listen", &addr]).args(args).stderr(stderr);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("node-daemon starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if TcpStream::connect(&addr).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-daemon did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Something listens there: make sure it is this daemon, not a process that took the port.
    std::thread::sleep(Duration::from_millis(50));
    if let Ok(Some(_)) = child.try_wait() {
        return None;
    }
    Some(Daemon { child, addr })
}

/// Sends `POST /api/v1/monitor/<endpoint>` with a bearer token and a raw body over `stream`;
/// returns the HTTP status and the JSON body.
pub fn post_on(
    mut stream: TcpStream,
    endpoint: &str,
    token: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set a read timeout");
    write!(
        stream,
        "POST /api/v1/monitor/{endpoint} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, json)
}

/// [`post_on`] over a new connection to `addr`.
pub fn post(addr: &str, endpoint: &str, token: &str, body: &str) -> (u16, serde_json::Value) {
    post_on(
        TcpStream::connect(addr).expect("connect to the daemon"),
        endpoint,
        token,
        body,
    )
}

/// The audit log's lines, parsed.
pub fn audit_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Writes an executable shell script that appends its arguments to `<dir>/<name>.calls` and
/// then runs `tail` (shell code deciding the exit status); returns its path.
pub fn recording_script(dir: &std::path::Path, name: &str, tail: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let calls = dir.join(format!("{name}.calls"));
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho \"$*\" >> '{}'\n{tail}\n", calls.display()),
    )
    .expect("write the script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make the script executable");
    path
}

/// The lines a [`recording_script`] recorded.
pub fn calls(dir: &std::path::Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(format!("{name}.calls")))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits up to `limit` for `check`.
pub fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !check() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Connects to `addr` from inside the network namespace `name` (the socket keeps its
/// namespace; only a short-lived thread enters it).
pub fn connect_in(name: &str, addr: &str) -> Option<TcpStream> {
    let path = format!("/var/run/netns/{name}");
    let addr = addr.to_string();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).ok()?;
        // SAFETY: setns on a valid namespace fd changes only this short-lived thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        TcpStream::connect(&addr).ok()
    })
    .join()
    .ok()
    .flatten()
}

/// Runs `ip` with `args`, asserting it succeeds; returns its stdout.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
