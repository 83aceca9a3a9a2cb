//! The AWS Lambda API on the gateway (`/2015-03-31/…`, and `InvokeAsync` at
//! `/2014-11-13/…`), so that boto3 and the AWS CLI work unmodified against serval:
//! `CreateFunction` (a zip in `Code.ZipFile`, or `PackageType: Image`), `GetFunction`,
//! `GetFunctionConfiguration`, `ListFunctions`, `DeleteFunction` and `Invoke`
//! (`RequestResponse`, `Event` through the async queue, `DryRun`). Requests are checked
//! with SigV4 against the server's key pair. A function is a serval Service of namespace
//! `default` with `serval.dev/protocol: lambda`; its code is unpacked under
//! `DATA/functions/<name>/<sha256>`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};
use serval_gateway::{LocalClient, ProxyBody};
use serval_lambda::sigv4::{Credentials, SignedRequest, verify};
use serval_model::{ConditionStatus, Resource, Service};

use crate::controller::Controller;
use crate::kinds::ApplyMode;

/// Where the gateway hands the Lambda API's requests: `Invoke` and the control
/// operations, and the deprecated `InvokeAsync`.
pub const PREFIXES: [&str; 2] = ["/2015-03-31/", "/2014-11-13/"];
/// The namespace of functions made through the Lambda API.
const NAMESPACE: &str = "default";
/// The largest request body (a zip of 50 MB, base64 in JSON).
const MAX_REQUEST: usize = 70 * 1024 * 1024;
/// The largest unpacked function (Lambda's limit).
const MAX_UNZIPPED: u64 = 250 * 1024 * 1024;
/// Lambda's defaults.
const DEFAULT_TIMEOUT: u64 = 3;
const DEFAULT_MEMORY: u64 = 128;
const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";

/// The Lambda API.
pub struct LambdaApi {
    /// Itself, for the requests it serves from `&self` (the gateway holds it as a trait object).
    this: std::sync::Weak<LambdaApi>,
    controller: Arc<Controller>,
    credentials: Credentials,
    /// Where functions' code is unpacked.
    code_dir: PathBuf,
    /// The data plane in process, for invocations (set once the gateway exists).
    local: OnceLock<LocalClient>,
}

/// An error in AWS's shape: the status, `x-amzn-ErrorType` and `{"Type", "Message"}`.
struct AwsError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn aws_error(status: StatusCode, code: &'static str, message: impl Into<String>) -> AwsError {
    AwsError { status, code, message: message.into() }
}

fn not_found(name: &str) -> AwsError {
    aws_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        format!("Function not found: arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"),
    )
}

fn invalid(message: impl Into<String>) -> AwsError {
    aws_error(StatusCode::BAD_REQUEST, "InvalidParameterValueException", message)
}

impl AwsError {
    fn response(&self) -> Response<Full<Bytes>> {
        let body = json!({ "Type": "User", "Message": self.message, "message": self.message }).to_string();
        Response::builder()
            .status(self.status)
            .header("x-amzn-errortype", self.code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap_or_default()
}

/// The function name in a path segment: a name, a partial ARN (`123456789012:function:name`)
/// or a full one, maybe with `:qualifier`.
fn function_name(segment: &str) -> String {
    let decoded = segment.replace("%3A", ":").replace("%3a", ":");
    let after = decoded.rsplit_once("function:").map_or(decoded.as_str(), |(_, rest)| rest);
    after.split(':').next().unwrap_or_default().to_string()
}

impl LambdaApi {
    pub fn new(controller: Arc<Controller>, credentials: Credentials, code_dir: PathBuf) -> Arc<LambdaApi> {
        Arc::new_cyclic(|this| LambdaApi {
            this: this.clone(),
            controller,
            credentials,
            code_dir,
            local: OnceLock::new(),
        })
    }

    /// Invokes functions through `client` from now on.
    pub fn invoke_through(&self, client: LocalClient) {
        let _ = self.local.set(client);
    }

    async fn serve(self: Arc<Self>, req: Request<ProxyBody>) -> Result<Response<Full<Bytes>>, AwsError> {
        let (parts, body) = req.into_parts();
        let body = Limited::new(body, MAX_REQUEST)
            .collect()
            .await
            .map_err(|e| aws_error(StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException", e.to_string()))?
            .to_bytes();
        let path = parts.uri.path().to_string();
        let signed = SignedRequest {
            method: parts.method.as_str(),
            path: &path,
            query: parts.uri.query().unwrap_or_default(),
            headers: &parts.headers,
            body: &body,
        };
        verify(&signed, &self.credentials, SystemTime::now())
            .map_err(|why| aws_error(StatusCode::FORBIDDEN, "InvalidSignatureException", why))?;
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        match (&parts.method, segments.as_slice()) {
            (&Method::POST, ["2015-03-31", "functions"]) => self.create(&body).await,
            (&Method::GET, ["2015-03-31", "functions"]) => self.list(),
            (&Method::GET, ["2015-03-31", "functions", name]) => {
                let name = function_name(name);
                let service = self.function(&name)?;
                let configuration = configuration(&service);
                let code = json!({"RepositoryType": "S3", "Location": ""});
                let mut answer = json!({"Configuration": configuration, "Code": code, "Tags": {}});
                if let Some(image) = service.spec.template.spec.containers.first().and_then(|c| c.image.clone()) {
                    answer["Code"] = json!({"RepositoryType": "ECR", "ImageUri": image, "ResolvedImageUri": image});
                }
                Ok(json_response(StatusCode::OK, &answer))
            }
            (&Method::GET, ["2015-03-31", "functions", name, "configuration"]) => {
                Ok(json_response(StatusCode::OK, &configuration(&self.function(&function_name(name))?)))
            }
            (&Method::DELETE, ["2015-03-31", "functions", name]) => {
                let name = function_name(name);
                self.function(&name)?;
                self.controller.delete_service(NAMESPACE, &name).await.map_err(|e| invalid(e.to_string()))?;
                let _ = std::fs::remove_dir_all(self.code_dir.join(&name));
                Ok(Response::builder().status(StatusCode::NO_CONTENT).body(Full::default()).unwrap_or_default())
            }
            (&Method::POST, ["2015-03-31", "functions", name, "invocations"]) => {
                let kind = parts.headers.get("x-amz-invocation-type").and_then(|v| v.to_str().ok());
                let tail = parts.headers.get("x-amz-log-type").is_some_and(|v| v.as_bytes() == b"Tail");
                self.invoke(&function_name(name), kind.unwrap_or("RequestResponse"), tail, body).await
            }
            (&Method::POST, ["2014-11-13", "functions", name, "invoke-async"]) => {
                let answer = self.invoke(&function_name(name), "Event", false, body).await?;
                let status = json!({"Status": answer.status().as_u16()});
                Ok(json_response(StatusCode::ACCEPTED, &status))
            }
            _ => Err(aws_error(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                format!("{} {path} is not an operation serval serves", parts.method),
            )),
        }
    }

    /// A function made through this API (or any Lambda-protocol service of `default`).
    fn function(&self, name: &str) -> Result<Service, AwsError> {
        let service = self.controller.get_service(NAMESPACE, name).map_err(|_| not_found(name))?;
        if is_function(&service) { Ok(service) } else { Err(not_found(name)) }
    }

    fn list(&self) -> Result<Response<Full<Bytes>>, AwsError> {
        let services = self.controller.list_services(Some(NAMESPACE)).map_err(|e| invalid(e.to_string()))?;
        let functions: Vec<Value> = services.iter().filter(|s| is_function(s)).map(configuration).collect();
        Ok(json_response(StatusCode::OK, &json!({"Functions": functions})))
    }

    /// `CreateFunction`: the code unpacked (or the image named), then a Service.
    async fn create(&self, body: &[u8]) -> Result<Response<Full<Bytes>>, AwsError> {
        let input: Value =
            serde_json::from_slice(body).map_err(|e| invalid(format!("the request is not JSON: {e}")))?;
        let name = input["FunctionName"].as_str().ok_or_else(|| invalid("FunctionName is required"))?;
        let name = function_name(name);
        serval_model::validate_name(&name.to_ascii_lowercase(), 63)
            .map_err(|e| invalid(format!("FunctionName {name:?}: {e}")))?;
        if name.chars().any(|c| c.is_ascii_uppercase() || c == '_') {
            return Err(invalid(format!(
                "FunctionName {name:?}: serval names functions as services (lower case letters, digits and '-')"
            )));
        }
        if self.controller.get_service(NAMESPACE, &name).is_ok() {
            return Err(aws_error(
                StatusCode::CONFLICT,
                "ResourceConflictException",
                format!("Function already exist: {name}"),
            ));
        }
        let timeout = input["Timeout"].as_u64().unwrap_or(DEFAULT_TIMEOUT);
        let memory = input["MemorySize"].as_u64().unwrap_or(DEFAULT_MEMORY);
        if !(1..=900).contains(&timeout) || !(128..=10_240).contains(&memory) {
            return Err(invalid("Timeout must be 1 to 900 seconds and MemorySize 128 to 10240 MB"));
        }
        let env: Vec<Value> = input["Environment"]["Variables"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| json!({"name": k, "value": v.as_str().unwrap_or_default()}))
            .collect();
        let runtime = input["Runtime"].as_str();
        let handler = input["Handler"].as_str();
        let mut annotations = json!({"serval.dev/protocol": "lambda"});
        if let Some(runtime) = runtime {
            annotations["serval.dev/lambda-runtime"] = runtime.into();
        }
        if let Some(handler) = handler {
            annotations["serval.dev/lambda-handler"] = handler.into();
        }
        let mut container = json!({"env": env, "resources": {"limits": {"memory": format!("{memory}Mi")}}});
        let (code_size, sha) = match (input["PackageType"].as_str(), input["Code"]["ImageUri"].as_str()) {
            (Some("Image"), Some(image)) | (None, Some(image)) => {
                container["image"] = image.into();
                (0, String::new())
            }
            _ => {
                let zip = input["Code"]["ZipFile"].as_str().ok_or_else(|| invalid("Code.ZipFile is required"))?;
                let zip = base64::engine::general_purpose::STANDARD
                    .decode(zip)
                    .map_err(|e| invalid(format!("Code.ZipFile is not base64: {e}")))?;
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &zip);
                let sha = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
                let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                let dir = self.code_dir.join(&name).join(hex);
                let size = zip.len();
                let unpack_to = dir.clone();
                tokio::task::spawn_blocking(move || unzip(&zip, &unpack_to))
                    .await
                    .map_err(|e| invalid(e.to_string()))?
                    .map_err(|e| invalid(format!("Code.ZipFile: {e}")))?;
                let command = match runtime {
                    Some(r) if r.starts_with("python3") => "python3".to_string(),
                    Some(r) if r.starts_with("provided") => dir.join("bootstrap").display().to_string(),
                    other => {
                        return Err(invalid(format!(
                            "Runtime {other:?} is not supported here: use python3.x or provided.al2/al2023 (or PackageType Image)"
                        )));
                    }
                };
                container["command"] = json!([command]);
                container["workingDir"] = dir.display().to_string().into();
                (size, sha)
            }
        };
        let meta = json!({
            "Role": input["Role"],
            "Description": input["Description"].as_str().unwrap_or_default(),
            "CodeSize": code_size,
            "CodeSha256": sha,
            "LastModified": humantime::format_rfc3339_millis(SystemTime::now()).to_string().replace('Z', "+0000"),
        });
        annotations[serval_model::LAMBDA_FUNCTION] = meta.to_string().into();
        let service = json!({
            "apiVersion": "serving.knative.dev/v1",
            "kind": Service::KIND,
            "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations},
            "spec": {"template": {"spec": {"timeoutSeconds": timeout, "containers": [container]}}},
        });
        let body = serde_json::to_vec(&service).map_err(|e| invalid(e.to_string()))?;
        self.controller
            .apply_service(NAMESPACE, Some(&name), &body, ApplyMode::Create)
            .await
            .map_err(|e| invalid(e.to_string()))?;
        Ok(json_response(StatusCode::CREATED, &configuration(&self.function(&name)?)))
    }

    /// `Invoke`: through the data plane to the function's instances, as its URL is called;
    /// `Event` through the async queue, `DryRun` answered at once; `tail`: with the
    /// invocation's log (`LogType: Tail`, synchronous calls only).
    async fn invoke(
        &self,
        name: &str,
        kind: &str,
        tail: bool,
        payload: Bytes,
    ) -> Result<Response<Full<Bytes>>, AwsError> {
        if kind == "DryRun" {
            self.function(name)?;
            return Ok(Response::builder().status(StatusCode::NO_CONTENT).body(Full::default()).unwrap_or_default());
        }
        if !matches!(kind, "RequestResponse" | "Event") {
            return Err(invalid(format!("X-Amz-Invocation-Type {kind:?} must be RequestResponse, Event or DryRun")));
        }
        let local = self
            .local
            .get()
            .ok_or_else(|| aws_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", "starting"))?;
        let mut req = Request::post(format!("/f/{NAMESPACE}/{name}/"))
            .header(http::header::HOST, "lambda.localhost")
            .header(serval_lambda::INVOKE_HEADER, "1")
            .header(http::header::CONTENT_TYPE, "application/json");
        if kind == "Event" {
            req = req.header("prefer", "respond-async");
        } else if tail {
            req = req.header("x-amz-log-type", "Tail");
        }
        let req = req.body(payload).map_err(|e| invalid(e.to_string()))?;
        let answer = local
            .send(req)
            .await
            .ok_or_else(|| aws_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", "the gateway is stopping"))?;
        let (parts, body) = answer.into_parts();
        // Routed by the gateway (no store read on the way): a function that is not there
        // is its 404 (a Lambda function itself answers Invoke with 200).
        if parts.status == StatusCode::NOT_FOUND {
            self.function(name)?;
        }
        let body = body
            .collect()
            .await
            .map_err(|e| aws_error(StatusCode::BAD_GATEWAY, "ServiceException", e.to_string()))?
            .to_bytes();
        if kind == "Event" {
            return match parts.status {
                StatusCode::ACCEPTED => {
                    Ok(Response::builder().status(StatusCode::ACCEPTED).body(Full::default()).unwrap_or_default())
                }
                status => Err(aws_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ServiceException",
                    format!("the event was not queued ({status}): {}", String::from_utf8_lossy(&body)),
                )),
            };
        }
        if parts.status != StatusCode::OK {
            return Err(aws_error(
                StatusCode::BAD_GATEWAY,
                "ResourceNotReadyException",
                format!("the function could not run ({}): {}", parts.status, String::from_utf8_lossy(&body)),
            ));
        }
        let mut response = Response::builder().status(StatusCode::OK);
        for (name, value) in &parts.headers {
            if name.as_str().starts_with("x-amz-") || name == http::header::CONTENT_TYPE {
                response = response.header(name, value);
            }
        }
        Ok(response.body(Full::new(body)).unwrap_or_default())
    }
}

/// Whether a service runs a Lambda function.
fn is_function(service: &Service) -> bool {
    service.annotation(serval_model::PROTOCOL) == Some("lambda")
}

/// `FunctionConfiguration` of a function's service.
fn configuration(service: &Service) -> Value {
    let name = service.metadata.name.as_str();
    let meta: Value = service
        .metadata
        .annotations
        .get(serval_model::LAMBDA_FUNCTION)
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_else(|| json!({}));
    let container = service.spec.template.spec.containers.first().cloned().unwrap_or_default();
    let ready = service.status.conditions.iter().find(|c| c.kind == "Ready");
    let (state, reason) = match ready.map(|c| (&c.status, c.message.clone())) {
        Some((ConditionStatus::True, _)) => ("Active", String::new()),
        Some((ConditionStatus::False, message)) => ("Failed", message),
        _ => ("Pending", String::new()),
    };
    let variables: serde_json::Map<String, Value> = container
        .env
        .iter()
        .filter(|e| e.value_from.is_none())
        .map(|e| (e.name.clone(), Value::String(e.value.clone())))
        .collect();
    let memory = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.get("memory"))
        .and_then(|m| serval_model::parse_memory(m).ok())
        .map_or(DEFAULT_MEMORY, |b| (b / (1024 * 1024)) as u64);
    let image = container.image.is_some();
    let configuration = json!({
        "FunctionName": name,
        "FunctionArn": format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"),
        "Runtime": service.annotation(serval_model::LAMBDA_RUNTIME),
        "Role": meta["Role"],
        "Handler": service.annotation(serval_model::LAMBDA_HANDLER),
        "CodeSize": meta["CodeSize"].as_u64().unwrap_or(0),
        "Description": meta["Description"].as_str().unwrap_or_default(),
        "Timeout": service.spec.template.spec.timeout_seconds(),
        "MemorySize": memory,
        "LastModified": meta["LastModified"],
        "CodeSha256": meta["CodeSha256"].as_str().unwrap_or_default(),
        "Version": "$LATEST",
        "Environment": {"Variables": variables},
        "RevisionId": service.status.latest_created_revision_name,
        "State": state,
        "StateReason": reason,
        "LastUpdateStatus": if state == "Pending" { "InProgress" } else if state == "Failed" { "Failed" } else { "Successful" },
        "PackageType": if image { "Image" } else { "Zip" },
        "Architectures": ["x86_64"],
    });
    configuration
}

/// Unpacks a function's zip into `dir` (replaced), refusing entries outside it and more
/// than [`MAX_UNZIPPED`] bytes; keeps the executable bits.
fn unzip(zip: &[u8], dir: &Path) -> Result<(), String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut total = 0u64;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| e.to_string())?;
        let Some(relative) = entry.enclosed_name() else {
            return Err(format!("entry {:?} points outside the function's directory", entry.name()));
        };
        let path = dir.join(&relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut data = Vec::new();
        (&mut entry).take(MAX_UNZIPPED - total + 1).read_to_end(&mut data).map_err(|e| e.to_string())?;
        total += data.len() as u64;
        if total > MAX_UNZIPPED {
            return Err(format!("unpacked, the function is over {MAX_UNZIPPED} bytes"));
        }
        std::fs::write(&path, &data).map_err(|e| e.to_string())?;
        let executable =
            entry.unix_mode().is_some_and(|m| m & 0o111 != 0) || relative.file_name().is_some_and(|n| n == "bootstrap");
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

impl serval_gateway::Ingress for LambdaApi {
    fn claims(&self, rest: &str) -> bool {
        rest.starts_with("functions")
    }

    fn handle(&self, _rest: String, req: Request<ProxyBody>) -> BoxFuture<'static, Response<Full<Bytes>>> {
        let Some(this) = self.this.upgrade() else {
            let stopping = aws_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", "the server is stopping");
            return std::future::ready(stopping.response()).boxed();
        };
        async move { this.serve(req).await.unwrap_or_else(|e| e.response()) }.boxed()
    }
}
