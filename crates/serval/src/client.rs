//! The API client used by every command but `server`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::Global;

/// What `serval server` writes to `DATA_DIR/server.json` when it is ready.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct ServerInfo {
    pub api: String,
    pub gateway: String,
    pub token: String,
    /// Where `/metrics` is served without a token, when the server was asked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// The key pair requests to the Lambda API are signed with (SigV4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret_access_key: Option<String>,
}

impl ServerInfo {
    pub fn read(data_dir: &Path) -> Result<ServerInfo> {
        let path = data_dir.join("server.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no running server found ({} is missing; start one with `serval server` or set SERVAL_API)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    }
}

pub struct Client {
    http: reqwest::Client,
    api: String,
    token: String,
}

/// The answer of a write: the object and any warnings the server gave.
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

impl Client {
    pub fn new(api: &str, token: &str) -> Result<Client> {
        let api = if api.starts_with("http://") || api.starts_with("https://") {
            api.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", api.trim_end_matches('/'))
        };
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
        Ok(Client { http, api, token: token.to_string() })
    }

    pub fn from_global(global: &Global) -> Result<Client> {
        match (&global.api, &global.token) {
            (Some(api), Some(token)) => Client::new(api, token),
            (api, token) => {
                let info = ServerInfo::read(&global.data_dir())?;
                Client::new(api.as_deref().unwrap_or(&info.api), token.as_deref().unwrap_or(&info.token))
            }
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<reqwest::Response> {
        let mut req = self.http.request(method, format!("{}{path}", self.api)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach the serval API at {}", self.api))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(api_error(resp).await)
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        Ok(self.send(Method::GET, path, None).await?.json().await?)
    }

    /// Like `get`, but `None` when the object does not exist (404).
    pub async fn get_optional(&self, path: &str) -> Result<Option<Value>> {
        let resp = self
            .http
            .get(format!("{}{path}", self.api))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the serval API at {}", self.api))?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(resp.json().await?)),
            _ => Err(api_error(resp).await),
        }
    }

    pub async fn get_text(&self, path: &str) -> Result<reqwest::Response> {
        self.send(Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Written> {
        let resp = self.send(Method::PUT, path, Some(body)).await?;
        let warnings = resp
            .headers()
            .get_all(reqwest::header::WARNING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|w| {
                let text = w.strip_prefix("299 - ").unwrap_or(w);
                serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_string())
            })
            .collect();
        Ok(Written { object: resp.json().await?, warnings })
    }

    /// POSTs a body; returns the response for streaming.
    pub async fn post(&self, path: &str, body: reqwest::Body, content_type: &str) -> Result<reqwest::Response> {
        let resp = self
            .http
            .post(format!("{}{path}", self.api))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the serval API at {}", self.api))?;
        if resp.status().is_success() { Ok(resp) } else { Err(api_error(resp).await) }
    }

    /// Any request with a raw body and extra headers (the key-value endpoint); an answer
    /// that is not a success becomes the error it names.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<reqwest::Response> {
        let mut req = self.http.request(method, format!("{}{path}", self.api)).bearer_auth(&self.token).body(body);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach the serval API at {}", self.api))?;
        if resp.status().is_success() { Ok(resp) } else { Err(api_error(resp).await) }
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(Method::DELETE, path, None).await?;
        Ok(())
    }

    /// The gateway's base URL, from the server itself.
    pub async fn gateway(&self) -> Result<String> {
        let info = self.get("/api/v1/info").await?;
        info["gateway"].as_str().map(str::to_string).ok_or_else(|| anyhow!("the server did not report its gateway"))
    }

    /// Polls a service until it reports Ready for its current generation.
    pub async fn wait_ready(&self, namespace: &str, name: &str, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let service = self.get(&format!("/api/v1/namespaces/{namespace}/services/{name}")).await?;
            let generation = service["metadata"]["generation"].as_u64();
            let observed = service["status"]["observedGeneration"].as_u64();
            let ready = crate::output::condition(&service, "Ready");
            if generation.is_some() && generation == observed {
                match ready {
                    Some(("True", _, _)) => return Ok(service),
                    Some(("False", reason, message)) => {
                        bail!("service {namespace}/{name} is not ready: {reason}: {message}")
                    }
                    _ => {}
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("service {namespace}/{name} did not become ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn api_error(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or(text);
    match status {
        StatusCode::UNAUTHORIZED => anyhow!("the API refused the token (401): {message}"),
        _ => anyhow!("{message} ({})", status.as_u16()),
    }
}
