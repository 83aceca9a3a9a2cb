//! `serval.yaml`: a function project's name, language, build and run settings, environment
//! and annotations (what Knative's `func.yaml` is to `func`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path};

use serde::{Deserialize, Deserializer, Serialize};
use serval_model::{FieldError, ValidationError};

use crate::ProjectError;
use crate::language::Language;
use crate::template::{TemplateKind, find_template};

/// The file name of a project's manifest.
pub const MANIFEST_FILE: &str = "serval.yaml";

/// Environment variables serval sets for every instance (Knative's runtime contract).
const RESERVED_ENV: &[&str] = &["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"];

/// A project's `serval.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The function's (and its Service's) name: a DNS label.
    pub name: String,
    pub language: Language,
    /// The template the project started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateKind>,
    #[serde(default)]
    pub build: Build,
    #[serde(default)]
    pub run: Run,
    /// Environment variables of every instance.
    #[serde(default, deserialize_with = "string_map", skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Annotations of the Service, e.g. `autoscaling.knative.dev/max-scale`.
    #[serde(default, deserialize_with = "string_map", skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How `serval build` makes an image of the project.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// The image the build starts from (default: the language's, see
    /// [`Language::default_base_image`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// A Containerfile of the project's, relative to it, used instead of the generated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containerfile: Option<String>,
}

/// How the project runs on the host (`serval deploy --runtime process`, `serval dev`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// The start command, run from the project's directory; it serves HTTP on `$PORT`
    /// (default: the language's, see [`Language::default_run_command`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

impl Manifest {
    /// A new project's manifest: the language's base image and the given start command.
    pub fn new(name: &str, language: Language, template: TemplateKind, command: &[&str]) -> Manifest {
        Manifest {
            name: name.to_string(),
            language,
            template: Some(template),
            build: Build { base: Some(language.default_base_image().to_string()), containerfile: None },
            run: Run { command: command.iter().map(|s| s.to_string()).collect() },
            env: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// The project's `serval.yaml` in `dir`, read and validated, when it has one.
    pub fn find(dir: &Path) -> Result<Option<Manifest>, ProjectError> {
        let path = dir.join(MANIFEST_FILE);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => Manifest::load(&path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ProjectError::Io { path, source }),
        }
    }

    /// Reads, decodes and validates a `serval.yaml`.
    pub fn load(path: &Path) -> Result<Manifest, ProjectError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ProjectError::Io { path: path.to_path_buf(), source })?;
        Manifest::parse(&text).map_err(|reason| ProjectError::Manifest { file: path.to_path_buf(), reason })
    }

    /// Decodes and validates the text of a `serval.yaml`; every problem names its field.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let value: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        if value.is_null() {
            return Err(ManifestError::Syntax("the file is empty; it needs at least name and language".into()));
        }
        if !value.is_object() {
            return Err(ManifestError::Syntax("the file is not a mapping of fields (name, language, …)".into()));
        }
        let manifest: Manifest = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            let message = e.into_inner().to_string();
            ManifestError::Invalid(ValidationError { errors: vec![FieldError { field, message }] })
        })?;
        manifest.validate().map_err(ManifestError::Invalid)?;
        Ok(manifest)
    }

    /// Checks what decoding does not: the name, the template, paths, environment names
    /// and the autoscaling annotations (Knative's rules, as a Service's).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errors = Vec::new();
        let mut fail = |field: &str, message: String| errors.push(FieldError { field: field.to_string(), message });
        if let Err(m) = crate::validate_function_name(&self.name) {
            fail("name", m);
        }
        if let Some(kind) = self.template
            && let Err(e) = find_template(self.language, kind)
        {
            fail("template", e.to_string());
        }
        if let Some(base) = &self.build.base
            && (base.is_empty() || base.contains(char::is_whitespace))
        {
            fail("build.base", format!("{base:?} is not an image reference"));
        }
        if let Some(file) = &self.build.containerfile {
            let inside = !file.is_empty() && Path::new(file).components().all(|c| matches!(c, Component::Normal(_)));
            if !inside {
                fail("build.containerfile", format!("{file:?} must be a path inside the project"));
            }
        }
        if self.run.command.first().is_some_and(|program| program.is_empty()) {
            fail("run.command[0]", "the program to run is empty".into());
        }
        for key in self.env.keys() {
            let mut chars = key.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                fail(
                    &format!("env.{key}"),
                    "not a variable name: use letters, digits and '_', not first a digit".into(),
                );
            } else if RESERVED_ENV.contains(&key.as_str()) {
                fail(&format!("env.{key}"), "is set by serval for every instance".into());
            }
        }
        if let Err(found) = serval_model::parse_autoscaling(&self.annotations, "annotations") {
            errors.extend(found);
        }
        if errors.is_empty() { Ok(()) } else { Err(ValidationError { errors }) }
    }

    /// The image `serval build` starts from.
    pub fn base_image(&self) -> &str {
        self.build.base.as_deref().unwrap_or(self.language.default_base_image())
    }

    /// The host start command (`run.command`, else the language's default).
    pub fn run_command(&self) -> Vec<String> {
        if self.run.command.is_empty() {
            self.language.default_run_command().iter().map(|s| s.to_string()).collect()
        } else {
            self.run.command.clone()
        }
    }

    /// The manifest as `serval init` writes it: YAML with a comment per section, which
    /// [`Manifest::parse`] reads back to the same value.
    pub fn to_yaml(&self) -> String {
        let mut out = String::from(
            "# How serval builds and runs this function: `serval build`, `serval deploy NAME --source .`.\n",
        );
        out.push_str(&format!("name: {}\n", scalar(&self.name)));
        out.push_str(&format!("language: {}\n", self.language));
        if let Some(template) = self.template {
            out.push_str(&format!("template: {template}\n"));
        }
        out.push_str(
            "build:\n  # The image `serval build` starts from; `containerfile: FILE` uses the project's own instead.\n",
        );
        if let Some(base) = &self.build.base {
            out.push_str(&format!("  base: {}\n", scalar(base)));
        }
        if let Some(file) = &self.build.containerfile {
            out.push_str(&format!("  containerfile: {}\n", scalar(file)));
        }
        out.push_str("run:\n  # How it starts on the host, from this directory; it serves HTTP on $PORT.\n");
        let command: Vec<String> = self.run_command().iter().map(|w| quoted(w)).collect();
        out.push_str(&format!("  command: [{}]\n", command.join(", ")));
        out.push_str("# Environment variables of every instance, e.g. GREETING: hello.\n");
        map(&mut out, "env", &self.env);
        out.push_str("# Annotations of the Service, e.g. autoscaling.knative.dev/max-scale: \"5\".\n");
        map(&mut out, "annotations", &self.annotations);
        out
    }
}

fn map(out: &mut String, key: &str, entries: &BTreeMap<String, String>) {
    if entries.is_empty() {
        out.push_str(&format!("{key}: {{}}\n"));
        return;
    }
    out.push_str(&format!("{key}:\n"));
    for (k, v) in entries {
        out.push_str(&format!("  {}: {}\n", scalar(k), quoted(v)));
    }
}

/// `s` as a YAML scalar: plain when it cannot be read as anything but that string.
fn scalar(s: &str) -> String {
    const KEYWORDS: &[&str] = &["true", "false", "null", "yes", "no", "on", "off", "y", "n"];
    let plain = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._/:-".contains(c))
        && !s.contains(": ")
        && !KEYWORDS.contains(&s.to_ascii_lowercase().as_str());
    if plain { s.to_string() } else { quoted(s) }
}

/// `s` double-quoted (JSON's escapes are YAML's).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Why a `serval.yaml` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestError {
    /// Not YAML, or empty.
    Syntax(String),
    /// A field of the wrong type, unknown, missing, or with a value that fails validation.
    Invalid(ValidationError),
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::Syntax(message) => write!(f, "not valid YAML: {message}"),
            ManifestError::Invalid(errors) => errors.fmt(f),
        }
    }
}

impl std::error::Error for ManifestError {}

/// A map of strings that also takes numbers and booleans as their text (`max-scale: 5`,
/// `DEBUG: true`), as people write YAML.
fn string_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, ScalarText>::deserialize(deserializer)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}

struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ScalarText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number or true/false")
            }
            fn visit_str<E>(self, v: &str) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> Vec<FieldError> {
        match Manifest::parse(text) {
            Err(ManifestError::Invalid(e)) => e.errors,
            other => panic!("expected field errors for {text:?}, got {other:?}"),
        }
    }

    fn fields(text: &str) -> Vec<String> {
        invalid(text).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_full_manifest_decodes() {
        let m = Manifest::parse(
            "name: hello\nlanguage: python\ntemplate: cloudevents\n\
             build: {base: 'python:3.13-slim', containerfile: ops/Containerfile}\n\
             run: {command: [python3, app.py]}\n\
             env: {GREETING: hi, DEBUG: true, RETRIES: 3}\n\
             annotations: {autoscaling.knative.dev/max-scale: 5}\n",
        )
        .expect("valid");
        assert_eq!(m.template, Some(TemplateKind::CloudEvents));
        assert_eq!(m.base_image(), "python:3.13-slim");
        assert_eq!(m.build.containerfile.as_deref(), Some("ops/Containerfile"));
        assert_eq!(m.run_command(), ["python3", "app.py"]);
        assert_eq!(m.env["DEBUG"], "true");
        assert_eq!(m.env["RETRIES"], "3");
        assert_eq!(m.annotations["autoscaling.knative.dev/max-scale"], "5");
    }

    #[test]
    fn a_minimal_manifest_takes_the_language_defaults() {
        let m = Manifest::parse("name: hello\nlanguage: node\n").expect("valid");
        assert_eq!(m.base_image(), "node:22-slim");
        assert_eq!(m.run_command(), ["node", "index.js"]);
        assert_eq!(m.template, None);
    }

    #[test]
    fn decoding_errors_name_the_field() {
        assert_eq!(fields("name: hello\nlanguage: cobol\n"), ["language"]);
        assert_eq!(fields("name: hello\nlanguage: go\nbuild: {bse: x}\n"), ["build.bse"]);
        assert_eq!(fields("name: hello\nlanguage: go\nrun: {command: python3}\n"), ["run.command"]);
        assert_eq!(fields("name: hello\nlanguage: go\nenv: {A: [1]}\n"), ["env.A"]);
        assert_eq!(fields("name: hello\nlanguage: go\nscale: 3\n"), ["scale"]);
        let missing = invalid("name: hello\n");
        assert!(missing[0].message.contains("missing field `language`"), "{missing:?}");
        let unknown = invalid("name: hello\nlanguage: go\nenviroment: {}\n");
        assert!(unknown[0].message.contains("unknown field `enviroment`"), "{unknown:?}");
    }

    #[test]
    fn validation_errors_name_the_field() {
        assert_eq!(fields("name: Hello\nlanguage: go\n"), ["name"]);
        assert_eq!(fields("name: tool\nlanguage: shell\ntemplate: cloudevents\n"), ["template"]);
        assert_eq!(fields("name: hello\nlanguage: go\nbuild: {base: ''}\n"), ["build.base"]);
        assert_eq!(fields("name: hello\nlanguage: go\nbuild: {containerfile: ../x}\n"), ["build.containerfile"]);
        assert_eq!(fields("name: hello\nlanguage: go\nrun: {command: ['']}\n"), ["run.command[0]"]);
        assert_eq!(fields("name: hello\nlanguage: go\nenv: {1X: a, PORT: '80'}\n"), ["env.1X", "env.PORT"]);
        let scale = invalid("name: hello\nlanguage: go\nannotations: {autoscaling.knative.dev/max-scale: lots}\n");
        assert_eq!(scale[0].field, "annotations[autoscaling.knative.dev/max-scale]", "{scale:?}");
        // Every problem at once, each named.
        assert_eq!(fields("name: -x\nlanguage: go\nenv: {PORT: '1'}\n"), ["name", "env.PORT"]);
    }

    #[test]
    fn syntax_errors_and_empty_files_are_refused() {
        assert!(matches!(Manifest::parse("name: [\n"), Err(ManifestError::Syntax(_))));
        assert!(matches!(Manifest::parse(""), Err(ManifestError::Syntax(_))));
        assert!(matches!(Manifest::parse("- a\n- b\n"), Err(ManifestError::Syntax(_))));
    }

    #[test]
    fn written_yaml_reads_back() {
        let mut m = Manifest::new("null", Language::Rust, TemplateKind::Http, &["cargo", "run"]);
        m.env.insert("QUOTE".into(), "say \"hi\": now".into());
        m.env.insert("N".into(), "007".into());
        m.annotations.insert("autoscaling.knative.dev/max-scale".into(), "3".into());
        m.build.containerfile = Some("Containerfile".into());
        let text = m.to_yaml();
        assert_eq!(Manifest::parse(&text).expect(&text), m, "{text}");
    }
}
