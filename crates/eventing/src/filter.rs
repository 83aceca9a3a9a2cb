//! Knative Trigger filters: the legacy `spec.filter.attributes` and the Subscriptions API
//! `spec.filters` (exact, prefix, suffix, all, any, not, cesql).
//!
//! Sans-IO: [`compile`] validates a trigger's filter spec once (parsing CESQL once) into a
//! [`CompiledFilter`], whose [`matches`](CompiledFilter::matches) is a pure function of a
//! [`CloudEvent`].
//!
//! Knative rules followed here:
//! - When `filters` is non-empty it takes precedence and `filter` is ignored; the entries of
//!   `filters` are ANDed. With neither, every event matches.
//! - Legacy `filter.attributes`: every entry must match by exact string equality; the value
//!   `""` matches any value, but the attribute must be present. As in Knative, whose filter
//!   always sees the optional context attributes `subject`, `datacontenttype`,
//!   `dataschema` and `time` (as `""` when unset), those four count as present for `""`.
//! - Each `filters` entry sets exactly one dialect; `exact`/`prefix`/`suffix` need
//!   non-empty lowercase-alphanumeric attribute names and non-empty values (all entries of
//!   the map must match); `all`/`any` need at least one filter.
//! - CESQL passes only when the expression yields Boolean `true` without errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serval_cesql::Expression;

use crate::{CloudEvent, EventError};

/// The legacy `spec.filter` of a Knative `eventing.knative.dev/v1` Trigger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerFilter {
    /// Attribute name → exact value; `""` matches any value of a present attribute.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// One entry of a Trigger's `spec.filters` (Knative's `SubscriptionsAPIFilter`). Exactly
/// one field (dialect) must be set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionsApiFilter {
    /// Every attribute named must equal the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<BTreeMap<String, String>>,
    /// Every attribute named must start with the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<BTreeMap<String, String>>,
    /// Every attribute named must end with the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<BTreeMap<String, String>>,
    /// Every nested filter must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<SubscriptionsApiFilter>>,
    /// At least one nested filter must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<SubscriptionsApiFilter>>,
    /// The nested filter must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<SubscriptionsApiFilter>>,
    /// A CESQL v1 expression that must evaluate to Boolean `true` without errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cesql: Option<String>,
}

/// A validated, ready-to-evaluate trigger filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFilter {
    root: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Legacy(Vec<(String, String)>),
    Exact(Vec<(String, String)>),
    Prefix(Vec<(String, String)>),
    Suffix(Vec<(String, String)>),
    Cesql(Box<Expression>),
}

/// Optional context attributes that Knative's legacy attribute filter always sees (as `""`
/// when the event does not carry them).
const ALWAYS_PRESENT_IN_LEGACY: [&str; 4] = ["subject", "datacontenttype", "dataschema", "time"];

/// Validates a Trigger's `spec.filter` and `spec.filters` and compiles them.
///
/// A non-empty `filters` takes precedence over `filter` (which is then neither validated
/// nor used). Errors name the field at fault, e.g. `spec.filters[1].cesql`.
pub fn compile(
    filter: Option<&TriggerFilter>,
    filters: &[SubscriptionsApiFilter],
) -> Result<CompiledFilter, EventError> {
    let root = if !filters.is_empty() {
        Node::All(compile_list(filters, "spec.filters")?)
    } else if let Some(filter) = filter {
        let mut entries = Vec::with_capacity(filter.attributes.len());
        for (name, value) in &filter.attributes {
            let path = format!("spec.filter.attributes.{name}");
            check_attribute_name(name, &path)?;
            entries.push((name.clone(), value.clone()));
        }
        Node::Legacy(entries)
    } else {
        Node::All(Vec::new())
    };
    Ok(CompiledFilter { root })
}

impl CompiledFilter {
    /// A filter that passes every event (a trigger with neither `filter` nor `filters`).
    pub fn match_all() -> Self {
        Self { root: Node::All(Vec::new()) }
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &CloudEvent) -> bool {
        self.root.matches(event)
    }
}

impl Default for CompiledFilter {
    fn default() -> Self {
        Self::match_all()
    }
}

impl Node {
    fn matches(&self, event: &CloudEvent) -> bool {
        match self {
            Node::All(nodes) => nodes.iter().all(|n| n.matches(event)),
            Node::Any(nodes) => nodes.iter().any(|n| n.matches(event)),
            Node::Not(node) => !node.matches(event),
            Node::Legacy(entries) => entries.iter().all(|(name, want)| match event.attribute_string(name) {
                Some(have) => want.is_empty() || have == want.as_str(),
                None => want.is_empty() && ALWAYS_PRESENT_IN_LEGACY.contains(&name.as_str()),
            }),
            Node::Exact(entries) => compare(event, entries, |have, want| have == want),
            Node::Prefix(entries) => compare(event, entries, |have, want| have.starts_with(want)),
            Node::Suffix(entries) => compare(event, entries, |have, want| have.ends_with(want)),
            Node::Cesql(expr) => expr.matches(event),
        }
    }
}

fn compare(event: &CloudEvent, entries: &[(String, String)], op: impl Fn(&str, &str) -> bool) -> bool {
    entries.iter().all(|(name, want)| event.attribute_string(name).is_some_and(|have| op(&have, want)))
}

fn invalid(path: &str, reason: impl Into<String>) -> EventError {
    EventError::InvalidFilter { path: path.to_owned(), reason: reason.into() }
}

fn compile_list(filters: &[SubscriptionsApiFilter], path: &str) -> Result<Vec<Node>, EventError> {
    filters.iter().enumerate().map(|(i, f)| compile_one(f, &format!("{path}[{i}]"))).collect()
}

fn compile_one(filter: &SubscriptionsApiFilter, path: &str) -> Result<Node, EventError> {
    let set: Vec<&str> = [
        ("exact", filter.exact.is_some()),
        ("prefix", filter.prefix.is_some()),
        ("suffix", filter.suffix.is_some()),
        ("all", filter.all.is_some()),
        ("any", filter.any.is_some()),
        ("not", filter.not.is_some()),
        ("cesql", filter.cesql.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, is_set)| is_set.then_some(name))
    .collect();
    match set.len() {
        0 => {
            return Err(invalid(
                path,
                "a filter must set exactly one of exact, prefix, suffix, all, any, not, cesql; none is set",
            ));
        }
        1 => {}
        _ => {
            return Err(invalid(path, format!("a filter must set exactly one dialect, found {}", set.join(", "))));
        }
    }
    if let Some(map) = &filter.exact {
        return Ok(Node::Exact(attribute_map(map, &format!("{path}.exact"))?));
    }
    if let Some(map) = &filter.prefix {
        return Ok(Node::Prefix(attribute_map(map, &format!("{path}.prefix"))?));
    }
    if let Some(map) = &filter.suffix {
        return Ok(Node::Suffix(attribute_map(map, &format!("{path}.suffix"))?));
    }
    if let Some(list) = &filter.all {
        let path = format!("{path}.all");
        if list.is_empty() {
            return Err(invalid(&path, "must contain at least one filter"));
        }
        return Ok(Node::All(compile_list(list, &path)?));
    }
    if let Some(list) = &filter.any {
        let path = format!("{path}.any");
        if list.is_empty() {
            return Err(invalid(&path, "must contain at least one filter"));
        }
        return Ok(Node::Any(compile_list(list, &path)?));
    }
    if let Some(inner) = &filter.not {
        return Ok(Node::Not(Box::new(compile_one(inner, &format!("{path}.not"))?)));
    }
    let expr = filter.cesql.as_deref().unwrap_or_default();
    let path = format!("{path}.cesql");
    if expr.trim().is_empty() {
        return Err(invalid(&path, "the CESQL expression is empty"));
    }
    let compiled = serval_cesql::parse(expr).map_err(|e| invalid(&path, e.to_string()))?;
    Ok(Node::Cesql(Box::new(compiled)))
}

fn attribute_map(map: &BTreeMap<String, String>, path: &str) -> Result<Vec<(String, String)>, EventError> {
    if map.is_empty() {
        return Err(invalid(path, "must name at least one attribute"));
    }
    let mut entries = Vec::with_capacity(map.len());
    for (name, value) in map {
        let entry_path = format!("{path}.{name}");
        check_attribute_name(name, &entry_path)?;
        if value.is_empty() {
            return Err(invalid(&entry_path, "the attribute value must not be empty"));
        }
        entries.push((name.clone(), value.clone()));
    }
    Ok(entries)
}

fn check_attribute_name(name: &str, path: &str) -> Result<(), EventError> {
    if name.is_empty() {
        return Err(invalid(path, "the attribute name must not be empty"));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        return Err(invalid(
            path,
            format!("invalid attribute name '{name}': only lowercase letters a-z and digits 0-9 are allowed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event() -> CloudEvent {
        CloudEvent::builder()
            .id("1")
            .source("/apps/orders")
            .event_type("com.example.order.created")
            .subject("order-42")
            .extension("region", "eu-west")
            .extension("priority", 5)
            .extension("urgent", true)
            .build()
            .expect("a valid event")
    }

    fn bare_event() -> CloudEvent {
        CloudEvent::builder().id("2").source("/s").event_type("t").build().expect("a valid event")
    }

    fn filters(value: serde_json::Value) -> Vec<SubscriptionsApiFilter> {
        serde_json::from_value(value).expect("valid filters JSON")
    }

    fn legacy(value: serde_json::Value) -> TriggerFilter {
        serde_json::from_value(json!({ "attributes": value })).expect("valid filter JSON")
    }

    fn compiled(value: serde_json::Value) -> CompiledFilter {
        compile(None, &filters(value)).expect("compiles")
    }

    fn error_of(value: serde_json::Value) -> EventError {
        compile(None, &filters(value)).expect_err("must be invalid")
    }

    fn path_of(err: &EventError) -> &str {
        match err {
            EventError::InvalidFilter { path, .. } => path,
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn no_filter_matches_everything() {
        let f = compile(None, &[]).expect("compiles");
        assert!(f.matches(&event()));
        assert!(f.matches(&bare_event()));
        assert!(CompiledFilter::default().matches(&event()));
        let empty = compile(Some(&TriggerFilter::default()), &[]).expect("compiles");
        assert!(empty.matches(&event()));
    }

    #[test]
    fn legacy_exact_match_on_all_attributes() {
        let f = legacy(json!({"type": "com.example.order.created", "source": "/apps/orders"}));
        let f = compile(Some(&f), &[]).expect("compiles");
        assert!(f.matches(&event()));
        let f = legacy(json!({"type": "com.example.order.created", "source": "/other"}));
        let f = compile(Some(&f), &[]).expect("compiles");
        assert!(!f.matches(&event()));
    }

    #[test]
    fn legacy_is_case_sensitive_and_not_a_prefix() {
        for want in ["com.example.order", "COM.EXAMPLE.ORDER.CREATED", "com.example.order.created "] {
            let f = compile(Some(&legacy(json!({ "type": want }))), &[]).expect("compiles");
            assert!(!f.matches(&event()), "{want}");
        }
    }

    #[test]
    fn legacy_compares_extensions_by_canonical_string() {
        let f = legacy(json!({"region": "eu-west", "priority": "5", "urgent": "true"}));
        let f = compile(Some(&f), &[]).expect("compiles");
        assert!(f.matches(&event()));
        let f = compile(Some(&legacy(json!({"priority": "05"}))), &[]).expect("compiles");
        assert!(!f.matches(&event()));
    }

    #[test]
    fn legacy_empty_value_matches_any_value_of_a_present_attribute() {
        let f = compile(Some(&legacy(json!({"region": ""}))), &[]).expect("compiles");
        assert!(f.matches(&event()));
        assert!(!f.matches(&bare_event()), "an absent extension fails even with \"\"");
        let f = compile(Some(&legacy(json!({"type": ""}))), &[]).expect("compiles");
        assert!(f.matches(&bare_event()));
    }

    #[test]
    fn legacy_empty_value_on_optional_context_attributes_matches_when_unset() {
        // Knative's attribute filter sees subject/datacontenttype/dataschema/time always.
        for name in ["subject", "datacontenttype", "dataschema", "time"] {
            let f = compile(Some(&legacy(json!({ name: "" }))), &[]).expect("compiles");
            assert!(f.matches(&bare_event()), "{name}");
            let f = compile(Some(&legacy(json!({ name: "x" }))), &[]).expect("compiles");
            assert!(!f.matches(&bare_event()), "{name}");
        }
    }

    #[test]
    fn legacy_missing_attribute_fails() {
        let f = compile(Some(&legacy(json!({"nosuch": "x"}))), &[]).expect("compiles");
        assert!(!f.matches(&event()));
    }

    #[test]
    fn legacy_rejects_invalid_attribute_names() {
        for name in ["", "Type", "my-ext", "a_b"] {
            let err = compile(Some(&legacy(json!({ name: "x" }))), &[]).expect_err("invalid");
            assert_eq!(path_of(&err), format!("spec.filter.attributes.{name}"));
        }
    }

    #[test]
    fn filters_take_precedence_over_filter() {
        let old = legacy(json!({"type": "something.else"}));
        let new = filters(json!([{"exact": {"type": "com.example.order.created"}}]));
        let f = compile(Some(&old), &new).expect("compiles");
        assert!(f.matches(&event()));
        // The ignored legacy filter is not validated either.
        let bad = legacy(json!({"Bad-Name": "x"}));
        assert!(compile(Some(&bad), &new).is_ok());
        assert!(compile(Some(&bad), &[]).is_err());
    }

    #[test]
    fn exact_prefix_suffix() {
        assert!(compiled(json!([{"exact": {"type": "com.example.order.created"}}])).matches(&event()));
        assert!(!compiled(json!([{"exact": {"type": "com.example.order"}}])).matches(&event()));
        assert!(compiled(json!([{"prefix": {"type": "com.example."}}])).matches(&event()));
        assert!(!compiled(json!([{"prefix": {"type": "org.example."}}])).matches(&event()));
        assert!(compiled(json!([{"suffix": {"type": ".created"}}])).matches(&event()));
        assert!(!compiled(json!([{"suffix": {"type": ".deleted"}}])).matches(&event()));
        assert!(compiled(json!([{"prefix": {"priority": "5"}}])).matches(&event()));
        assert!(compiled(json!([{"exact": {"urgent": "true"}}])).matches(&event()));
    }

    #[test]
    fn every_entry_of_a_map_must_match() {
        let f = compiled(json!([{"prefix": {"type": "com.example.", "source": "/apps/"}}]));
        assert!(f.matches(&event()));
        let f = compiled(json!([{"prefix": {"type": "com.example.", "source": "/other/"}}]));
        assert!(!f.matches(&event()));
    }

    #[test]
    fn missing_attribute_never_matches_string_dialects() {
        for dialect in ["exact", "prefix", "suffix"] {
            let f = compiled(json!([{ dialect: {"subject": "o"} }]));
            assert!(!f.matches(&bare_event()), "{dialect}");
        }
    }

    #[test]
    fn filters_list_is_anded() {
        let f = compiled(json!([
            {"prefix": {"type": "com.example."}},
            {"exact": {"region": "eu-west"}},
        ]));
        assert!(f.matches(&event()));
        let f = compiled(json!([
            {"prefix": {"type": "com.example."}},
            {"exact": {"region": "us-east"}},
        ]));
        assert!(!f.matches(&event()));
    }

    #[test]
    fn all_any_not() {
        let all = json!([{"all": [{"exact": {"region": "eu-west"}}, {"suffix": {"type": "created"}}]}]);
        assert!(compiled(all).matches(&event()));
        let all = json!([{"all": [{"exact": {"region": "eu-west"}}, {"suffix": {"type": "deleted"}}]}]);
        assert!(!compiled(all).matches(&event()));
        let any = json!([{"any": [{"exact": {"region": "us"}}, {"suffix": {"type": "created"}}]}]);
        assert!(compiled(any).matches(&event()));
        let any = json!([{"any": [{"exact": {"region": "us"}}, {"suffix": {"type": "deleted"}}]}]);
        assert!(!compiled(any).matches(&event()));
        assert!(!compiled(json!([{"not": {"exact": {"region": "eu-west"}}}])).matches(&event()));
        assert!(compiled(json!([{"not": {"exact": {"region": "us"}}}])).matches(&event()));
        // not of a missing attribute matches
        assert!(compiled(json!([{"not": {"exact": {"region": "us"}}}])).matches(&bare_event()));
        let nested = json!([{"any": [{"not": {"all": [{"prefix": {"type": "com."}}, {"cesql": "priority > 3"}]}}]}]);
        assert!(!compiled(nested.clone()).matches(&event()));
        assert!(compiled(nested).matches(&bare_event()));
    }

    #[test]
    fn cesql_true_only_without_errors() {
        assert!(compiled(json!([{"cesql": "type LIKE 'com.example.%' AND priority > 3"}])).matches(&event()));
        assert!(!compiled(json!([{"cesql": "priority > 7"}])).matches(&event()));
        // Not a Boolean
        assert!(!compiled(json!([{"cesql": "priority + 1"}])).matches(&event()));
        // Missing attribute is an evaluation error → no match, even when negated.
        assert!(!compiled(json!([{"cesql": "nosuch = 'x'"}])).matches(&event()));
        assert!(!compiled(json!([{"cesql": "NOT (nosuch = 'x')"}])).matches(&event()));
        assert!(compiled(json!([{"cesql": "urgent"}])).matches(&event()));
        assert!(compiled(json!([{"cesql": "EXISTS region"}])).matches(&event()));
        assert!(!compiled(json!([{"cesql": "EXISTS region"}])).matches(&bare_event()));
    }

    #[test]
    fn cesql_parse_error_names_the_path() {
        let err = error_of(json!([{"exact": {"type": "t"}}, {"cesql": "type = "}]));
        assert_eq!(path_of(&err), "spec.filters[1].cesql");
        assert!(err.to_string().contains("spec.filters[1].cesql"), "{err}");
        let err = error_of(json!([{"all": [{"exact": {"type": "t"}}, {"not": {"cesql": "NOSUCHFN(type)"}}]}]));
        assert_eq!(path_of(&err), "spec.filters[0].all[1].not.cesql");
        let err = error_of(json!([{"cesql": "  "}]));
        assert_eq!(path_of(&err), "spec.filters[0].cesql");
    }

    #[test]
    fn exactly_one_dialect_per_filter() {
        let err = error_of(json!([{"exact": {"type": "t"}, "prefix": {"type": "t"}}]));
        assert_eq!(path_of(&err), "spec.filters[0]");
        assert!(err.to_string().contains("exact, prefix"), "{err}");
        let err = error_of(json!([{"exact": {"type": "t"}}, {}]));
        assert_eq!(path_of(&err), "spec.filters[1]");
        let err = error_of(json!([{"any": [{"cesql": "true", "not": {"cesql": "false"}}]}]));
        assert_eq!(path_of(&err), "spec.filters[0].any[0]");
    }

    #[test]
    fn invalid_attribute_maps() {
        let err = error_of(json!([{"exact": {}}]));
        assert_eq!(path_of(&err), "spec.filters[0].exact");
        let err = error_of(json!([{"prefix": {"": "x"}}]));
        assert_eq!(path_of(&err), "spec.filters[0].prefix.");
        let err = error_of(json!([{"suffix": {"type": ""}}]));
        assert_eq!(path_of(&err), "spec.filters[0].suffix.type");
        let err = error_of(json!([{"exact": {"Type": "x"}}]));
        assert_eq!(path_of(&err), "spec.filters[0].exact.Type");
    }

    #[test]
    fn empty_all_or_any_is_invalid() {
        assert_eq!(path_of(&error_of(json!([{"all": []}]))), "spec.filters[0].all");
        assert_eq!(path_of(&error_of(json!([{"any": []}]))), "spec.filters[0].any");
    }

    #[test]
    fn unknown_fields_are_rejected_by_serde() {
        let parsed: Result<Vec<SubscriptionsApiFilter>, _> = serde_json::from_value(json!([{"regex": {"type": "x"}}]));
        assert!(parsed.is_err());
    }

    #[test]
    fn serde_round_trip() {
        let value = json!([
            {"exact": {"type": "a"}},
            {"all": [{"prefix": {"source": "/"}}, {"not": {"suffix": {"type": "x"}}}]},
            {"any": [{"cesql": "true"}]},
        ]);
        let parsed = filters(value.clone());
        assert_eq!(serde_json::to_value(&parsed).expect("serializes"), value);
        let f: TriggerFilter = serde_json::from_value(json!({})).expect("attributes default");
        assert!(f.attributes.is_empty());
    }
}
