//! The kinds the API serves, by plural: one registry of [`KindApi`]s.
//!
//! A kind that is stored as it is written needs only its model type (a
//! [`serval_model::Resource`]) and a [`Reconciler`]: [`Stored`] does the rest (decoding with
//! field paths, identity from the URL, validation, optimistic concurrency, uid, generation,
//! creation time, the write, 404s and 409s). Kinds with more to do (a Service makes
//! Revisions, a Secret is sealed) implement [`KindApi`] themselves. The API routes
//! `/api/v1/namespaces/{ns}/{plural}[/{name}]` and watches through this registry, and the
//! CLI learns the kinds from `GET /api/v1`, so adding a kind touches neither.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use serde_json::Value;
use serval_model::{KindInfo, ObjectMeta, Resource};
pub use serval_store::WriteOp;
use serval_store::{ResourceStoreExt, Storage};

use crate::ControlError;

/// Whether a write may replace an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// POST: the object must not exist yet (409 AlreadyExists otherwise).
    Create,
    /// PUT: create or update.
    CreateOrUpdate,
}

/// The answer to a write: the object as it is now, whether it is new, and warnings (fields
/// accepted but not acted on) for the `Warning` header.
pub struct Written {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

/// The query parameters of a read.
pub type ReadQuery = HashMap<String, String>;

/// One kind as the API serves it.
pub trait KindApi: Send + Sync {
    fn info(&self) -> &KindInfo;

    fn get(&self, namespace: &str, name: &str, query: &ReadQuery) -> Result<Value, ControlError>;

    /// In one namespace, or (None) in all, ordered by namespace and name.
    fn list(&self, namespace: Option<&str>, query: &ReadQuery) -> Result<Vec<Value>, ControlError>;

    /// Creates or updates from a user's JSON document; `name` is the URL's (absent for POST).
    fn apply<'a>(
        &'a self,
        namespace: &'a str,
        name: Option<&'a str>,
        body: &'a [u8],
        mode: ApplyMode,
    ) -> BoxFuture<'a, Result<Written, ControlError>> {
        let _ = (namespace, name, body, mode);
        Box::pin(async { Err(self.read_only()) })
    }

    fn delete<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<(), ControlError>> {
        let _ = (namespace, name);
        Box::pin(async { Err(self.read_only()) })
    }

    /// The error of a write to a kind that is not written directly.
    fn read_only(&self) -> ControlError {
        ControlError::MethodNotAllowed(format!("{} objects are made by the server, not written", self.info().kind))
    }
}

/// Every kind the API serves.
#[derive(Default)]
pub struct Kinds {
    by_plural: HashMap<String, Arc<dyn KindApi>>,
    order: Vec<String>,
}

impl Kinds {
    /// Adds a kind; a later registration of the same plural replaces the earlier one.
    pub fn register(&mut self, kind: Arc<dyn KindApi>) {
        let plural = kind.info().plural.clone();
        if self.by_plural.insert(plural.clone(), kind).is_none() {
            self.order.push(plural);
        }
    }

    /// The kind served at `/{plural}`; 404 naming the path otherwise.
    pub fn get(&self, plural: &str) -> Result<&Arc<dyn KindApi>, ControlError> {
        self.by_plural.get(plural).ok_or_else(|| ControlError::NotFound {
            kind: "resource type",
            namespace: String::new(),
            name: plural.to_string(),
        })
    }

    /// What `GET /api/v1` lists, in registration order.
    pub fn infos(&self) -> Vec<&KindInfo> {
        self.order.iter().filter_map(|p| self.by_plural.get(p)).map(|k| k.info()).collect()
    }
}

/// What a kind's [`Reconciler`] hears after a committed write (under the write lock).
pub enum Change<'a, R> {
    Created(&'a R),
    Updated(&'a R),
    Deleted(&'a R),
}

impl<'a, R: Resource> Change<'a, R> {
    pub fn object(&self) -> &'a R {
        match self {
            Change::Created(o) | Change::Updated(o) | Change::Deleted(o) => o,
        }
    }
}

/// A kind's own logic around the generic store path of [`Stored`].
pub trait Reconciler<R: Resource>: Send + Sync + 'static {
    /// Before an object is stored (already validated, identity carried over): checks beyond
    /// its own validation, its `status` (the user's is never kept; `previous` is the stored
    /// one), and writes to commit in the same transaction.
    fn admit(&self, object: &mut R, previous: Option<&R>) -> Result<Vec<WriteOp>, ControlError> {
        let _ = (object, previous);
        Ok(Vec::new())
    }

    /// Writes to commit with an object's deletion (its logs, cursors).
    fn removed(&self, object: &R) -> Vec<WriteOp> {
        let _ = object;
        Vec::new()
    }

    /// After a write committed: make the running world match (start, stop, re-plan).
    fn changed<'a>(&'a self, change: Change<'a, R>) -> BoxFuture<'a, Result<(), ControlError>> {
        let _ = change;
        Box::pin(async { Ok(()) })
    }

    /// How an object is shown (live status overlaid).
    fn view(&self, object: R) -> Value {
        serde_json::to_value(object).unwrap_or_default()
    }
}

/// What [`Stored`] kinds share with the rest of the platform: the store and the lock that
/// serializes read-modify-write of resources and reconciles.
#[derive(Clone)]
pub struct KindContext {
    pub store: Arc<dyn Storage>,
    pub write_lock: Arc<tokio::sync::Mutex<()>>,
}

/// A kind stored as written, with its [`Reconciler`].
pub struct Stored<R, C> {
    info: KindInfo,
    context: KindContext,
    reconciler: Arc<C>,
    kind: PhantomData<fn() -> R>,
}

impl<R: Resource, C: Reconciler<R>> Stored<R, C> {
    pub fn new(context: &KindContext, reconciler: Arc<C>) -> Arc<Self> {
        Arc::new(Stored { info: R::info(), context: context.clone(), reconciler, kind: PhantomData })
    }

    fn stored(&self, namespace: &str, name: &str) -> Result<R, ControlError> {
        self.context.store.get(R::KIND, namespace, name)?.ok_or_else(|| not_found(R::KIND, namespace, name))
    }

    async fn write(
        &self,
        namespace: &str,
        name: Option<&str>,
        body: &[u8],
        mode: ApplyMode,
    ) -> Result<Written, ControlError> {
        let mut object: R = decode_document(body, R::KIND)?;
        fill_identity(R::KIND, &mut object.metadata_mut().namespace, namespace, "metadata.namespace")?;
        if let Some(name) = name {
            fill_identity(R::KIND, &mut object.metadata_mut().name, name, "metadata.name")?;
        }
        let warnings = object.validate().map_err(|source| ControlError::Invalid { kind: R::KIND, source })?;
        let name = object.metadata().name.clone();
        let _guard = self.context.write_lock.lock().await;
        let previous: Option<R> = self.context.store.get(R::KIND, namespace, &name)?;
        let old = previous.as_ref().map(|p| (p.metadata(), spec_of(p) != spec_of(&object)));
        carry_identity(R::KIND, mode, object.metadata_mut(), old, &now_rfc3339())?;
        let mut ops = self.reconciler.admit(&mut object, previous.as_ref())?;
        ops.insert(0, WriteOp::put(R::KIND, namespace, &name, &object)?);
        self.context.store.write(ops).await?;
        let change = if previous.is_some() { Change::Updated(&object) } else { Change::Created(&object) };
        self.reconciler.changed(change).await?;
        let object = self.reconciler.view(self.stored(namespace, &name)?);
        Ok(Written { object, created: previous.is_none(), warnings })
    }

    async fn remove(&self, namespace: &str, name: &str) -> Result<(), ControlError> {
        let _guard = self.context.write_lock.lock().await;
        let object = self.stored(namespace, name)?;
        let mut ops = self.reconciler.removed(&object);
        ops.insert(0, WriteOp::delete(R::KIND, namespace, name));
        self.context.store.write(ops).await?;
        self.reconciler.changed(Change::Deleted(&object)).await
    }
}

impl<R: Resource, C: Reconciler<R>> KindApi for Stored<R, C> {
    fn info(&self) -> &KindInfo {
        &self.info
    }

    fn get(&self, namespace: &str, name: &str, _query: &ReadQuery) -> Result<Value, ControlError> {
        Ok(self.reconciler.view(self.stored(namespace, name)?))
    }

    fn list(&self, namespace: Option<&str>, _query: &ReadQuery) -> Result<Vec<Value>, ControlError> {
        let objects: Vec<R> = self.context.store.list(R::KIND, namespace)?;
        Ok(objects.into_iter().map(|o| self.reconciler.view(o)).collect())
    }

    fn apply<'a>(
        &'a self,
        namespace: &'a str,
        name: Option<&'a str>,
        body: &'a [u8],
        mode: ApplyMode,
    ) -> BoxFuture<'a, Result<Written, ControlError>> {
        Box::pin(self.write(namespace, name, body, mode))
    }

    fn delete<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(self.remove(namespace, name))
    }
}

pub fn not_found(kind: &'static str, namespace: &str, name: &str) -> ControlError {
    ControlError::NotFound { kind, namespace: namespace.into(), name: name.into() }
}

/// An object's `spec` as JSON (a change of it bumps `metadata.generation`).
fn spec_of<R: Resource>(object: &R) -> Value {
    serde_json::to_value(object).ok().and_then(|mut v| v.get_mut("spec").map(Value::take)).unwrap_or_default()
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Decodes a user's JSON document, without its `status` (the server's to write): syntax
/// errors are a 400, type errors a 422 naming their field path.
pub fn decode_document<T: serde::de::DeserializeOwned>(body: &[u8], kind: &'static str) -> Result<T, ControlError> {
    let mut document: Value = serde_json::from_slice(body)
        .map_err(|e| ControlError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    if let Some(object) = document.as_object_mut() {
        object.remove("status");
    }
    serde_path_to_error::deserialize(document).map_err(|e| decode_error(kind, e))
}

/// Decodes a user's JSON document; type errors name their field path (422), syntax errors
/// are a 400.
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8], kind: &'static str) -> Result<T, ControlError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| decode_error(kind, e))
}

fn decode_error(kind: &'static str, e: serde_path_to_error::Error<serde_json::Error>) -> ControlError {
    let field = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        ControlError::BadRequest(format!("request body is not valid JSON: {inner}"))
    } else {
        ControlError::invalid_field(kind, field, type_error_message(&inner.to_string()))
    }
}

/// serde's type error in a person's words: no line and column (of a document the CLI may
/// have converted from YAML), JSON's names for the expected types instead of Rust's.
fn type_error_message(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => &message[..at],
        _ => message,
    };
    let mut message = message.to_string();
    for (rust, json) in [
        ("expected u8", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected an object"),
        ("expected a boolean", "expected true or false"),
    ] {
        message = message.replace(rust, json);
    }
    if let Some(at) = message.find("expected struct ") {
        message.replace_range(at.., "expected an object");
    }
    message
}

/// Fills an empty identity field of a `kind` document from the URL, or checks that it matches.
pub fn fill_identity(kind: &'static str, field: &mut String, from_url: &str, path: &str) -> Result<(), ControlError> {
    if field.is_empty() {
        *field = from_url.to_string();
        Ok(())
    } else if field == from_url {
        Ok(())
    } else {
        Err(ControlError::invalid_field(kind, path, format!("{field:?} does not match {from_url:?} in the URL")))
    }
}

/// Carries uid, creation time and generation over from the stored object (`old`, with
/// whether the spec changed), or starts them. A create (POST) of an object that exists is
/// a 409 AlreadyExists; a `metadata.resourceVersion` in the new one must be the stored
/// one's (Kubernetes' optimistic concurrency: 409 otherwise); an absent one overwrites.
pub fn carry_identity(
    kind: &str,
    mode: ApplyMode,
    meta: &mut ObjectMeta,
    old: Option<(&ObjectMeta, bool)>,
    now: &str,
) -> Result<(), ControlError> {
    if mode == ApplyMode::Create && old.is_some() {
        let (kind, namespace, name) = (kind.to_lowercase(), &meta.namespace, &meta.name);
        return Err(ControlError::Conflict(format!("{kind} {namespace}/{name} already exists")));
    }
    let given = std::mem::take(&mut meta.resource_version);
    if !given.is_empty() && old.is_none_or(|(old, _)| old.resource_version != given) {
        let now_at =
            old.map_or("it does not exist any more".to_string(), |(o, _)| format!("it is at {}", o.resource_version));
        return Err(ControlError::StaleVersion(format!(
            "{} {}/{} was changed since resourceVersion {given} ({now_at}); read it again and retry",
            kind.to_lowercase(),
            meta.namespace,
            meta.name
        )));
    }
    match old {
        Some((old, spec_changed)) => {
            meta.uid = old.uid.clone();
            meta.creation_timestamp = old.creation_timestamp.clone();
            meta.generation = old.generation + u64::from(spec_changed);
        }
        None => {
            meta.uid = new_uid();
            meta.creation_timestamp = now.to_string();
            meta.generation = 1;
        }
    }
    Ok(())
}

fn new_uid() -> String {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{:032x}", nanos ^ (u128::from(std::process::id()) << 96))
}

#[cfg(test)]
#[test]
fn type_errors_read_like_json_without_positions() {
    assert_eq!(
        type_error_message("invalid type: string \"x\", expected u32 at line 1 column 57"),
        "invalid type: string \"x\", expected a whole number"
    );
    assert_eq!(
        type_error_message("invalid type: integer `3`, expected struct Container"),
        "invalid type: integer `3`, expected an object"
    );
}
