//! Key-value stores for functions: what serval's `SERVAL_KV_URL` endpoint does, minus HTTP.
//!
//! Owns: the limits (keys up to 256 bytes, values up to 1 MiB, as Spin's), versions (a
//! write's version is its ETag; versions only grow, across restarts), conditional writes
//! (`If-Match`, `If-None-Match: *`), atomic increments, TTLs and their sweep, listing by
//! prefix, and the tokens that scope a function to its namespace (and to the stores its
//! `serval.dev/kv-stores` annotation names). Writes to one key are serialized here (a lock
//! per key stripe) and acknowledged once durable in the store, so each key is
//! linearizable and an acknowledged write survives `kill -9`.
//! Must not depend on: HTTP, the control plane or a particular store (it takes
//! `dyn Storage`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serval_store::{KvEntry, Storage, StoreError, WriteOp};
use tokio::sync::Mutex;

/// The longest key, in bytes.
pub const MAX_KEY: usize = 256;
/// The largest value, in bytes.
pub const MAX_VALUE: usize = 1 << 20;
/// The most keys one listing returns.
pub const MAX_LIST: usize = 1000;
/// The store every namespace has.
pub const DEFAULT_STORE: &str = "default";
/// How often expired entries are removed (reads skip them before that).
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Lock stripes: writes to keys of one stripe are serialized.
const STRIPES: usize = 256;

/// What went wrong, for the HTTP layer to map to a status.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// 400, naming the field.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    /// 413.
    #[error("{field}: {message}")]
    TooLarge { field: &'static str, message: String },
    /// 401: no token, or not one serval issued.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a token of another namespace, or for other stores.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 412: `If-Match` or `If-None-Match` did not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 409: an increment of a value that is not an integer.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The condition of a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precondition {
    #[default]
    None,
    /// `If-Match: <version>`: only when the entry is at that version.
    IfMatch(i64),
    /// `If-None-Match: *`: only when there is no entry.
    IfAbsent,
}

/// The outcome of a put: the entry's new version and whether it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub version: i64,
    pub created: bool,
}

/// What a token lets its holder open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub namespace: String,
    /// `None`: every store of the namespace.
    pub stores: Option<Vec<String>>,
}

impl Scope {
    /// Whether `namespace/store` may be opened.
    pub fn allows(&self, namespace: &str, store: &str) -> Result<(), KvError> {
        if namespace != self.namespace {
            return Err(KvError::Forbidden(format!(
                "the token is for namespace {:?}, not {namespace:?}",
                self.namespace
            )));
        }
        match &self.stores {
            Some(stores) if !stores.iter().any(|s| s == store) => Err(KvError::Forbidden(format!(
                "the service may open only the stores {} (serval.dev/kv-stores), not {store:?}",
                stores.join(", ")
            ))),
            _ => Ok(()),
        }
    }
}

/// Issues and checks the tokens functions get (`SERVAL_KV_TOKEN`): `kv1.<namespace>.<stores
/// or *>.<HMAC-SHA256 of those, hex>`, under a key of the server's.
pub struct Tokens {
    key: aws_lc_rs::hmac::Key,
}

impl Tokens {
    pub fn new(secret: &[u8]) -> Tokens {
        Tokens { key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret) }
    }

    /// A token for `namespace`, limited to `stores` when given.
    pub fn issue(&self, namespace: &str, stores: Option<&[String]>) -> String {
        let stores = stores.map_or_else(|| "*".to_string(), |s| s.join(","));
        let claim = format!("kv1.{namespace}.{stores}");
        let tag = aws_lc_rs::hmac::sign(&self.key, claim.as_bytes());
        format!("{claim}.{}", hex(tag.as_ref()))
    }

    /// The scope of a token serval issued.
    pub fn verify(&self, token: &str) -> Result<Scope, KvError> {
        let bad = || KvError::Unauthorized("the token is not a key-value token of this server".into());
        let (claim, tag) = token.rsplit_once('.').ok_or_else(bad)?;
        let tag = unhex(tag).ok_or_else(bad)?;
        aws_lc_rs::hmac::verify(&self.key, claim.as_bytes(), &tag).map_err(|_| bad())?;
        let mut parts = claim.splitn(3, '.');
        let (Some("kv1"), Some(namespace), Some(stores)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let stores = (stores != "*").then(|| stores.split(',').map(str::to_string).collect());
        Ok(Scope { namespace: namespace.to_string(), stores })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// A page of keys, and the key to list after for the next page (when there may be more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub keys: Vec<String>,
    pub next: Option<String>,
}

/// The key-value stores of every namespace.
pub struct KeyValueStores {
    store: Arc<dyn Storage>,
    stripes: Vec<Mutex<()>>,
    last_version: AtomicI64,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// `<namespace>/<store>`, the store's id in the store.
fn store_id(namespace: &str, store: &str) -> String {
    format!("{namespace}/{store}")
}

/// Checks a key against the limits.
pub fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::Invalid { field: "key", message: "is empty".into() });
    }
    if key.len() > MAX_KEY {
        return Err(KvError::TooLarge { field: "key", message: format!("{} bytes, more than {MAX_KEY}", key.len()) });
    }
    if key.chars().any(char::is_control) {
        return Err(KvError::Invalid { field: "key", message: "holds a control character".into() });
    }
    Ok(())
}

/// Checks a value against the limit.
pub fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE {
        return Err(KvError::TooLarge {
            field: "value",
            message: format!("{} bytes, more than {MAX_VALUE}", value.len()),
        });
    }
    Ok(())
}

impl KeyValueStores {
    pub fn new(store: Arc<dyn Storage>) -> KeyValueStores {
        // Versions start above the clock's microseconds anyway; the stored highest only
        // matters after the clock went back.
        let stored = store.kv_last_version().unwrap_or_else(|e| {
            tracing::warn!("reading the highest key-value version: {e}");
            0
        });
        KeyValueStores {
            store,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            last_version: AtomicI64::new(stored.max(now_us())),
        }
    }

    /// The next version: above every one given before, and the clock's microseconds (so
    /// that versions keep growing across restarts, also past deleted entries').
    fn next_version(&self) -> i64 {
        let now = now_us();
        let previous = self.last_version.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some((v + 1).max(now)));
        previous.map_or(now, |v| (v + 1).max(now))
    }

    fn stripe(&self, id: &str, key: &str) -> &Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        (id, key).hash(&mut hasher);
        &self.stripes[(hasher.finish() as usize) % STRIPES]
    }

    pub fn get(&self, namespace: &str, store: &str, key: &str) -> Result<KvEntry, KvError> {
        check_key(key)?;
        self.store
            .kv_get(&store_id(namespace, store), key, now_ms())?
            .ok_or_else(|| KvError::NotFound(format!("key {key:?} is not in store {namespace}/{store}")))
    }

    /// Writes `value` when `condition` holds; `ttl` makes it expire.
    pub async fn put(
        &self,
        namespace: &str,
        store: &str,
        key: &str,
        value: Vec<u8>,
        condition: Precondition,
        ttl: Option<Duration>,
    ) -> Result<Written, KvError> {
        check_key(key)?;
        check_value(&value)?;
        let id = store_id(namespace, store);
        let _serialized = self.stripe(&id, key).lock().await;
        let current = self.store.kv_get(&id, key, now_ms())?;
        check_condition(condition, current.as_ref(), key)?;
        let version = self.next_version();
        let expires_at = ttl.map(|t| now_ms().saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX)));
        self.store.write(vec![WriteOp::kv_put(&id, key, value, version, expires_at)]).await?;
        Ok(Written { version, created: current.is_none() })
    }

    /// Removes a key (nothing when it is absent, unless `condition` asks for a version).
    pub async fn delete(
        &self,
        namespace: &str,
        store: &str,
        key: &str,
        condition: Precondition,
    ) -> Result<(), KvError> {
        check_key(key)?;
        let id = store_id(namespace, store);
        let _serialized = self.stripe(&id, key).lock().await;
        if condition != Precondition::None {
            let current = self.store.kv_get(&id, key, now_ms())?;
            check_condition(condition, current.as_ref(), key)?;
        }
        self.store.write(vec![WriteOp::kv_delete(&id, key)]).await?;
        Ok(())
    }

    /// Adds `delta` to the integer a key holds (0 when absent), atomically; its expiry is
    /// kept. Returns the new value.
    pub async fn increment(&self, namespace: &str, store: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        check_key(key)?;
        let id = store_id(namespace, store);
        let _serialized = self.stripe(&id, key).lock().await;
        let current = self.store.kv_get(&id, key, now_ms())?;
        let (base, expires_at) = match &current {
            None => (0, None),
            Some(entry) => {
                let text = std::str::from_utf8(&entry.value).unwrap_or_default().trim();
                let base = text.parse::<i64>().map_err(|_| {
                    KvError::Conflict(format!(
                        "key {key:?} holds a value that is not an integer; it cannot be incremented"
                    ))
                })?;
                (base, entry.expires_at)
            }
        };
        let value = base
            .checked_add(delta)
            .ok_or_else(|| KvError::Conflict(format!("key {key:?}: {base} + {delta} overflows a 64-bit integer")))?;
        let version = self.next_version();
        self.store.write(vec![WriteOp::kv_put(&id, key, value.to_string().into_bytes(), version, expires_at)]).await?;
        Ok(value)
    }

    /// Keys starting with `prefix`, after `after`, at most `limit` (up to [`MAX_LIST`]).
    pub fn keys(&self, namespace: &str, store: &str, prefix: &str, after: &str, limit: usize) -> Result<Keys, KvError> {
        let limit = limit.clamp(1, MAX_LIST);
        let keys = self.store.kv_keys(&store_id(namespace, store), prefix, after, limit, now_ms())?;
        let next = (keys.len() == limit).then(|| keys.last().cloned()).flatten();
        Ok(Keys { keys, next })
    }

    /// The writes that remove a whole store (committed with its deletion).
    pub fn clear(namespace: &str, store: &str) -> WriteOp {
        WriteOp::kv_clear(Some(&store_id(namespace, store)), None)
    }

    /// Removes expired entries, every [`SWEEP_EVERY`], until the process ends.
    pub async fn sweep_expired(self: Arc<Self>) {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            if let Err(e) = self.store.write(vec![WriteOp::kv_clear(None, Some(now_ms()))]).await {
                tracing::warn!("removing expired key-value entries: {e}");
            }
        }
    }
}

fn check_condition(condition: Precondition, current: Option<&KvEntry>, key: &str) -> Result<(), KvError> {
    match (condition, current) {
        (Precondition::None, _) => Ok(()),
        (Precondition::IfAbsent, None) => Ok(()),
        (Precondition::IfAbsent, Some(_)) => {
            Err(KvError::PreconditionFailed(format!("key {key:?} exists (If-None-Match: *)")))
        }
        (Precondition::IfMatch(wanted), Some(entry)) if entry.version == wanted => Ok(()),
        (Precondition::IfMatch(wanted), Some(entry)) => Err(KvError::PreconditionFailed(format!(
            "key {key:?} is at version {}, not {wanted} (If-Match)",
            entry.version
        ))),
        (Precondition::IfMatch(_), None) => {
            Err(KvError::PreconditionFailed(format!("key {key:?} does not exist (If-Match)")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores() -> Arc<KeyValueStores> {
        Arc::new(KeyValueStores::new(Arc::new(serval_store::MemoryStore::default())))
    }

    #[tokio::test]
    async fn conditional_writes_versions_and_increments() {
        let kv = stores();
        let first = kv.put("ns", "default", "k", b"a".to_vec(), Precondition::IfAbsent, None).await.expect("create");
        assert!(first.created);
        let again = kv.put("ns", "default", "k", b"b".to_vec(), Precondition::IfAbsent, None).await;
        assert!(matches!(again, Err(KvError::PreconditionFailed(_))));
        let stale = kv.put("ns", "default", "k", b"b".to_vec(), Precondition::IfMatch(first.version - 1), None).await;
        assert!(matches!(stale, Err(KvError::PreconditionFailed(_))));
        let second =
            kv.put("ns", "default", "k", b"b".to_vec(), Precondition::IfMatch(first.version), None).await.expect("cas");
        assert!(second.version > first.version && !second.created);
        assert_eq!(kv.get("ns", "default", "k").expect("get").value, b"b");
        assert!(matches!(kv.get("other", "default", "k"), Err(KvError::NotFound(_))), "namespaces are apart");
        assert!(matches!(kv.increment("ns", "default", "k", 1).await, Err(KvError::Conflict(_))));
        assert_eq!(kv.increment("ns", "default", "n", 5).await.expect("inc"), 5);
        assert_eq!(kv.increment("ns", "default", "n", -2).await.expect("inc"), 3);
        kv.delete("ns", "default", "k", Precondition::None).await.expect("delete");
        kv.delete("ns", "default", "k", Precondition::None).await.expect("idempotent");
        let gone = kv.delete("ns", "default", "k", Precondition::IfMatch(second.version)).await;
        assert!(matches!(gone, Err(KvError::PreconditionFailed(_))));
    }

    #[tokio::test]
    async fn concurrent_increments_and_creators_are_serialized() {
        let kv = stores();
        let incs = (0..50)
            .map(|_| {
                let kv = kv.clone();
                tokio::spawn(async move { kv.increment("ns", "default", "visits", 1).await })
            })
            .collect::<Vec<_>>();
        for inc in incs {
            inc.await.expect("join").expect("increment");
        }
        assert_eq!(kv.get("ns", "default", "visits").expect("get").value, b"50");
        let creators = (0..20)
            .map(|i| {
                let kv = kv.clone();
                tokio::spawn(async move {
                    kv.put("ns", "default", "leader", vec![i], Precondition::IfAbsent, None).await.is_ok()
                })
            })
            .collect::<Vec<_>>();
        let mut won = 0;
        for c in creators {
            won += usize::from(c.await.expect("join"));
        }
        assert_eq!(won, 1);
    }

    #[tokio::test]
    async fn limits_ttl_and_listing() {
        let kv = stores();
        let long = "k".repeat(MAX_KEY + 1);
        assert!(matches!(kv.get("ns", "default", &long), Err(KvError::TooLarge { field: "key", .. })));
        let big = vec![0u8; MAX_VALUE + 1];
        let too_big = kv.put("ns", "default", "k", big, Precondition::None, None).await;
        assert!(matches!(too_big, Err(KvError::TooLarge { field: "value", .. })));
        kv.put("ns", "default", "brief", b"x".to_vec(), Precondition::None, Some(Duration::from_millis(1)))
            .await
            .expect("put");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(matches!(kv.get("ns", "default", "brief"), Err(KvError::NotFound(_))), "expired");
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            kv.put("ns", "default", k, b"v".to_vec(), Precondition::None, None).await.expect("put");
        }
        let page = kv.keys("ns", "default", "a/", "", 2).expect("keys");
        assert_eq!(page, Keys { keys: vec!["a/1".into(), "a/2".into()], next: Some("a/2".into()) });
        let rest = kv.keys("ns", "default", "a/", "a/2", 2).expect("keys");
        assert_eq!(rest, Keys { keys: vec!["a/3".into()], next: None });
    }

    #[test]
    fn tokens_are_scoped_and_unforgeable() {
        let tokens = Tokens::new(b"server secret");
        let any = tokens.verify(&tokens.issue("shop", None)).expect("valid");
        assert_eq!(any, Scope { namespace: "shop".into(), stores: None });
        any.allows("shop", "carts").expect("every store of its namespace");
        assert!(matches!(any.allows("other", "default"), Err(KvError::Forbidden(_))));
        let some = tokens.verify(&tokens.issue("shop", Some(&["carts".to_string()]))).expect("valid");
        assert!(matches!(some.allows("shop", "default"), Err(KvError::Forbidden(_))));
        let forged = tokens.issue("shop", None).replace("kv1.shop", "kv1.bank");
        assert!(matches!(tokens.verify(&forged), Err(KvError::Unauthorized(_))));
        let other_server = Tokens::new(b"another secret").issue("shop", None);
        assert!(matches!(tokens.verify(&other_server), Err(KvError::Unauthorized(_))));
    }
}
