//! Runtime expressions: jq through the jaq crates, with the DSL's arguments (`$context`,
//! `$input`, `$workflow`, `$task`, `$runtime`, and the variables tasks bind: `$item`,
//! `$index`, a caught `$error`, …) as global variables.
//!
//! A string is an expression when it is `${ … }`; fields that always hold one (`when`,
//! `for.in`, `input.from`, `output.as`, `export.as`) take a bare jq filter too.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use serde_json::Value;

use crate::error::Error;

/// The longest expression taken (a bound on untrusted documents).
const MAX_EXPRESSION: usize = 16 * 1024;

/// Named values an expression sees as `$name`.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    vars: Vec<(String, Value)>,
}

impl Scope {
    /// Binds `$name` (a later binding of a name hides an earlier one).
    pub fn with(&self, name: &str, value: Value) -> Scope {
        let mut vars: Vec<(String, Value)> = self.vars.iter().filter(|(n, _)| n != name).cloned().collect();
        vars.push((name.to_string(), value));
        Scope { vars }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// The jq filter of `${ … }`, or `None` for a plain string.
pub fn embedded(text: &str) -> Option<&str> {
    let trimmed = text.trim();
    trimmed.strip_prefix("${").and_then(|rest| rest.strip_suffix('}')).map(str::trim)
}

/// Evaluates a jq `filter` on `input`: its first output (null when it has none).
pub fn evaluate(filter: &str, input: &Value, scope: &Scope) -> Result<Value, Error> {
    if filter.len() > MAX_EXPRESSION {
        return Err(Error::expression(format!(
            "an expression of {} bytes is longer than {MAX_EXPRESSION}",
            filter.len()
        )));
    }
    // Only the variables the filter names are bound (converting `$workflow`, which holds
    // the whole document, costs more than most filters).
    let used: Vec<&(String, Value)> = scope.vars.iter().filter(|(n, _)| filter.contains(&format!("${n}"))).collect();
    let names: Vec<String> = used.iter().map(|(n, _)| format!("${n}")).collect();
    let compiled = compiled(filter, names)?;
    let values = used.iter().map(|(_, v)| to_val(v)).collect::<Result<Vec<Val>, Error>>()?;
    let ctx = Ctx::<data::JustLut<Val>>::new(&compiled.lut, Vars::new(values));
    let mut outputs = compiled.id.run((ctx, to_val(input)?)).map(unwrap_valr);
    match outputs.next() {
        None => Ok(Value::Null),
        Some(Ok(value)) => from_val(&value),
        Some(Err(e)) => Err(Error::expression(format!("{filter:?}: {e}"))),
    }
}

/// Whether a `when` filter holds (jq truthiness: anything but `false` and `null`).
pub fn holds(filter: &str, input: &Value, scope: &Scope) -> Result<bool, Error> {
    let filter = embedded(filter).unwrap_or(filter);
    Ok(!matches!(evaluate(filter, input, scope)?, Value::Null | Value::Bool(false)))
}

/// A field that always holds an expression: `${ … }` or a bare filter.
pub fn evaluate_field(text: &str, input: &Value, scope: &Scope) -> Result<Value, Error> {
    evaluate(embedded(text).unwrap_or(text), input, scope)
}

/// `value` with every `${ … }` string in it (at any depth) replaced by its result.
pub fn interpolate(value: &Value, input: &Value, scope: &Scope) -> Result<Value, Error> {
    Ok(match value {
        Value::String(s) => match embedded(s) {
            Some(filter) => evaluate(filter, input, scope)?,
            None => value.clone(),
        },
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| interpolate(v, input, scope)).collect::<Result<_, _>>()?)
        }
        Value::Object(map) => Value::Object(
            map.iter().map(|(k, v)| Ok((k.clone(), interpolate(v, input, scope)?))).collect::<Result<_, Error>>()?,
        ),
        other => other.clone(),
    })
}

type Compiled = jaq_core::Filter<data::JustLut<Val>>;

/// Compiled filters by (filter, variable names), per thread: loading jq's standard
/// definitions and compiling is most of an expression's cost, and a workflow evaluates the
/// same few expressions again and again.
type CompiledCache = std::collections::HashMap<(String, Vec<String>), std::rc::Rc<Compiled>>;

/// The most compiled filters a thread keeps (the cache is emptied when full).
const MAX_COMPILED: usize = 2048;

thread_local! {
    static COMPILED: std::cell::RefCell<CompiledCache> = std::cell::RefCell::default();
}

fn compiled(filter: &str, names: Vec<String>) -> Result<std::rc::Rc<Compiled>, Error> {
    let key = (filter.to_string(), names);
    if let Some(hit) = COMPILED.with(|cache| cache.borrow().get(&key).cloned()) {
        return Ok(hit);
    }
    let program = File { code: filter, path: () };
    let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
    let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let modules = loader
        .load(&arena, program)
        .map_err(|errors| Error::expression(format!("cannot parse {filter:?}: {}", describe(&errors))))?;
    let compiled = Compiler::default()
        .with_funs(funs)
        .with_global_vars(key.1.iter().map(String::as_str))
        .compile(modules)
        .map_err(|errors| Error::expression(format!("cannot compile {filter:?}: {}", describe(&errors))))?;
    let compiled = std::rc::Rc::new(compiled);
    COMPILED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= MAX_COMPILED {
            cache.clear();
        }
        cache.insert(key, compiled.clone());
    });
    Ok(compiled)
}

fn describe<T: std::fmt::Debug>(errors: &T) -> String {
    let text = format!("{errors:?}");
    text.chars().take(300).collect()
}

fn to_val(value: &Value) -> Result<Val, Error> {
    let text = serde_json::to_vec(value).map_err(|e| Error::expression(e.to_string()))?;
    jaq_json::read::parse_single(&text).map_err(|e| Error::expression(format!("{e}")))
}

fn from_val(value: &Val) -> Result<Value, Error> {
    serde_json::from_str(&value.to_string())
        .map_err(|e| Error::expression(format!("the result {value} is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn expressions_see_their_input_and_variables() {
        let scope = Scope::default().with("color", json!("red")).with("index", json!(2));
        assert_eq!(evaluate(".a + [$color]", &json!({"a": ["x"]}), &scope).expect("ok"), json!(["x", "red"]));
        assert_eq!(
            interpolate(&json!({"n": "${ $index + 1 }", "s": "plain"}), &json!(null), &scope).expect("ok"),
            json!({"n": 3, "s": "plain"})
        );
        assert_eq!(evaluate(r#""Hello \(.name)!""#, &json!({"name": "Ana"}), &scope).expect("ok"), json!("Hello Ana!"));
        assert!(holds(".color == \"red\"", &json!({"color": "red"}), &scope).expect("ok"));
        assert!(!holds("${ .missing }", &json!({}), &scope).expect("ok"));
        assert_eq!(evaluate("empty", &json!(1), &scope).expect("ok"), Value::Null);
        assert!(evaluate(".[", &json!(1), &scope).is_err());
        assert!(evaluate("error(\"boom\")", &json!(1), &scope).is_err());
    }
}
