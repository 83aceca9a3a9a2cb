//! Runs the official CESQL v1 TCK (`../shared/conformance/cesql-tck/*.yaml`, relative
//! to the workspace root) against this crate. The TCK is not vendored: the directory is
//! found by walking up from this crate, or taken from `SERVAL_CONFORMANCE_DIR`. Without
//! it the test says `SKIPPED cesql_tck: ...` and passes, unless `SERVAL_REQUIRE_CONFORMANCE=1`.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value as Json};
use serval_cesql::{Value, parse};

#[derive(Debug, Deserialize)]
struct Suite {
    name: String,
    tests: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    name: String,
    expression: String,
    #[serde(default)]
    result: Option<Json>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    event: Option<Map<String, Json>>,
    #[serde(default)]
    event_overrides: Option<Map<String, Json>>,
}

const TCK_SUBDIR: &str = "cesql-tck";

fn tck_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SERVAL_CONFORMANCE_DIR") {
        let dir = PathBuf::from(dir);
        // Accept either the conformance root or the cesql-tck directory itself.
        return [dir.join(TCK_SUBDIR), dir].into_iter().find(|d| d.is_dir());
    }
    // Read at run time: a test binary reused from a shared target directory may have been
    // built in another checkout, whose compile-time path no longer exists.
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir.ancestors().map(|dir| dir.join("shared").join("conformance").join(TCK_SUBDIR)).find(|d| d.is_dir())
}

/// The event used when a case gives none: the required attributes only.
fn default_event() -> Map<String, Json> {
    let mut event = Map::new();
    event.insert("specversion".into(), "1.0".into());
    event.insert("id".into(), "tck-id".into());
    event.insert("source".into(), "http://localhost/tck".into());
    event.insert("type".into(), "io.cloudevents.tck".into());
    event
}

/// The TCK's expected result as a CESQL value.
fn expected_value(json: &Json) -> Option<Value> {
    match json {
        Json::Bool(b) => Some(Value::Boolean(*b)),
        Json::Number(n) => n.as_i64().and_then(|i| i32::try_from(i).ok()).map(Value::Integer),
        Json::String(s) => Some(Value::String(s.clone())),
        _ => None,
    }
}

/// Runs one case; `Err` describes how it failed.
fn run_case(case: &Case) -> Result<(), String> {
    let expected_error = case.error.as_deref();
    let expression = match parse(&case.expression) {
        Ok(expression) => expression,
        // Parse-time failures (including unknown functions) have no value to compare.
        Err(e) if Some(e.kind().as_str()) == expected_error => return Ok(()),
        Err(e) => return Err(format!("parse failed: {e}")),
    };
    let mut event = case.event.clone().unwrap_or_else(default_event);
    for (key, value) in case.event_overrides.iter().flatten() {
        event.insert(key.clone(), value.clone());
    }
    let got = expression.evaluate(&event);
    let got_error = got.error().map(|e| e.kind().as_str());
    let mut problems = Vec::new();
    if got_error != expected_error {
        problems.push(format!("error: expected {expected_error:?}, got {:?}", got.errors));
    }
    if let Some(result) = &case.result {
        match expected_value(result) {
            Some(expected) if expected == got.value => {}
            Some(expected) => problems.push(format!("value: expected {expected:?}, got {:?}", got.value)),
            None => problems.push(format!("unsupported expected result {result}")),
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// Says that the running test is skipped and why: `SKIPPED <test>: <reason>`. Written to the
/// process's stderr itself, not through `eprintln!`, which libtest captures and shows only for
/// failures.
fn skip(reason: &str) {
    use std::io::Write;
    // libtest runs each test on a thread named after it.
    let test = std::thread::current().name().unwrap_or("<unnamed test>").to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

#[test]
fn cesql_tck() {
    let required = std::env::var("SERVAL_REQUIRE_CONFORMANCE").is_ok_and(|v| v == "1");
    let Some(dir) = tck_dir() else {
        assert!(!required, "SERVAL_REQUIRE_CONFORMANCE=1 but the CESQL TCK directory was not found");
        skip("conformance data not found");
        return;
    };

    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no TCK files in {}", dir.display());

    let (mut total, mut failures) = (0, String::new());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let suite: Suite = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("decoding {}: {e}", file.display()));
        let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for case in &suite.tests {
            total += 1;
            if let Err(problem) = run_case(case) {
                let _ = writeln!(
                    failures,
                    "- {file_name} [{}] {:?}\n    expression: {}\n    expected: result {:?}, error {:?}\n    {problem}",
                    suite.name, case.name, case.expression, case.result, case.error,
                );
            }
        }
    }
    let failed = failures.lines().filter(|l| l.starts_with("- ")).count();
    println!("CESQL TCK: {}/{total} passed ({} files in {})", total - failed, files.len(), dir.display());
    assert!(failures.is_empty(), "{failed} of {total} TCK cases failed:\n{failures}");
}
