//! Where a serval server's CPU goes, by thread, from `/proc`: the benchmarks print it
//! beside their figures.

use std::collections::BTreeMap;
use std::time::Duration;

/// CPU time (user + system) of a process, by thread name: where the server's time goes.
/// (`ServalServer::cpu_time` counts user time only.)
#[derive(Clone, Default)]
pub struct Cpu {
    pub total: Duration,
    pub threads: BTreeMap<String, Duration>,
}

/// utime + stime of a `/proc/.../stat` line (fields 14 and 15, clock ticks of 10 ms).
fn stat_cpu(stat: &str) -> Duration {
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
        .unwrap_or_default();
    Duration::from_millis(10 * (fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)))
}

impl Cpu {
    pub fn of(pid: u32) -> Cpu {
        let total = stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default());
        let mut threads = BTreeMap::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let name = match comm.trim() {
                "tokio-runtime-w" | "tokio-rt-worker" => "tokio workers",
                "serval-store-wr" => "store writer",
                "serval-store-ch" => "store checkpointer",
                "serval-gateway-" => "gateway threads",
                "serval" => "main thread",
                other => other,
            };
            let cpu = stat_cpu(&std::fs::read_to_string(task.path().join("stat")).unwrap_or_default());
            *threads.entry(name.to_string()).or_default() += cpu;
        }
        Cpu { total, threads }
    }

    pub fn since(&self, before: &Cpu) -> Cpu {
        let threads = self
            .threads
            .iter()
            .map(|(name, t)| (name.clone(), t.saturating_sub(before.threads.get(name).copied().unwrap_or_default())))
            .collect();
        Cpu { total: self.total.saturating_sub(before.total), threads }
    }

    pub fn add(&mut self, other: &Cpu) {
        self.total += other.total;
        for (name, t) in &other.threads {
            *self.threads.entry(name.clone()).or_default() += *t;
        }
    }

    /// "1.23 cores (tokio workers 0.80, store writer 0.30, ...)" over `wall`.
    pub fn describe(&self, wall: Duration) -> String {
        let cores = |t: &Duration| t.as_secs_f64() / wall.as_secs_f64();
        let mut threads: Vec<_> = self.threads.iter().filter(|(_, t)| !t.is_zero()).collect();
        threads.sort_by(|a, b| b.1.cmp(a.1));
        let parts: Vec<String> = threads.iter().map(|(name, t)| format!("{name} {:.2}", cores(t))).collect();
        format!("{:.2} cores ({})", cores(&self.total), parts.join(", "))
    }
}

/// The serval server: the child of this process named `serval`.
pub fn serval_pid() -> u32 {
    let mut children = String::new();
    for task in std::fs::read_dir("/proc/self/task").expect("own tasks").flatten() {
        children += &std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.push(' ');
    }
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "serval"))
        .expect("the serval server process")
}
