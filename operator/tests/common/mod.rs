//! What the operator's integration tests share: the real binary started standalone on a free
//! loopback port, waited for, and killed when dropped; a tiny HTTP service for it to check.

#![allow(dead_code)] // each test file uses its own part

pub mod platform;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running process, killed on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `127.0.0.1:<a free port>`.
pub fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// `opsplane-operator standalone --listen <listen> --config <config> --data-dir <data_dir>`
/// without the node agent (`OPSPLANE_NODE_AGENT=false`), for the caller to add to and spawn.
pub fn standalone(listen: SocketAddr, config: &Path, data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_opsplane-operator"));
    command
        .args(["standalone", "--listen", &listen.to_string(), "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        // The node agent (probes, node API on 6666) only where a test asks for it.
        .env("OPSPLANE_NODE_AGENT", "false");
    command
}

/// Spawns `command` and waits (up to 20 s) until something listens on `addr`.
pub fn spawn_listening(command: &mut Command, addr: SocketAddr) -> Running {
    let running = Running(command.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "operator did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    running
}

/// A tiny HTTP server answering every request with `status` and `body`, on a thread.
pub fn http_service(status: &'static str, body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}
