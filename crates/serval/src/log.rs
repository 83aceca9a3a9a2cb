//! The server's log on stderr, filtered by `RUST_LOG` (default `info`), with at most
//! [`LINES_PER_WINDOW`] lines from any one call site in any [`WINDOW`]: a loop that fails
//! the same way thousands of times a second (out of file descriptors, a crashing
//! instance) must never fill the disk. Colours only on a terminal: a log written to a file
//! or a pipe (systemd, `2>server.log`) holds no escape codes.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::subscriber::Interest;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterExt, dynamic_filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const WINDOW: Duration = Duration::from_secs(10);
const LINES_PER_WINDOW: u32 = 50;

/// Lines written per call site in its current window.
struct RateLimit<K> {
    windows: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K: std::hash::Hash + Eq> RateLimit<K> {
    fn new() -> Self {
        RateLimit { windows: Mutex::new(HashMap::new()) }
    }

    fn allow(&self, callsite: K, now: Instant) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let (started, lines) = windows.entry(callsite).or_insert((now, 0));
        if now.duration_since(*started) >= WINDOW {
            (*started, *lines) = (now, 0);
        }
        *lines += 1;
        *lines <= LINES_PER_WINDOW
    }
}

/// Installs the server's log.
pub fn init() {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let limit = RateLimit::<Identifier>::new();
    let rate = dynamic_filter_fn(move |meta, _| !meta.is_event() || limit.allow(meta.callsite(), Instant::now()))
        // Decided per event, never cached per call site.
        .with_callsite_filter(|_| Interest::sometimes());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(env.and(rate));
    tracing_subscriber::registry().with(layer).init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_site_gets_its_lines_per_window_and_more_in_the_next() {
        let limit = RateLimit::new();
        let start = Instant::now();
        let allowed = (0..1_000).filter(|_| limit.allow("a", start)).count();
        assert_eq!(allowed, LINES_PER_WINDOW as usize);
        assert!(limit.allow("b", start), "other call sites have their own count");
        assert!(limit.allow("a", start + WINDOW), "a new window");
    }
}
