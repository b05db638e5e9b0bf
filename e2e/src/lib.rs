//! Support for the end-to-end tests: a real kube-apiserver (the Go harness in `e2e/harness`,
//! built by `scripts/build-e2e-tools.sh`), kube clients for it, the CRDs applied, and the
//! opsplane binaries run as local processes against it.
//!
//! One harness serves every test of a test binary; it is started on first use and stops when
//! the test process exits (its stdin is a pipe from this process: `--exit-on-stdin-eof`).
//! Missing tools make the tests fail with the command that builds them; they never skip.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cache_bin(name: &str, env: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("OPSPLANE_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/opsplane-cache"));
        cache.join("bin").join(name)
    });
    if !path.is_file() {
        bail!(
            "{} not found: build it with `bash scripts/build-e2e-tools.sh` (or set {env})",
            path.display()
        );
    }
    Ok(path)
}

/// The helm binary built from its Go module.
pub fn helm() -> anyhow::Result<PathBuf> {
    cache_bin("helm", "OPSPLANE_HELM")
}

/// The kubectl binary built from the Go modules (k8s.io/kubernetes/cmd/kubectl).
pub fn kubectl() -> anyhow::Result<PathBuf> {
    cache_bin("kubectl", "OPSPLANE_KUBECTL")
}

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// Whether it exited 0.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// The output, or an error with both streams when the command failed.
    pub fn ok(self) -> anyhow::Result<Output> {
        if !self.success {
            bail!("failed:\n{}\n{}", self.stdout, self.stderr);
        }
        Ok(self)
    }
}

/// kubectl against one kubeconfig, as a user runs it.
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// kubectl with `kubeconfig`.
    pub fn new(kubeconfig: &Path) -> anyhow::Result<Kubectl> {
        Ok(Kubectl {
            bin: kubectl()?,
            kubeconfig: kubeconfig.to_path_buf(),
        })
    }

    /// Runs `kubectl <args>`, with `stdin` on its standard input when given.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        use std::io::Write;
        let mut child = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning kubectl {}", args.join(" ")))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        Ok(Output {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// `kubectl <args>` that must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        Ok(self
            .run(args, None)?
            .ok()
            .with_context(|| format!("kubectl {}", args.join(" ")))?
            .stdout)
    }
}

/// A fresh path for one operator process's embedded store (no Redis in these tests), so that
/// operators running at once never share a database file.
pub fn operator_store_path(identity: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("opsplane-e2e-store-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{identity}-{n}.redb"));
    let _ = std::fs::remove_file(&path);
    path
}

/// A binary of this workspace, from the same target directory as the running test.
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // A test runs from target/<profile>/deps/<test>, a bench command from
    // target/<profile>/<bin>; the workspace's binaries sit in target/<profile>/.
    let mut dir = exe.parent().context("binary has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: run the tests with `cargo test --workspace` so that it is built",
            path.display()
        );
    }
    Ok(path)
}

/// A running kube-apiserver.
pub struct Cluster {
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// How long the harness took from start to READY.
    pub start_time: Duration,
    _child: Child,
    _stdin: ChildStdin,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static STARTING: Mutex<()> = Mutex::new(());

impl Cluster {
    /// The shared cluster of this test process, started on first use.
    pub fn shared() -> &'static Cluster {
        let _guard = STARTING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cluster) = CLUSTER.get() {
            return cluster;
        }
        let cluster =
            Cluster::start().unwrap_or_else(|e| panic!("cannot start kube-apiserver: {e:#}"));
        CLUSTER.get_or_init(|| cluster)
    }

    fn start() -> anyhow::Result<Cluster> {
        let harness = cache_bin("opsplane-e2e-harness", "OPSPLANE_E2E_HARNESS")?;
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!("opsplane-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = dir.join("kubeconfig");
        let started = Instant::now();
        let mut command = Command::new(&harness);
        // The benchmarks may bound the API server's Go runtime to fewer cores than the machine
        // has (its idle GC workers otherwise take every idle core; see docs/api.md#benchmark).
        if let Some(procs) = std::env::var_os("OPSPLANE_E2E_APISERVER_GOMAXPROCS") {
            command.env("GOMAXPROCS", procs);
        }
        let mut child = command
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning {}", harness.display()))?;
        let stdout = child.stdout.take().context("harness stdout")?;
        let stdin = child.stdin.take().context("harness stdin")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("READY ") => break line,
                Some(Ok(_)) => continue,
                _ => {
                    let status = child.wait()?;
                    bail!("the harness exited before READY ({status})");
                }
            }
        };
        let info: serde_json::Value = serde_json::from_str(&ready["READY ".len()..])?;
        let start_time = started.elapsed();
        eprintln!(
            "e2e: kube-apiserver ready at {} after {:.1}s (harness start time)",
            info["server"].as_str().unwrap_or("?"),
            start_time.as_secs_f64()
        );
        // Keep draining stdout so the harness never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Cluster {
            kubeconfig,
            server: info["server"].as_str().unwrap_or_default().to_string(),
            start_time,
            _child: child,
            _stdin: stdin,
        })
    }

    /// A kubeconfig for the same server that authenticates with `token` (e.g. a ServiceAccount's,
    /// from `kubectl create token`) instead of the admin certificate, written next to the admin
    /// kubeconfig as `kubeconfig-<name>`.
    pub fn kubeconfig_with_token(&self, name: &str, token: &str) -> anyhow::Result<PathBuf> {
        let mut config: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&self.kubeconfig)?)?;
        let users = config
            .get_mut("users")
            .and_then(|u| u.as_sequence_mut())
            .context("kubeconfig without users")?;
        for user in users.iter_mut() {
            let mut credential = serde_yaml::Mapping::new();
            credential.insert("token".into(), token.into());
            user["user"] = serde_yaml::Value::Mapping(credential);
        }
        let path = self.kubeconfig.with_file_name(format!("kubeconfig-{name}"));
        std::fs::write(&path, serde_yaml::to_string(&config)?)?;
        Ok(path)
    }

    /// A kube client with the admin credential.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }
}

/// The kubeconfig dirs of earlier test processes: the shared cluster lives in a static that is
/// never dropped, so each process removes those of processes that are gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("opsplane-e2e-")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Applies every CRD of `crds/` (server-side apply) and waits until each is Established.
pub async fn apply_crds(client: &kube::Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = repo_root().join("crds");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        let name = crd.metadata.name.clone().context("CRD without name")?;
        api.patch(
            &name,
            &PatchParams::apply("opsplane-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying {}", path.display()))?;
        names.push(name);
    }
    for name in names {
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("{name} not Established within 30s"))??;
    }
    Ok(())
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A child process killed (SIGKILL) when dropped.
pub struct Process {
    /// The child.
    pub child: Child,
    /// Its name in messages.
    pub name: String,
}

impl Process {
    /// Spawns `command`, its output going to the test's stderr prefixed by nothing.
    pub fn spawn(name: &str, mut command: Command) -> anyhow::Result<Process> {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        Ok(Process {
            child,
            name: name.to_string(),
        })
    }

    /// Sends a signal by number (9 = SIGKILL, 15 = SIGTERM).
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {} failed", self.name);
        }
        Ok(())
    }

    /// Waits for exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` every 100 ms until it returns `Some`, or fails after `limit` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A network namespace of the test's own (`ip netns add`), with extra addresses on its loopback
/// device: a place for service instances with real, non-loopback addresses (EndpointSlices
/// refuse 127.0.0.0/8) without touching the host's network. Deleted on drop.
pub struct NetNs {
    /// Name under /var/run/netns.
    pub name: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

impl NetNs {
    /// Creates the namespace with loopback up and `addresses` (e.g. `192.0.2.2`) on it.
    pub fn create(name: &str, addresses: &[&str]) -> anyhow::Result<NetNs> {
        let _ = ip(&["netns", "del", name]);
        ip(&["netns", "add", name])?;
        let netns = NetNs {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        for address in addresses {
            ip(&[
                "-n",
                name,
                "addr",
                "add",
                &format!("{address}/32"),
                "dev",
                "lo",
            ])?;
        }
        Ok(netns)
    }

    /// A TCP listener bound inside the namespace. Sockets keep the namespace they were made in,
    /// so the listener can be used from any thread afterwards.
    pub fn listen(&self, address: (&str, u16)) -> anyhow::Result<TcpListener> {
        let address = (address.0.to_string(), address.1);
        self.run_inside(move || Ok(TcpListener::bind((address.0.as_str(), address.1))?))?
    }

    /// Runs `f` on a thread that has entered the namespace; sockets it makes stay there.
    fn run_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || -> anyhow::Result<T> {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: setns on a valid namespace fd affects only this short-lived thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns into {path}: {}", std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
    }

    /// `GET path` from inside the namespace (e.g. a process's /metrics there); `None` when
    /// nothing answers.
    pub fn get(&self, address: &str, path: &str) -> Option<String> {
        use std::io::{Read, Write};
        let (address, path) = (address.to_string(), path.to_string());
        self.run_inside(move || -> Option<String> {
            let mut stream = std::net::TcpStream::connect(&address).ok()?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .ok()?;
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            )
            .ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).ok()?;
            Some(response)
        })
        .ok()
        .flatten()
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// A kubeconfig usable inside the namespace: a forwarder listening on the namespace's
    /// 127.0.0.1 carries connections to the host's kube-apiserver (the serving certificate
    /// covers 127.0.0.1, so TLS verification still holds).
    pub fn kubeconfig_for(&self, cluster: &Cluster) -> anyhow::Result<PathBuf> {
        let listener = self.listen(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let upstream = cluster
            .server
            .strip_prefix("https://")
            .context("server URL")?
            .to_string();
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                let upstream = upstream.clone();
                std::thread::spawn(move || {
                    let Ok(outbound) = std::net::TcpStream::connect(&upstream) else {
                        return;
                    };
                    let (Ok(mut in_read), Ok(mut out_read)) =
                        (inbound.try_clone(), outbound.try_clone())
                    else {
                        return;
                    };
                    let (mut in_write, mut out_write) = (inbound, outbound);
                    let up = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut in_read, &mut out_write);
                        let _ = out_write.shutdown(std::net::Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut out_read, &mut in_write);
                    let _ = in_write.shutdown(std::net::Shutdown::Write);
                    let _ = up.join();
                });
            }
        });
        let text = std::fs::read_to_string(&cluster.kubeconfig)?;
        let rewritten = text.replace(&cluster.server, &format!("https://127.0.0.1:{port}"));
        let path = cluster
            .kubeconfig
            .with_file_name(format!("kubeconfig-{}", self.name));
        std::fs::write(&path, rewritten)?;
        Ok(path)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}
