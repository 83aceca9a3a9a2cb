//! Output formats of read commands: `-o table|json|yaml`.

use anyhow::Result;
use comfy_table::{Table, presets::NOTHING};
use serde_json::Value;

#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML, or as the table `rows` makes of it.
pub fn print(value: &Value, format: Format, table: impl FnOnce(&Value) -> Table) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(value)?),
        Format::Table => println!("{}", table(value)),
    }
    Ok(())
}

/// `(status, reason, message)` of a condition in `status.conditions`.
pub fn condition<'a>(object: &'a Value, kind: &str) -> Option<(&'a str, &'a str, &'a str)> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind).map(|c| {
        (c["status"].as_str().unwrap_or(""), c["reason"].as_str().unwrap_or(""), c["message"].as_str().unwrap_or(""))
    })
}

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(header.iter().copied());
    t
}

fn items(value: &Value) -> Vec<&Value> {
    match value["items"].as_array() {
        Some(items) => items.iter().collect(),
        None => vec![value],
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn instances(v: &Value) -> String {
    let i = &v["status"]["instances"];
    if i.is_null() { "0/0".into() } else { format!("{}/{}", text(&i["ready"]), text(&i["desired"])) }
}

/// The Ready condition's status and reason; instances that keep failing (`ContainerHealthy`
/// False) add their reason, whatever Ready says.
fn ready_reason(v: &Value) -> (String, String) {
    let (status, mut reason) = match condition(v, "Ready") {
        Some((status, reason, _)) => (status.to_string(), reason.to_string()),
        None => ("Unknown".into(), String::new()),
    };
    if let Some(("False", failing, _)) = condition(v, "ContainerHealthy") {
        let failing = format!("ContainerUnhealthy({failing})");
        reason = if reason.is_empty() { failing } else { format!("{reason}, {failing}") };
    }
    (status, reason)
}

/// Where a service answers by path, `http://127.0.0.1:<port>/f/<ns>/<svc>/`: names under
/// `localhost` in its host URL do not resolve in every client library, a path URL works
/// everywhere. `status.address.url` when the server gives it, else made from `status.url`
/// (`http://<svc>.<ns>.<domain>:<port>`).
pub fn path_url(service: &Value) -> Option<String> {
    if let Some(url) = service["status"]["address"]["url"].as_str() {
        return Some(url.to_string());
    }
    let (scheme, rest) = service["status"]["url"].as_str()?.split_once("://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let port = authority.rsplit_once(':').map(|(_, port)| format!(":{port}")).unwrap_or_default();
    let namespace = service["metadata"]["namespace"].as_str()?;
    let name = service["metadata"]["name"].as_str()?;
    Some(format!("{scheme}://127.0.0.1{port}/f/{namespace}/{name}/"))
}

/// Objects of any kind: namespace, name and the kind's columns (see
/// [`serval_model::Column`]).
pub fn columns_table(columns: &[serval_model::Column], value: &Value) -> Table {
    let mut header = vec!["NAMESPACE", "NAME"];
    header.extend(columns.iter().map(|c| c.name.as_str()));
    let mut t = table(&header);
    for item in items(value) {
        let mut row = vec![text(&item["metadata"]["namespace"]), text(&item["metadata"]["name"])];
        row.extend(columns.iter().map(|c| c.value(item)));
        t.add_row(row);
    }
    t
}

/// Services: one row each.
pub fn services_table(value: &Value) -> Table {
    let mut t = table(&["NAMESPACE", "NAME", "URL", "PATH URL", "LATEST", "READY", "REASON", "INSTANCES", "LOAD"]);
    for s in items(value) {
        let (ready, reason) = ready_reason(s);
        t.add_row(vec![
            text(&s["metadata"]["namespace"]),
            text(&s["metadata"]["name"]),
            text(&s["status"]["url"]),
            path_url(s).unwrap_or_default(),
            text(&s["status"]["latestCreatedRevisionName"]),
            ready,
            reason,
            instances(s),
            load(s),
        ]);
    }
    t
}

/// `c=1.5 rps=12.0 q=3 PANIC`: observed concurrency and rps over the stable window, queued
/// requests, panic mode.
fn load(v: &Value) -> String {
    let i = &v["status"]["instances"];
    if i.is_null() {
        return String::new();
    }
    let mut text = format!(
        "c={:.1} rps={:.1}",
        i["observedConcurrency"].as_f64().unwrap_or(0.0),
        i["observedRps"].as_f64().unwrap_or(0.0)
    );
    if i["queued"].as_u64().is_some_and(|q| q > 0) {
        text.push_str(&format!(" q={}", i["queued"]));
    }
    if i["panic"] == true {
        text.push_str(" PANIC");
    }
    text
}

/// Revisions: one row each, with the traffic they get from their service.
pub fn revisions_table(value: &Value) -> Table {
    let mut t = table(&["NAME", "SERVICE", "TRAFFIC", "TAGS", "READY", "REASON", "INSTANCES", "CREATED"]);
    for r in items(value) {
        let (ready, reason) = ready_reason(r);
        let traffic = r["status"]["traffic"].as_u64().map(|p| format!("{p}%")).unwrap_or_default();
        t.add_row(vec![
            text(&r["metadata"]["name"]),
            text(&r["metadata"]["labels"]["serving.knative.dev/service"]),
            traffic,
            text(&r["status"]["tags"]),
            ready,
            reason,
            instances(r),
            text(&r["metadata"]["creationTimestamp"]),
        ]);
    }
    t
}

/// `status.traffic`: one row per target.
pub fn traffic_table(value: &Value) -> Table {
    let mut t = table(&["REVISION", "PERCENT", "LATEST", "TAG", "URL"]);
    for target in value.as_array().into_iter().flatten() {
        t.add_row(vec![
            text(&target["revisionName"]),
            format!("{}%", text(&target["percent"])),
            if target["latestRevision"] == true { "yes".into() } else { String::new() },
            text(&target["tag"]),
            text(&target["url"]),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::path_url;

    #[test]
    fn the_path_url_is_the_servers_or_made_from_the_host_url() {
        let service = |status: serde_json::Value| json!({ "metadata": { "name": "hello", "namespace": "team" }, "status": status });
        let derived = service(json!({ "url": "http://hello.team.localhost:8080" }));
        assert_eq!(path_url(&derived).as_deref(), Some("http://127.0.0.1:8080/f/team/hello/"));
        let default_port = service(json!({ "url": "http://hello.team.example.com" }));
        assert_eq!(path_url(&default_port).as_deref(), Some("http://127.0.0.1/f/team/hello/"));
        let published = service(json!({
            "url": "http://hello.team.localhost:8080",
            "address": { "url": "http://10.0.0.7:8080/f/team/hello/" }
        }));
        assert_eq!(path_url(&published).as_deref(), Some("http://10.0.0.7:8080/f/team/hello/"));
        assert_eq!(path_url(&service(json!({}))), None, "not routed yet");
    }
}
