//! [`Supervisor`]: keeps one task running per wanted key — started when it appears,
//! restarted when its plan's fingerprint changes, stopped when it goes away. Trigger
//! dispatchers and event sources are such tasks (later also channel subscriptions and
//! async queues).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// One task the caller wants running.
pub struct Wanted<P> {
    /// Its identity (`namespace/name`).
    pub key: String,
    /// A digest of what it runs: a different one restarts the task.
    pub fingerprint: String,
    pub plan: P,
}

/// The running tasks, by key.
#[derive(Default)]
pub struct Supervisor {
    running: Mutex<HashMap<String, (String, watch::Sender<bool>)>>,
}

impl Supervisor {
    /// Makes the running tasks match `wanted`: stops those no longer wanted or changed
    /// (their stop signal turns true), and calls `start` for each new or changed one with
    /// its stop signal.
    pub fn sync<P>(&self, wanted: Vec<Wanted<P>>, mut start: impl FnMut(&str, P, watch::Receiver<bool>)) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let wanted: HashMap<String, (String, P)> =
            wanted.into_iter().map(|w| (w.key, (w.fingerprint, w.plan))).collect();
        running.retain(|key, (fingerprint, stop)| {
            let keep = wanted.get(key).is_some_and(|(f, _)| f == fingerprint);
            if !keep {
                let _ = stop.send(true);
            }
            keep
        });
        for (key, (fingerprint, plan)) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            start(&key, plan, stopped);
            running.insert(key, (fingerprint, stop));
        }
    }

    /// Whether a task of `key` runs.
    #[cfg(test)]
    pub fn runs(&self, key: &str) -> bool {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).contains_key(key)
    }

    /// Stops every task.
    pub fn stop_all(&self) {
        for (_, (_, stop)) in self.running.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            let _ = stop.send(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_start_once_restart_on_a_new_fingerprint_and_stop_when_unwanted() {
        let supervisor = Supervisor::default();
        let mut stops = HashMap::new();
        let wanted = |pairs: &[(&str, &str)]| -> Vec<Wanted<()>> {
            pairs.iter().map(|(k, f)| Wanted { key: k.to_string(), fingerprint: f.to_string(), plan: () }).collect()
        };
        let mut started = Vec::new();
        supervisor.sync(wanted(&[("a", "1"), ("b", "1")]), |k, (), stop| {
            started.push(k.to_string());
            stops.insert(k.to_string(), stop);
        });
        started.sort();
        assert_eq!(started, ["a", "b"]);
        let mut again = Vec::new();
        supervisor.sync(wanted(&[("a", "1"), ("b", "2")]), |k, (), stop| {
            again.push(k.to_string());
            stops.insert(format!("{k}'"), stop);
        });
        assert_eq!(again, ["b"], "only the changed one restarts");
        assert!(*stops["b"].borrow(), "the old b was told to stop");
        assert!(!*stops["a"].borrow() && !*stops["b'"].borrow());
        supervisor.sync(wanted(&[("b", "2")]), |_, (), _| panic!("nothing new"));
        assert!(*stops["a"].borrow() && !supervisor.runs("a") && supervisor.runs("b"));
        supervisor.stop_all();
        assert!(*stops["b'"].borrow());
    }
}
