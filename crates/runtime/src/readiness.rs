//! Readiness checks run against a starting instance's serving port, polled fast.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Readiness;

pub(crate) enum Outcome {
    Ready,
    Exited,
    /// With the result of the last check.
    TimedOut(String),
}

/// Runs the readiness check every 100 µs for the first 100 ms (a small server is seen
/// within a fraction of a millisecond of binding), then every millisecond, then every 10 ms.
pub(crate) fn poll_until_ready(addr: SocketAddr, check: &Readiness, timeout: Duration, exited: &AtomicBool) -> Outcome {
    let began = Instant::now();
    loop {
        let last = match check_once(addr, check) {
            Ok(()) => return Outcome::Ready,
            Err(why) => why,
        };
        if exited.load(Ordering::Acquire) {
            return Outcome::Exited;
        }
        let elapsed = began.elapsed();
        if elapsed >= timeout {
            return Outcome::TimedOut(last);
        }
        let pause = match elapsed.as_millis() {
            0..100 => Duration::from_micros(100),
            100..1000 => Duration::from_millis(1),
            _ => Duration::from_millis(10),
        };
        std::thread::sleep(pause);
    }
}

fn check_once(addr: SocketAddr, check: &Readiness) -> Result<(), String> {
    let connect_timeout = match check {
        Readiness::TcpConnect => Duration::from_millis(100),
        Readiness::HttpGet { timeout, .. } => *timeout,
    };
    let stream = TcpStream::connect_timeout(&addr, connect_timeout).map_err(|e| format!("connect: {e}"))?;
    match check {
        Readiness::TcpConnect => Ok(()),
        Readiness::HttpGet { path, headers, timeout } => http_probe(stream, path, headers, *timeout),
    }
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
