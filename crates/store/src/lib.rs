//! Durable state of serval: one SQLite database (WAL mode) in the data directory.
//!
//! Owns: the schema, its migrations, every SQL statement of the project, group commit
//! (one writer thread batches concurrent writes into one transaction and one fsync — no
//! fsync when every write in it is redone if lost; each caller is answered only after its
//! batch committed), resource versions, and the feed of
//! committed resource changes that watches read.
//! Must not depend on: tokio beyond its channels, the network, or any serval crate: it
//! stores resources as JSON documents keyed by a kind *string*, namespace and name, and
//! knows no domain kind (the kinds are the model's and the platform's registry's).

mod feed;
mod memory;
mod seams;
mod writer;

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use feed::{Change, Feed};
pub use feed::{ChangeType, TooOld};
pub use memory::MemoryStore;
pub use seams::{BoxFuture, Durable, EventLog, KeyValues, KvEntry, ResourceStore, ResourceStoreExt, Storage};
pub use writer::WriteOp;

/// One entry of an event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position among the entries of all logs; increasing in acceptance order.
    pub seq: i64,
    /// The event in the CloudEvents JSON format.
    pub body: String,
}

/// Errors of the store crate.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored {kind} {namespace}/{name} is not valid JSON: {source}")]
    Corrupt { kind: String, namespace: String, name: String, source: serde_json::Error },
    #[error("cannot encode resource: {0}")]
    Encode(serde_json::Error),
    #[error("the store's writer thread has stopped")]
    WriterGone,
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
}

const SCHEMA: &[&str] = &[
    // version 1
    "CREATE TABLE resources (
        kind TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (kind, namespace, name)
    ) WITHOUT ROWID;",
    // version 2: brokers' durable event logs
    "CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        namespace TEXT NOT NULL,
        broker TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX events_by_broker ON events (namespace, broker, seq);",
    // version 3: how far each trigger has delivered its broker's log
    "CREATE TABLE trigger_cursors (
        namespace TEXT NOT NULL,
        trigger TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (namespace, trigger)
    ) WITHOUT ROWID;",
    // version 4: the resource a resource belongs to (a revision's service), so that one
    // owner's resources are read without reading the namespace's; filled in for the
    // revisions stored before (the one place the store reads a label).
    "ALTER TABLE resources ADD COLUMN owner TEXT;
    UPDATE resources SET owner = json_extract(body, '$.metadata.labels.\"serving.knative.dev/service\"')
        WHERE kind = 'Revision';
    CREATE INDEX resources_by_owner ON resources (kind, namespace, owner);",
    // version 5: every write of a resource gets the next number of one counter, its
    // `metadata.resourceVersion` (Kubernetes' optimistic concurrency).
    "ALTER TABLE resources ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO counters (name, value) VALUES ('resourceVersion', 0);",
    // version 6: event logs keyed by a log id (`brokers/<ns>/<name>`, later channels, async
    // queues, journals) and cursors by a consumer id (`triggers/<ns>/<name>`), so that
    // every durable log shares one table and one mechanism. Positions (and the sequence
    // behind them, which compaction may have run ahead of the rows) are kept.
    "DROP INDEX events_by_broker;
    ALTER TABLE events ADD COLUMN log TEXT NOT NULL DEFAULT '';
    UPDATE events SET log = 'brokers/' || namespace || '/' || broker;
    ALTER TABLE events DROP COLUMN namespace;
    ALTER TABLE events DROP COLUMN broker;
    CREATE INDEX events_by_log ON events (log, seq);
    CREATE TABLE cursors (consumer TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO cursors (consumer, seq) SELECT 'triggers/' || namespace || '/' || trigger, seq FROM trigger_cursors;
    DROP TABLE trigger_cursors;",
    // version 7: key-value stores for functions (`<namespace>/<store>`): each entry with the
    // version its last write got (its ETag) and when it expires (unix ms; NULL: never).
    "CREATE TABLE kv (
        store TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        version INTEGER NOT NULL,
        expires_at INTEGER,
        PRIMARY KEY (store, key)
    ) WITHOUT ROWID;
    CREATE INDEX kv_by_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;",
];

/// Handle to the database; cheap to share behind an `Arc`.
pub struct Store {
    writer: writer::Writer,
    /// Read connections (WAL lets them read beside the writer): a read takes any free one,
    /// so that concurrent readers — gateway threads among them — do not wait for each other.
    readers: Vec<Mutex<Connection>>,
    feed: std::sync::Arc<Feed>,
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: every commit is fsynced before a caller is told it is durable (the writer
    // lowers it to NORMAL for a commit of unsynced writes only).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tx = conn.transaction()?;
    for (i, sql) in SCHEMA.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i64::try_from(i + 1).unwrap_or(i64::MAX))?;
    }
    tx.commit()?;
    Ok(())
}

/// The store holds users' environment values: its directory is the owner's alone (0700)
/// and so are the database and its WAL and shared-memory files (0600; SQLite gives the
/// files it creates the database file's mode, so the database is created with it first).
fn owner_only(dir: &Path, db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(db)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = db.with_file_name(format!("serval.db{suffix}"));
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

impl Store {
    /// Opens (creating and migrating if needed) `dir/serval.db`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::DataDir { path: dir.display().to_string(), source })?;
        let path = dir.join("serval.db");
        owner_only(dir, &path).map_err(|source| StoreError::DataDir { path: dir.display().to_string(), source })?;
        let mut write_conn = open_connection(&path)?;
        migrate(&mut write_conn)?;
        let count = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        let readers = (0..count.max(4)).map(|_| open_connection(&path).map(Mutex::new)).collect::<Result<_, _>>()?;
        let feed = std::sync::Arc::new(Feed::new());
        let writer = writer::Writer::start(write_conn, open_connection(&path)?, feed.clone())?;
        Ok(Store { writer, readers, feed })
    }

    /// Commits that were fsynced (those carrying a [`Durable::write`]), of [`Durable::commits`].
    pub fn fsynced_commits(&self) -> u64 {
        self.writer.synced_batches()
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        use std::sync::TryLockError;
        // A poisoned lock only means another reader panicked mid-query; the connection is fine.
        for reader in &self.readers {
            match reader.try_lock() {
                Ok(conn) => return Ok(f(&conn)?),
                Err(TryLockError::Poisoned(p)) => return Ok(f(&p.into_inner())?),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        // More reads at once than connections: wait for one, spread by thread.
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&std::thread::current().id(), &mut hasher);
        let index = (std::hash::Hasher::finish(&hasher) as usize) % self.readers.len();
        let conn = self.readers[index].lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&conn)?)
    }
}

impl Durable for Store {
    /// Group-committed with whatever other writes arrived meanwhile.
    fn write(&self, ops: Vec<WriteOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.writer.submit(ops, true))
    }

    /// Group-committed the same way; the commit is fsynced only when a [`Durable::write`]
    /// shares it, otherwise by the next one's (`synchronous=NORMAL` for that commit).
    fn write_unsynced(&self, ops: Vec<WriteOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.writer.submit(ops, false))
    }

    fn commits(&self) -> u64 {
        self.writer.batches()
    }
}

impl ResourceStore for Store {
    fn get_document(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let row: Option<(String, i64)> = self.read(|c| {
            c.prepare_cached("SELECT body, version FROM resources WHERE kind = ?1 AND namespace = ?2 AND name = ?3")?
                .query_row(params![kind, namespace, name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })?;
        row.map(|(b, version)| document(kind, namespace, name, &b, version)).transpose()
    }

    fn list_documents(
        &self,
        kind: &str,
        namespace: Option<&str>,
        owner: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        // One owner's resources through the owner index (a namespace may hold thousands).
        let sql = match owner {
            Some(_) => {
                "SELECT namespace, name, body, version FROM resources
                 WHERE kind = ?1 AND namespace = ?2 AND owner = ?3 ORDER BY name"
            }
            None => {
                "SELECT namespace, name, body, version FROM resources
                 WHERE kind = ?1 AND (?2 IS NULL OR namespace = ?2) ORDER BY namespace, name"
            }
        };
        let rows: Vec<(String, String, String, i64)> = self.read(|c| {
            let mut stmt = c.prepare_cached(sql)?;
            let to_row = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
            let rows = match owner {
                Some(owner) => stmt.query_map(params![kind, namespace, owner], to_row)?,
                None => stmt.query_map(params![kind, namespace], to_row)?,
            };
            rows.collect()
        })?;
        rows.iter().map(|(ns, name, body, version)| document(kind, ns, name, body, *version)).collect()
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

impl EventLog for Store {
    /// Entries of `log` appended after `after` (a `seq`), oldest first, at most `limit`.
    fn events_after(&self, log: &str, after: i64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT seq, body FROM events WHERE log = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows =
                stmt.query_map(params![log, after, limit], |r| Ok(StoredEvent { seq: r.get(0)?, body: r.get(1)? }))?;
            rows.collect()
        })
    }

    /// How many entries of `log` were appended after `after`.
    fn count_events_after(&self, log: &str, after: i64) -> Result<u64, StoreError> {
        let n: i64 = self.read(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM events WHERE log = ?1 AND seq > ?2")?
                .query_row(params![log, after], |r| r.get(0))
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The position up to which `consumer` has handled its log (0: none).
    fn cursor(&self, consumer: &str) -> Result<i64, StoreError> {
        let seq: Option<i64> = self.read(|c| {
            c.prepare_cached("SELECT seq FROM cursors WHERE consumer = ?1")?
                .query_row(params![consumer], |r| r.get(0))
                .optional()
        })?;
        Ok(seq.unwrap_or(0))
    }

    /// The oldest entry still in `log`.
    fn first_event_seq(&self, log: &str) -> Result<Option<i64>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT MIN(seq) FROM events WHERE log = ?1")?.query_row(params![log], |r| r.get(0))
        })
    }

    /// The position of the `n`-th newest entry of `log` (1: the newest), if it has that many.
    fn nth_newest_event_seq(&self, log: &str, n: u32) -> Result<Option<i64>, StoreError> {
        if n == 0 {
            return Ok(None);
        }
        self.read(|c| {
            c.prepare_cached("SELECT seq FROM events WHERE log = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2")?
                .query_row(params![log, n - 1], |r| r.get(0))
                .optional()
        })
    }

    /// The newest position of all logs (0 when empty); a new consumer starts there.
    fn last_event_seq(&self) -> Result<i64, StoreError> {
        self.read(|c| c.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0)))
    }
}

impl KeyValues for Store {
    fn kv_get(&self, store: &str, key: &str, now_ms: i64) -> Result<Option<KvEntry>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT value, version, expires_at FROM kv WHERE store = ?1 AND key = ?2
                 AND (expires_at IS NULL OR expires_at > ?3)",
            )?
            .query_row(params![store, key, now_ms], |r| {
                Ok(KvEntry { value: r.get(0)?, version: r.get(1)?, expires_at: r.get(2)? })
            })
            .optional()
        })
    }

    fn kv_keys(
        &self,
        store: &str,
        prefix: &str,
        after: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key FROM kv WHERE store = ?1 AND key > ?2 AND substr(key, 1, length(?3)) = ?3
                 AND (expires_at IS NULL OR expires_at > ?4) ORDER BY key LIMIT ?5",
            )?;
            let rows = stmt.query_map(params![store, after, prefix, now_ms, limit], |r| r.get(0))?;
            rows.collect()
        })
    }

    fn kv_last_version(&self) -> Result<i64, StoreError> {
        self.read(|c| c.query_row("SELECT COALESCE(MAX(version), 0) FROM kv", [], |r| r.get(0)))
    }
}

/// One watch event: its type and the document (with `metadata.resourceVersion`).
pub type WatchEvent = (ChangeType, serde_json::Value);

struct WatchFilter {
    kind: String,
    namespace: Option<String>,
}

impl WatchFilter {
    fn event(&self, change: &Change) -> Option<WatchEvent> {
        if change.kind != self.kind || self.namespace.as_ref().is_some_and(|ns| *ns != change.namespace) {
            return None;
        }
        let document = document(&self.kind, &change.namespace, &change.name, &change.body, change.version).ok()?;
        Some((change.change, document))
    }
}

/// The live part of a watch.
pub struct Watcher {
    live: tokio::sync::broadcast::Receiver<std::sync::Arc<Change>>,
    filter: WatchFilter,
}

impl Watcher {
    /// The next change of the watched resources; `None` when the store closed or this
    /// watcher fell too far behind (the client resumes from the last version it saw).
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            match self.live.recv().await {
                Ok(change) => {
                    if let Some(event) = self.filter.event(&change) {
                        return Some(event);
                    }
                }
                Err(_) => return None,
            }
        }
    }
}

/// The changes of `kind` (in `namespace`, or all) after `after` that `feed` keeps, and the
/// live ones that follow (see [`ResourceStore::watch`]).
fn watch_feed(
    feed: &Feed,
    kind: &str,
    namespace: Option<&str>,
    after: Option<i64>,
) -> Result<(Vec<WatchEvent>, Watcher), TooOld> {
    let (recent, live) = feed.watch(after)?;
    let filter = WatchFilter { kind: kind.to_string(), namespace: namespace.map(str::to_string) };
    let backlog = recent.iter().filter_map(|c| filter.event(c)).collect();
    Ok((backlog, Watcher { live, filter }))
}

/// A stored document with its version as `metadata.resourceVersion` (a string, as in
/// Kubernetes); documents are Kubernetes-shaped objects with a `metadata` object.
fn document(
    kind: &str,
    namespace: &str,
    name: &str,
    body: &str,
    version: i64,
) -> Result<serde_json::Value, StoreError> {
    let corrupt =
        |source| StoreError::Corrupt { kind: kind.into(), namespace: namespace.into(), name: name.into(), source };
    let mut document: serde_json::Value = serde_json::from_str(body).map_err(corrupt)?;
    if let Some(metadata) = document.get_mut("metadata").and_then(serde_json::Value::as_object_mut) {
        metadata.insert("resourceVersion".into(), serde_json::Value::String(version.to_string()));
    }
    Ok(document)
}

impl WriteOp {
    /// Inserts or replaces a resource (an existing one keeps its owner).
    pub fn put<T: Serialize>(kind: &str, namespace: &str, name: &str, value: &T) -> Result<WriteOp, StoreError> {
        Ok(WriteOp::Put {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            owner: None,
            body: serde_json::to_string(value).map_err(StoreError::Encode)?,
        })
    }

    /// Inserts or replaces a resource that belongs to `owner` (see [`Store::list_owned`]).
    pub fn put_owned<T: Serialize>(
        kind: &str,
        namespace: &str,
        name: &str,
        owner: &str,
        value: &T,
    ) -> Result<WriteOp, StoreError> {
        let mut op = WriteOp::put(kind, namespace, name, value)?;
        if let WriteOp::Put { owner: o, .. } = &mut op {
            *o = Some(owner.into());
        }
        Ok(op)
    }

    pub fn delete(kind: &str, namespace: &str, name: &str) -> WriteOp {
        WriteOp::Delete { kind: kind.into(), namespace: namespace.into(), name: name.into() }
    }

    /// Appends an entry to `log`.
    pub fn append_event(log: &str, body: String) -> WriteOp {
        WriteOp::AppendEvent { log: log.into(), body }
    }

    /// Records how far `consumer` has handled its log (`None` forgets the consumer).
    pub fn set_cursor(consumer: &str, seq: Option<i64>) -> WriteOp {
        WriteOp::SetCursor { consumer: consumer.into(), seq }
    }

    /// Forgets every consumer whose id starts with `prefix` (their owner is deleted).
    pub fn delete_cursors(prefix: &str) -> WriteOp {
        WriteOp::DeleteCursors { prefix: prefix.into() }
    }

    /// Writes a key-value entry (replacing it) with its version and expiry (unix ms).
    pub fn kv_put(store: &str, key: &str, value: Vec<u8>, version: i64, expires_at: Option<i64>) -> WriteOp {
        WriteOp::KvPut { store: store.into(), key: key.into(), value, version, expires_at }
    }

    /// Removes a key-value entry (nothing when absent).
    pub fn kv_delete(store: &str, key: &str) -> WriteOp {
        WriteOp::KvDelete { store: store.into(), key: key.into() }
    }

    /// Removes a whole key-value store, or the entries that expired by `expired_by`
    /// (unix ms) of every store.
    pub fn kv_clear(store: Option<&str>, expired_by: Option<i64>) -> WriteOp {
        WriteOp::KvClear { store: store.map(str::to_string), expired_by }
    }

    /// Drops a whole log (its owner is deleted).
    pub fn delete_events(log: &str) -> WriteOp {
        WriteOp::DeleteEvents { log: log.into() }
    }

    /// Drops the oldest entries of `log` up to `seq` (handled by every consumer), at most
    /// `limit` of them, so that one compaction never holds the writer for long.
    pub fn delete_events_up_to(log: &str, seq: i64, limit: u32) -> WriteOp {
        WriteOp::DeleteEventsUpTo { log: log.into(), seq, limit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_write_gets_a_higher_resource_version_across_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let version = |store: &Store, name: &str| -> u64 {
            let doc: serde_json::Value = store.get("Broker", "ns", name).expect("get").expect("stored");
            doc["metadata"]["resourceVersion"].as_str().expect("resourceVersion").parse().expect("number")
        };
        let doc = |n: u32| serde_json::json!({ "metadata": { "name": "b", "resourceVersion": "stale" }, "n": n });
        let first = {
            let store = Store::open(dir.path()).expect("open");
            store.write(vec![WriteOp::put("Broker", "ns", "b", &doc(1)).expect("encode")]).await.expect("write");
            let first = version(&store, "b");
            store.write(vec![WriteOp::put("Broker", "ns", "b", &doc(2)).expect("encode")]).await.expect("write");
            assert!(version(&store, "b") > first, "a rewrite gets a higher version, whatever the body says");
            first
        };
        let store = Store::open(dir.path()).expect("reopen");
        store.write(vec![WriteOp::put("Broker", "ns", "c", &doc(3)).expect("encode")]).await.expect("write");
        assert!(version(&store, "c") > first + 1, "the counter survives a restart");
        let listed: Vec<serde_json::Value> = store.list("Broker", Some("ns")).expect("list");
        assert!(listed.iter().all(|d| d["metadata"]["resourceVersion"] != "stale"));
    }

    #[tokio::test]
    async fn watches_replay_kept_changes_in_order_and_refuse_versions_no_longer_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let doc = |n: usize| serde_json::json!({ "metadata": { "name": "b" }, "n": n });
        let put = |n: usize| WriteOp::put("Broker", "ns", "b", &doc(n)).expect("encode");
        let (_, mut live) = store.watch("Broker", Some("ns"), None).expect("watch");
        store.write(vec![put(0)]).await.expect("write");
        store.write(vec![put(1), WriteOp::put("Trigger", "ns", "t", &doc(9)).expect("encode")]).await.expect("w");
        store.write(vec![WriteOp::delete("Broker", "ns", "b")]).await.expect("delete");
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (change, object) = live.next().await.expect("a change");
            seen.push((change, object["n"].clone(), object["metadata"]["resourceVersion"].clone()));
        }
        let types: Vec<ChangeType> = seen.iter().map(|(c, ..)| *c).collect();
        assert_eq!(types, [ChangeType::Added, ChangeType::Modified, ChangeType::Deleted], "triggers filtered out");
        assert_eq!(seen[2].1, 1, "a delete carries the last document");
        let first: i64 = seen[0].2.as_str().expect("version").parse().expect("number");
        let (replayed, _) = store.watch("Broker", Some("ns"), Some(first)).expect("resume");
        let replayed: Vec<ChangeType> = replayed.iter().map(|(c, _)| *c).collect();
        assert_eq!(replayed, [ChangeType::Modified, ChangeType::Deleted]);

        for n in 0..1100 {
            store.write(vec![put(n)]).await.expect("write");
        }
        assert!(store.watch("Broker", Some("ns"), Some(first)).is_err(), "too old");
        assert!(store.watch("Broker", Some("other"), None).is_ok());
    }

    #[tokio::test]
    async fn cursors_are_forgotten_by_prefix_in_both_stores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = Store::open(dir.path()).expect("open");
        let memory = crate::MemoryStore::default();
        let stores: [&dyn Storage; 2] = [&sqlite, &memory];
        for store in stores {
            let ids = ["sources/K/ns/a/x", "sources/K/ns/a/inbox", "sources/K/ns/ab/x", "sources/K/ns/b"];
            store.write(ids.iter().map(|id| WriteOp::set_cursor(id, Some(7))).collect()).await.expect("write");
            store.write(vec![WriteOp::delete_cursors("sources/K/ns/a/")]).await.expect("delete");
            let left: Vec<i64> = ids.iter().map(|id| store.cursor(id).expect("cursor")).collect();
            assert_eq!(left, [0, 0, 7, 7]);
        }
    }

    #[tokio::test]
    async fn key_values_expire_list_by_prefix_and_clear_in_both_stores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = Store::open(dir.path()).expect("open");
        let memory = crate::MemoryStore::default();
        let stores: [&dyn Storage; 2] = [&sqlite, &memory];
        for store in stores {
            let ops = vec![
                WriteOp::kv_put("ns/a", "user/1", b"one".to_vec(), 5, None),
                WriteOp::kv_put("ns/a", "user/2", b"two".to_vec(), 6, Some(1_000)),
                WriteOp::kv_put("ns/a", "user/3", b"three".to_vec(), 7, None),
                WriteOp::kv_put("ns/a", "visits", b"9".to_vec(), 8, None),
                WriteOp::kv_put("ns/b", "user/1", b"other".to_vec(), 9, None),
            ];
            store.write(ops).await.expect("write");
            let one = store.kv_get("ns/a", "user/1", 500).expect("get").expect("present");
            assert_eq!((one.value.as_slice(), one.version), (&b"one"[..], 5));
            assert!(store.kv_get("ns/a", "user/2", 500).expect("get").is_some());
            assert!(store.kv_get("ns/a", "user/2", 1_000).expect("get").is_none(), "expired");
            assert_eq!(store.kv_keys("ns/a", "user/", "", 10, 500).expect("keys"), ["user/1", "user/2", "user/3"]);
            assert_eq!(store.kv_keys("ns/a", "user/", "user/1", 1, 2_000).expect("keys"), ["user/3"]);
            assert_eq!(store.kv_last_version().expect("version"), 9);
            store
                .write(vec![WriteOp::kv_clear(None, Some(1_000)), WriteOp::kv_delete("ns/a", "visits")])
                .await
                .expect("w");
            assert_eq!(store.kv_keys("ns/a", "", "", 10, 0).expect("keys"), ["user/1", "user/3"]);
            store.write(vec![WriteOp::kv_clear(Some("ns/a"), None)]).await.expect("clear");
            assert!(store.kv_keys("ns/a", "", "", 10, 0).expect("keys").is_empty());
            assert_eq!(store.kv_keys("ns/b", "", "", 10, 0).expect("keys"), ["user/1"]);
        }
    }

    #[tokio::test]
    async fn put_get_list_delete_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            store
                .write(vec![
                    WriteOp::put("Service", "a", "x", &serde_json::json!({"n": 1})).expect("encode"),
                    WriteOp::put("Service", "b", "y", &serde_json::json!({"n": 2})).expect("encode"),
                    WriteOp::put("Revision", "a", "x-00001", &serde_json::json!({"n": 3})).expect("encode"),
                ])
                .await
                .expect("write");
            store.write(vec![WriteOp::delete("Service", "b", "y")]).await.expect("delete");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let all: Vec<serde_json::Value> = store.list("Service", None).expect("list");
        assert_eq!(all, vec![serde_json::json!({"n": 1})]);
        let one: Option<serde_json::Value> = store.get("Revision", "a", "x-00001").expect("get");
        assert_eq!(one, Some(serde_json::json!({"n": 3})));
        let none: Option<serde_json::Value> = store.get("Revision", "b", "x-00001").expect("get");
        assert_eq!(none, None);
    }

    #[tokio::test]
    async fn owned_resources_are_listed_by_owner_and_keep_it_when_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .write(vec![
                WriteOp::put_owned("Revision", "a", "x-00001", "x", &1).expect("encode"),
                WriteOp::put_owned("Revision", "a", "x-00002", "x", &2).expect("encode"),
                WriteOp::put_owned("Revision", "a", "y-00001", "y", &3).expect("encode"),
                WriteOp::put_owned("Revision", "b", "x-00001", "x", &4).expect("encode"),
            ])
            .await
            .expect("write");
        store.write(vec![WriteOp::put("Revision", "a", "x-00002", &5).expect("encode")]).await.expect("update");
        let owned: Vec<i32> = store.list_owned("Revision", "a", "x").expect("list");
        assert_eq!(owned, vec![1, 5]);
    }

    #[test]
    fn revisions_stored_before_owners_get_their_service_as_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("serval.db");
        {
            let conn = Connection::open(&path).expect("open");
            for sql in &SCHEMA[..3] {
                conn.execute_batch(sql).expect("old schema");
            }
            conn.pragma_update(None, "user_version", 3).expect("version");
            let body = r#"{"metadata":{"labels":{"serving.knative.dev/service":"x"}}}"#;
            conn.execute("INSERT INTO resources VALUES ('Revision', 'a', 'x-00001', ?1)", [body]).expect("insert");
        }
        let store = Store::open(dir.path()).expect("migrate");
        let owned: Vec<serde_json::Value> = store.list_owned("Revision", "a", "x").expect("list");
        assert_eq!(owned.len(), 1);
    }

    #[tokio::test]
    async fn broker_logs_and_trigger_cursors_become_logs_and_consumers_keeping_their_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("serval.db");
        {
            let conn = Connection::open(&path).expect("open");
            for sql in &SCHEMA[..5] {
                conn.execute_batch(sql).expect("old schema");
            }
            conn.pragma_update(None, "user_version", 5).expect("version");
            for n in 1..=4 {
                conn.execute("INSERT INTO events (namespace, broker, body) VALUES ('ns', 'b', ?1)", [format!("e{n}")])
                    .expect("insert");
            }
            // Compaction removed the newest rows' predecessors and a consumer is past them.
            conn.execute("DELETE FROM events WHERE seq >= 3", []).expect("compact");
            conn.execute("INSERT INTO trigger_cursors VALUES ('ns', 't', 4)", []).expect("cursor");
        }
        let store = Store::open(dir.path()).expect("migrate");
        let kept: Vec<String> =
            store.events_after("brokers/ns/b", 0, 10).expect("read").into_iter().map(|e| e.body).collect();
        assert_eq!(kept, ["e1", "e2"]);
        assert_eq!(store.cursor("triggers/ns/t").expect("cursor"), 4);
        store.write(vec![WriteOp::append_event("brokers/ns/b", "e5".into())]).await.expect("append");
        let after_cursor = store.events_after("brokers/ns/b", 4, 10).expect("read");
        assert_eq!(after_cursor.len(), 1, "a new entry lands after every position handed out before");
    }

    #[tokio::test]
    async fn the_data_directory_and_database_files_are_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let store = Store::open(&data).expect("open");
        store.write(vec![WriteOp::put("Service", "a", "x", &1).expect("encode")]).await.expect("write");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        for file in ["serval.db", "serval.db-wal", "serval.db-shm"] {
            assert_eq!(mode(&data.join(file)), 0o600, "{file}");
        }
    }

    #[tokio::test]
    async fn compaction_drops_the_oldest_events_of_one_broker_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        for n in 0..5 {
            store.write(vec![WriteOp::append_event("a", format!("a{n}"))]).await.expect("append a");
            store.write(vec![WriteOp::append_event("b", format!("b{n}"))]).await.expect("append b");
        }
        let a: Vec<i64> = store.events_after("a", 0, 10).expect("read").iter().map(|e| e.seq).collect();
        store.write(vec![WriteOp::delete_events_up_to("a", a[3], 2)]).await.expect("compact");
        let left: Vec<String> = store.events_after("a", 0, 10).expect("read").into_iter().map(|e| e.body).collect();
        assert_eq!(left, ["a2", "a3", "a4"], "the two oldest went (the limit)");
        store.write(vec![WriteOp::delete_events_up_to("a", a[3], 100)]).await.expect("compact");
        let left: Vec<String> = store.events_after("a", 0, 10).expect("read").into_iter().map(|e| e.body).collect();
        assert_eq!(left, ["a4"]);
        assert_eq!(store.count_events_after("b", 0).expect("count"), 5, "broker b untouched");
        assert_eq!(store.first_event_seq("a").expect("first"), Some(a[4]));
        assert_eq!(store.first_event_seq("none").expect("first"), None);
        assert_eq!(
            store.nth_newest_event_seq("b", 1).expect("newest"),
            store.events_after("b", 0, 10).expect("read").last().map(|e| e.seq)
        );
        assert_eq!(store.nth_newest_event_seq("b", 5).expect("5th"), store.first_event_seq("b").expect("first"));
        assert_eq!(store.nth_newest_event_seq("b", 6).expect("6th"), None);
    }

    #[tokio::test]
    async fn event_logs_are_ordered_per_broker_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            let ops = (0..5).map(|i| WriteOp::append_event(if i % 2 == 0 { "a" } else { "b" }, format!("{i}")));
            store.write(ops.collect()).await.expect("append");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let a = store.events_after("a", 0, 10).expect("read");
        assert_eq!(a.iter().map(|e| e.body.as_str()).collect::<Vec<_>>(), ["0", "2", "4"]);
        let later = store.events_after("a", a[0].seq, 1).expect("read");
        assert_eq!(later[0].body, "2");
        store.write(vec![WriteOp::delete_events("a")]).await.expect("delete");
        assert!(store.events_after("a", 0, 10).expect("read").is_empty());
        assert_eq!(store.events_after("b", 0, 10).expect("read").len(), 2);
    }

    #[tokio::test]
    async fn commits_are_checkpointed_into_the_database_file_off_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let db_size = || std::fs::metadata(dir.path().join("serval.db")).expect("db file").len();
        let before = db_size();
        let ops = (0..2_000).map(|i| WriteOp::append_event("b", format!("event {i:0>100}"))).collect();
        store.write(ops).await.expect("append");
        // The writer itself would only checkpoint past 8 192 WAL pages; these are ~60.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while db_size() <= before + 100_000 {
            assert!(std::time::Instant::now() < deadline, "the checkpointer copied nothing in 10 s");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn unsynced_writes_commit_in_order_and_are_fsynced_only_with_a_synced_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.write_unsynced(vec![WriteOp::append_event("a", "1".into())]).await.expect("append");
        store.write_unsynced(vec![WriteOp::set_cursor("c", Some(1))]).await.expect("cursor");
        assert_eq!((store.commits(), store.fsynced_commits()), (2, 0));
        // Readers see an unsynced commit at once.
        assert_eq!(store.events_after("a", 0, 10).expect("read")[0].body, "1");
        assert_eq!(store.cursor("c").expect("cursor"), 1);
        store.write(vec![WriteOp::append_event("a", "2".into())]).await.expect("append");
        assert_eq!((store.commits(), store.fsynced_commits()), (3, 1));
        // Back to unsynced after a synced commit, and both kinds in one batch are fsynced.
        store.write_unsynced(vec![WriteOp::append_event("a", "3".into())]).await.expect("append");
        assert_eq!((store.commits(), store.fsynced_commits()), (4, 1));
        let store = std::sync::Arc::new(store);
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let op = vec![WriteOp::append_event("b", i.to_string())];
                    if i == 0 { store.write(op).await } else { store.write_unsynced(op).await }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("join").expect("write");
        }
        assert!(store.fsynced_commits() >= 2, "the synced write was fsynced");
        assert_eq!(store.events_after("b", 0, 100).expect("read").len(), 50);
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        let bodies: Vec<_> = store.events_after("a", 0, 10).expect("read").into_iter().map(|e| e.body).collect();
        assert_eq!(bodies, ["1", "2", "3"]);
    }

    #[tokio::test]
    async fn concurrent_writes_are_group_committed_and_all_land() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = std::sync::Arc::new(Store::open(dir.path()).expect("open"));
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let op = WriteOp::put("Service", "ns", &format!("s{i}"), &i).expect("encode");
                store.write(vec![op]).await
            }));
        }
        for t in tasks {
            t.await.expect("join").expect("write");
        }
        let all: Vec<i32> = store.list("Service", Some("ns")).expect("list");
        assert_eq!(all.len(), 200);
        assert!(store.commits() < 200, "writes were batched: {} commits", store.commits());
    }
}
