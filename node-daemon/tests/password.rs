//! verify_password (seed 002 §二.15) over HTTP against a shadow file under a temp host root:
//! real yescrypt and sha512-crypt hashes (made by libxcrypt — committed below, plus freshly
//! generated ones with a random password when `mkpasswd` or Python's `crypt` is on the
//! machine), the seed's 0 / 10001 / 10002, the per-client-IP rate limit (a second client
//! connects from 127.0.0.2), and the passwords never reaching the daemon's log (at debug
//! level) or the audit log.

use std::net::TcpStream;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

mod common;

use common::{Daemon, audit_lines, post, post_on};

const TOKEN: &str = "pw-token";

// libxcrypt's crypt(3) (Debian 13) of "Tr0ub4dor&3": yescrypt with non-default cost, and
// sha512-crypt with explicit rounds; and of "correct horse" with the defaults.
const YESCRYPT_COST: &str =
    "$y$jDT$Wm3a4uGsk8Eb.lT0kCz7f/$cNxwqmK2ERn.dt5NDKjTBwAajyf6iXlKE69nPa3G7.C";
const SHA512_ROUNDS: &str = "$6$rounds=10000$X5nl7dPQbOjxT2Ut$Nx7WRN5i0d3gPS4K3k6Is93gOgtdSIvnoPhZ2GRP6dehrn1q6eNigPeYJpSxK5O83N8824YWgEG0vMU5Hhxnf1";
const YESCRYPT: &str = "$y$j9T$qKbO3fOcf0Z3m9s1vBKbH.$iGEgAZ2fqpTFzv9JdJJYzXoKMAlI4fotdMJC817tmS7";
const SHA512: &str = "$6$Vx8iBf1R7cQeyB9m$uaNw3wwSSTySk1.9fq0HJusWSmXbEAlqDaQ9oe/NnCkt1/i/9GRJCRUvYfY43aH5xWi80Rg0Gs/CsBaV04hHR/";

/// The output of `command` run with `input` on its stdin (stderr dropped), if it ran.
fn fed(command: &mut Command, input: &str) -> Option<std::process::Output> {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(input.as_bytes()).ok()?;
    child.wait_with_output().ok()
}

/// A hash of `password` made now by the system's crypt, if a tool for it is installed.
fn fresh_hash(method: &str, password: &str) -> Option<String> {
    let mkpasswd = fed(
        Command::new("mkpasswd").args(["--stdin", "-m", method]),
        password,
    )
    .and_then(|out| {
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    mkpasswd.or_else(|| {
        let python_method = if method == "yescrypt" {
            "'$y$j9T$' + crypt.mksalt(crypt.METHOD_SHA512)[3:19]"
        } else {
            "crypt.mksalt(crypt.METHOD_SHA512)"
        };
        let out = fed(
            Command::new("python3").args([
                "-W",
                "ignore",
                "-c",
                &format!("import crypt,sys; print(crypt.crypt(sys.stdin.read(), {python_method}))"),
            ]),
            password,
        )?;
        let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && hash.starts_with('$') && hash.len() > 20).then_some(hash)
    })
}

struct Host {
    dir: tempfile::TempDir,
    daemon: Daemon,
}

fn start(shadow: &str, attempts: &str) -> Host {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("root/etc")).unwrap();
    std::fs::write(dir.path().join("root/etc/shadow"), shadow).unwrap();
    let root = dir.path().join("root");
    let state = dir.path().join("state");
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let daemon = common::start_logging(
        &[
            "--host-root",
            root.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--sample-interval",
            "200ms",
            "--password-check",
            "--password-attempts",
            attempts,
            "--password-window",
            "1h",
            "--log",
            "debug",
        ],
        &[("OPSPLANE_TOKEN", TOKEN)],
        Stdio::from(log),
    );
    Host { dir, daemon }
}

fn check(host: &Host, user: &str, password: &str) -> (u16, Value) {
    post(
        &host.daemon.addr,
        "verify_password",
        TOKEN,
        &json!({"user": user, "password": password}).to_string(),
    )
}

#[test]
fn verify_password_checks_yescrypt_and_sha512_crypt_hashes_of_the_host() {
    let random: String = format!(
        "pw-{:x}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let mut shadow = format!(
        "root:{YESCRYPT}:20000:0:99999:7:::\nops:{SHA512}:20000:0:99999:7:::\ncost:{YESCRYPT_COST}:20000::::::\nrounds:{SHA512_ROUNDS}:20000::::::\nlocked:!{SHA512}:20000::::::\nservice:*:20000::::::\n"
    );
    let mut fresh = Vec::new();
    for (user, method) in [("freshy", "yescrypt"), ("fresh6", "sha-512")] {
        match fresh_hash(method, &random) {
            Some(hash) => {
                shadow.push_str(&format!("{user}:{hash}:20000::::::\n"));
                fresh.push(user);
            }
            None => eprintln!(
                "no mkpasswd or Python crypt here: {method} checked with the committed hashes only"
            ),
        }
    }
    let host = start(&shadow, "100");
    let cases: Vec<(&str, &str, i64, &str)> = vec![
        ("root", "correct horse", 0, "成功"),
        ("root", "correct horsE", 10001, "wrong password"),
        ("ops", "correct horse", 0, "成功"),
        ("ops", "", 10001, "wrong password"),
        ("cost", "Tr0ub4dor&3", 0, "成功"),
        ("rounds", "Tr0ub4dor&3", 0, "成功"),
        ("rounds", "Tr0ub4dor&4", 10001, "wrong password"),
        ("locked", "correct horse", 10001, "no usable password"),
        ("service", "x", 10001, "no usable password"),
        ("nobody", "correct horse", 10002, "用户名错误"),
    ];
    for (user, password, code, msg) in &cases {
        let (status, v) = check(&host, user, password);
        assert_eq!(
            (status, v["code"].as_i64()),
            (200, Some(*code)),
            "{user}/{password}: {v}"
        );
        assert!(v["msg"].as_str().unwrap().contains(msg), "{user}: {v}");
    }
    for user in &fresh {
        assert_eq!(check(&host, user, &random).1["code"], 0, "{user}");
        assert_eq!(check(&host, user, "not it").1["code"], 10001, "{user}");
    }

    let audit = audit_lines(&host.dir.path().join("state/task-audit.log"));
    assert_eq!(audit.len(), cases.len() + 2 * fresh.len());
    assert_eq!(
        audit[1]["what"],
        json!({"handler": "PasswordHandler", "command": "verify_password", "data": {"user": "root"}})
    );
    assert_eq!(audit[1]["result"]["code"], 10001);
    let log = std::fs::read_to_string(host.dir.path().join("daemon.log")).unwrap();
    let audit_text = std::fs::read_to_string(host.dir.path().join("state/task-audit.log")).unwrap();
    assert!(
        log.contains("verify_password"),
        "the debug log records the task: {log}"
    );
    for secret in ["correct horse", "Tr0ub4dor", random.as_str()] {
        assert!(!log.contains(secret), "{secret:?} in the daemon's log");
        assert!(!audit_text.contains(secret), "{secret:?} in the audit log");
    }
}

/// A connection to `addr` whose source address is `source` (any of 127.0.0.0/8).
fn connect_from(source: [u8; 4], addr: &str) -> TcpStream {
    use std::os::fd::FromRawFd;
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let sockaddr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns until it is wrapped.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let local = sockaddr(source, 0);
        assert_eq!(
            libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len),
            0,
            "bind"
        );
        let remote = sockaddr([127, 0, 0, 1], port);
        assert_eq!(
            libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len),
            0,
            "connect"
        );
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn password_checks_are_rate_limited_per_client_ip() {
    let host = start(&format!("root:{SHA512}:20000:0:99999:7:::\n"), "3");
    for password in ["a", "b", "correct horse"] {
        let (status, v) = check(&host, "root", password);
        assert_eq!(status, 200, "{v}");
    }
    // The fourth from 127.0.0.1 within the hour is refused, even with the right password.
    let (status, v) = check(&host, "root", "correct horse");
    assert_eq!((status, v["code"].as_i64()), (429, Some(99999)), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.contains("too many password checks from 127.0.0.1") && msg.contains("retry in"),
        "{msg}"
    );
    // Another client still gets its own attempts.
    let body = json!({"user": "root", "password": "correct horse"}).to_string();
    let (status, v) = post_on(
        connect_from([127, 0, 0, 2], &host.daemon.addr),
        "verify_password",
        TOKEN,
        &body,
    );
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
    // Other tasks from the limited client are not limited.
    let pause = json!({"handler": "TimerHandler", "command": "pause"}).to_string();
    let (status, v) = post(&host.daemon.addr, "task", TOKEN, &pause);
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
    let audit = audit_lines(&host.dir.path().join("state/task-audit.log"));
    assert_eq!(audit[3]["result"]["code"], 99999);
    assert_eq!(
        audit[4]["who"]["client"]
            .as_str()
            .map(|c| c.starts_with("127.0.0.2:")),
        Some(true)
    );
}
