//! The store's seams: what the platform asks of durable state, as traits, so that the
//! SQLite store serves a server, the in-memory one ([`crate::MemoryStore`]) serves tests,
//! and cluster mode can later put etcd (resources) and NATS JetStream (logs) behind the
//! same calls.
//!
//! Writes go through [`Durable::write`]: a batch of [`WriteOp`]s that commits atomically
//! (a trigger and its cursor, a broker's deletion and its log's), durable when it returns;
//! or, for what is redone when lost, [`Durable::write_unsynced`].

use std::future::Future;
use std::pin::Pin;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{StoreError, StoredEvent, TooOld, WatchEvent, Watcher, WriteOp};

/// A boxed future, as the traits return them (they are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Atomic, durable batches of writes.
pub trait Durable: Send + Sync {
    /// Commits `ops` atomically, after every write called before; returns once they are
    /// durable (fsynced): what a client is answered for.
    fn write(&self, ops: Vec<WriteOp>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Commits `ops` atomically, after every write called before; returns once they
    /// survive the server's crash (`kill -9`), but not yet a power loss: the next
    /// [`Durable::write`]'s fsync (or a checkpoint) covers them. A power loss loses the
    /// last commits, never one while keeping a later one; so this is for writes that are
    /// redone when lost — an event a dispatcher hands from one log to the next before the
    /// cursor write that covers it, cursors themselves, compaction — never for one a client
    /// is answered for. Without such a distinction (other stores), the same as `write`.
    fn write_unsynced(&self, ops: Vec<WriteOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.write(ops)
    }

    /// Transactions committed so far (for metrics).
    fn commits(&self) -> u64;
}

/// Kubernetes-shaped documents by kind, namespace and name, each with the
/// `metadata.resourceVersion` of its last write, and the feed of their changes.
pub trait ResourceStore: Durable {
    fn get_document(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<Value>, StoreError>;

    /// Of one namespace (or all), of one owner when given, ordered by namespace and name.
    fn list_documents(
        &self,
        kind: &str,
        namespace: Option<&str>,
        owner: Option<&str>,
    ) -> Result<Vec<Value>, StoreError>;

    /// The changes of `kind` (in `namespace`, or all) after version `after` (kept for the
    /// last changes only: older is [`TooOld`]) and the live ones that follow. Without
    /// `after`, only the changes from now on.
    fn watch(
        &self,
        kind: &str,
        namespace: Option<&str>,
        after: Option<i64>,
    ) -> Result<(Vec<WatchEvent>, Watcher), TooOld>;
}

/// Append-only logs keyed by a log id, with positions (`seq`) increasing across all logs,
/// and consumers' cursors keyed by a consumer id. Appends, cursor moves and compaction are
/// [`WriteOp`]s.
pub trait EventLog: Durable {
    /// Entries of `log` after `after`, oldest first, at most `limit`.
    fn events_after(&self, log: &str, after: i64, limit: usize) -> Result<Vec<StoredEvent>, StoreError>;

    fn count_events_after(&self, log: &str, after: i64) -> Result<u64, StoreError>;

    /// How far `consumer` has handled its log (0: nothing yet).
    fn cursor(&self, consumer: &str) -> Result<i64, StoreError>;

    fn first_event_seq(&self, log: &str) -> Result<Option<i64>, StoreError>;

    /// The position of the `n`-th newest entry of `log` (1: the newest).
    fn nth_newest_event_seq(&self, log: &str, n: u32) -> Result<Option<i64>, StoreError>;

    /// The newest position of all logs (0 when empty); a new consumer starts there.
    fn last_event_seq(&self) -> Result<i64, StoreError>;
}

/// One entry of a key-value store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub value: Vec<u8>,
    /// Its last write's version (its ETag); versions only grow, across all stores.
    pub version: i64,
    /// When it expires (unix ms).
    pub expires_at: Option<i64>,
}

/// Key-value stores (`<namespace>/<store>`) of entries; writes are [`WriteOp`]s
/// (`kv_put`, `kv_delete`, `kv_clear`). Reads skip entries expired by `now_ms`.
pub trait KeyValues: Durable {
    fn kv_get(&self, store: &str, key: &str, now_ms: i64) -> Result<Option<KvEntry>, StoreError>;

    /// Keys of `store` starting with `prefix`, after `after`, in order, at most `limit`.
    fn kv_keys(
        &self,
        store: &str,
        prefix: &str,
        after: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError>;

    /// The highest version of any entry (0: none).
    fn kv_last_version(&self) -> Result<i64, StoreError>;
}

/// Everything the platform keeps: resources, logs and key-value entries in one store, so
/// that one batch may write them together.
pub trait Storage: ResourceStore + EventLog + KeyValues {}

impl<S: ResourceStore + EventLog + KeyValues> Storage for S {}

/// Typed reads over any [`ResourceStore`].
pub trait ResourceStoreExt: ResourceStore {
    fn get<T: DeserializeOwned>(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<T>, StoreError> {
        self.get_document(kind, namespace, name)?.map(|d| typed(kind, namespace, name, d)).transpose()
    }

    fn list<T: DeserializeOwned>(&self, kind: &str, namespace: Option<&str>) -> Result<Vec<T>, StoreError> {
        self.list_documents(kind, namespace, None)?.into_iter().map(|d| typed_listed(kind, d)).collect()
    }

    /// The resources of `kind` in `namespace` that belong to `owner`, ordered by name.
    fn list_owned<T: DeserializeOwned>(&self, kind: &str, namespace: &str, owner: &str) -> Result<Vec<T>, StoreError> {
        self.list_documents(kind, Some(namespace), Some(owner))?.into_iter().map(|d| typed_listed(kind, d)).collect()
    }
}

impl<S: ResourceStore + ?Sized> ResourceStoreExt for S {}

fn typed<T: DeserializeOwned>(kind: &str, namespace: &str, name: &str, document: Value) -> Result<T, StoreError> {
    serde_json::from_value(document).map_err(|source| StoreError::Corrupt {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        source,
    })
}

fn typed_listed<T: DeserializeOwned>(kind: &str, document: Value) -> Result<T, StoreError> {
    let meta = &document["metadata"];
    let (namespace, name) =
        (meta["namespace"].as_str().unwrap_or("").to_string(), meta["name"].as_str().unwrap_or("").to_string());
    typed(kind, &namespace, &name, document)
}
