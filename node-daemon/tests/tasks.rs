//! The task endpoints over real HTTP against the real binary (seed 002 §三, §五): every handler,
//! bad bodies with the seed's codes, refused-unless-allowed with the audit log checked, and
//! scheduled shutdowns surviving a restart. The host is never touched: the power command and
//! systemctl are recording scripts in temp dirs, deletions happen in temp trees, and IP /
//! password tasks are only exercised here in their refused form (see `ip_netns.rs`,
//! `password.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

mod common;

use common::{Daemon, audit_lines, calls, post, recording_script, wait_for};

const TOKEN: &str = "task-token";

struct Node {
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Node {
    /// A daemon with recording `power` and `systemctl` scripts (systemctl fails for units
    /// named `broken*`) and its state in a temp dir, plus `extra` flags.
    fn start(extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Node {
        Self::start_env(dir, extra, &[])
    }

    fn start_env(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Node {
        let power = recording_script(dir.path(), "power", "exit 0");
        let systemctl = recording_script(
            dir.path(),
            "systemctl",
            "case \"$*\" in *broken*) echo \"Failed to $1 $3.service: Unit $3.service not loaded.\" >&2; exit 5;; esac",
        );
        let state = dir.path().join("state");
        let mut args: Vec<String> = [
            "--sample-interval",
            "200ms",
            "--power-command",
            power.to_str().unwrap(),
            "--systemctl",
            systemctl.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--power-delay",
            "300ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut env = env.to_vec();
        env.push(("OPSPLANE_TOKEN", TOKEN));
        let daemon = common::start(&args, &env);
        Node { daemon, dir }
    }

    fn task(&self, body: Value) -> (u16, Value) {
        post(&self.daemon.addr, "task", TOKEN, &body.to_string())
    }

    fn audit(&self) -> Vec<Value> {
        audit_lines(&self.dir.path().join("state/task-audit.log"))
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn restart(self, extra: &[&str]) -> Node {
        let Node { daemon, dir } = self;
        drop(daemon);
        Self::start_in(dir, extra)
    }
}

fn healthy(node: &Node) {
    let (status, v) = post(&node.daemon.addr, "cpu", TOKEN, "");
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
}

#[test]
fn disruptive_commands_are_refused_and_audited_unless_allowed() {
    let node = Node::start(&[]);
    let refused: Vec<(&str, Value, &str)> = vec![
        (
            "task",
            json!({"handler": "OsHandler", "command": "shutdown"}),
            "--allow-disruptive",
        ),
        (
            "task",
            json!({"handler": "OsHandler", "command": "reboot"}),
            "--allow-disruptive",
        ),
        (
            "task",
            json!({"handler": "ServiceHandler", "command": "stop", "data": {"service": "libvirtd"}}),
            "--allow-disruptive",
        ),
        (
            "task",
            json!({"handler": "ServiceHandler", "command": "restart", "data": {"service": ["a", "b"]}}),
            "--allow-disruptive",
        ),
        (
            "task",
            json!({"handler": "ServiceHandler", "command": "disable", "data": {"service": "a"}}),
            "--allow-disruptive",
        ),
        (
            "task",
            json!({"handler": "CrontabHandler", "command": "setup_shutdown", "data": {"task_name": "s1", "exec_hour": "3", "exec_minute": "55", "exec_weekly": "1,2"}}),
            "--allow-disruptive",
        ),
        (
            "task",
            json!({"handler": "FileHandler", "command": "delete_file", "data": {"file_name": node.path("victim").to_str().unwrap()}}),
            "--allow-delete-prefix",
        ),
        (
            "add_ip",
            json!({"name": "lo:7", "ip": "10.254.0.7", "netmask": "255.255.255.0", "gateway": "", "dns1": ""}),
            "--ip-config-dir",
        ),
        (
            "update_ip",
            json!({"name": "lo:7", "ip": "10.254.0.8", "netmask": "255.255.255.0"}),
            "--ip-config-dir",
        ),
        ("delete_ip", json!({"name": "lo:7"}), "--ip-config-dir"),
        (
            "exchange_ip",
            json!({"name1": "lo", "name2": "lo:7"}),
            "--ip-config-dir",
        ),
        (
            "verify_password",
            json!({"user": "root", "password": "not-logged-3141"}),
            "--password-check",
        ),
    ];
    std::fs::write(node.path("victim"), "keep me").unwrap();
    for (endpoint, body, flag) in &refused {
        let (status, v) = post(&node.daemon.addr, endpoint, TOKEN, &body.to_string());
        assert_eq!(status, 403, "{endpoint} {body}: {v}");
        assert_eq!(v["code"], 30004, "{v}");
        let msg = v["msg"].as_str().unwrap();
        assert!(msg.starts_with("不支持的设备操作: refused"), "{msg}");
        assert!(msg.contains(flag), "{msg}");
    }
    // Non-disruptive service commands run without the flag.
    let (status, v) = node.task(
        json!({"handler": "ServiceHandler", "command": "start", "data": {"service": "sshd"}}),
    );
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");

    // Nothing disruptive ran, even after the power delay.
    std::thread::sleep(Duration::from_millis(800));
    assert!(calls(node.dir.path(), "power").is_empty());
    assert_eq!(calls(node.dir.path(), "systemctl"), ["start -- sshd"]);
    assert!(node.path("victim").exists());
    let ip = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "lo"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&ip.stdout).contains("10.254.0.7"));

    let audit = node.audit();
    assert_eq!(audit.len(), refused.len() + 1, "{audit:#?}");
    for (line, (endpoint, body, _)) in audit.iter().zip(&refused) {
        assert_eq!(line["event"], "task");
        assert_eq!(line["allowed"], false, "{line}");
        assert_eq!(line["result"]["code"], 30004);
        assert_eq!(line["who"]["identity"], "node-api-token");
        assert!(
            line["who"]["client"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{line}"
        );
        assert!(
            line["time"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        let command = body
            .get("command")
            .and_then(Value::as_str)
            .unwrap_or(endpoint);
        assert_eq!(line["what"]["command"], command, "{line}");
    }
    let last = audit.last().unwrap();
    assert_eq!(
        (last["allowed"].as_bool(), last["result"]["code"].as_i64()),
        (Some(true), Some(0))
    );
    let text = std::fs::read_to_string(node.path("state/task-audit.log")).unwrap();
    assert!(
        !text.contains("not-logged-3141"),
        "the password reached the audit log"
    );
    assert!(text.contains("\"user\":\"root\""));
    healthy(&node);
}

#[test]
fn os_handler_answers_first_then_runs_the_power_command() {
    let node = Node::start(&["--allow-disruptive"]);
    for (command, verb) in [("reboot", "reboot"), ("shutdown", "poweroff")] {
        let before = calls(node.dir.path(), "power").len();
        let (status, v) = node.task(json!({"handler": "OsHandler", "command": command}));
        assert_eq!(
            (status, v["code"].as_i64(), v["msg"].as_str()),
            (200, Some(0), Some("成功")),
            "{v}"
        );
        // answered before acting (the delay is 300 ms)
        assert_eq!(
            calls(node.dir.path(), "power").len(),
            before,
            "ran before answering"
        );
        assert!(
            wait_for(Duration::from_secs(5), || calls(node.dir.path(), "power")
                .len()
                == before + 1),
            "the power command did not run"
        );
        assert_eq!(calls(node.dir.path(), "power").last().unwrap(), verb);
    }
    assert!(wait_for(Duration::from_secs(5), || node
        .audit()
        .iter()
        .filter(|l| l["event"] == "executed")
        .count()
        == 2));
    let audit = node.audit();
    let executed: Vec<&Value> = audit.iter().filter(|l| l["event"] == "executed").collect();
    assert_eq!(executed[0]["what"]["command"], "reboot");
    assert_eq!(executed[0]["result"]["code"], 0);
    assert!(
        executed[0]["result"]["msg"]
            .as_str()
            .unwrap()
            .contains("reboot: exit status: 0"),
        "{}",
        executed[0]
    );
    healthy(&node);
}

#[test]
fn service_handler_runs_systemctl_per_unit_and_answers_per_unit() {
    let node = Node::start(&["--allow-disruptive"]);
    let (status, v) = node.task(json!({"handler": "ServiceHandler", "command": "stop", "data": {"service": ["libvirtd", "broken", "sshd"]}}));
    assert_eq!(status, 500, "{v}");
    assert_eq!(v["code"], 99999);
    assert!(
        v["msg"].as_str().unwrap().contains("1 of 3 units failed"),
        "{v}"
    );
    assert_eq!(v["data"]["libvirtd"], json!({"code": 0, "msg": "成功"}));
    assert_eq!(v["data"]["sshd"]["code"], 0);
    assert_eq!(v["data"]["broken"]["code"], 99999);
    assert!(
        v["data"]["broken"]["msg"]
            .as_str()
            .unwrap()
            .contains("Unit broken.service not loaded"),
        "{v}"
    );
    let (status, v) = node.task(
        json!({"handler": "ServiceHandler", "command": "enable", "data": {"service": "libvirtd"}}),
    );
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
    assert_eq!(
        calls(node.dir.path(), "systemctl"),
        [
            "stop -- libvirtd",
            "stop -- broken",
            "stop -- sshd",
            "enable -- libvirtd"
        ]
    );
    for bad in [
        json!({"handler": "ServiceHandler", "command": "stop", "data": {"service": "--all"}}),
        json!({"handler": "ServiceHandler", "command": "stop", "data": {"service": []}}),
        json!({"handler": "ServiceHandler", "command": "stop"}),
    ] {
        let (status, v) = node.task(bad.clone());
        assert_eq!(
            (status, v["code"].as_i64()),
            (400, Some(30006)),
            "{bad}: {v}"
        );
    }
    assert_eq!(
        calls(node.dir.path(), "systemctl").len(),
        4,
        "a bad body ran systemctl"
    );
}

#[test]
fn crontab_schedules_are_validated_unique_and_survive_a_restart() {
    let node = Node::start(&["--allow-disruptive"]);
    let setup = json!({"handler": "CrontabHandler", "command": "setup_shutdown",
                       "data": {"task_name": "shutdown3", "exec_minute": "55", "exec_hour": "3", "exec_weekly": "1,2"}});
    let (status, v) = node.task(setup.clone());
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
    let (_, v) = node.task(setup);
    assert_eq!(v["code"], 30006, "task names are unique: {v}");
    assert!(
        v["msg"].as_str().unwrap().contains("modify_shutdown"),
        "{v}"
    );
    let select = json!({"handler": "CrontabHandler", "command": "select_shutdown", "data": {"task_name": "shutdown3"}});
    let (_, v) = node.task(select.clone());
    assert_eq!(
        v["data"],
        json!({"exec_hour": "3", "exec_minute": "55", "exec_weekly": "1,2"}),
        "{v}"
    );
    let bad_data = [
        json!({"task_name": "shut_down", "exec_minute": "5", "exec_hour": "3", "exec_weekly": "1"}),
        json!({"task_name": "s4", "exec_minute": "5", "exec_hour": "24", "exec_weekly": "1"}),
        json!({"task_name": "s4", "exec_minute": "60", "exec_hour": "3", "exec_weekly": "1"}),
        json!({"task_name": "s4", "exec_minute": "5", "exec_hour": "3", "exec_weekly": "1,9"}),
        json!({"task_name": "s4", "exec_minute": "5", "exec_hour": "3"}),
    ];
    for data in bad_data {
        let (status, v) = node
            .task(json!({"handler": "CrontabHandler", "command": "setup_shutdown", "data": data}));
        assert_eq!(
            (status, v["code"].as_i64()),
            (400, Some(30006)),
            "{data}: {v}"
        );
    }
    // modify answers the schedule it replaced (seed example)
    let (_, v) = node.task(json!({"handler": "CrontabHandler", "command": "modify_shutdown",
                                  "data": {"task_name": "shutdown3", "exec_minute": "5", "exec_hour": "22", "exec_weekly": "1,2,5,6,7"}}));
    assert_eq!(
        v["data"],
        json!({"exec_hour": "3", "exec_minute": "55", "exec_weekly": "1,2"}),
        "{v}"
    );
    let (_, v) = node.task(json!({"handler": "CrontabHandler", "command": "modify_shutdown",
                                  "data": {"task_name": "nosuch", "exec_minute": "5", "exec_hour": "22", "exec_weekly": "1"}}));
    assert_eq!(v["code"], 30006);

    let node = node.restart(&[]);
    let (_, v) = node.task(select.clone());
    assert_eq!(
        v["data"],
        json!({"exec_hour": "22", "exec_minute": "5", "exec_weekly": "0,1,2,5,6"}),
        "{v}"
    );
    // deleting is not disruptive: allowed without the flag
    let (_, v) = node.task(json!({"handler": "CrontabHandler", "command": "delete_shutdown", "data": {"task_name": "shutdown3"}}));
    assert_eq!(v["code"], 0, "{v}");
    let (_, v) = node.task(select);
    assert_eq!(v["code"], 30006, "{v}");
    let persisted: Value =
        serde_json::from_str(&std::fs::read_to_string(node.path("state/crontab.json")).unwrap())
            .unwrap();
    assert_eq!(persisted["schedules"], json!({}));
}

fn delete(node: &Node, path: &Path) -> (u16, Value) {
    node.task(json!({"handler": "FileHandler", "command": "delete_file", "data": {"file_name": path.to_str().unwrap()}}))
}

#[test]
fn delete_file_stays_strictly_inside_its_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(allowed.join("cache/deep")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(allowed.join("cache/deep/f"), "x").unwrap();
    std::fs::write(allowed.join("old.log"), "x").unwrap();
    std::fs::write(outside.join("secret"), "x").unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
    let prefix = allowed.to_str().unwrap().to_owned();
    let node = Node::start_in(dir, &["--allow-delete-prefix", &prefix]);

    let cases: Vec<(PathBuf, u16, i64, &str)> = vec![
        (
            outside.join("secret"),
            403,
            30004,
            "not under an allowed prefix",
        ),
        (allowed.join("escape/secret"), 403, 30004, "leads outside"),
        (
            allowed.join("cache/../../outside/secret"),
            403,
            30004,
            "not under an allowed prefix",
        ),
        (
            allowed.join("escape/../outside/secret"),
            403,
            30004,
            "leads outside",
        ),
        (allowed.clone(), 403, 30004, "not under an allowed prefix"),
        (allowed.join("cache"), 403, 30004, "--allow-delete-dirs"),
        (allowed.join("missing"), 400, 30006, "does not exist"),
        (PathBuf::from("relative/path"), 400, 30006, "absolute path"),
    ];
    for (path, status, code, why) in &cases {
        let (got, v) = delete(&node, path);
        assert_eq!(
            (got, v["code"].as_i64()),
            (*status, Some(*code)),
            "{}: {v}",
            path.display()
        );
        assert!(
            v["msg"].as_str().unwrap().contains(why),
            "{}: {v}",
            path.display()
        );
    }
    assert!(outside.join("secret").exists());
    assert!(allowed.join("cache/deep/f").exists());

    let (_, v) = delete(&node, &allowed.join("old.log"));
    assert_eq!(v["code"], 0, "{v}");
    assert!(!allowed.join("old.log").exists());
    // the symlink itself goes; what it points at stays
    let (_, v) = delete(&node, &allowed.join("escape"));
    assert_eq!(v["code"], 0, "{v}");
    assert!(!allowed.join("escape").exists() && outside.join("secret").exists());

    let audit = node.audit();
    assert_eq!(audit.len(), cases.len() + 2);
    assert!(audit.iter().all(|l| l["what"]["handler"] == "FileHandler"));

    let node = node.restart(&["--allow-delete-prefix", &prefix, "--allow-delete-dirs"]);
    let (_, v) = delete(&node, &allowed.join("cache"));
    assert_eq!(v["code"], 0, "{v}");
    assert!(!allowed.join("cache").exists() && allowed.exists());
    healthy(&node);
}

#[test]
fn bad_bodies_get_the_seed_codes_and_the_daemon_keeps_serving() {
    let node = Node::start(&["--allow-disruptive"]);
    let cases: [(&str, &str, u16, i64, &str); 9] = [
        ("task", "{\"handler\": ", 400, 30006, "not valid JSON"),
        ("task", "", 400, 30006, "needs a JSON body"),
        ("task", "[1, 2]", 400, 30006, "JSON object"),
        (
            "task",
            r#"{"handler": "NoSuchHandler", "command": "x"}"#,
            501,
            30004,
            "unknown handler",
        ),
        (
            "task",
            r#"{"handler": "OsHandler", "command": "hibernate"}"#,
            501,
            30004,
            "shutdown or reboot",
        ),
        (
            "task",
            r#"{"handler": "CrontabHandler"}"#,
            400,
            30006,
            "\"command\" is missing",
        ),
        (
            "task",
            r#"{"handler": "FileHandler", "command": "delete_file", "data": "x"}"#,
            400,
            30006,
            "file_name",
        ),
        (
            "add_ip",
            r#"{"name": "eth0:0", "ip": "1.2.3", "netmask": "255.255.255.0"}"#,
            400,
            30006,
            "not an IPv4 address",
        ),
        (
            "verify_password",
            r#"{"user": "root"}"#,
            400,
            30006,
            "password is required",
        ),
    ];
    for (endpoint, body, status, code, why) in cases {
        let (got, v) = post(&node.daemon.addr, endpoint, TOKEN, body);
        assert_eq!(
            (got, v["code"].as_i64()),
            (status, Some(code)),
            "{body}: {v}"
        );
        assert!(v["msg"].as_str().unwrap().contains(why), "{body}: {v}");
        healthy(&node);
    }
    let audit = node.audit();
    assert_eq!(
        audit.len(),
        cases.len(),
        "every request is audited, valid or not"
    );
    assert_eq!(audit[0]["allowed"], Value::Null);
    assert_eq!(audit[3]["what"]["handler"], "NoSuchHandler");
    assert_eq!(audit[0]["what"]["endpoint"], "task");
    assert!(calls(node.dir.path(), "power").is_empty());
}

#[test]
fn safety_switches_also_come_from_opsplane_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scratch")).unwrap();
    std::fs::write(dir.path().join("scratch/f"), "x").unwrap();
    let scratch = dir.path().join("scratch").display().to_string();
    let node = Node::start_env(
        dir,
        &[],
        &[
            ("OPSPLANE_ALLOW_DISRUPTIVE", "true"),
            ("OPSPLANE_ALLOW_DELETE_PREFIX", &scratch),
        ],
    );
    let (_, v) = node.task(json!({"handler": "OsHandler", "command": "reboot"}));
    assert_eq!(v["code"], 0, "{v}");
    let (_, v) = delete(&node, &node.path("scratch/f"));
    assert_eq!(v["code"], 0, "{v}");
    assert!(wait_for(Duration::from_secs(5), || calls(
        node.dir.path(),
        "power"
    ) == ["reboot"]));

    let node = {
        let Node { daemon, dir } = node;
        drop(daemon);
        Node::start_env(dir, &[], &[("OPSPLANE_ALLOW_DISRUPTIVE", "false")])
    };
    let (status, v) = node.task(json!({"handler": "OsHandler", "command": "reboot"}));
    assert_eq!((status, v["code"].as_i64()), (403, Some(30004)), "{v}");
}

/// xorshift64*: a small deterministic generator, so a failure can be replayed from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_seed_bodies_never_break_the_daemon() {
    let node = Node::start(&[]);
    let seeds: [(&str, Value); 8] = [
        (
            "task",
            json!({"handler": "CrontabHandler", "command": "setup_shutdown", "data": {"task_name": "shutdown3", "exec_minute": "55", "exec_hour": "3", "exec_weekly": "1,2"}}),
        ),
        (
            "task",
            json!({"handler": "ServiceHandler", "command": "stop", "data": {"service": ["libvirtd", "sshd"]}}),
        ),
        (
            "task",
            json!({"handler": "FileHandler", "command": "delete_file", "data": {"file_name": "/tmp/test"}}),
        ),
        ("task", json!({"handler": "OsHandler", "command": "reboot"})),
        (
            "add_ip",
            json!({"name": "eth0:0", "ip": "172.16.1.34", "netmask": "255.255.255.0", "gateway": "172.16.1.254", "dns1": "8.8.8.8", "dns2": "114.114.114.114"}),
        ),
        ("exchange_ip", json!({"name1": "eth0", "name2": "eth0:0"})),
        ("delete_ip", json!({"name": "eth0:0"})),
        (
            "verify_password",
            json!({"user": "root", "password": "123456"}),
        ),
    ];
    let alphabet = b"{}[]\":,0123456789abcdefxyz:/.-\\ \x00\xff";
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut answered = 0;
    for round in 0..240 {
        let (endpoint, seed) = &seeds[round % seeds.len()];
        let mut body = seed.to_string().into_bytes();
        for _ in 0..=rng.below(4) {
            let at = rng.below(body.len() + 1);
            match rng.below(4) {
                0 if at < body.len() => body[at] = alphabet[rng.below(alphabet.len())],
                1 => body.insert(at, alphabet[rng.below(alphabet.len())]),
                2 if at < body.len() => {
                    body.remove(at);
                }
                _ => body.truncate(at),
            }
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let (status, v) = post(&node.daemon.addr, endpoint, TOKEN, &text);
        let code = v["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("round {round}: no code in {v}"));
        assert!(
            v["msg"].is_string() && v["data"].is_object(),
            "round {round}: {v}"
        );
        // With the safe defaults nothing disruptive can run: only these endings are possible.
        assert!(
            [0, 30003, 30004, 30005, 30006].contains(&code),
            "round {round} {endpoint} {text:?}: {status} {v}"
        );
        answered += 1;
    }
    assert_eq!(answered, 240);
    healthy(&node);
    assert!(calls(node.dir.path(), "power").is_empty());
    assert!(
        calls(node.dir.path(), "systemctl")
            .iter()
            .all(|c| c.starts_with("start ") || c.starts_with("enable "))
    );
}
