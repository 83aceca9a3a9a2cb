//! A kind that exists only as a model type and a reconciler, registered with the platform,
//! is served by the API and driven by the CLI without any other change: listed, applied,
//! read as YAML, refused when invalid, watched and deleted.

mod support;

use std::process::Output;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serval_control::kinds::{Change, KindContext, Reconciler, Stored};
use serval_model::{Column, Condition, ConditionStatus, FieldError, ObjectMeta, Resource, ValidationError};
use serval_testkit::InProcess;

/// A test kind: a widget has a size; its status says whether it was reconciled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Widget {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    spec: WidgetSpec,
    #[serde(default)]
    status: WidgetStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WidgetSpec {
    size: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WidgetStatus {
    #[serde(default)]
    conditions: Vec<Condition>,
    #[serde(default)]
    reconciled_size: u32,
}

impl Resource for Widget {
    const KIND: &'static str = "Widget";
    const API_VERSION: &'static str = "test.serval.dev/v1alpha1";
    const PLURAL: &'static str = "widgets";
    const SHORT_NAMES: &'static [&'static str] = &["wd"];

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn validate(&self) -> Result<Vec<String>, ValidationError> {
        if self.spec.size > 10 {
            let error = FieldError { field: "spec.size".into(), message: "must be at most 10".into() };
            return Err(ValidationError { errors: vec![error] });
        }
        Ok(Vec::new())
    }
    fn columns() -> Vec<Column> {
        let mut columns = vec![Column::new("SIZE", "status.reconciledSize")];
        columns.extend(Column::readiness());
        columns
    }
}

/// Counts the changes it hears; the status it writes is the proof it ran.
#[derive(Default)]
struct WidgetReconciler {
    deletions: std::sync::atomic::AtomicUsize,
}

impl Reconciler<Widget> for WidgetReconciler {
    fn admit(
        &self,
        widget: &mut Widget,
        _previous: Option<&Widget>,
    ) -> Result<Vec<serval_control::kinds::WriteOp>, serval_control::ControlError> {
        widget.status.reconciled_size = widget.spec.size;
        let ready = Condition::new("Ready", ConditionStatus::True, "Reconciled", "");
        Condition::set(&mut widget.status.conditions, ready, "2026-11-30T00:00:00Z");
        Ok(Vec::new())
    }

    fn changed<'a>(&'a self, change: Change<'a, Widget>) -> BoxFuture<'a, Result<(), serval_control::ControlError>> {
        if matches!(change, Change::Deleted(_)) {
            self.deletions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Box::pin(async { Ok(()) })
    }
}

/// Runs the CLI against `platform` (in a blocking thread: the platform runs here).
async fn cli(platform: &InProcess, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(support::serval_bin());
    command.args(args).env("SERVAL_API", &platform.api).env("SERVAL_TOKEN", &platform.token);
    tokio::task::spawn_blocking(move || command.output().expect("run serval")).await.expect("join")
}

async fn ok(platform: &InProcess, args: &[&str]) -> String {
    let out = cli(platform, args).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "serval {args:?} failed: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_registered_with_only_its_model_and_reconciler_is_served_by_the_api_and_cli() {
    let reconciler = Arc::new(WidgetReconciler::default());
    let shared = reconciler.clone();
    let widgets: serval_platform::KindFactory =
        Box::new(move |context: &KindContext| Stored::<Widget, _>::new(context, shared));
    let extensions = serval_platform::Extensions { kinds: vec![widgets], ..Default::default() };
    let platform = InProcess::start_with(|_| {}, extensions).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("widget.yaml");
    let manifest = |size: u32| {
        format!("apiVersion: test.serval.dev/v1alpha1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: {size}\n")
    };

    // Discovery names it; the CLI takes its plural, singular and short name.
    let kinds: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1", platform.api))
        .bearer_auth(&platform.token)
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert!(kinds["resources"].as_array().expect("list").iter().any(|k| k["plural"] == "widgets"), "{kinds}");
    assert!(ok(&platform, &["list", "widgets", "-o", "json"]).await.contains(r#""items": []"#));

    // Applied from a file: reconciled, listed with its columns, read as YAML.
    std::fs::write(&file, manifest(3)).expect("write");
    let out = cli(&platform, &["apply", "-f", file.to_str().expect("utf-8")]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("widget default/w1 configured"));
    let table = ok(&platform, &["list", "wd"]).await;
    let header = table.lines().next().expect("header");
    assert!(header.contains("SIZE") && header.contains("READY"), "{table}");
    let row = table.lines().find(|l| l.contains("w1")).expect("a row for w1");
    assert!(row.contains('3') && row.contains("True") && row.contains("Reconciled"), "{table}");
    let yaml = ok(&platform, &["get", "widget", "w1", "-o", "yaml"]).await;
    let object: serde_json::Value = serde_saphyr::from_str(&yaml).expect("YAML");
    assert_eq!(object["status"]["reconciledSize"], 3, "{yaml}");
    assert_eq!(object["metadata"]["generation"], 1, "{yaml}");
    assert!(object["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()), "{yaml}");

    // A change of spec bumps the generation; an invalid one is refused naming the field.
    std::fs::write(&file, manifest(5)).expect("write");
    ok(&platform, &["apply", "-f", file.to_str().expect("utf-8")]).await;
    let json = ok(&platform, &["get", "wd", "w1", "-o", "json"]).await;
    let object: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(
        (object["status"]["reconciledSize"].as_u64(), object["metadata"]["generation"].as_u64()),
        (Some(5), Some(2))
    );
    std::fs::write(&file, manifest(11)).expect("write");
    let out = cli(&platform, &["apply", "-f", file.to_str().expect("utf-8")]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.size: must be at most 10"));

    // Deleted by kind and name; the reconciler heard it, and it is gone.
    let err = String::from_utf8_lossy(&cli(&platform, &["delete", "widget", "w1"]).await.stderr).into_owned();
    assert!(err.contains("widget default/w1 deleted"), "{err}");
    assert_eq!(reconciler.deletions.load(std::sync::atomic::Ordering::SeqCst), 1);
    let out = cli(&platform, &["get", "widget", "w1"]).await;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = cli(&platform, &["list", "gadgets"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown kind \"gadgets\""));
}
