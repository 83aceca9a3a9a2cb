//! The single writer thread: group commit of concurrent write requests, fsynced when one of
//! them asks for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::StoreError;
use crate::feed::{Change, ChangeType, Feed};

/// One change inside a write request; all ops of one request commit atomically.
#[derive(Debug, Clone)]
pub enum WriteOp {
    Put { kind: String, namespace: String, name: String, owner: Option<String>, body: String },
    Delete { kind: String, namespace: String, name: String },
    AppendEvent { log: String, body: String },
    DeleteEvents { log: String },
    DeleteEventsUpTo { log: String, seq: i64, limit: u32 },
    SetCursor { consumer: String, seq: Option<i64> },
    DeleteCursors { prefix: String },
    KvPut { store: String, key: String, value: Vec<u8>, version: i64, expires_at: Option<i64> },
    KvDelete { store: String, key: String },
    KvClear { store: Option<String>, expired_by: Option<i64> },
}

struct Request {
    ops: Vec<WriteOp>,
    /// Answered only once fsynced ([`crate::Durable::write`]); otherwise once in the WAL
    /// ([`crate::Durable::write_unsynced`]).
    synced: bool,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Most requests one transaction takes; bounds the latency of the first one.
const MAX_BATCH: usize = 1024;

/// A commit slower than this is logged: every write in it waited that long.
const SLOW_COMMIT: Duration = Duration::from_millis(100);

/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// WAL size (pages of 4 KiB) at which the writer checkpoints itself.
const WAL_BACKSTOP_PAGES: i64 = 8192;

pub(crate) struct Writer {
    tx: mpsc::Sender<Request>,
    counts: Arc<Counts>,
}

/// Transactions committed, and how many of them were fsynced.
#[derive(Default)]
struct Counts {
    batches: AtomicU64,
    synced: AtomicU64,
}

impl Writer {
    /// Starts the writer thread on `conn` and the checkpointer thread on `checkpoints`, a
    /// second connection to the same database. SQLite would otherwise checkpoint inside the
    /// commit that crosses 1 000 WAL pages, and every write waiting behind that commit would
    /// wait for the checkpoint's copying and fsyncs too. A passive checkpoint on its own
    /// connection runs beside the writer (WAL allows it) and never blocks it. The writer
    /// still checkpoints a WAL grown past [`WAL_BACKSTOP_PAGES`]; the frames are copied by
    /// then, so that is quick, and it lets the next commit start the WAL file over, which
    /// under constant load might otherwise never happen.
    pub(crate) fn start(conn: Connection, checkpoints: Connection, feed: Arc<Feed>) -> rusqlite::Result<Writer> {
        conn.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)?;
        let (tx, rx) = mpsc::channel();
        let (wrote, written) = mpsc::sync_channel(1);
        let counts = Arc::new(Counts::default());
        let counter = counts.clone();
        std::thread::Builder::new()
            .name("serval-store-writer".into())
            .spawn(move || run(conn, rx, &counter, &wrote, &feed))
            .expect("spawning the store writer thread must succeed at startup");
        std::thread::Builder::new()
            .name("serval-store-checkpointer".into())
            .spawn(move || checkpoint(&checkpoints, &written))
            .expect("spawning the store checkpointer thread must succeed at startup");
        Ok(Writer { tx, counts })
    }

    /// Commits `ops` after everything submitted before; answers once they are fsynced
    /// (`synced`) or once they are in the WAL.
    pub(crate) async fn submit(&self, ops: Vec<WriteOp>, synced: bool) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Request { ops, synced, done }).map_err(|_| StoreError::WriterGone)?;
        wait.await.map_err(|_| StoreError::WriterGone)?
    }

    pub(crate) fn batches(&self) -> u64 {
        self.counts.batches.load(Ordering::Relaxed)
    }

    pub(crate) fn synced_batches(&self) -> u64 {
        self.counts.synced.load(Ordering::Relaxed)
    }
}

/// The connection's `synchronous` setting: FULL fsyncs the WAL at every commit, NORMAL
/// only before a checkpoint. In WAL mode a commit is in the WAL file when it returns under
/// either (it survives the process's crash), and a power loss loses a suffix of commits,
/// never one with a later one kept: the fsync of a FULL commit makes every commit before it
/// durable too.
fn set_synchronous(conn: &Connection, full: bool) -> rusqlite::Result<()> {
    let sql = if full { "PRAGMA synchronous = FULL" } else { "PRAGMA synchronous = NORMAL" };
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn run(mut conn: Connection, rx: mpsc::Receiver<Request>, counts: &Counts, wrote: &mpsc::SyncSender<()>, feed: &Feed) {
    // As `open_connection` left it.
    let mut full = true;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let began = Instant::now();
        // One request answered only once fsynced makes the whole batch fsynced.
        let synced = batch.iter().any(|r| r.synced);
        if synced != full {
            if let Err(e) = set_synchronous(&conn, synced) {
                tracing::error!("store: setting synchronous: {e}");
                for request in batch {
                    let _ = request.done.send(Err(StoreError::Sqlite(clone_err(&e))));
                }
                continue;
            }
            full = synced;
        }
        let (results, changes) = commit(&mut conn, &batch);
        if !changes.is_empty() {
            feed.publish(changes);
        }
        let took = began.elapsed();
        if took >= SLOW_COMMIT {
            tracing::warn!("store commit of {} writes took {} ms", batch.len(), took.as_millis());
        }
        counts.batches.fetch_add(1, Ordering::Relaxed);
        if synced {
            counts.synced.fetch_add(1, Ordering::Relaxed);
        }
        // Full means a signal is already pending: the checkpointer will see this commit too.
        let _ = wrote.try_send(());
        for (request, result) in batch.into_iter().zip(results) {
            // The caller may have gone away (request cancelled); its write still landed.
            let _ = request.done.send(result);
        }
    }
}

/// Checkpoints (passively) after commits, at most every [`CHECKPOINT_EVERY`], until the
/// writer stops.
fn checkpoint(conn: &Connection, written: &mpsc::Receiver<()>) {
    while written.recv().is_ok() {
        let began = Instant::now();
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!("store checkpoint failed: {e}");
        }
        std::thread::sleep(CHECKPOINT_EVERY.saturating_sub(began.elapsed()));
    }
}

/// Applies a batch of requests in one transaction (one commit, at most one fsync); also returns
/// the resource changes it committed, in order. All of them at once first; when one of
/// them fails (rare: a constraint), the batch is rolled back and goes again with each
/// request in its own savepoint, so that the bad one fails alone. (A savepoint per request
/// always would cost two statements more per request, a quarter of the writer's time
/// under single-event appends.)
fn commit(conn: &mut Connection, batch: &[Request]) -> (Vec<Result<(), StoreError>>, Vec<Change>) {
    let all_at_once = (|| -> rusqlite::Result<Vec<Change>> {
        let tx = conn.transaction()?;
        let mut changes = Vec::new();
        for request in batch {
            for op in &request.ops {
                changes.extend(apply(&tx, op)?);
            }
        }
        tx.commit()?;
        Ok(changes)
    })();
    match all_at_once {
        Ok(changes) => (batch.iter().map(|_| Ok(())).collect(), changes),
        Err(_) => commit_each(conn, batch),
    }
}

/// Applies every request in its own savepoint inside one transaction, so one bad request
/// fails alone while the rest share the single commit (and fsync).
/// Also returns the resource changes the transaction committed, in order.
fn commit_each(conn: &mut Connection, batch: &[Request]) -> (Vec<Result<(), StoreError>>, Vec<Change>) {
    let mut tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            return (batch.iter().map(|_| Err(StoreError::Sqlite(clone_err(&e)))).collect(), Vec::new());
        }
    };
    let mut results = Vec::with_capacity(batch.len());
    let mut changes = Vec::new();
    for request in batch {
        let mut request_changes = Vec::new();
        let applied = (|| -> rusqlite::Result<()> {
            let sp = tx.savepoint()?;
            for op in &request.ops {
                request_changes.extend(apply(&sp, op)?);
            }
            sp.commit()
        })();
        if applied.is_ok() {
            changes.append(&mut request_changes);
        }
        results.push(applied.map_err(StoreError::Sqlite));
    }
    if let Err(e) = tx.commit() {
        tracing::error!("store commit failed: {e}");
        return (batch.iter().map(|_| Err(StoreError::Sqlite(clone_err(&e)))).collect(), Vec::new());
    }
    (results, changes)
}

fn next_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("UPDATE counters SET value = value + 1 WHERE name = 'resourceVersion' RETURNING value")?
        .query_row([], |r| r.get(0))
}

/// Applies one op; a write or delete of a resource returns its change for the feed.
fn apply(conn: &Connection, op: &WriteOp) -> rusqlite::Result<Option<Change>> {
    use rusqlite::OptionalExtension;
    match op {
        WriteOp::Put { kind, namespace, name, owner, body } => {
            let existed: bool = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM resources WHERE kind = ?1 AND namespace = ?2 AND name = ?3)",
                )?
                .query_row(params![kind, namespace, name], |r| r.get(0))?;
            let version = next_version(conn)?;
            conn.prepare_cached(
                "INSERT INTO resources (kind, namespace, name, body, owner, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (kind, namespace, name)
                 DO UPDATE SET body = excluded.body, owner = COALESCE(excluded.owner, resources.owner),
                               version = excluded.version",
            )?
            .execute(params![kind, namespace, name, body, owner, version])?;
            let change = if existed { ChangeType::Modified } else { ChangeType::Added };
            return Ok(Some(Change {
                kind: kind.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
                version,
                change,
                body: body.clone(),
            }));
        }
        WriteOp::Delete { kind, namespace, name } => {
            let deleted: Option<String> = conn
                .prepare_cached(
                    "DELETE FROM resources WHERE kind = ?1 AND namespace = ?2 AND name = ?3 RETURNING body",
                )?
                .query_row(params![kind, namespace, name], |r| r.get(0))
                .optional()?;
            let Some(body) = deleted else { return Ok(None) };
            let version = next_version(conn)?;
            let (namespace, name) = (namespace.clone(), name.clone());
            return Ok(Some(Change {
                kind: kind.clone(),
                namespace,
                name,
                version,
                change: ChangeType::Deleted,
                body,
            }));
        }
        WriteOp::AppendEvent { log, body } => {
            conn.prepare_cached("INSERT INTO events (log, body) VALUES (?1, ?2)")?.execute(params![log, body])?;
        }
        WriteOp::SetCursor { consumer, seq: Some(seq) } => {
            conn.prepare_cached(
                "INSERT INTO cursors (consumer, seq) VALUES (?1, ?2)
                 ON CONFLICT (consumer) DO UPDATE SET seq = excluded.seq",
            )?
            .execute(params![consumer, seq])?;
        }
        WriteOp::SetCursor { consumer, seq: None } => {
            conn.prepare_cached("DELETE FROM cursors WHERE consumer = ?1")?.execute(params![consumer])?;
        }
        WriteOp::DeleteCursors { prefix } => {
            // `consumer` between the prefix and the prefix followed by the highest character.
            conn.prepare_cached("DELETE FROM cursors WHERE consumer >= ?1 AND consumer < ?1 || char(1114111)")?
                .execute(params![prefix])?;
        }
        WriteOp::KvPut { store, key, value, version, expires_at } => {
            conn.prepare_cached(
                "INSERT INTO kv (store, key, value, version, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (store, key) DO UPDATE SET value = excluded.value, version = excluded.version,
                 expires_at = excluded.expires_at",
            )?
            .execute(params![store, key, value, version, expires_at])?;
        }
        WriteOp::KvDelete { store, key } => {
            conn.prepare_cached("DELETE FROM kv WHERE store = ?1 AND key = ?2")?.execute(params![store, key])?;
        }
        WriteOp::KvClear { store, expired_by } => {
            conn.prepare_cached(
                "DELETE FROM kv WHERE (?1 IS NULL OR store = ?1) AND (?2 IS NULL OR expires_at <= ?2)",
            )?
            .execute(params![store, expired_by])?;
        }
        WriteOp::DeleteEventsUpTo { log, seq, limit } => {
            conn.prepare_cached(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events
                 WHERE log = ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3)",
            )?
            .execute(params![log, seq, limit])?;
        }
        WriteOp::DeleteEvents { log } => {
            conn.prepare_cached("DELETE FROM events WHERE log = ?1")?.execute(params![log])?;
        }
    }
    Ok(None)
}

fn clone_err(e: &rusqlite::Error) -> rusqlite::Error {
    rusqlite::Error::InvalidParameterName(e.to_string())
}
