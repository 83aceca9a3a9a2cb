//! [`MemoryStore`]: the store's traits on plain maps, for tests that need the platform's
//! logic without a database file (nothing survives the process; everything else —
//! versions, owners, positions, cursors, the feed of changes — behaves as in SQLite).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::feed::{Change, ChangeType, Feed};
use crate::seams::{BoxFuture, Durable, EventLog, KeyValues, KvEntry, ResourceStore};
use crate::{StoreError, StoredEvent, TooOld, WatchEvent, Watcher, WriteOp, document, watch_feed};

struct Stored {
    body: String,
    owner: Option<String>,
    version: i64,
}

#[derive(Default)]
struct State {
    /// By (kind, namespace, name): ordered as SQLite lists them.
    resources: BTreeMap<(String, String, String), Stored>,
    /// By position: (log, body).
    events: BTreeMap<i64, (String, String)>,
    cursors: HashMap<String, i64>,
    /// By (store, key).
    kv: BTreeMap<(String, String), KvEntry>,
    last_seq: i64,
    last_version: i64,
}

/// The store's traits in memory.
pub struct MemoryStore {
    state: Mutex<State>,
    feed: Arc<Feed>,
    commits: AtomicU64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore { state: Mutex::default(), feed: Arc::new(Feed::new()), commits: AtomicU64::new(0) }
    }
}

impl MemoryStore {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn apply(&mut self, op: WriteOp, changes: &mut Vec<Change>) {
        match op {
            WriteOp::Put { kind, namespace, name, owner, body } => {
                self.last_version += 1;
                let key = (kind.clone(), namespace.clone(), name.clone());
                let (change, owner) = match self.resources.get(&key) {
                    Some(old) => (ChangeType::Modified, owner.or_else(|| old.owner.clone())),
                    None => (ChangeType::Added, owner),
                };
                let version = self.last_version;
                self.resources.insert(key, Stored { body: body.clone(), owner, version });
                changes.push(Change { kind, namespace, name, version, change, body });
            }
            WriteOp::Delete { kind, namespace, name } => {
                if let Some(old) = self.resources.remove(&(kind.clone(), namespace.clone(), name.clone())) {
                    self.last_version += 1;
                    let version = self.last_version;
                    changes.push(Change {
                        kind,
                        namespace,
                        name,
                        version,
                        change: ChangeType::Deleted,
                        body: old.body,
                    });
                }
            }
            WriteOp::AppendEvent { log, body } => {
                self.last_seq += 1;
                self.events.insert(self.last_seq, (log, body));
            }
            WriteOp::SetCursor { consumer, seq: Some(seq) } => {
                self.cursors.insert(consumer, seq);
            }
            WriteOp::SetCursor { consumer, seq: None } => {
                self.cursors.remove(&consumer);
            }
            WriteOp::KvPut { store, key, value, version, expires_at } => {
                self.kv.insert((store, key), KvEntry { value, version, expires_at });
            }
            WriteOp::KvDelete { store, key } => {
                self.kv.remove(&(store, key));
            }
            WriteOp::KvClear { store, expired_by } => self.kv.retain(|(s, _), entry| {
                let in_store = store.as_ref().is_none_or(|wanted| wanted == s);
                let expired = expired_by.is_none_or(|by| entry.expires_at.is_some_and(|at| at <= by));
                !(in_store && expired)
            }),
            WriteOp::DeleteCursors { prefix } => self.cursors.retain(|c, _| !c.starts_with(&prefix)),
            WriteOp::DeleteEvents { log } => self.events.retain(|_, (l, _)| *l != log),
            WriteOp::DeleteEventsUpTo { log, seq, limit } => {
                let doomed: Vec<i64> =
                    self.of_log(&log).filter(|(s, _)| *s <= seq).map(|(s, _)| s).take(limit as usize).collect();
                for s in doomed {
                    self.events.remove(&s);
                }
            }
        }
    }

    fn of_log<'a>(&'a self, log: &'a str) -> impl DoubleEndedIterator<Item = (i64, &'a str)> + 'a {
        self.events.iter().filter(move |(_, (l, _))| l == log).map(|(s, (_, b))| (*s, b.as_str()))
    }
}

impl Durable for MemoryStore {
    fn write(&self, ops: Vec<WriteOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut changes = Vec::new();
        {
            let mut state = self.state();
            for op in ops {
                state.apply(op, &mut changes);
            }
            // Published under the lock, as the SQLite writer publishes in commit order.
            if !changes.is_empty() {
                self.feed.publish(changes);
            }
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }

    fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

impl ResourceStore for MemoryStore {
    fn get_document(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<Value>, StoreError> {
        let state = self.state();
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        state.resources.get(&key).map(|s| document(kind, namespace, name, &s.body, s.version)).transpose()
    }

    fn list_documents(
        &self,
        kind: &str,
        namespace: Option<&str>,
        owner: Option<&str>,
    ) -> Result<Vec<Value>, StoreError> {
        let state = self.state();
        state
            .resources
            .iter()
            .filter(|((k, ns, _), s)| {
                k == kind && namespace.is_none_or(|n| n == ns) && owner.is_none_or(|o| s.owner.as_deref() == Some(o))
            })
            .map(|((_, ns, name), s)| document(kind, ns, name, &s.body, s.version))
            .collect()
    }

    fn watch(
        &self,
        kind: &str,
        namespace: Option<&str>,
        after: Option<i64>,
    ) -> Result<(Vec<WatchEvent>, Watcher), TooOld> {
        watch_feed(&self.feed, kind, namespace, after)
    }
}

impl EventLog for MemoryStore {
    fn events_after(&self, log: &str, after: i64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let state = self.state();
        Ok(state
            .of_log(log)
            .filter(|(s, _)| *s > after)
            .take(limit)
            .map(|(seq, body)| StoredEvent { seq, body: body.to_string() })
            .collect())
    }

    fn count_events_after(&self, log: &str, after: i64) -> Result<u64, StoreError> {
        Ok(self.state().of_log(log).filter(|(s, _)| *s > after).count() as u64)
    }

    fn cursor(&self, consumer: &str) -> Result<i64, StoreError> {
        Ok(self.state().cursors.get(consumer).copied().unwrap_or(0))
    }

    fn first_event_seq(&self, log: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.state().of_log(log).next().map(|(s, _)| s))
    }

    fn nth_newest_event_seq(&self, log: &str, n: u32) -> Result<Option<i64>, StoreError> {
        if n == 0 {
            return Ok(None);
        }
        Ok(self.state().of_log(log).rev().nth(n as usize - 1).map(|(s, _)| s))
    }

    fn last_event_seq(&self) -> Result<i64, StoreError> {
        let state = self.state();
        Ok(state.events.keys().next_back().copied().unwrap_or(0))
    }
}

impl KeyValues for MemoryStore {
    fn kv_get(&self, store: &str, key: &str, now_ms: i64) -> Result<Option<KvEntry>, StoreError> {
        let state = self.state();
        let entry = state.kv.get(&(store.to_string(), key.to_string()));
        Ok(entry.filter(|e| e.expires_at.is_none_or(|at| at > now_ms)).cloned())
    }

    fn kv_keys(
        &self,
        store: &str,
        prefix: &str,
        after: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let state = self.state();
        let from = (store.to_string(), after.to_string());
        let keys = state
            .kv
            .range(from..)
            .take_while(|((s, _), _)| s == store)
            .filter(|((_, k), e)| {
                k.as_str() > after && k.starts_with(prefix) && e.expires_at.is_none_or(|at| at > now_ms)
            })
            .map(|((_, k), _)| k.clone())
            .take(limit);
        Ok(keys.collect())
    }

    fn kv_last_version(&self) -> Result<i64, StoreError> {
        Ok(self.state().kv.values().map(|e| e.version).max().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::seams::{ResourceStoreExt, Storage};

    /// The same story told to both stores must end the same way.
    async fn story(store: &dyn Storage) -> Vec<String> {
        let mut seen = Vec::new();
        let doc = |name: &str, n: u32| serde_json::json!({ "metadata": { "name": name, "resourceVersion": "given" }, "n": n });
        let (_, mut watcher) = store.watch("Kind", Some("a"), None).expect("watch");
        let put = |ns: &str, name: &str, n: u32| WriteOp::put("Kind", ns, name, &doc(name, n)).expect("encode");
        store
            .write(vec![put("a", "x", 1), WriteOp::put_owned("Kind", "a", "y", "o", &doc("y", 2)).expect("e")])
            .await
            .expect("store");
        store.write(vec![put("a", "y", 3), put("b", "x", 4), WriteOp::delete("Kind", "a", "x")]).await.expect("store");
        for _ in 0..4 {
            let (change, object) = watcher.next().await.expect("a change");
            seen.push(format!("{} {} n={}", change.as_str(), object["metadata"]["name"], object["n"]));
        }
        assert!(matches!(store.watch("Kind", None, Some(0)), Ok((ref backlog, _)) if backlog.len() == 5));
        let owned: Vec<serde_json::Value> = store.list_owned("Kind", "a", "o").expect("owned");
        seen.push(format!("owned {:?}", owned.iter().map(|d| d["n"].clone()).collect::<Vec<_>>()));
        let all: Vec<serde_json::Value> = store.list("Kind", None).expect("list");
        let versions: std::collections::BTreeSet<&str> =
            all.iter().filter_map(|d| d["metadata"]["resourceVersion"].as_str()).collect();
        let ns: Vec<serde_json::Value> = all.iter().map(|d| d["n"].clone()).collect();
        seen.push(format!("listed {ns:?}, {} distinct versions", versions.len()));
        let one: Option<serde_json::Value> = store.get("Kind", "b", "x").expect("get");
        seen.push(format!("got {}", one.expect("stored")["n"]));

        for n in 0..6 {
            store
                .write(vec![WriteOp::append_event(if n % 2 == 0 { "l1" } else { "l2" }, format!("e{n}"))])
                .await
                .expect("store");
        }
        let l1: Vec<StoredEvent> = store.events_after("l1", 0, 10).expect("read");
        store
            .write(vec![WriteOp::set_cursor("c", Some(l1[1].seq)), WriteOp::delete_events_up_to("l1", l1[1].seq, 1)])
            .await
            .expect("store");
        seen.push(format!(
            "l1 {:?} pending {} first {} 2nd-newest {} last {} cursor {}",
            store.events_after("l1", 0, 10).expect("store").iter().map(|e| e.body.clone()).collect::<Vec<_>>(),
            store.count_events_after("l1", store.cursor("c").expect("store")).expect("store"),
            store.first_event_seq("l1").expect("store") == Some(l1[1].seq),
            store.nth_newest_event_seq("l1", 2).expect("store") == Some(l1[1].seq),
            store.last_event_seq().expect("store")
                == store.events_after("l2", 0, 10).expect("store").last().expect("store").seq,
            store.cursor("c").expect("store") == l1[1].seq,
        ));
        store.write(vec![WriteOp::delete_events("l2"), WriteOp::set_cursor("c", None)]).await.expect("store");
        seen.push(format!(
            "l2 {} cursor {}",
            store.count_events_after("l2", 0).expect("store"),
            store.cursor("c").expect("store")
        ));
        seen
    }

    #[tokio::test]
    async fn the_memory_store_behaves_as_the_sqlite_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = Store::open(dir.path()).expect("open");
        let expected = story(&sqlite).await;
        assert_eq!(
            expected[..4],
            ["ADDED \"x\" n=1", "ADDED \"y\" n=2", "MODIFIED \"y\" n=3", "DELETED \"x\" n=1"],
            "{expected:?}"
        );
        assert_eq!(story(&MemoryStore::default()).await, expected);
    }
}
