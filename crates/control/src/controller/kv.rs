//! Key-value stores in the control plane: which stores exist (`default` in every
//! namespace, and each KeyValueStore), what a function's instances get to reach theirs
//! (`SERVAL_KV_URL`, `SERVAL_KV_TOKEN`), and a store's entries removed with it.

use std::sync::Arc;

use serval_model::{
    Condition, ConditionStatus, DEFAULT_KV_STORE, KV_STORES_ANNOTATION, KeyValueStore, Resource, Revision, kv_stores_of,
};
use serval_store::{ResourceStoreExt, WriteOp};

use super::Controller;
use crate::ControlError;
use crate::kinds::{Reconciler, now_rfc3339};

impl Controller {
    /// The key-value stores of every namespace.
    pub fn kv(&self) -> &Arc<serval_kv::KeyValueStores> {
        &self.kv
    }

    /// The tokens functions present to their key-value stores.
    pub fn kv_tokens(&self) -> &serval_kv::Tokens {
        &self.kv_tokens
    }

    /// Whether `namespace` has the store `name`; a 404 naming it otherwise.
    pub fn kv_store_exists(&self, namespace: &str, name: &str) -> Result<(), serval_kv::KvError> {
        if name == DEFAULT_KV_STORE {
            return Ok(());
        }
        match self.store.get::<KeyValueStore>(KeyValueStore::KIND, namespace, name) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(serval_kv::KvError::NotFound(format!(
                "key-value store {namespace}/{name} does not exist (serval kv create {name} -n {namespace})"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// `SERVAL_KV_URL` and `SERVAL_KV_TOKEN` of a revision's instances (the token limited to
    /// the stores of its `serval.dev/kv-stores` annotation, when given).
    pub(super) fn kv_environment(&self, revision: &Revision) -> Vec<(String, String)> {
        let namespace = &revision.metadata.namespace;
        let stores = kv_stores_of(revision.annotation(KV_STORES_ANNOTATION));
        vec![
            ("SERVAL_KV_URL".into(), format!("http://{}/kv/{namespace}", self.addrs.api)),
            ("SERVAL_KV_TOKEN".into(), self.kv_tokens.issue(namespace, stores.as_deref())),
        ]
    }
}

/// A KeyValueStore: Ready once written; its entries go with it.
impl Reconciler<KeyValueStore> for Controller {
    fn admit(
        &self,
        store: &mut KeyValueStore,
        _previous: Option<&KeyValueStore>,
    ) -> Result<Vec<WriteOp>, ControlError> {
        let ready = Condition::new("Ready", ConditionStatus::True, "", "");
        Condition::set(&mut store.status.conditions, ready, &now_rfc3339());
        Ok(Vec::new())
    }

    fn removed(&self, store: &KeyValueStore) -> Vec<WriteOp> {
        vec![serval_kv::KeyValueStores::clear(&store.metadata.namespace, &store.metadata.name)]
    }
}
