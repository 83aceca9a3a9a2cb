//! A function's Lambda state beside its Service (the `serval.dev/lambda-function`
//! annotation): the fields Knative has no place for, the published versions (each pinned to
//! a revision) and the aliases (each naming a version, maybe with a second one weighted).
//! Versions and aliases become tags of the Service's traffic (`v<N>` and the alias's
//! name), so each has a URL; which version an invocation runs is picked here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use serval_model::{Service, TrafficTarget};

use super::{ACCOUNT, AwsError, REGION, conflict, invalid};

/// The most versions and aliases one function keeps (the annotation stays small).
pub const MAX_VERSIONS: usize = 200;
pub const MAX_ALIASES: usize = 100;
/// The unpublished version: the Service's latest revision.
pub const LATEST: &str = "$LATEST";

/// What serval keeps about a function beside its Service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionMeta {
    #[serde(default)]
    pub role: Value,
    /// `$LATEST`'s code.
    #[serde(flatten)]
    pub code: CodeRecord,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<u32, PublishedVersion>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, Alias>,
}

/// What a version's `FunctionConfiguration` says of its code and its last change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CodeRecord {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub code_size: u64,
    #[serde(default)]
    pub code_sha256: String,
    #[serde(default)]
    pub last_modified: String,
}

/// A published version: the revision it runs and its code as it was.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishedVersion {
    pub revision: String,
    #[serde(flatten)]
    pub code: CodeRecord,
}

/// An alias: a version, and maybe a second one getting a share of the invocations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Alias {
    pub function_version: String,
    #[serde(default)]
    pub description: String,
    /// `RoutingConfig.AdditionalVersionWeights`: version → share (0–1).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub additional_version_weights: BTreeMap<String, f64>,
    #[serde(default)]
    pub revision_id: String,
}

impl FunctionMeta {
    /// A function's metadata (empty for a service written by hand).
    pub fn of(service: &Service) -> FunctionMeta {
        service
            .metadata
            .annotations
            .get(serval_model::LAMBDA_FUNCTION)
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_default()
    }

    /// Stores this metadata in `service`, with the traffic its versions and aliases need:
    /// all invocations to the latest revision, each version and alias a tag.
    pub fn store_in(&self, service: &mut Service) {
        service
            .metadata
            .annotations
            .insert(serval_model::LAMBDA_FUNCTION.to_string(), serde_json::to_string(self).unwrap_or_default());
        if self.versions.is_empty() && self.aliases.is_empty() {
            service.spec.traffic.clear();
            return;
        }
        let latest = TrafficTarget { latest_revision: Some(true), percent: Some(100), ..TrafficTarget::default() };
        let pinned = |version: &str, tag: String| match self.version(version) {
            Some(v) => {
                TrafficTarget { revision_name: Some(v.revision.clone()), tag: Some(tag), ..TrafficTarget::default() }
            }
            None => TrafficTarget { latest_revision: Some(true), tag: Some(tag), ..TrafficTarget::default() },
        };
        let versions = self.versions.keys().map(|n| pinned(&n.to_string(), version_tag(&n.to_string())));
        let aliases = self.aliases.iter().map(|(name, alias)| pinned(&alias.function_version, name.clone()));
        service.spec.traffic = std::iter::once(latest).chain(versions).chain(aliases).collect();
    }

    /// A published version by its number.
    pub fn version(&self, version: &str) -> Option<&PublishedVersion> {
        version.parse::<u32>().ok().and_then(|n| self.versions.get(&n))
    }

    /// The version an invocation naming `qualifier` runs: `$LATEST`, a published version,
    /// or one of an alias's versions, picked by its weight (`roll` is uniform in 0–1).
    pub fn resolve(&self, function: &str, qualifier: &str, roll: f64) -> Result<String, AwsError> {
        if qualifier == LATEST || self.version(qualifier).is_some() {
            return Ok(qualifier.to_string());
        }
        let alias = self.aliases.get(qualifier).ok_or_else(|| not_found(function, qualifier))?;
        let mut share = 0.0;
        for (version, weight) in &alias.additional_version_weights {
            share += weight;
            if roll < share {
                return Ok(version.clone());
            }
        }
        Ok(alias.function_version.clone())
    }

    /// Checks an alias before it is stored: its name, its versions and weights.
    pub fn check_alias(&self, name: &str, alias: &Alias) -> Result<(), AwsError> {
        check_alias_name(name)?;
        let known = |v: &str| v == LATEST || self.version(v).is_some();
        if !known(&alias.function_version) {
            return Err(invalid(format!("FunctionVersion {:?} is not a published version", alias.function_version)));
        }
        if alias.additional_version_weights.len() > 1 {
            return Err(invalid("RoutingConfig.AdditionalVersionWeights takes one version"));
        }
        for (version, weight) in &alias.additional_version_weights {
            if self.version(version).is_none() || *version == alias.function_version || alias.function_version == LATEST
            {
                return Err(invalid(format!(
                    "RoutingConfig.AdditionalVersionWeights: {version:?} must be a published version other than FunctionVersion, which must be one too"
                )));
            }
            if !(0.0..=1.0).contains(weight) {
                return Err(invalid(format!(
                    "RoutingConfig.AdditionalVersionWeights[{version}]: {weight} must be 0 to 1"
                )));
            }
        }
        Ok(())
    }

    /// The next version's number.
    pub fn next_version(&self) -> Result<u32, AwsError> {
        if self.versions.len() >= MAX_VERSIONS {
            return Err(conflict(format!("a function keeps at most {MAX_VERSIONS} versions; delete some")));
        }
        Ok(self.versions.keys().next_back().map_or(1, |n| n + 1))
    }
}

/// The traffic tag of a published version (`v3`), so that it has a URL.
pub fn version_tag(version: &str) -> String {
    format!("v{version}")
}

/// A function's ARN, with a qualifier when there is one.
pub fn arn(function: &str, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(q) => format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}:{q}"),
        None => format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"),
    }
}

fn not_found(function: &str, qualifier: &str) -> AwsError {
    super::aws_error(
        http::StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        format!("Function not found: {}", arn(function, Some(qualifier))),
    )
}

/// Alias names are traffic tags here: lower case letters, digits and '-', not a number
/// and not a version's tag (`v<N>`).
fn check_alias_name(name: &str) -> Result<(), AwsError> {
    let reason = if name.is_empty() || name.len() > 63 {
        Some("must be 1 to 63 characters")
    } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.starts_with('-')
        || name.ends_with('-')
    {
        Some("serval makes aliases traffic tags: lower case letters, digits and '-'")
    } else if name.bytes().all(|b| b.is_ascii_digit())
        || name.strip_prefix('v').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        Some("a number or v<number> names a version")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(invalid(format!("alias Name {name:?}: {reason}"))),
        None => Ok(()),
    }
}

/// `AliasConfiguration`.
pub fn alias_configuration(function: &str, name: &str, alias: &Alias) -> Value {
    let mut answer = json!({
        "AliasArn": arn(function, Some(name)),
        "Name": name,
        "FunctionVersion": alias.function_version,
        "Description": alias.description,
        "RevisionId": alias.revision_id,
    });
    if !alias.additional_version_weights.is_empty() {
        answer["RoutingConfig"] = json!({"AdditionalVersionWeights": alias.additional_version_weights});
    }
    answer
}

/// An alias from `CreateAlias` / `UpdateAlias` input, over `current` (update) or from
/// scratch.
pub fn alias_from(input: &Value, current: Option<&Alias>) -> Result<Alias, AwsError> {
    let mut alias = current.cloned().unwrap_or_default();
    if let Some(version) = input.get("FunctionVersion") {
        alias.function_version =
            version.as_str().ok_or_else(|| invalid("FunctionVersion must be a string"))?.to_string();
    } else if current.is_none() {
        return Err(invalid("FunctionVersion is required"));
    }
    if let Some(description) = input.get("Description") {
        alias.description = description.as_str().unwrap_or_default().chars().take(256).collect();
    }
    if let Some(routing) = input.get("RoutingConfig") {
        let weights = routing.get("AdditionalVersionWeights").and_then(Value::as_object);
        alias.additional_version_weights = weights
            .into_iter()
            .flatten()
            .map(|(version, weight)| {
                let weight = weight.as_f64().ok_or_else(|| {
                    invalid(format!("RoutingConfig.AdditionalVersionWeights[{version}] must be a number"))
                })?;
                Ok((version.clone(), weight))
            })
            .collect::<Result<_, AwsError>>()?;
    }
    alias.revision_id = revision_id();
    Ok(alias)
}

/// A fresh `RevisionId` for an alias.
fn revision_id() -> String {
    let n = fastrand::u128(..);
    let hex = format!("{n:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> FunctionMeta {
        let mut meta = FunctionMeta::default();
        for (n, revision) in [(1, "fn-00001"), (2, "fn-00003")] {
            meta.versions.insert(n, PublishedVersion { revision: revision.into(), code: CodeRecord::default() });
        }
        meta
    }

    #[test]
    fn an_alias_splits_invocations_by_its_weights() {
        let mut meta = meta();
        let alias = Alias {
            function_version: "1".into(),
            additional_version_weights: [("2".to_string(), 0.25)].into(),
            ..Alias::default()
        };
        meta.check_alias("live", &alias).expect("valid");
        meta.aliases.insert("live".into(), alias);
        assert_eq!(meta.resolve("fn", "live", 0.1).expect("resolved"), "2");
        assert_eq!(meta.resolve("fn", "live", 0.3).expect("resolved"), "1");
        assert_eq!(meta.resolve("fn", "2", 0.0).expect("resolved"), "2");
        assert_eq!(meta.resolve("fn", LATEST, 0.0).expect("resolved"), LATEST);
        assert_eq!(meta.resolve("fn", "7", 0.0).expect_err("unknown").code, "ResourceNotFoundException");
        assert_eq!(meta.resolve("fn", "canary", 0.0).expect_err("unknown").code, "ResourceNotFoundException");
    }

    #[test]
    fn versions_and_aliases_become_tags_of_the_traffic() {
        let mut meta = meta();
        meta.aliases.insert("live".into(), Alias { function_version: "2".into(), ..Alias::default() });
        meta.aliases.insert("edge".into(), Alias { function_version: LATEST.into(), ..Alias::default() });
        let mut service: Service = serde_json::from_value(json!({
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": "fn", "namespace": "default"},
            "spec": {"template": {"spec": {"containers": [{}]}}},
        }))
        .expect("a service");
        meta.store_in(&mut service);
        type Row<'a> = (Option<&'a str>, Option<bool>, Option<u32>, Option<&'a str>);
        let traffic: Vec<Row> = service
            .spec
            .traffic
            .iter()
            .map(|t| (t.revision_name.as_deref(), t.latest_revision, t.percent, t.tag.as_deref()))
            .collect();
        assert_eq!(
            traffic,
            [
                (None, Some(true), Some(100), None),
                (Some("fn-00001"), None, None, Some("v1")),
                (Some("fn-00003"), None, None, Some("v2")),
                (None, Some(true), None, Some("edge")),
                (Some("fn-00003"), None, None, Some("live")),
            ]
        );
        assert_eq!(FunctionMeta::of(&service), meta, "the metadata reads back");
        FunctionMeta::default().store_in(&mut service);
        assert!(service.spec.traffic.is_empty(), "no versions: Knative's default traffic");
    }

    #[test]
    fn bad_aliases_are_refused_with_the_field() {
        let meta = meta();
        let alias = |version: &str, weights: &[(&str, f64)]| Alias {
            function_version: version.into(),
            additional_version_weights: weights.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
            ..Alias::default()
        };
        for (name, alias, expected) in [
            ("Live", alias("1", &[]), "lower case"),
            ("v2", alias("1", &[]), "names a version"),
            ("12", alias("1", &[]), "names a version"),
            ("live", alias("9", &[]), "not a published version"),
            ("live", alias("1", &[("1", 0.5)]), "other than FunctionVersion"),
            ("live", alias("1", &[("2", 1.5)]), "must be 0 to 1"),
            ("live", alias(LATEST, &[("2", 0.5)]), "must be a published version"),
        ] {
            let error = meta.check_alias(name, &alias).expect_err(name);
            assert!(error.message.contains(expected), "{name}: {}", error.message);
        }
    }
}
