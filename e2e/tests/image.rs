//! The container image: `scripts/build-image.sh` assembles an OCI archive from the binaries
//! this test run built (no docker daemon, no registry), the archive is unpacked with umoci as a
//! container runtime would, and both binaries run from the unpacked root filesystem as the
//! image's own user: `--version`, `crds`, and a standalone start answering `/healthz`.
//!
//! The processes run chrooted into the rootfs inside a mount and PID namespace of their own
//! (`unshare`), with `/proc` and `/dev` mounted there as a runtime mounts them; the mounts
//! never reach the host's namespace. Needs root (the test suite runs as root), umoci and
//! skopeo (`scripts/test.sh` installs them).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use opsplane_e2e::{Process, eventually, free_port, repo_root, workspace_bin};
use serde_json::Value;

/// The image's runtime settings, as `umoci unpack` wrote them into the bundle's config.json.
struct Runtime {
    rootfs: PathBuf,
    uid: u64,
    gid: u64,
    env: Vec<(String, String)>,
    args: Vec<String>,
    cwd: String,
}

impl Runtime {
    fn read(bundle: &Path) -> Runtime {
        let text = std::fs::read_to_string(bundle.join("config.json")).expect("bundle config");
        let config: Value = serde_json::from_str(&text).expect("config.json is JSON");
        let process = &config["process"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        Runtime {
            rootfs: bundle.join("rootfs"),
            uid: process["user"]["uid"].as_u64().expect("process.user.uid"),
            gid: process["user"]["gid"].as_u64().expect("process.user.gid"),
            env: strings(&process["env"])
                .into_iter()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.into(), v.into())))
                .collect(),
            args: strings(&process["args"]),
            cwd: process["cwd"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// `args` run inside the image as `uid:gid`, with exactly the image's environment.
    ///
    /// The shell stays the namespace's PID 1 (no `exec`): it dies with `unshare`
    /// (`--kill-child`), and with it everything in the namespace. The chrooted process itself
    /// would not (a change of user clears the parent-death signal).
    fn command(&self, uid: u64, gid: u64, args: &[&str]) -> Command {
        let mut command = Command::new(host_tool("unshare"));
        command
            .args(["--mount", "--pid", "--fork", "--kill-child", "--"])
            .arg(host_tool("sh"))
            .arg("-c")
            .arg(
                r#"mount=$1; chroot=$2; root=$3; user=$4; shift 4
                mkdir -p "$root/proc" "$root/dev" &&
                "$mount" -t proc proc "$root/proc" &&
                "$mount" --rbind /dev "$root/dev" &&
                "$chroot" --userspec="$user" "$root" "$@""#,
            )
            .arg("sh")
            .arg(host_tool("mount"))
            .arg(host_tool("chroot"))
            .arg(&self.rootfs)
            .arg(format!("{uid}:{gid}"))
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs `args` as the image's user and returns stdout; fails with both streams otherwise.
    fn output(&self, args: &[&str]) -> String {
        let output = self
            .command(self.uid, self.gid, args)
            .output()
            .expect("unshare + chroot");
        assert!(
            output.status.success(),
            "{args:?} in the image failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }
}

/// A host tool by absolute path (the commands run with the image's PATH, not the host's).
fn host_tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} not found on this host (util-linux / coreutils)"))
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test.sh installs it)"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn host_version(binary: &Path) -> String {
    run(binary.to_str().expect("UTF-8 path"), &["--version"])
}

/// The image config blob of the layout's only manifest.
fn image_config(layout: &Path) -> Value {
    let read = |path: PathBuf| -> Value {
        serde_json::from_slice(&std::fs::read(&path).expect("blob")).expect("blob is JSON")
    };
    let blob = |digest: &Value| {
        let digest = digest.as_str().expect("digest");
        let (algorithm, hex) = digest.split_once(':').expect("algorithm:hex");
        layout.join("blobs").join(algorithm).join(hex)
    };
    let index = read(layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
    let manifest = read(blob(&manifests[0]["digest"]));
    read(blob(&manifest["config"]["digest"]))
}

async fn healthz(port: u16) -> Option<String> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    response.text().await.ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_built_image_runs_both_binaries_as_its_non_root_user() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the image test unpacks with umoci and chroots: run it as root"
    );
    let operator = workspace_bin("opsplane-operator").expect("operator binary");
    let node_daemon = workspace_bin("opsplane-node-daemon").expect("node-daemon binary");
    let dir = tempfile_dir();
    let archive = dir.join("opsplane.oci.tar");
    let docker_archive = dir.join("opsplane.docker.tar");

    let started = std::time::Instant::now();
    let printed = run(
        "bash",
        &[
            repo_root().join("scripts/build-image.sh").to_str().unwrap(),
            "--operator",
            operator.to_str().unwrap(),
            "--node-daemon",
            node_daemon.to_str().unwrap(),
            "--out",
            archive.to_str().unwrap(),
            "--docker-archive",
            docker_archive.to_str().unwrap(),
        ],
    );
    eprintln!("build-image.sh took {:?}", started.elapsed());
    assert_eq!(
        printed.lines().collect::<Vec<_>>(),
        [archive.to_str().unwrap(), docker_archive.to_str().unwrap()],
        "the script prints the archives it wrote"
    );

    // The OCI archive is a tarred image layout: untar it, read the config, unpack it.
    let layout = dir.join("layout");
    std::fs::create_dir(&layout).unwrap();
    run(
        "tar",
        &[
            "-C",
            layout.to_str().unwrap(),
            "-xf",
            archive.to_str().unwrap(),
        ],
    );
    let version_line = host_version(&operator);
    let version = version_line
        .split_whitespace()
        .nth(1)
        .expect("`opsplane-operator <version>`")
        .to_owned();
    let config = image_config(&layout);
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], version.as_str());
    assert_eq!(labels["org.opencontainers.image.title"], "opsplane");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    let revision = run(
        "git",
        &["-C", repo_root().to_str().unwrap(), "rev-parse", "HEAD"],
    );
    let label_revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap_or_default();
    assert!(
        label_revision.starts_with(revision.trim()),
        "revision label {label_revision} is the checkout's HEAD {revision}"
    );
    for key in ["created", "source", "description"] {
        let value = labels[format!("org.opencontainers.image.{key}")]
            .as_str()
            .unwrap_or_default();
        assert!(!value.is_empty(), "label org.opencontainers.image.{key}");
    }
    assert_eq!(config["config"]["User"], "65532:65532", "non-root default");
    assert_eq!(config["os"], "linux");

    let bundle = dir.join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{version}", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let image = Runtime::read(&bundle);
    assert_eq!(
        (image.uid, image.gid),
        (65532, 65532),
        "the image runs as opsplane (65532), not root"
    );
    assert_eq!(image.args, ["opsplane-operator"]);
    assert_eq!(image.cwd, "/");

    // Both binaries run from the image's own files (libraries included) and say the version.
    assert_eq!(
        image.output(&["opsplane-operator", "--version"]),
        version_line
    );
    assert_eq!(
        image.output(&["opsplane-node-daemon", "--version"]),
        host_version(&node_daemon)
    );
    // nsenter, the node-daemon's way into the host (as root in the DaemonSet).
    let nsenter = image
        .command(0, 0, &["nsenter", "--version"])
        .output()
        .unwrap();
    assert!(
        nsenter.status.success() && String::from_utf8_lossy(&nsenter.stdout).contains("nsenter"),
        "nsenter in the image: {nsenter:?}"
    );
    let crds = image.output(&["opsplane-operator", "crds"]);
    assert_eq!(
        crds,
        run(operator.to_str().unwrap(), &["crds"]),
        "crds from the image are the binary's"
    );
    assert!(crds.contains("name: nodetasks.opsplane.io"), "{crds}");

    // A standalone operator as the image's user: it writes its embedded store and token under
    // a data directory of its own and answers /healthz on loopback.
    let config_dir = image.rootfs.join("tmp/config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("services.yaml"),
        "apiVersion: opsplane.io/v1alpha1\nkind: MonitoredService\nmetadata: {name: self, namespace: default}\nspec: {url: 'http://127.0.0.1:1/', checkInterval: 10s}\n",
    )
    .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut command = image.command(
        image.uid,
        image.gid,
        &[
            "opsplane-operator",
            "standalone",
            "--listen",
            &listen,
            "--config",
            "/tmp/config/services.yaml",
            "--data-dir",
            "/tmp/state",
            // The host's node agent would bind 6666 beside other tests' processes.
            "--node-agent",
            "false",
        ],
    );
    command.stdout(Stdio::null());
    let mut standalone = Process::spawn("operator from the image", command).unwrap();
    let body = eventually(
        "the image's operator /healthz",
        Duration::from_secs(20),
        || healthz(port),
    )
    .await
    .unwrap();
    assert!(!body.is_empty());
    let store = image.rootfs.join("tmp/state/store.redb");
    let meta = std::fs::metadata(&store).expect("the embedded store under --data-dir");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        65532,
        "written by the image's user"
    );
    assert!(standalone.child.try_wait().unwrap().is_none());
    drop(standalone);

    // The node-daemon as it runs on a plain host: its state directory in the image is the
    // image user's, and it answers /healthz.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let command = image.command(
        image.uid,
        image.gid,
        &[
            "opsplane-node-daemon",
            "--listen",
            &listen,
            "--token",
            "image-test-token",
        ],
    );
    let _daemon = Process::spawn("node-daemon from the image", command).unwrap();
    let body = eventually(
        "the image's node-daemon /healthz",
        Duration::from_secs(20),
        || healthz(port),
    )
    .await
    .unwrap();
    assert!(!body.is_empty());

    // The docker-archive for `kind load image-archive` / `k3d image import` names the image
    // as the chart's default does (the RepoTags of its manifest.json, which those read).
    let manifest: Value = serde_json::from_str(&run(
        "tar",
        &["-xOf", docker_archive.to_str().unwrap(), "manifest.json"],
    ))
    .expect("docker-archive manifest.json");
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!([format!("ghcr.io/opsplane/opsplane:{version}")]),
        "{manifest}"
    );
    let inspect: Value = serde_json::from_str(&run(
        "skopeo",
        &[
            "inspect",
            &format!("docker-archive:{}", docker_archive.display()),
        ],
    ))
    .expect("skopeo inspect JSON");
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.version"],
        version.as_str()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_chart_defaults_to_the_image_the_script_builds() {
    let chart = std::fs::read_to_string(repo_root().join("charts/opsplane/Chart.yaml")).unwrap();
    let chart: Value = serde_yaml::from_str(&chart).unwrap();
    let values = std::fs::read_to_string(repo_root().join("charts/opsplane/values.yaml")).unwrap();
    let values: Value = serde_yaml::from_str(&values).unwrap();
    let operator = workspace_bin("opsplane-operator").expect("operator binary");
    let version = host_version(&operator);
    assert_eq!(
        Some(version.trim()),
        chart["appVersion"]
            .as_str()
            .map(|v| format!("opsplane-operator {v}"))
            .as_deref(),
        "Chart.yaml appVersion is the binaries' version (the image's default tag)"
    );
    assert_eq!(values["image"]["repository"], "ghcr.io/opsplane/opsplane");
    assert_eq!(values["image"]["tag"], "");
    let script = std::fs::read_to_string(repo_root().join("scripts/build-image.sh")).unwrap();
    assert!(
        script.contains("name=ghcr.io/opsplane/opsplane\n"),
        "build-image.sh's default name is the chart's image.repository"
    );
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let version = version.trim().trim_start_matches("opsplane-operator ");
    assert!(
        dockerfile.contains(&format!("ARG VERSION={version}\n")),
        "the Dockerfile's default VERSION is the binaries' {version}"
    );
    assert!(
        dockerfile.contains("USER 65532:65532"),
        "non-root by default"
    );
}

/// A fresh directory under the system temp dir for this test.
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("opsplane-image-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
