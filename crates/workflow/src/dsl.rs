//! A workflow document (DSL 1.0): parsed from YAML or JSON, checked, and kept as JSON with
//! typed access to what the engine needs. Tasks stay JSON objects: the DSL has many
//! shapes, and the engine reads each task's fields where it runs it.

use serde_json::{Map, Value};

use crate::error::Error;

/// The largest document taken.
pub const MAX_DOCUMENT: usize = 1 << 20;
/// The deepest nesting of task lists taken.
pub const MAX_DEPTH: usize = 32;

/// The task kinds of the DSL (each task object has exactly one of these keys).
pub const TASK_KINDS: [&str; 12] =
    ["call", "do", "emit", "for", "fork", "listen", "raise", "run", "set", "switch", "try", "wait"];

/// Flow directives a `then` may name besides a task of the same list.
pub const DIRECTIVES: [&str; 3] = ["continue", "exit", "end"];

/// A parsed, checked workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    /// The whole document, as JSON.
    pub definition: Value,
}

/// A list of named tasks (`do`, `try`, `fork.branches`, …), in order.
pub type TaskList = Vec<(String, Value)>;

impl Workflow {
    /// Parses a YAML (or JSON) document and checks it.
    pub fn parse(text: &str) -> Result<Workflow, Error> {
        if text.len() > MAX_DOCUMENT {
            return Err(Error::validation(format!("the document is {} bytes, more than {MAX_DOCUMENT}", text.len())));
        }
        let definition: Value =
            serde_saphyr::from_str(text).map_err(|e| Error::validation(format!("not a YAML document: {e}")))?;
        Workflow::from_value(definition)
    }

    pub fn from_value(definition: Value) -> Result<Workflow, Error> {
        check(&definition)?;
        Ok(Workflow { definition })
    }

    fn document(&self, field: &str) -> &str {
        self.definition["document"][field].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.document("name")
    }

    pub fn namespace(&self) -> &str {
        self.document("namespace")
    }

    pub fn version(&self) -> &str {
        self.document("version")
    }

    /// The top-level tasks.
    pub fn tasks(&self) -> TaskList {
        task_list(&self.definition["do"]).unwrap_or_default()
    }
}

/// A task list from its JSON form: an array of one-key objects.
pub fn task_list(value: &Value) -> Result<TaskList, Error> {
    let Some(items) = value.as_array() else { return Err(Error::validation("a task list must be a sequence")) };
    items
        .iter()
        .map(|item| match item.as_object() {
            Some(map) if map.len() == 1 => {
                let (name, task) = map.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap_or_default();
                Ok((name, task))
            }
            _ => Err(Error::validation("each entry of a task list is one `name: task` mapping")),
        })
        .collect()
}

/// The kind of a task (its one task-kind key).
pub fn kind_of(task: &Map<String, Value>) -> Option<&'static str> {
    TASK_KINDS.iter().copied().find(|k| task.contains_key(*k) && !(*k == "do" && task.contains_key("for")))
}

fn check(definition: &Value) -> Result<(), Error> {
    let Some(root) = definition.as_object() else { return Err(Error::validation("a workflow is a mapping")) };
    let document =
        root.get("document").and_then(Value::as_object).ok_or_else(|| Error::validation("document is required"))?;
    for field in ["dsl", "namespace", "name", "version"] {
        match document.get(field) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::Number(_)) if field == "version" => {}
            _ => return Err(Error::validation(format!("document.{field} is required (a string)"))),
        }
    }
    let dsl = document.get("dsl").and_then(Value::as_str).unwrap_or_default();
    if !dsl.starts_with("1.0") {
        return Err(Error::validation(format!("document.dsl {dsl:?}: serval runs DSL 1.0.x")));
    }
    let tasks = root.get("do").ok_or_else(|| Error::validation("do is required"))?;
    check_list(tasks, "/do", 0)?;
    if let Some(schedule) = root.get("schedule") {
        let known = ["every", "cron", "after", "on"];
        if !schedule.as_object().is_some_and(|s| s.keys().all(|k| known.contains(&k.as_str()))) {
            return Err(Error::validation(format!("schedule takes {}", known.join(", "))).at("/schedule"));
        }
        for field in ["every", "after"] {
            if let Some(every) = schedule.get(field) {
                let every = crate::engine::duration(every).map_err(|e| e.at(&format!("/schedule/{field}")))?;
                if every.is_zero() {
                    return Err(Error::validation(format!("schedule.{field} is longer than zero")).at("/schedule"));
                }
            }
        }
        if schedule.get("cron").is_some_and(|c| !c.is_string()) {
            return Err(Error::validation("schedule.cron is a cron expression").at("/schedule/cron"));
        }
        if let Some(on) = schedule.get("on") {
            check_strategy(on).map_err(|e| e.at("/schedule/on"))?;
        }
    }
    Ok(())
}

fn check_list(value: &Value, at: &str, depth: usize) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(Error::validation(format!("tasks nest deeper than {MAX_DEPTH}")).at(at));
    }
    let tasks = task_list(value).map_err(|e| e.at(at))?;
    if tasks.is_empty() {
        return Err(Error::validation("a task list is not empty").at(at));
    }
    let names: Vec<&str> = tasks.iter().map(|(n, _)| n.as_str()).collect();
    for (i, (name, task)) in tasks.iter().enumerate() {
        let here = format!("{at}/{i}/{name}");
        check_task(name, task, &names, &here, depth)?;
    }
    Ok(())
}

fn check_task(name: &str, task: &Value, siblings: &[&str], at: &str, depth: usize) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::validation("a task has a name").at(at));
    }
    let Some(map) = task.as_object() else { return Err(Error::validation("a task is a mapping").at(at)) };
    let Some(kind) = kind_of(map) else {
        return Err(Error::validation(format!("task {name:?} has none of {}", TASK_KINDS.join(", "))).at(at));
    };
    if let Some(then) = map.get("then") {
        check_then(then, siblings, at)?;
    }
    for field in ["if"] {
        if map.get(field).is_some_and(|v| !v.is_string()) {
            return Err(Error::validation(format!("{field} is an expression")).at(at));
        }
    }
    let nested = |field: &str, value: &Value| check_list(value, &format!("{at}/{field}"), depth + 1);
    match kind {
        "do" => nested("do", &map["do"])?,
        "for" => {
            if !map["for"]["in"].is_string() {
                return Err(Error::validation("for.in is an expression").at(at));
            }
            nested("do", map.get("do").ok_or_else(|| Error::validation("for takes do").at(at))?)?;
        }
        "try" => {
            nested("try", &map["try"])?;
            if let Some(tasks) = map.get("catch").and_then(|c| c.get("do")) {
                nested("catch/do", tasks)?;
            }
        }
        "fork" => nested("fork/branches", &map["fork"]["branches"])?,
        "switch" => {
            let cases = task_list(&map["switch"]).map_err(|e| e.at(at))?;
            for (case, body) in &cases {
                if let Some(then) = body.get("then") {
                    check_then(then, siblings, &format!("{at}/switch/{case}"))?;
                }
            }
        }
        "set" if !map["set"].is_object() && !map["set"].is_string() => {
            return Err(Error::validation("set is a mapping or an expression").at(at));
        }
        "raise" if map["raise"].get("error").is_none() => {
            return Err(Error::validation("raise takes error").at(at));
        }
        "call" if !map["call"].is_string() => return Err(Error::validation("call names what is called").at(at)),
        "listen" => {
            crate::listen::Read::parse(map["listen"]["read"].as_str()).map_err(|e| e.at(at))?;
            check_strategy(&map["listen"]["to"]).map_err(|e| e.at(&format!("{at}/listen/to")))?;
        }
        _ => {}
    }
    Ok(())
}

/// An event consumption strategy (`listen.to`, `schedule.on`) that can be listened to;
/// correlation, which serval does not run yet, is refused when a run meets it, not here.
fn check_strategy(to: &Value) -> Result<(), Error> {
    match crate::listen::Listening::new(to, crate::listen::Read::Data) {
        Err(e) if e.status == Error::validation("").status => Err(e),
        _ => Ok(()),
    }
}

fn check_then(then: &Value, siblings: &[&str], at: &str) -> Result<(), Error> {
    match then.as_str() {
        Some(t) if DIRECTIVES.contains(&t) || siblings.contains(&t) => Ok(()),
        Some(t) => Err(Error::validation(format!("then: {t:?} is no task of this list nor a directive")).at(at)),
        None => Err(Error::validation("then is a task name or continue, exit, end").at(at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_checked_with_the_place_of_the_problem() {
        let ok = Workflow::parse(
            "document: {dsl: '1.0.3', namespace: default, name: wf, version: '1.0.0'}\ndo:\n  - a: {set: {x: 1}, then: b}\n  - b: {wait: PT1S}\n",
        )
        .expect("valid");
        assert_eq!((ok.name(), ok.tasks().len()), ("wf", 2));
        let err = Workflow::parse(
            "document: {dsl: '1.0.3', namespace: d, name: wf, version: '1'}\ndo:\n  - a: {set: {x: 1}, then: nowhere}\n",
        )
        .expect_err("bad then");
        assert_eq!(err.instance.as_deref(), Some("/do/0/a"));
        let err =
            Workflow::parse("document: {dsl: '1.0.3', namespace: d, name: wf, version: '1'}\ndo:\n  - a: {sing: 1}\n")
                .expect_err("no kind");
        assert!(err.detail.as_deref().is_some_and(|d| d.contains("has none of")), "{err}");
        // YAML deeper than serde-saphyr's budget is refused while parsing; JSON documents
        // (from the API) are held to MAX_DEPTH task lists.
        let deep = (0..40).fold(
            serde_json::json!({"set": {"x": 1}}),
            |inner, i| serde_json::json!({"do": [{format!("t{i}"): inner}]}),
        );
        let doc = serde_json::json!({
            "document": {"dsl": "1.0.3", "namespace": "d", "name": "wf", "version": "1"},
            "do": [{"top": deep}]
        });
        let err = Workflow::from_value(doc).expect_err("too deep");
        assert!(err.detail.as_deref().is_some_and(|d| d.contains("deeper")), "{err:?}");
    }
}
