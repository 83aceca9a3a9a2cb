//! [`InProcess`]: the platform running in this process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use serval_model::RuntimeKind;
use serval_platform::{Extensions, Listeners, PlatformConfig};
use serval_store::MemoryStore;

use crate::FakeRuntime;

/// How long a wait for a state may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// The platform on port 0 with a [`MemoryStore`] and a [`FakeRuntime`] for processes;
/// stops when dropped.
pub struct InProcess {
    pub api: String,
    pub gateway: String,
    pub token: String,
    pub runtime: Arc<FakeRuntime>,
    pub store: Arc<MemoryStore>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl InProcess {
    /// Starts the platform with `configure` applied to its configuration and `extensions`
    /// (the fake runtime and the memory store are added to them).
    pub async fn start_with(configure: impl FnOnce(&mut PlatformConfig), extensions: Extensions) -> InProcess {
        InProcess::start_on(FakeRuntime::default(), configure, extensions).await
    }

    /// [`InProcess::start_with`] on a given fake runtime (e.g. [`FakeRuntime::in_process`]).
    pub async fn start_on(
        runtime: FakeRuntime,
        configure: impl FnOnce(&mut PlatformConfig),
        mut extensions: Extensions,
    ) -> InProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = "testkit-token".to_string();
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let listeners = Listeners {
            api: bind().await.expect("bind api"),
            gateway: bind().await.expect("bind gateway"),
            metrics: None,
        };
        let addrs = listeners.addrs().expect("addresses");
        let mut config = PlatformConfig::new(dir.path().to_path_buf(), token.clone());
        config.gateway_threads = 1;
        configure(&mut config);
        let runtime = Arc::new(runtime);
        let store = Arc::new(MemoryStore::default());
        extensions.runtimes.push((RuntimeKind::Process, runtime.clone()));
        extensions.storage = Some(store.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        let shutdown = async move {
            let _ = stopped.await;
        };
        tokio::spawn(serval_platform::run_with(listeners, config, extensions, shutdown, ready));
        is_ready.await.expect("the platform started");
        InProcess {
            api: format!("http://{}", addrs.api),
            gateway: format!("http://{}", addrs.gateway),
            token,
            runtime,
            store,
            http: reqwest::Client::new(),
            _dir: dir,
            _stop: stop,
        }
    }

    /// Starts the platform with its default configuration.
    pub async fn start() -> InProcess {
        InProcess::start_with(|_| {}, Extensions::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    async fn answer(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// `GET` of an API path: status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).bearer_auth(&self.token).send().await.expect("GET");
        InProcess::answer(response).await
    }

    /// `PUT` of a document at `/api/v1/namespaces/{ns}/{plural}/{name}` (from its metadata).
    pub async fn put(&self, plural: &str, document: &Value) -> (u16, Value) {
        let path = object_path(plural, document);
        let response =
            self.http.put(self.url(&path)).bearer_auth(&self.token).json(document).send().await.expect("PUT");
        InProcess::answer(response).await
    }

    /// `DELETE` of `/api/v1/namespaces/{ns}/{plural}/{name}`.
    pub async fn delete(&self, plural: &str, namespace: &str, name: &str) -> (u16, Value) {
        let path = format!("/api/v1/namespaces/{namespace}/{plural}/{name}");
        let response = self.http.delete(self.url(&path)).bearer_auth(&self.token).send().await.expect("DELETE");
        InProcess::answer(response).await
    }

    /// Waits, on a watch of its collection, until the object holds `condition`; returns it.
    /// Panics with the last state seen after the patience runs out.
    pub async fn wait_for(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
        condition: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + PATIENCE;
        let collection = format!("/api/v1/namespaces/{namespace}/{plural}");
        let watch_url = self.url(&format!("{collection}?watch=true"));
        // Watch first, then read: a change between the two is on the watch.
        let mut watch = self.http.get(watch_url).bearer_auth(&self.token).send().await.expect("watch");
        let (_, mut last) = self.get(&format!("{collection}/{name}")).await;
        let mut pending = Vec::new();
        while !condition(&last) {
            let chunk = tokio::time::timeout_at(deadline.into(), watch.chunk()).await;
            let Ok(Ok(Some(chunk))) = chunk else {
                panic!("{plural} {namespace}/{name} did not reach the state waited for; last seen: {last:#}");
            };
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event: Value = serde_json::from_slice(&line).expect("a watch event");
                if event["object"]["metadata"]["name"] == name {
                    // The watch carries the stored object; the API's view adds live status.
                    last = self.get(&format!("{collection}/{name}")).await.1;
                }
            }
        }
        last
    }

    /// A `GET` through the gateway to `/f/<namespace>/<service><path>`: status and body.
    pub async fn call(&self, namespace: &str, service: &str, path: &str) -> (u16, String) {
        let url = format!("{}/f/{namespace}/{service}{path}", self.gateway);
        let response = self.http.get(url).send().await.expect("request through the gateway");
        (response.status().as_u16(), response.text().await.unwrap_or_default())
    }
}

/// `/api/v1/namespaces/{ns}/{plural}/{name}` of a document (namespace `default` when absent).
fn object_path(plural: &str, document: &Value) -> String {
    let namespace = document["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = document["metadata"]["name"].as_str().expect("metadata.name");
    format!("/api/v1/namespaces/{namespace}/{plural}/{name}")
}
