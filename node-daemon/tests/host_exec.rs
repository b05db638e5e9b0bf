//! `--host-exec`: systemctl (the service probe and ServiceHandler) and the power command run in
//! PID 1's namespaces through `nsenter`, the way the DaemonSet reaches its host (kured's way),
//! with only the capabilities the chart grants.
//!
//! The "host" is a PID and mount namespace of the test's own (`unshare --pid --mount
//! --mount-proc`): its PID 1 is a shell whose mount namespace has a tmpfs holding `systemctl`
//! and `power` scripts. The "container" is a further mount namespace inside it where that
//! tmpfs is unmounted, so the scripts exist only on the host side: the daemon, run with the
//! chart's capability set (`setpriv --bounding-set`), finds them only by entering PID 1's mount
//! namespace. Each script records which mount namespace it ran in. Nothing touches the real
//! host: the namespaces die with the test's `unshare` (`--kill-child`). Needs root.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

mod common;

use common::{free_addr, post, wait_for};

const TOKEN: &str = "host-exec-token";
const NSENTER: &str = "nsenter --target 1 --mount --uts --ipc --net --pid --";
/// What the chart adds for host access (charts/opsplane/templates/node-daemon.yaml).
const CHART_CAPS: &str = "+sys_admin,+sys_ptrace,+sys_chroot";

/// The fake host with the daemon in its container; killed (with both namespaces) on drop.
struct Host {
    child: Child,
    addr: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, caps: &str) -> Host {
    let addr = free_addr();
    let hostbin = dir.join("hostbin");
    std::fs::create_dir_all(&hostbin).unwrap();
    let script = r#"
dir=$1; caps=$2; shift 2
# The host: PID 1 of this namespace, with the commands on a tmpfs only its mount namespace has.
mount -t tmpfs hostbin "$dir/hostbin" || exit 1
cat > "$dir/hostbin/systemctl" <<EOF
#!/bin/sh
echo "\$(readlink /proc/self/ns/mnt) \$*" >> "$dir/systemctl.calls"
case "\$1" in
  show) printf 'LoadState=loaded\nActiveState=active\nSubState=running\n\nLoadState=not-found\nActiveState=inactive\nSubState=dead\n' ;;
esac
EOF
cat > "$dir/hostbin/power" <<EOF
#!/bin/sh
echo "\$(readlink /proc/self/ns/mnt) \$*" >> "$dir/power.calls"
EOF
chmod 755 "$dir/hostbin/systemctl" "$dir/hostbin/power"
readlink /proc/self/ns/mnt > "$dir/host.mnt"
# The container: its own mount namespace without the host's commands, the chart's capabilities.
unshare --mount --propagation private -- sh -c '
  umount "$1/hostbin" && readlink /proc/self/ns/mnt > "$1/container.mnt" &&
  shift && exec "$@"' sh "$dir" \
  setpriv --bounding-set="-all,$caps" --inh-caps=-all -- "$@" &
wait
"#;
    let mut command = Command::new("unshare");
    command
        .args([
            "--pid",
            "--mount",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(dir)
        .arg(caps)
        .arg(env!("CARGO_BIN_EXE_opsplane-node-daemon"))
        .args(["--listen", &addr, "--token", TOKEN])
        .args(["--host-exec", NSENTER])
        .arg("--systemctl")
        .arg(hostbin.join("systemctl"))
        .arg("--power-command")
        .arg(hostbin.join("power"))
        .args(["--services", "libvirtd,absent", "--service-interval", "0s"])
        .args(["--allow-disruptive", "--power-delay", "0s"])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let child = command.spawn().expect("unshare");
    let host = Host { child, addr };
    assert!(
        wait_for(Duration::from_secs(10), || std::net::TcpStream::connect(
            &host.addr
        )
        .is_ok()),
        "the daemon in the container did not listen"
    );
    host
}

fn calls(dir: &Path, name: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join(format!("{name}.calls")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(ns, args)| (ns.to_owned(), args.to_owned()))
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn require_root() {
    assert!(
        running_as_root(),
        "host_exec tests enter namespaces they create: run them as root"
    );
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

#[test]
fn systemctl_and_the_power_command_run_in_pid_1s_mount_namespace_with_the_charts_capabilities() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), CHART_CAPS);
    let host_mnt = read(&dir.path().join("host.mnt"));
    let container_mnt = read(&dir.path().join("container.mnt"));
    assert!(
        !host_mnt.is_empty() && host_mnt != container_mnt,
        "two mount namespaces: {host_mnt} / {container_mnt}"
    );

    // The service probe: unit states read from the host's systemctl.
    let (status, body) = post(&host.addr, "service", TOKEN, "{}");
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    assert_eq!(body["data"]["libvirtd"], "running", "{body}");
    assert_eq!(body["data"]["absent"], "not found", "{body}");

    // ServiceHandler and OsHandler go the same way.
    let task = |body: serde_json::Value| post(&host.addr, "task", TOKEN, &body.to_string());
    let (status, body) = task(
        json!({"handler": "ServiceHandler", "command": "restart", "data": {"service": "libvirtd"}}),
    );
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    let (status, body) = task(json!({"handler": "OsHandler", "command": "reboot"}));
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    assert!(
        wait_for(Duration::from_secs(5), || !calls(dir.path(), "power")
            .is_empty()),
        "the power command did not run"
    );

    let systemctl = calls(dir.path(), "systemctl");
    assert!(
        systemctl.iter().any(|(_, a)| a.starts_with("show ")),
        "{systemctl:?}"
    );
    assert!(
        systemctl.iter().any(|(_, a)| a == "restart -- libvirtd"),
        "{systemctl:?}"
    );
    let power = calls(dir.path(), "power");
    assert_eq!(
        power.iter().map(|(_, a)| a.as_str()).collect::<Vec<_>>(),
        ["reboot"]
    );
    for (ns, args) in systemctl.iter().chain(&power) {
        assert_eq!(
            ns, &host_mnt,
            "{args:?} ran outside the host's mount namespace"
        );
    }
}

#[test]
fn without_sys_ptrace_the_host_is_out_of_reach_and_the_probe_says_so() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    // The chart's set minus SYS_PTRACE: PID 1's namespaces cannot be opened.
    let host = start(dir.path(), "+sys_admin,+sys_chroot");
    let (status, body) = post(&host.addr, "service", TOKEN, "{}");
    assert_ne!(body["code"].as_i64(), Some(0), "{status} {body}");
    assert!(
        body["msg"].as_str().unwrap_or_default().contains("nsenter"),
        "the failure names the command: {body}"
    );
    assert!(calls(dir.path(), "systemctl").is_empty());
}
