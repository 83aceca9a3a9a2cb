//! Readiness checks run against a starting instance's serving port, polled fast, and the
//! proof that the socket answering there belongs to the instance: ports are picked by
//! binding port 0 and releasing it, so another process may take the port first.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Readiness;

pub(crate) enum Outcome {
    Ready,
    /// The instance exited; `port_taken` when another process held its port meanwhile
    /// (the instance most likely failed to bind it, and a start on another port may work).
    Exited {
        port_taken: bool,
    },
    /// With the result of the last check.
    TimedOut(String),
}

/// Runs the readiness check every 100 µs for the first 100 ms (a small server is seen
/// within a fraction of a millisecond of binding), then every millisecond, then every 10 ms.
/// A check passes only when the listening socket belongs to `owner` (the instance's first
/// process) or one of its descendants.
pub(crate) fn poll_until_ready(
    addr: SocketAddr,
    check: &Readiness,
    timeout: Duration,
    exited: &AtomicBool,
    owner: u32,
) -> Outcome {
    let began = Instant::now();
    let mut port_taken = false;
    if *check == Readiness::Started {
        return if exited.load(Ordering::Acquire) { Outcome::Exited { port_taken } } else { Outcome::Ready };
    }
    loop {
        let last = match check_once(addr, check, owner) {
            Ok(()) => return Outcome::Ready,
            Err(Failed::Foreign(why)) => {
                port_taken = true;
                why
            }
            Err(Failed::Check(why)) => why,
        };
        if exited.load(Ordering::Acquire) {
            return Outcome::Exited { port_taken };
        }
        let elapsed = began.elapsed();
        if elapsed >= timeout {
            return Outcome::TimedOut(last);
        }
        let pause = match elapsed.as_millis() {
            // Telling whose socket answers reads /proc: not at 10 kHz.
            _ if port_taken => Duration::from_millis(10),
            0..100 => Duration::from_micros(100),
            100..1000 => Duration::from_millis(1),
            _ => Duration::from_millis(10),
        };
        std::thread::sleep(pause);
    }
}

enum Failed {
    /// The check itself failed (nothing listens yet, the probe answered an error).
    Check(String),
    /// Something listens on the port, but not the instance.
    Foreign(String),
}

fn check_once(addr: SocketAddr, check: &Readiness, owner: u32) -> Result<(), Failed> {
    let connect_timeout = match check {
        Readiness::TcpConnect | Readiness::Started => Duration::from_millis(100),
        Readiness::HttpGet { timeout, .. } => *timeout,
    };
    let stream =
        TcpStream::connect_timeout(&addr, connect_timeout).map_err(|e| Failed::Check(format!("connect: {e}")))?;
    // A TCP check is done with the connection: close it before the owner is looked up, so
    // the instance is not kept waiting on it.
    let stream = match check {
        Readiness::TcpConnect | Readiness::Started => None,
        Readiness::HttpGet { .. } => Some(stream),
    };
    if !listener_belongs_to(addr.port(), owner) {
        return Err(Failed::Foreign(format!(
            "port {} is held by a process outside the instance; it is not sent requests",
            addr.port()
        )));
    }
    match (check, stream) {
        (Readiness::HttpGet { path, headers, timeout }, Some(stream)) => {
            http_probe(stream, path, headers, *timeout).map_err(Failed::Check)
        }
        _ => Ok(()),
    }
}

/// Whether a socket listening on loopback `port` is open in `root` or a descendant of it:
/// the listening sockets' inodes (`/proc/net/tcp`, `tcp6`) against the socket inodes of
/// the process tree's descriptors (`/proc/<pid>/fd`).
pub(crate) fn listener_belongs_to(port: u16, root: u32) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    let holds = |pid: u32| {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
        fds.filter_map(Result::ok).any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|target| socket_inode(&target.to_string_lossy()))
                .is_some_and(|inode| inodes.contains(&inode))
        })
    };
    // Usually the first process listens itself; else (runc's child, a shell's) a descendant.
    root != 0 && (holds(root) || descendants(root).into_iter().any(holds))
}

/// `root`'s descendants, parents before children. Read from `/proc/<pid>/task/<tid>/children`
/// where the kernel has those files: a few small reads for the usual short chain (runc and
/// the container it runs, a shell and its server), where walking every process of a busy
/// host took milliseconds. Else from every process's parent pid.
fn descendants(root: u32) -> Vec<u32> {
    if !children_files_exist() {
        return process_tree(root).into_iter().skip(1).collect();
    }
    let mut tree = vec![root];
    let mut next = 0;
    while let Some(&pid) = tree.get(next) {
        tree.extend(children_of(pid));
        next += 1;
    }
    tree.split_off(1)
}

/// Whether this kernel lists each thread's children (`CONFIG_PROC_CHILDREN`).
fn children_files_exist() -> bool {
    static EXIST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *EXIST.get_or_init(|| std::path::Path::new("/proc/thread-self/children").exists())
}

/// The children of every thread of `pid` (none when it is gone).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Inodes of the TCP sockets in state LISTEN on `port` (any local address). Asked of the
/// kernel through sock_diag netlink, which filters by state: `/proc/net/tcp` lists every
/// socket, and on a busy machine (thousands in TIME_WAIT) reading it took 13 ms. The file
/// is the fallback where sock_diag is not available.
fn listening_inodes(port: u16) -> HashSet<u64> {
    match listening_inodes_by_netlink(port) {
        Ok(inodes) => inodes,
        Err(_) => listening_inodes_by_proc(port),
    }
}

fn listening_inodes_by_netlink(port: u16) -> std::io::Result<HashSet<u64>> {
    use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_sock_diag::SockDiagMessage;
    use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
    use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut inodes = HashSet::new();
    // A connection to 127.0.0.1 reaches an IPv4 listener of the port when there is one, and
    // only otherwise a dual-stack IPv6 one: the IPv6 table is asked only then.
    for (family, socket_id) in [(AF_INET, SocketId::new_v4()), (AF_INET6, SocketId::new_v6())] {
        if !inodes.is_empty() {
            break;
        }
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let request = SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id,
        });
        let mut packet = NetlinkMessage::new(header, request.into());
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        socket.send(&out, 0)?;
        let mut buffer = vec![0; 16 * 1024];
        'dump: loop {
            let size = socket.recv(&mut &mut buffer[..], 0)?;
            let mut offset = 0;
            while offset < size {
                let message = NetlinkMessage::<SockDiagMessage>::deserialize(&buffer[offset..size])
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                match message.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response))
                        if response.header.socket_id.source_port == port =>
                    {
                        inodes.insert(u64::from(response.header.inode));
                    }
                    NetlinkPayload::Done(_) => break 'dump,
                    NetlinkPayload::Error(e) => return Err(std::io::Error::other(format!("sock_diag: {e:?}"))),
                    _ => {}
                }
                let length = message.header.length as usize;
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
    }
    Ok(inodes)
}

fn listening_inodes_by_proc(port: u16) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        inodes.extend(text.lines().skip(1).filter_map(|line| listening_inode(line, port)));
    }
    inodes
}

/// One line of `/proc/net/tcp`: `sl local rem st … uid timeout inode …`, addresses as
/// `HEXADDR:HEXPORT`, state `0A` for LISTEN.
fn listening_inode(line: &str, port: u16) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let local_port = fields.get(1)?.rsplit_once(':')?.1;
    if u16::from_str_radix(local_port, 16).ok()? != port || *fields.get(3)? != "0A" {
        return None;
    }
    fields.get(9)?.parse().ok()
}

/// `root` and every process descended from it, from the parent pids in `/proc/<pid>/stat`.
fn process_tree(root: u32) -> Vec<u32> {
    if root == 0 {
        return Vec::new();
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.filter_map(Result::ok) {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if let Some(parent) = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| parent_pid(&s))
            {
                children.entry(parent).or_default().push(pid);
            }
        }
    }
    let mut tree = vec![root];
    let mut next = 0;
    while let Some(&pid) = tree.get(next) {
        tree.extend(children.remove(&pid).unwrap_or_default());
        next += 1;
    }
    tree
}

/// The fourth field of `/proc/<pid>/stat`, after the command name in parentheses (which
/// may itself hold spaces and parentheses).
fn parent_pid(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// One `GET` over a fresh connection; 200–399 is ready.
fn http_probe(
    mut stream: TcpStream,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(), String> {
    use std::io::{Read, Write};
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: serval-probe\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("GET {path}: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| format!("GET {path}: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status: u16 =
        line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("GET {path}: not HTTP"))?;
    if (200..400).contains(&status) { Ok(()) } else { Err(format!("GET {path} answered {status}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_give_listening_inodes_of_the_port() {
        let listen = "   1: 0100007F:8DC1 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 461000 1 0000 100 0 0 10 0";
        assert_eq!(listening_inode(listen, 0x8DC1), Some(461000));
        assert_eq!(listening_inode(listen, 80), None);
        let established = listen.replace(" 0A ", " 01 ");
        assert_eq!(listening_inode(&established, 0x8DC1), None);
        assert_eq!(listening_inode("garbage", 1), None);
    }

    #[test]
    fn stat_lines_with_odd_command_names_give_the_parent() {
        assert_eq!(parent_pid("42 (my (odd) cmd) S 7 42 42 0"), Some(7));
        assert_eq!(parent_pid("nonsense"), None);
        assert_eq!(socket_inode("socket:[99]"), Some(99));
        assert_eq!(socket_inode("pipe:[99]"), None);
    }

    #[test]
    fn netlink_and_proc_find_the_same_listener() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let by_proc = listening_inodes_by_proc(port);
        assert_eq!(by_proc.len(), 1);
        assert_eq!(listening_inodes_by_netlink(port).expect("sock_diag netlink"), by_proc);
    }

    #[test]
    fn descendants_from_children_files_match_the_walk_over_every_process() {
        use std::io::BufRead;
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let mut line = String::new();
        std::io::BufReader::new(shell.stdout.take().expect("stdout")).read_line(&mut line).expect("pid line");
        let sleeper: u32 = line.trim().parse().expect("a pid");
        assert!(children_files_exist(), "this kernel lists children in /proc");
        let found = descendants(shell.id());
        assert!(found.contains(&sleeper), "{found:?} holds {sleeper}");
        let walked: HashSet<u32> = process_tree(shell.id()).into_iter().skip(1).collect();
        assert_eq!(found.into_iter().collect::<HashSet<u32>>(), walked);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(sleeper as i32), nix::sys::signal::Signal::SIGKILL);
        let _ = shell.wait();
    }

    #[test]
    fn a_listener_of_this_process_is_ours_and_not_a_strangers() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(listener_belongs_to(port, std::process::id()));
        // A child's process tree does not hold its parent's sockets.
        let child = std::process::Command::new("sleep").arg("5").spawn().expect("spawn sleep");
        assert!(!listener_belongs_to(port, child.id()));
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }
}
