//! Captured output of every service's instances: a bounded backlog per service plus a live
//! feed for `serval logs -f`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serval_runtime::{LogLine, LogSink, LogStream};
use tokio::sync::broadcast;

/// Lines kept per service.
const BACKLOG: usize = 2000;

/// One line of a service's log, as shown to users.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub at: SystemTime,
    pub instance: String,
    pub stream: LogStream,
    pub text: String,
}

impl LogEntry {
    /// `2026-11-27T10:00:00.123Z hello-00001-1 stdout: text`
    pub fn render(&self) -> String {
        format!(
            "{} {} {}: {}\n",
            humantime::format_rfc3339_millis(self.at),
            self.instance,
            self.stream.as_str(),
            self.text
        )
    }
}

struct ServiceLog {
    backlog: VecDeque<LogEntry>,
    live: broadcast::Sender<LogEntry>,
}

/// All services' logs, keyed by `namespace/service`.
#[derive(Clone, Default)]
pub struct LogBook {
    services: Arc<Mutex<Logs>>,
}

#[derive(Default)]
struct Logs {
    by_service: HashMap<String, ServiceLog>,
    /// Deleted services: lines their draining instances still write are dropped, so they
    /// never show up under a new service of the same name.
    deleted: std::collections::HashSet<String>,
}

fn key(namespace: &str, service: &str) -> String {
    format!("{namespace}/{service}")
}

impl LogBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, Logs> {
        self.services.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops a deleted service's lines, and any its instances write from now on.
    pub fn forget(&self, namespace: &str, service: &str) {
        let mut logs = self.lock();
        let key = key(namespace, service);
        logs.by_service.remove(&key);
        logs.deleted.insert(key);
    }

    /// A service of this name was created (again): its lines are kept from now on.
    pub fn revive(&self, namespace: &str, service: &str) {
        self.lock().deleted.remove(&key(namespace, service));
    }

    pub fn append(&self, namespace: &str, service: &str, entry: LogEntry) {
        let mut logs = self.lock();
        let key = key(namespace, service);
        if logs.deleted.contains(&key) {
            return;
        }
        let log = logs
            .by_service
            .entry(key)
            .or_insert_with(|| ServiceLog { backlog: VecDeque::with_capacity(64), live: broadcast::channel(1024).0 });
        if log.backlog.len() == BACKLOG {
            log.backlog.pop_front();
        }
        log.backlog.push_back(entry.clone());
        let _ = log.live.send(entry);
    }

    /// A line written by serval itself about an instance.
    pub fn platform(&self, namespace: &str, service: &str, instance: &str, text: String) {
        tracing::info!("{namespace}/{service} {instance}: {text}");
        let entry = LogEntry { at: SystemTime::now(), instance: instance.into(), stream: LogStream::Platform, text };
        self.append(namespace, service, entry);
    }

    /// A sink for one service's instances.
    pub fn sink(&self, namespace: &str, service: &str) -> LogSink {
        let book = self.clone();
        let (namespace, service) = (namespace.to_string(), service.to_string());
        Arc::new(move |line: LogLine| {
            let entry = LogEntry { at: line.at, instance: line.instance, stream: line.stream, text: line.text };
            book.append(&namespace, &service, entry);
        })
    }

    /// The last `tail` lines and, atomically with them, a subscription to the lines after.
    pub fn read(&self, namespace: &str, service: &str, tail: usize) -> (Vec<LogEntry>, broadcast::Receiver<LogEntry>) {
        let mut logs = self.lock();
        let log = logs
            .by_service
            .entry(key(namespace, service))
            .or_insert_with(|| ServiceLog { backlog: VecDeque::new(), live: broadcast::channel(1024).0 });
        let skip = log.backlog.len().saturating_sub(tail);
        (log.backlog.iter().skip(skip).cloned().collect(), log.live.subscribe())
    }
}
