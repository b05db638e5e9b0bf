//! ESTABLISHED TCP connections by local port from the kernel's socket-diagnostics netlink
//! interface (`NETLINK_SOCK_DIAG`, `inet_diag`, what `ss` uses), for seed 002 §二.11
//! `port_status`.
//!
//! The kernel does the filtering: the request asks only for the ESTABLISHED state and, for up
//! to [`MAX_FILTERED_PORTS`] ports, carries an `inet_diag` bytecode program that keeps only
//! sockets whose local port is one of them. So a query costs a few system calls and a few
//! hundred bytes of answer however many connections the host has, where reading
//! `/proc/net/tcp` formats and parses a line per socket. The bytecode uses only the `S_GE` /
//! `S_LE` / `JMP` operations, which every kernel since 2.6 accepts (CentOS 7's 3.10 included).
//!
//! The socket lives in the daemon's network namespace (the DaemonSet uses `hostNetwork`), the
//! same namespace `/proc/net/tcp` shows to the daemon.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

/// Local port → number of ESTABLISHED connections (ports without any are absent).
pub type Established = BTreeMap<u16, u32>;

/// Most distinct ports one request filters in the kernel; a longer list asks for every
/// ESTABLISHED socket and counts in the daemon (the bytecode grows with the list).
pub const MAX_FILTERED_PORTS: usize = 64;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_S_GE: u8 = 2;
const INET_DIAG_BC_S_LE: u8 = 3;
const IPPROTO_TCP: u8 = 6;
/// `TCP_ESTABLISHED` in the kernel's TCP state numbering.
pub const TCP_ESTABLISHED: u8 = 1;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 72;
/// Large enough for any datagram of a dump (the kernel fills at most 32 KiB per datagram).
const RECV_BUFFER: usize = 64 * 1024;
/// How long the kernel may take to answer before the query fails.
const TIMEOUT: Duration = Duration::from_secs(2);

/// One socket of a dump: what `port_status` needs of `struct inet_diag_msg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiagSocket {
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// TCP state (1 = ESTABLISHED).
    pub state: u8,
    /// Local port.
    pub local_port: u16,
}

/// Why a dump's answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiagError {
    /// The kernel answered with an error number.
    #[error("sock_diag: {}", io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
    /// The answer was not well-formed netlink.
    #[error("sock_diag: malformed answer: {0}")]
    Malformed(&'static str),
}

impl From<DiagError> for io::Error {
    fn from(e: DiagError) -> Self {
        match e {
            DiagError::Kernel(errno) => io::Error::from_raw_os_error(errno),
            DiagError::Malformed(_) => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// Whether a datagram ended the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE` was seen.
    Done,
}

/// The ESTABLISHED TCP connections (IPv4 and IPv6) whose local port is one of `ports`,
/// counted by port, from the live kernel.
pub fn established_by_local_port(ports: &[u16]) -> io::Result<Established> {
    let mut wanted: Vec<u16> = ports.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut counts = Established::new();
    if wanted.is_empty() {
        return Ok(counts);
    }
    let filter = (wanted.len() <= MAX_FILTERED_PORTS).then(|| port_filter(&wanted));
    let socket = open()?;
    let mut buffer = vec![0u8; RECV_BUFFER];
    for family in [libc_af(AddressFamily::Inet), libc_af(AddressFamily::Inet6)] {
        let seq = next_seq();
        let request = dump_request(family, 1 << TCP_ESTABLISHED, filter.as_deref(), seq);
        sendto(
            socket.as_raw_fd(),
            &request,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(io::Error::from)?;
        loop {
            // MSG_TRUNC makes recv return the datagram's real length, so a cut answer is
            // noticed instead of half-parsed.
            let n = recv(socket.as_raw_fd(), &mut buffer, MsgFlags::MSG_TRUNC)
                .map_err(io::Error::from)?;
            if n > buffer.len() {
                return Err(DiagError::Malformed("datagram larger than the buffer").into());
            }
            let progress = parse_datagram(&buffer[..n], seq, |s| {
                if s.state == TCP_ESTABLISHED && wanted.binary_search(&s.local_port).is_ok() {
                    *counts.entry(s.local_port).or_default() += 1;
                }
            });
            match progress {
                Ok(Progress::Done) => break,
                Ok(Progress::More) => {}
                // An IPv6-less kernel has no AF_INET6 handler: no IPv6 connections.
                Err(DiagError::Kernel(errno))
                    if family == libc_af(AddressFamily::Inet6)
                        && matches!(errno, nix::libc::ENOENT | nix::libc::EAFNOSUPPORT) =>
                {
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(counts)
}

fn libc_af(family: AddressFamily) -> u8 {
    // AF_INET (2) and AF_INET6 (10) fit a byte, as `sdiag_family` needs.
    (family as i32) as u8
}

fn next_seq() -> u32 {
    static SEQ: AtomicU32 = AtomicU32::new(1);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

fn open() -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(io::Error::from)?;
    let timeout = TimeVal::new(TIMEOUT.as_secs() as _, 0);
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).map_err(io::Error::from)?;
    Ok(fd)
}

/// A `SOCK_DIAG_BY_FAMILY` dump request for TCP sockets of `family` in the states of the
/// `states` bit mask, with an optional `inet_diag` bytecode filter.
pub fn dump_request(family: u8, states: u32, filter: Option<&[u8]>, seq: u32) -> Vec<u8> {
    let attr_len = filter.map_or(0, |f| 4 + f.len());
    let total = NLMSG_HDRLEN + REQ_LEN + align4(attr_len);
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills ours in
    // struct inet_diag_req_v2
    out.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    out.extend_from_slice(&states.to_ne_bytes());
    out.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: no socket pinned
    if let Some(filter) = filter {
        out.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        out.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        out.extend_from_slice(filter);
    }
    out.resize(total, 0);
    out
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn bc_op(code: u8, yes: u8, no: u16) -> [u8; 4] {
    let no = no.to_ne_bytes();
    [code, yes, no[0], no[1]]
}

/// `inet_diag` bytecode accepting a socket whose local port is one of `ports` (at most
/// [`MAX_FILTERED_PORTS`] of them).
///
/// Per port a 16-byte test `S_GE port; S_LE port` (each comparison is an op followed by an op
/// whose `no` field holds the port); tests are joined like `ss` joins an OR: a failed test
/// jumps to the next one, a passed test falls into a `JMP` over the rest to the end (accept);
/// failing the last test jumps 4 bytes past the end (reject). Every op is reachable along
/// the `yes` jumps, which the kernel's audit requires.
pub fn port_filter(ports: &[u16]) -> Vec<u8> {
    const TEST: usize = 16;
    let ports = &ports[..ports.len().min(MAX_FILTERED_PORTS)];
    let total = ports.len() * TEST + ports.len().saturating_sub(1) * 4;
    let mut out = Vec::with_capacity(total);
    for (i, port) in ports.iter().enumerate() {
        let last = i + 1 == ports.len();
        let remaining = total - out.len();
        // The next test starts after this one and its JMP; after the last test, reject.
        let fail_from_ge: u16 = if last { (remaining + 4) as u16 } else { 20 };
        let fail_from_le: u16 = if last { (remaining - 8 + 4) as u16 } else { 12 };
        out.extend_from_slice(&bc_op(INET_DIAG_BC_S_GE, 8, fail_from_ge));
        out.extend_from_slice(&bc_op(0, 0, *port));
        out.extend_from_slice(&bc_op(INET_DIAG_BC_S_LE, 8, fail_from_le));
        out.extend_from_slice(&bc_op(0, 0, *port));
        if !last {
            // Reached only when the test passed: jump over everything left, to accept.
            let rest = total - out.len();
            out.extend_from_slice(&bc_op(INET_DIAG_BC_JMP, 4, rest as u16));
        }
    }
    out
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// Parses one datagram of a dump answer to request `seq`, calling `visit` for each socket.
/// Messages of other sequence numbers are skipped. Never panics, whatever the bytes.
pub fn parse_datagram(
    buf: &[u8],
    seq: u32,
    mut visit: impl FnMut(DiagSocket),
) -> Result<Progress, DiagError> {
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        let (Some(len), Some(kind), Some(msg_seq)) =
            (u32_at(rest, 0), u16_at(rest, 4), u32_at(rest, 8))
        else {
            return Err(DiagError::Malformed("truncated message header"));
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(DiagError::Malformed("message length out of bounds"));
        }
        let payload = &rest[NLMSG_HDRLEN..len];
        if msg_seq == seq {
            match kind {
                NLMSG_DONE => {
                    // Since 4.x the kernel puts the dump's status in DONE.
                    return match u32_at(payload, 0).map(|v| v as i32) {
                        Some(status) if status < 0 => Err(DiagError::Kernel(-status)),
                        _ => Ok(Progress::Done),
                    };
                }
                NLMSG_ERROR => {
                    let status = u32_at(payload, 0)
                        .map(|v| v as i32)
                        .ok_or(DiagError::Malformed("short error message"))?;
                    return if status == 0 {
                        Ok(Progress::Done)
                    } else {
                        Err(DiagError::Kernel(status.saturating_neg()))
                    };
                }
                SOCK_DIAG_BY_FAMILY => {
                    if payload.len() < MSG_LEN {
                        return Err(DiagError::Malformed("short inet_diag_msg"));
                    }
                    visit(DiagSocket {
                        family: payload[0],
                        state: payload[1],
                        // inet_diag_sockid.idiag_sport, network byte order
                        local_port: u16::from_be_bytes([payload[4], payload[5]]),
                    });
                }
                NLMSG_NOOP => {}
                _ => {}
            }
        }
        at = at.saturating_add(align4(len));
    }
    Ok(Progress::More)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// xorshift64*: reproducible pseudo-random bytes without a dependency.
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

    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&77u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(align4(out.len()), 0);
        out
    }

    fn socket_message(seq: u32, s: DiagSocket) -> Vec<u8> {
        let mut payload = vec![0u8; MSG_LEN + 8]; // + an attribute the parser must skip
        payload[0] = s.family;
        payload[1] = s.state;
        payload[4..6].copy_from_slice(&s.local_port.to_be_bytes());
        payload[6..8].copy_from_slice(&443u16.to_be_bytes());
        message(SOCK_DIAG_BY_FAMILY, seq, &payload)
    }

    fn parse_all(buf: &[u8], seq: u32) -> (Result<Progress, DiagError>, Vec<DiagSocket>) {
        let mut seen = Vec::new();
        let progress = parse_datagram(buf, seq, |s| seen.push(s));
        (progress, seen)
    }

    #[test]
    fn a_datagram_yields_its_sockets_in_order_and_done_ends_the_dump() {
        let sockets = [
            DiagSocket {
                family: 2,
                state: 1,
                local_port: 5900,
            },
            DiagSocket {
                family: 10,
                state: 1,
                local_port: 65535,
            },
        ];
        let mut buf: Vec<u8> = sockets.iter().flat_map(|s| socket_message(9, *s)).collect();
        assert_eq!(parse_all(&buf, 9), (Ok(Progress::More), sockets.to_vec()));
        // another request's messages are not ours
        assert_eq!(parse_all(&buf, 8), (Ok(Progress::More), vec![]));
        buf.extend(message(NLMSG_DONE, 9, &0i32.to_ne_bytes()));
        assert_eq!(parse_all(&buf, 9), (Ok(Progress::Done), sockets.to_vec()));
    }

    #[test]
    fn kernel_errors_in_error_and_done_messages_are_reported() {
        let mut error = (-nix::libc::EINVAL).to_ne_bytes().to_vec();
        error.extend_from_slice(&[0u8; 16]); // the request's header
        let (progress, _) = parse_all(&message(NLMSG_ERROR, 3, &error), 3);
        assert_eq!(progress, Err(DiagError::Kernel(nix::libc::EINVAL)));
        let (progress, _) = parse_all(&message(NLMSG_DONE, 3, &(-5i32).to_ne_bytes()), 3);
        assert_eq!(progress, Err(DiagError::Kernel(5)));
        let (progress, _) = parse_all(&message(NLMSG_ERROR, 3, &[1]), 3);
        assert_eq!(progress, Err(DiagError::Malformed("short error message")));
    }

    #[test]
    fn truncated_and_inconsistent_messages_are_malformed_not_panics() {
        let whole = socket_message(
            1,
            DiagSocket {
                family: 2,
                state: 1,
                local_port: 22,
            },
        );
        for cut in 1..whole.len() {
            let (progress, seen) = parse_all(&whole[..cut], 1);
            assert!(progress.is_err(), "cut at {cut} parsed as {progress:?}");
            assert!(seen.is_empty(), "cut at {cut} yielded {seen:?}");
        }
        let mut short = whole.clone();
        short[0..4].copy_from_slice(&20u32.to_ne_bytes()); // shorter than inet_diag_msg
        assert_eq!(
            parse_all(&short, 1).0,
            Err(DiagError::Malformed("short inet_diag_msg"))
        );
        let mut tiny = whole;
        tiny[0..4].copy_from_slice(&3u32.to_ne_bytes()); // shorter than its own header
        assert!(parse_all(&tiny, 1).0.is_err());
    }

    #[test]
    fn random_and_mutated_datagrams_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let valid: Vec<u8> = (0..4)
            .flat_map(|i| {
                socket_message(
                    7,
                    DiagSocket {
                        family: 2,
                        state: 1,
                        local_port: 5900 + i,
                    },
                )
            })
            .chain(message(NLMSG_DONE, 7, &0i32.to_ne_bytes()))
            .collect();
        for round in 0..200_000 {
            let buf: Vec<u8> = if round % 2 == 0 {
                let len = rng.below(400);
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                let mut b = valid.clone();
                for _ in 0..1 + rng.below(6) {
                    let at = rng.below(b.len());
                    b[at] = rng.next() as u8;
                }
                b.truncate(rng.below(b.len() + 1));
                b
            };
            let mut visited = 0usize;
            let _ = parse_datagram(&buf, 7, |_| visited += 1);
            assert!(visited <= buf.len() / (NLMSG_HDRLEN + MSG_LEN));
        }
    }

    /// Runs the filter the way the kernel's `inet_diag_bc_run` does.
    fn run_filter(bc: &[u8], sport: u16) -> bool {
        let mut at = 0usize;
        let mut len = bc.len() as isize;
        while len > 0 {
            let code = bc[at];
            let yes = bc[at + 1] as usize;
            let no = u16::from_ne_bytes([bc[at + 2], bc[at + 3]]) as usize;
            let port = || u16::from_ne_bytes([bc[at + 6], bc[at + 7]]);
            let ok = match code {
                INET_DIAG_BC_JMP => false,
                INET_DIAG_BC_S_GE => sport >= port(),
                INET_DIAG_BC_S_LE => sport <= port(),
                other => panic!("unexpected op {other}"),
            };
            let step = if ok { yes } else { no };
            at += step;
            len -= step as isize;
        }
        len == 0
    }

    /// The kernel's `inet_diag_bc_audit`: every op on the `yes` path, jumps 4-aligned, within
    /// the program (or 4 past its end) and onto an op boundary.
    fn audit(bc: &[u8]) -> bool {
        let boundaries = {
            let mut b = vec![];
            let mut at = 0usize;
            while at < bc.len() {
                b.push(at);
                at += bc[at + 1] as usize;
            }
            b
        };
        let mut at = 0usize;
        while at < bc.len() {
            let code = bc[at];
            let yes = bc[at + 1] as usize;
            let no = u16::from_ne_bytes([bc[at + 2], bc[at + 3]]) as usize;
            let min = if code == INET_DIAG_BC_JMP { 4 } else { 8 };
            let len = bc.len() - at;
            for jump in [yes, no] {
                if jump < min || jump > len + 4 || jump % 4 != 0 {
                    return false;
                }
                if jump < len && !boundaries.contains(&(at + jump)) {
                    return false;
                }
            }
            at += yes;
        }
        at == bc.len()
    }

    #[test]
    fn the_port_filter_accepts_exactly_the_listed_ports_and_passes_the_kernel_audit() {
        let mut rng = Rng(42);
        for n in 1..=MAX_FILTERED_PORTS {
            let mut ports: Vec<u16> = (0..n).map(|_| 1 + rng.below(65535) as u16).collect();
            ports.sort_unstable();
            ports.dedup();
            let bc = port_filter(&ports);
            assert!(audit(&bc), "{n} ports: audit fails");
            for port in &ports {
                assert!(run_filter(&bc, *port), "{port} rejected");
            }
            for _ in 0..200 {
                let other = rng.next() as u16;
                assert_eq!(run_filter(&bc, other), ports.contains(&other), "{other}");
            }
            for edge in [0, 1, 65535] {
                assert_eq!(run_filter(&bc, edge), ports.contains(&edge));
            }
        }
    }

    /// Opens `n` loopback connections to `listener`, returning both ends.
    fn connect(listener: &TcpListener, n: usize) -> Vec<(TcpStream, TcpStream)> {
        let addr = listener.local_addr().unwrap();
        (0..n)
            .map(|_| {
                let c = TcpStream::connect(addr).unwrap();
                (c, listener.accept().unwrap().0)
            })
            .collect()
    }

    #[test]
    fn the_live_kernel_counts_established_connections_by_local_port() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = TcpListener::bind("[::1]:0").ok(); // absent when IPv6 is off
        let (pa, pb) = (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        );
        let _ca = connect(&a, 3);
        let _cb = connect(&b, 2);
        let _c6 = v6.as_ref().map(|l| connect(l, 4));
        let p6 = v6.as_ref().map(|l| l.local_addr().unwrap().port());

        // listening sockets are not ESTABLISHED; the filter keeps only the asked ports
        let counts = established_by_local_port(&[pa]).unwrap();
        assert_eq!(counts, Established::from([(pa, 3)]));
        let counts = established_by_local_port(&[pb, pa, pb]).unwrap();
        assert_eq!(counts, Established::from([(pa, 3), (pb, 2)]));
        if let Some(p6) = p6 {
            assert_eq!(established_by_local_port(&[p6]).unwrap()[&p6], 4);
        }
        let unused = TcpListener::bind("127.0.0.1:0").unwrap();
        let pu = unused.local_addr().unwrap().port();
        assert_eq!(
            established_by_local_port(&[pu]).unwrap(),
            Established::new()
        );

        // past MAX_FILTERED_PORTS the kernel returns every ESTABLISHED socket: same answer
        let mut many: Vec<u16> = (1..=MAX_FILTERED_PORTS as u16 + 10).collect();
        many.extend([pa, pb]);
        let counts = established_by_local_port(&many).unwrap();
        assert_eq!(counts.get(&pa), Some(&3));
        assert_eq!(counts.get(&pb), Some(&2));
    }
}
