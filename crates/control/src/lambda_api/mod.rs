//! The AWS Lambda API on the gateway (`/2015-03-31/…`, and `InvokeAsync` at
//! `/2014-11-13/…`), so that boto3 and the AWS CLI work unmodified against serval:
//! `CreateFunction` (a zip in `Code.ZipFile`, or `PackageType: Image`), `GetFunction`,
//! `GetFunctionConfiguration`, `ListFunctions`, `DeleteFunction`, `UpdateFunctionCode`,
//! `UpdateFunctionConfiguration`, `PublishVersion`, `ListVersionsByFunction`, the alias
//! operations (with weighted `RoutingConfig`) and `Invoke` (`RequestResponse`, `Event`
//! through the async queue, `DryRun`; `Qualifier` a version or an alias). Requests are
//! checked with SigV4 against the server's key pair. A function is a serval Service of
//! namespace `default` with `serval.dev/protocol: lambda` (its code unpacked under
//! `DATA/functions/<name>/<sha256>`, see [`code`]); its versions are revisions and its
//! aliases tags of the Service's traffic (see [`versions`]).

mod code;
mod versions;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};
use serval_gateway::{LocalClient, ProxyBody};
use serval_lambda::sigv4::{Credentials, SignedRequest, verify};
use serval_model::{Resource, Service};

use crate::ControlError;
use crate::controller::Controller;
use crate::kinds::ApplyMode;
use code::{Code, Runs};
use versions::{FunctionMeta, LATEST, PublishedVersion};

/// Where the gateway hands the Lambda API's requests: `Invoke` and the control
/// operations, and the deprecated `InvokeAsync`.
pub const PREFIXES: [&str; 2] = ["/2015-03-31/", "/2014-11-13/"];
/// The namespace of functions made through the Lambda API.
const NAMESPACE: &str = "default";
/// The largest request body (a zip of 50 MB, base64 in JSON).
const MAX_REQUEST: usize = 70 * 1024 * 1024;
const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";
/// Knative's tag-header routing, by which an invocation reaches a version's revision.
const TAG_HEADER: &str = "knative-serving-tag";
/// How long `Publish: true` waits for the new code to be ready before publishing it.
const PUBLISH_WAIT: Duration = Duration::from_secs(120);

/// The Lambda API.
pub struct LambdaApi {
    /// Itself, for the requests it serves from `&self` (the gateway holds it as a trait object).
    this: std::sync::Weak<LambdaApi>,
    controller: Arc<Controller>,
    credentials: Credentials,
    /// Where functions' code is unpacked.
    code_dir: PathBuf,
    /// Images that run zips of a runtime (see [`code::set_code`]).
    images: Vec<(String, String)>,
    /// The data plane in process, for invocations (set once the gateway exists).
    local: OnceLock<LocalClient>,
    /// The control plane's runtime, where the operations that change functions run: the
    /// gateway's threads each have a runtime of their own, which stops with the gateway, and
    /// what a change starts (a revision's runner, its instances) must outlive it.
    control_runtime: tokio::runtime::Handle,
}

/// An error in AWS's shape: the status, `x-amzn-ErrorType` and `{"Type", "Message"}`.
#[derive(Debug)]
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
        format!("Function not found: {}", versions::arn(name, None)),
    )
}

fn invalid(message: impl Into<String>) -> AwsError {
    aws_error(StatusCode::BAD_REQUEST, "InvalidParameterValueException", message)
}

fn conflict(message: impl Into<String>) -> AwsError {
    aws_error(StatusCode::CONFLICT, "ResourceConflictException", message)
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

fn no_content() -> Response<Full<Bytes>> {
    Response::builder().status(StatusCode::NO_CONTENT).body(Full::default()).unwrap_or_default()
}

/// `%3A` and `%24` decoded (the only escapes names, ARNs and qualifiers need).
fn unescape(text: &str) -> String {
    text.replace("%3A", ":").replace("%3a", ":").replace("%24", "$")
}

/// The function a path segment names — a name, a partial ARN (`123456789012:function:name`)
/// or a full one, maybe ending in `:qualifier` — and the qualifier, from the segment or the
/// query's `Qualifier`.
fn function_ref(segment: &str, query: &str) -> (String, Option<String>) {
    let decoded = unescape(segment);
    let after = decoded.rsplit_once("function:").map_or(decoded.as_str(), |(_, rest)| rest);
    let (name, in_path) = match after.split_once(':') {
        Some((name, qualifier)) => (name, Some(qualifier.to_string())),
        None => (after, None),
    };
    let in_query = query.split('&').find_map(|pair| pair.strip_prefix("Qualifier=")).map(unescape);
    (name.to_string(), in_query.or(in_path).filter(|q| !q.is_empty()))
}

/// The JSON body of a request (`{}` when empty).
fn input(body: &[u8]) -> Result<Value, AwsError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| invalid(format!("the request is not JSON: {e}")))
}

impl LambdaApi {
    /// The API of `controller`'s functions, their code under its `lambda_code_dir`; made on
    /// the control plane's runtime.
    pub fn new(controller: Arc<Controller>, credentials: Credentials) -> Arc<LambdaApi> {
        serval_lambda::init_invoke_secret(&credentials.secret_access_key);
        let code_dir = controller.config().lambda_code_dir.clone();
        let images = controller.config().lambda_images.clone();
        Arc::new_cyclic(|this| LambdaApi {
            this: this.clone(),
            controller,
            credentials,
            code_dir,
            images,
            local: OnceLock::new(),
            control_runtime: tokio::runtime::Handle::current(),
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
        let query = parts.uri.query().unwrap_or_default();
        let signed =
            SignedRequest { method: parts.method.as_str(), path: &path, query, headers: &parts.headers, body: &body };
        verify(&signed, &self.credentials, SystemTime::now())
            .map_err(|why| aws_error(StatusCode::FORBIDDEN, "InvalidSignatureException", why))?;
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let method = &parts.method;
        let (api, rest) = segments.split_first().map_or(("", &[][..]), |(api, rest)| (*api, rest));
        if api == "2014-11-13" {
            return match (method, rest) {
                (&Method::POST, ["functions", name, "invoke-async"]) => {
                    let (name, _) = function_ref(name, "");
                    let answer = self.invoke(&name, None, "Event", false, body).await?;
                    Ok(json_response(StatusCode::ACCEPTED, &json!({"Status": answer.status().as_u16()})))
                }
                _ => Err(unknown_operation(method, &path)),
            };
        }
        let Some((&"functions", rest)) = rest.split_first() else {
            return Err(unknown_operation(method, &path));
        };
        let Some((segment, operation)) = rest.split_first() else {
            return match *method {
                Method::POST => self.create(&input(&body)?).await,
                Method::GET => self.list(),
                _ => Err(unknown_operation(method, &path)),
            };
        };
        let (name, qualifier) = function_ref(segment, query);
        let qualifier = qualifier.as_deref();
        match (method, operation) {
            (&Method::GET, []) => self.get_function(&name, qualifier),
            (&Method::GET, ["configuration"]) => {
                let service = self.function(&name)?;
                Ok(json_response(StatusCode::OK, &self.describe(&service, qualifier)?))
            }
            (&Method::DELETE, []) => self.delete(&name, qualifier).await,
            (&Method::PUT, ["code"]) => self.update_code(&name, &input(&body)?).await,
            (&Method::PUT, ["configuration"]) => self.update_configuration(&name, &input(&body)?).await,
            (&Method::POST, ["invocations"]) => {
                let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
                let kind = header("x-amz-invocation-type").unwrap_or("RequestResponse");
                let tail = header("x-amz-log-type") == Some("Tail");
                self.invoke(&name, qualifier, kind, tail, body).await
            }
            (&Method::POST, ["versions"]) => self.publish(&name, &input(&body)?).await,
            (&Method::GET, ["versions"]) => self.list_versions(&name),
            (&Method::POST, ["aliases"]) => self.create_alias(&name, &input(&body)?).await,
            (&Method::GET, ["aliases"]) => {
                let service = self.function(&name)?;
                let meta = FunctionMeta::of(&service);
                let aliases: Vec<Value> =
                    meta.aliases.iter().map(|(alias, a)| versions::alias_configuration(&name, alias, a)).collect();
                Ok(json_response(StatusCode::OK, &json!({"Aliases": aliases})))
            }
            (&Method::GET, ["aliases", alias]) => {
                let meta = FunctionMeta::of(&self.function(&name)?);
                let found = meta.aliases.get(*alias).ok_or_else(|| alias_not_found(&name, alias))?;
                Ok(json_response(StatusCode::OK, &versions::alias_configuration(&name, alias, found)))
            }
            (&Method::PUT, ["aliases", alias]) => self.update_alias(&name, alias, &input(&body)?).await,
            (&Method::DELETE, ["aliases", alias]) => {
                let mut service = self.function(&name)?;
                let mut meta = FunctionMeta::of(&service);
                meta.aliases.remove(*alias).ok_or_else(|| alias_not_found(&name, alias))?;
                meta.store_in(&mut service);
                self.write(service).await?;
                Ok(no_content())
            }
            _ => Err(unknown_operation(method, &path)),
        }
    }

    /// A function made through this API (or any Lambda-protocol service of `default`).
    fn function(&self, name: &str) -> Result<Service, AwsError> {
        let service = self.controller.get_service(NAMESPACE, name).map_err(|_| not_found(name))?;
        if is_function(&service) { Ok(service) } else { Err(not_found(name)) }
    }

    /// Stores a function's changed Service (refused when it changed since it was read).
    async fn write(&self, service: Service) -> Result<Service, AwsError> {
        let name = service.metadata.name.clone();
        let body = serde_json::to_vec(&service).map_err(|e| invalid(e.to_string()))?;
        let applied =
            self.controller.apply_service(NAMESPACE, Some(&name), &body, ApplyMode::CreateOrUpdate).await.map_err(
                |e| match e {
                    ControlError::StaleVersion(why) | ControlError::Conflict(why) => conflict(why),
                    other => invalid(other.to_string()),
                },
            )?;
        Ok(applied.service)
    }

    /// `FunctionConfiguration` of a function's `$LATEST`, a version, or an alias's version.
    fn describe(&self, service: &Service, qualifier: Option<&str>) -> Result<Value, AwsError> {
        let name = service.metadata.name.as_str();
        let meta = FunctionMeta::of(service);
        let version = match qualifier {
            None | Some(LATEST) => LATEST,
            Some(q) => match meta.aliases.get(q) {
                Some(alias) => alias.function_version.as_str(),
                None => q,
            },
        };
        if version == LATEST {
            let latest = self.controller.get_revision(NAMESPACE, &service.status.latest_created_revision_name).ok();
            let runs = Runs::Latest(service, latest.as_ref());
            return Ok(code::configuration(name, &meta, LATEST, &runs, &service.metadata.resource_version));
        }
        let published = meta.version(version).ok_or_else(|| {
            aws_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                format!("Function not found: {}", versions::arn(name, qualifier)),
            )
        })?;
        let revision = self.controller.get_revision(NAMESPACE, &published.revision).map_err(|_| not_found(name))?;
        Ok(code::configuration(name, &meta, version, &Runs::Version(&revision), &revision.metadata.uid))
    }

    fn get_function(&self, name: &str, qualifier: Option<&str>) -> Result<Response<Full<Bytes>>, AwsError> {
        let service = self.function(name)?;
        let configuration = self.describe(&service, qualifier)?;
        let mut answer =
            json!({"Configuration": configuration, "Code": {"RepositoryType": "S3", "Location": ""}, "Tags": {}});
        if let Some(image) = service.spec.template.spec.containers.first().and_then(|c| c.image.clone()) {
            answer["Code"] = json!({"RepositoryType": "ECR", "ImageUri": image, "ResolvedImageUri": image});
        }
        Ok(json_response(StatusCode::OK, &answer))
    }

    fn list(&self) -> Result<Response<Full<Bytes>>, AwsError> {
        let services = self.controller.list_services(Some(NAMESPACE)).map_err(|e| invalid(e.to_string()))?;
        let functions = services.iter().filter(|s| is_function(s)).map(|s| self.describe(s, None));
        let functions = functions.collect::<Result<Vec<Value>, AwsError>>()?;
        Ok(json_response(StatusCode::OK, &json!({"Functions": functions})))
    }

    /// `CreateFunction`: the code unpacked (or the image named), then a Service.
    async fn create(&self, input: &Value) -> Result<Response<Full<Bytes>>, AwsError> {
        let name = input["FunctionName"].as_str().ok_or_else(|| invalid("FunctionName is required"))?;
        let (name, _) = function_ref(name, "");
        serval_model::validate_name(&name.to_ascii_lowercase(), 63)
            .map_err(|e| invalid(format!("FunctionName {name:?}: {e}")))?;
        if name.chars().any(|c| c.is_ascii_uppercase() || c == '_') {
            return Err(invalid(format!(
                "FunctionName {name:?}: serval names functions as services (lower case letters, digits and '-')"
            )));
        }
        if self.controller.get_service(NAMESPACE, &name).is_ok() {
            return Err(conflict(format!("Function already exist: {name}")));
        }
        let skeleton = json!({
            "apiVersion": "serving.knative.dev/v1",
            "kind": Service::KIND,
            "metadata": {"name": name, "namespace": NAMESPACE, "annotations": {serval_model::PROTOCOL: "lambda"}},
            "spec": {"template": {"spec": {
                "timeoutSeconds": code::DEFAULT_TIMEOUT,
                "containers": [{"resources": {"limits": {"memory": format!("{}Mi", code::DEFAULT_MEMORY)}}}],
            }}},
        });
        let mut service: Service = serde_json::from_value(skeleton).map_err(|e| invalid(e.to_string()))?;
        code::apply_settings(&mut service, input, &self.images)?;
        let mut meta = FunctionMeta { role: input["Role"].clone(), ..FunctionMeta::default() };
        meta.code.description = input["Description"].as_str().unwrap_or_default().to_string();
        meta.code.last_modified = code::last_modified();
        let runtime = input["Runtime"].as_str();
        let code = match (input["PackageType"].as_str(), input["Code"]["ImageUri"].as_str()) {
            (Some("Image") | None, Some(image)) => Code::Image(image.to_string()),
            _ => {
                let zip = input["Code"]["ZipFile"].as_str().ok_or_else(|| invalid("Code.ZipFile is required"))?;
                if !runtime.is_some_and(code::zip_runtime) {
                    return Err(code::unsupported(runtime));
                }
                let unpacked = code::unpack(&self.code_dir, &name, zip, "Code.ZipFile").await?;
                (meta.code.code_size, meta.code.code_sha256) = (unpacked.size, unpacked.sha256);
                Code::Dir(unpacked.dir)
            }
        };
        code::set_code(&mut service, runtime, code, &self.images)?;
        meta.store_in(&mut service);
        let service = self.write(service).await?;
        if input["Publish"].as_bool() == Some(true) {
            return self.publish(&name, &json!({})).await;
        }
        Ok(json_response(StatusCode::CREATED, &self.describe(&service, None)?))
    }

    /// `UpdateFunctionCode`: a new zip (or image) for `$LATEST`, and a version of it with
    /// `Publish`.
    async fn update_code(&self, name: &str, input: &Value) -> Result<Response<Full<Bytes>>, AwsError> {
        let mut service = self.function(name)?;
        let mut meta = FunctionMeta::of(&service);
        let runtime = service.annotation(serval_model::LAMBDA_RUNTIME).map(str::to_string);
        let code = match (input["ZipFile"].as_str(), input["ImageUri"].as_str()) {
            (Some(zip), None) => {
                if !runtime.as_deref().is_some_and(code::zip_runtime) {
                    return Err(code::unsupported(runtime.as_deref()));
                }
                let unpacked = code::unpack(&self.code_dir, name, zip, "ZipFile").await?;
                (meta.code.code_size, meta.code.code_sha256) = (unpacked.size, unpacked.sha256);
                Code::Dir(unpacked.dir)
            }
            (None, Some(image)) => {
                (meta.code.code_size, meta.code.code_sha256) = (0, String::new());
                Code::Image(image.to_string())
            }
            _ => return Err(invalid("give one of ZipFile or ImageUri")),
        };
        code::set_code(&mut service, runtime.as_deref(), code, &self.images)?;
        meta.code.last_modified = code::last_modified();
        meta.store_in(&mut service);
        let service = self.write(service).await?;
        if input["Publish"].as_bool() == Some(true) {
            return self.publish(name, &json!({})).await;
        }
        Ok(json_response(StatusCode::OK, &self.describe(&service, None)?))
    }

    /// `UpdateFunctionConfiguration`: environment, memory, timeout, handler, runtime,
    /// description, role.
    async fn update_configuration(&self, name: &str, input: &Value) -> Result<Response<Full<Bytes>>, AwsError> {
        let mut service = self.function(name)?;
        let mut meta = FunctionMeta::of(&service);
        code::apply_settings(&mut service, input, &self.images)?;
        if let Some(description) = input["Description"].as_str() {
            meta.code.description = description.to_string();
        }
        if !input["Role"].is_null() {
            meta.role = input["Role"].clone();
        }
        meta.code.last_modified = code::last_modified();
        meta.store_in(&mut service);
        let service = self.write(service).await?;
        Ok(json_response(StatusCode::OK, &self.describe(&service, None)?))
    }

    /// `DeleteFunction`: the function, or with a qualifier one of its versions.
    async fn delete(&self, name: &str, qualifier: Option<&str>) -> Result<Response<Full<Bytes>>, AwsError> {
        let mut service = self.function(name)?;
        let Some(version) = qualifier else {
            self.controller.delete_service(NAMESPACE, name).await.map_err(|e| invalid(e.to_string()))?;
            let _ = std::fs::remove_dir_all(self.code_dir.join(name));
            return Ok(no_content());
        };
        let mut meta = FunctionMeta::of(&service);
        let number = version.parse::<u32>().ok().filter(|n| meta.versions.contains_key(n));
        let number = number.ok_or_else(|| invalid(format!("Qualifier {version:?} is not a version of {name}")))?;
        if let Some((alias, _)) = meta
            .aliases
            .iter()
            .find(|(_, a)| a.function_version == version || a.additional_version_weights.contains_key(version))
        {
            return Err(conflict(format!("version {version} is used by alias {alias}")));
        }
        meta.versions.remove(&number);
        meta.store_in(&mut service);
        self.write(service).await?;
        Ok(no_content())
    }

    /// `PublishVersion`: a version of the function's latest revision, once that is ready
    /// (the version it already is, when it was published before).
    async fn publish(&self, name: &str, input: &Value) -> Result<Response<Full<Bytes>>, AwsError> {
        let deadline = tokio::time::Instant::now() + PUBLISH_WAIT;
        let mut service = loop {
            let service = self.function(name)?;
            let status = &service.status;
            if status.latest_created_revision_name == status.latest_ready_revision_name
                || tokio::time::Instant::now() > deadline
                || Runs::Latest(&service, None).failed()
            {
                break service;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let status = &service.status;
        if status.latest_created_revision_name != status.latest_ready_revision_name {
            return Err(conflict(format!(
                "The operation cannot be performed at this time. An update is in progress for resource: {} (its latest revision is not ready)",
                versions::arn(name, None)
            )));
        }
        let mut meta = FunctionMeta::of(&service);
        if let Some(expected) = input["CodeSha256"].as_str()
            && expected != meta.code.code_sha256
        {
            return Err(invalid(format!(
                "CodeSha256 ({expected}) does not match the function's code ({})",
                meta.code.code_sha256
            )));
        }
        let revision = status.latest_ready_revision_name.clone();
        let existing = meta.versions.iter().find(|(_, v)| v.revision == revision).map(|(n, _)| *n);
        let number = match existing {
            Some(number) => number,
            None => {
                let number = meta.next_version()?;
                let code = versions::CodeRecord {
                    description: input["Description"].as_str().unwrap_or_default().to_string(),
                    last_modified: code::last_modified(),
                    ..meta.code.clone()
                };
                let version = PublishedVersion { revision, code };
                meta.versions.insert(number, version);
                meta.store_in(&mut service);
                service = self.write(service).await?;
                number
            }
        };
        Ok(json_response(StatusCode::CREATED, &self.describe(&service, Some(&number.to_string()))?))
    }

    /// `ListVersionsByFunction`: `$LATEST` and the published versions.
    fn list_versions(&self, name: &str) -> Result<Response<Full<Bytes>>, AwsError> {
        let service = self.function(name)?;
        let meta = FunctionMeta::of(&service);
        let numbers = meta.versions.keys().map(u32::to_string);
        let all = std::iter::once(LATEST.to_string()).chain(numbers);
        let configurations = all.map(|v| self.describe(&service, Some(&v))).collect::<Result<Vec<_>, _>>()?;
        Ok(json_response(StatusCode::OK, &json!({"Versions": configurations})))
    }

    async fn create_alias(&self, name: &str, input: &Value) -> Result<Response<Full<Bytes>>, AwsError> {
        let alias_name = input["Name"].as_str().ok_or_else(|| invalid("Name is required"))?;
        let service = self.function(name)?;
        let meta = FunctionMeta::of(&service);
        if meta.aliases.contains_key(alias_name) {
            return Err(conflict(format!("Alias already exists: {}", versions::arn(name, Some(alias_name)))));
        }
        if meta.aliases.len() >= versions::MAX_ALIASES {
            return Err(conflict(format!("a function keeps at most {} aliases", versions::MAX_ALIASES)));
        }
        let alias = versions::alias_from(input, None)?;
        self.put_alias(service, meta, alias_name, alias, StatusCode::CREATED).await
    }

    async fn update_alias(
        &self,
        name: &str,
        alias_name: &str,
        input: &Value,
    ) -> Result<Response<Full<Bytes>>, AwsError> {
        let service = self.function(name)?;
        let meta = FunctionMeta::of(&service);
        let current = meta.aliases.get(alias_name).ok_or_else(|| alias_not_found(name, alias_name))?;
        if let Some(expected) = input["RevisionId"].as_str()
            && expected != current.revision_id
        {
            return Err(aws_error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailedException",
                format!("RevisionId {expected} is not the alias's current one ({})", current.revision_id),
            ));
        }
        let alias = versions::alias_from(input, Some(current))?;
        self.put_alias(service, meta, alias_name, alias, StatusCode::OK).await
    }

    /// Stores an alias, checked, and answers its `AliasConfiguration` with `status`.
    async fn put_alias(
        &self,
        mut service: Service,
        mut meta: FunctionMeta,
        alias_name: &str,
        alias: versions::Alias,
        status: StatusCode,
    ) -> Result<Response<Full<Bytes>>, AwsError> {
        meta.check_alias(alias_name, &alias)?;
        let answer = versions::alias_configuration(&service.metadata.name, alias_name, &alias);
        meta.aliases.insert(alias_name.to_string(), alias);
        meta.store_in(&mut service);
        self.write(service).await?;
        Ok(json_response(status, &answer))
    }

    /// `Invoke`: through the data plane to the function's instances, as its URL is called;
    /// `Event` through the async queue, `DryRun` answered at once; `tail`: with the
    /// invocation's log (`LogType: Tail`, synchronous calls only). A qualifier picks the
    /// version (an alias's by its weights), reached by its traffic tag.
    async fn invoke(
        &self,
        name: &str,
        qualifier: Option<&str>,
        kind: &str,
        tail: bool,
        payload: Bytes,
    ) -> Result<Response<Full<Bytes>>, AwsError> {
        // Unqualified: routed by the gateway with no store read on the way.
        let version = match qualifier.filter(|q| *q != LATEST) {
            None => LATEST.to_string(),
            Some(q) => FunctionMeta::of(&self.function(name)?).resolve(name, q, fastrand::f64())?,
        };
        if kind == "DryRun" {
            self.function(name)?;
            return Ok(no_content());
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
            .header(serval_lambda::INVOKE_HEADER, serval_lambda::invoke_marker(&version))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(qualifier) = qualifier {
            req = req.header(serval_lambda::QUALIFIER_HEADER, qualifier);
        }
        if version != LATEST {
            req = req.header(TAG_HEADER, versions::version_tag(&version));
        }
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
        // A function that is not there is the gateway's 404 (a Lambda function itself
        // answers Invoke with 200).
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

fn unknown_operation(method: &Method, path: &str) -> AwsError {
    aws_error(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        format!("{method} {path} is not an operation serval serves"),
    )
}

fn alias_not_found(function: &str, alias: &str) -> AwsError {
    aws_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        format!("Alias not found: {}", versions::arn(function, Some(alias))),
    )
}

/// Whether a service runs a Lambda function.
fn is_function(service: &Service) -> bool {
    service.annotation(serval_model::PROTOCOL) == Some("lambda")
}

impl serval_gateway::Ingress for LambdaApi {
    fn claims(&self, rest: &str) -> bool {
        rest.starts_with("functions")
    }

    fn handle(&self, _rest: String, req: Request<ProxyBody>) -> BoxFuture<'static, Response<Full<Bytes>>> {
        let stopping =
            || aws_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", "the server is stopping").response();
        let Some(this) = self.this.upgrade() else {
            return std::future::ready(stopping()).boxed();
        };
        // Invocations stay on the gateway's thread (the data plane); the rest runs on the
        // control plane's runtime.
        let path = req.uri().path();
        let invocation = path.ends_with("/invocations") || path.ends_with("/invoke-async");
        let serving = async move { this.serve(req).await.unwrap_or_else(|e| e.response()) };
        if invocation {
            return serving.boxed();
        }
        let task = self.control_runtime.spawn(serving);
        async move { task.await.unwrap_or_else(|_| stopping()) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_is_named_by_name_or_arn_with_its_qualifier() {
        for (segment, query, name, qualifier) in [
            ("hello", "", "hello", None),
            ("hello", "Qualifier=live", "hello", Some("live")),
            ("hello:3", "", "hello", Some("3")),
            ("arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Ahello%3Alive", "", "hello", Some("live")),
            ("000000000000:function:hello", "Qualifier=%24LATEST", "hello", Some("$LATEST")),
        ] {
            let (n, q) = function_ref(segment, query);
            assert_eq!((n.as_str(), q.as_deref()), (name, qualifier), "{segment} {query}");
        }
    }
}
