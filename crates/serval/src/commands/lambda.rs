//! `serval deploy NAME --lambda-zip FILE --handler H --runtime R`: a Lambda function made
//! (or changed) through the Lambda API on the gateway, signed with the server's AWS key
//! pair, as `aws lambda create-function` would; then waited for like any deploy.

use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use serval_lambda::sigv4::{ClientRequest, Credentials, sign};

use super::DEFAULT_NAMESPACE;
use super::resources::{DeployArgs, report_deployed};
use crate::Global;
use crate::client::{Client, ServerInfo};

/// The largest zip Lambda takes in a request (`--zip-file`).
const MAX_ZIP: u64 = 50 * 1024 * 1024;
const REGION: &str = "us-east-1";

/// The Lambda API of a server, with its key pair.
struct LambdaClient {
    http: reqwest::Client,
    gateway: String,
    host: String,
    credentials: Credentials,
}

impl LambdaClient {
    fn new(info: &ServerInfo) -> Result<LambdaClient> {
        let (Some(id), Some(secret)) = (&info.aws_access_key_id, &info.aws_secret_access_key) else {
            bail!("this server wrote no AWS credentials (an older version?); restart it");
        };
        let gateway = info.gateway.trim_end_matches('/').to_string();
        let host = gateway.trim_start_matches("http://").trim_start_matches("https://").to_string();
        let credentials = Credentials { access_key_id: id.clone(), secret_access_key: secret.clone() };
        Ok(LambdaClient { http: reqwest::Client::new(), gateway, host, credentials })
    }

    /// One signed request; `None` when it answers `ResourceNotFoundException`.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Option<Value>> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let request =
            ClientRequest { host: &self.host, method: method.as_str(), path, query: "", body: body.as_bytes() };
        let (date, signature) =
            sign(&request, &self.credentials, REGION, SystemTime::now()).map_err(|e| anyhow!("signing: {e}"))?;
        let answer = self
            .http
            .request(method, format!("{}{path}", self.gateway))
            .header("x-amz-date", date)
            .header(reqwest::header::AUTHORIZATION, signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the Lambda API at {}", self.gateway))?;
        let status = answer.status();
        let kind = answer.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()).map(str::to_string);
        let text = answer.text().await.unwrap_or_default();
        if status == StatusCode::NOT_FOUND && kind.as_deref() == Some("ResourceNotFoundException") {
            return Ok(None);
        }
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["Message"].as_str().unwrap_or(&text);
            bail!("{}: {message}", kind.unwrap_or_else(|| status.to_string()));
        }
        Ok(Some(value))
    }
}

/// Deploys `--lambda-zip`: the whole function as the flags describe it (runtime, handler,
/// environment, timeout and memory, Lambda's defaults for what they leave out).
pub async fn deploy_zip(args: DeployArgs, global: Global) -> Result<()> {
    if args.namespace != DEFAULT_NAMESPACE {
        bail!("--lambda-zip: Lambda functions are services of namespace {DEFAULT_NAMESPACE}, not {}", args.namespace);
    }
    let (Some(file), Some(handler), Some(runtime)) = (&args.lambda_zip, &args.handler, &args.runtime) else {
        bail!("--lambda-zip needs --handler and --runtime");
    };
    let size = std::fs::metadata(file).with_context(|| format!("cannot read --lambda-zip {}", file.display()))?.len();
    if size > MAX_ZIP {
        bail!("--lambda-zip {}: {size} bytes, over Lambda's {MAX_ZIP}", file.display());
    }
    let zip = std::fs::read(file).with_context(|| format!("cannot read --lambda-zip {}", file.display()))?;
    let zip = base64::engine::general_purpose::STANDARD.encode(zip);
    let variables: serde_json::Map<String, Value> =
        args.env_pairs()?.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    let settings = json!({
        "Runtime": runtime,
        "Handler": handler,
        "Timeout": args.timeout.unwrap_or(3),
        "MemorySize": args.memory.unwrap_or(128),
        "Environment": {"Variables": variables},
    });
    let lambda = LambdaClient::new(&ServerInfo::read(&global.data_dir())?)?;
    let path = format!("/2015-03-31/functions/{}", args.name);
    if lambda.call(Method::GET, &path, None).await?.is_none() {
        let mut create = settings;
        create["FunctionName"] = json!(args.name);
        create["Code"] = json!({"ZipFile": zip});
        create["Role"] = json!("arn:aws:iam::000000000000:role/serval");
        lambda.call(Method::POST, "/2015-03-31/functions", Some(&create)).await?;
    } else {
        lambda.call(Method::PUT, &format!("{path}/configuration"), Some(&settings)).await?;
        lambda.call(Method::PUT, &format!("{path}/code"), Some(&json!({"ZipFile": zip}))).await?;
    }
    let client = Client::from_global(&global)?;
    let service = client.get(&format!("/api/v1/namespaces/{}/services/{}", args.namespace, args.name)).await?;
    report_deployed(&client, &args, service).await
}
