//! A redis-server of a test's or benchmark's own: started on a free loopback port with its
//! working directory in `dir`, no persistence, stopped when dropped. Used by the store's
//! conformance suite, the operator's API tests and the store benchmark.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server.
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts `redis-server` and waits (up to 10 s) until it accepts connections.
    pub fn start(dir: &Path) -> std::io::Result<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        RedisServer::start_on(dir, port)
    }

    /// Starts `redis-server` on `port` (a restart after [`RedisServer::stop`]).
    pub fn start_on(dir: &Path, port: u16) -> std::io::Result<RedisServer> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("redis-server did not open port {port} within 10 s"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// Kills the server (an outage); its port stays free for [`RedisServer::start_on`].
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the server (SIGSTOP): connections are still accepted by the kernel but nothing
    /// answers — a hung or partitioned Redis, where every command waits for its timeout.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kill {signal} redis-server"
        );
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A frozen server dies of SIGKILL too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
