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
/// waits until it listens.
pub fn start(args: &[&str], env: &[(&str, &str)]) -> Daemon {
    let addr = free_addr();
    let mut command = Command::new(env!("CARGO_BIN_EXE_opsplane-node-daemon"));
    command
        .args(["--listen", &addr])
        .args(args)
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().expect("node-daemon starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "node-daemon did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Daemon { child, addr }
}
