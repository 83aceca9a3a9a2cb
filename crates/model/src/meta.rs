use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Kubernetes-style object metadata (the subset serval uses).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Set by the store on every write (Kubernetes' optimistic concurrency): a write that
    /// carries an older one is refused with 409.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// Incremented by the server on every change of `spec`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub creation_timestamp: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The objects this one belongs to (a flow's channels and subscriptions name the flow):
    /// it is made and removed with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

/// An owner of an object (Kubernetes' `ownerReferences[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
}

impl ObjectMeta {
    /// Whether an object of `kind` named `name` owns this one.
    pub fn is_owned_by(&self, kind: &str, name: &str) -> bool {
        self.owner_references.iter().any(|o| o.kind == kind && o.name == name)
    }
}

/// Kubernetes' label selector: every `matchLabels` entry and every `matchExpressions`
/// requirement must hold; an empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry: `operator` is `In`, `NotIn`, `Exists` or `DoesNotExist`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The operators of [`LabelSelectorRequirement`].
pub const SELECTOR_OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

impl LabelSelector {
    /// Whether objects with `labels` are selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => value.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }

    /// Its problems, with field paths under `field`.
    pub fn check(&self, field: &str, errors: &mut Vec<crate::FieldError>) {
        for (i, r) in self.match_expressions.iter().enumerate() {
            let at = format!("{field}.matchExpressions[{i}]");
            if !SELECTOR_OPERATORS.contains(&r.operator.as_str()) {
                errors.push(crate::FieldError {
                    field: format!("{at}.operator"),
                    message: format!("{:?} must be one of {}", r.operator, SELECTOR_OPERATORS.join(", ")),
                });
            } else if matches!(r.operator.as_str(), "In" | "NotIn") == r.values.is_empty() {
                errors.push(crate::FieldError {
                    field: format!("{at}.values"),
                    message: format!("{} takes values; Exists and DoesNotExist take none", r.operator),
                });
            }
        }
    }
}

/// Metadata of a revision template (`spec.template.metadata`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// `True`, `False` or `Unknown`, as in Kubernetes conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One entry of `status.conditions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_transition_time: String,
}

impl Condition {
    pub fn new(kind: &str, status: ConditionStatus, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            kind: kind.to_string(),
            status,
            reason: reason.to_string(),
            message: message.into(),
            last_transition_time: String::new(),
        }
    }

    /// Replaces the condition of the same type in `conditions`, keeping the old
    /// transition time when the status did not change.
    pub fn set(conditions: &mut Vec<Condition>, mut new: Condition, now: &str) {
        match conditions.iter_mut().find(|c| c.kind == new.kind) {
            Some(old) => {
                new.last_transition_time = if old.status == new.status && !old.last_transition_time.is_empty() {
                    old.last_transition_time.clone()
                } else {
                    now.to_string()
                };
                *old = new;
            }
            None => {
                new.last_transition_time = now.to_string();
                conditions.push(new);
            }
        }
    }

    pub fn find<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
        conditions.iter().find(|c| c.kind == kind)
    }
}

#[cfg(test)]
mod selector_tests {
    use super::*;

    #[test]
    fn label_selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> =
            [("app", "shop"), ("tier", "web")].into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let selector: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "shop"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]
        }))
        .expect("decodes");
        assert!(selector.matches(&labels));
        assert!(LabelSelector::default().matches(&BTreeMap::new()));
        let other: LabelSelector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"app": "other"}})).expect("decodes");
        assert!(!other.matches(&labels));
        let bad: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "a", "operator": "Near"}, {"key": "b", "operator": "In"}]
        }))
        .expect("decodes");
        let mut errors = Vec::new();
        bad.check("spec.selector", &mut errors);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.selector.matchExpressions[0].operator", "spec.selector.matchExpressions[1].values"]);
    }
}
