//! Function projects: what `serval init` writes and what `serval build`, `serval deploy
//! --source` and `serval dev` read.
//!
//! Owns: the embedded templates (`templates/<language>/<kind>/…`, one per language and
//! kind: a handler with the language's own signature, the small server harness that serves
//! it on `$PORT`, a unit test, a README and a `.dockerignore`) and writing one into a
//! directory without ever overwriting a file ([`Template::render`]); the `serval.yaml`
//! model ([`Manifest`]: name, language, template, build, run, env, annotations) with its
//! decoding and validation, whose errors name their field; finding a project's language
//! ([`detect_language`]); how a project runs on the host ([`HostRun`]).
//!
//! Must not depend on: the network, tokio, or serval crates other than `serval-model`
//! (for the naming and autoscaling rules a Service follows).

mod host_run;
mod language;
mod manifest;
mod template;

use std::path::{Path, PathBuf};

pub use host_run::HostRun;
pub use language::{Detected, Language, detect_language};
pub use manifest::{Build, MANIFEST_FILE, Manifest, ManifestError, Run};
pub use template::{ProjectFile, TEMPLATES, Template, TemplateKind, find_template};

/// Longest function name: a Service's (its revisions' names must stay DNS labels).
pub const MAX_NAME: usize = serval_model::MAX_SERVICE_NAME;

/// Errors of the project crate.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("unknown language {0:?}: use python, node, rust, go or shell")]
    UnknownLanguage(String),
    #[error("unknown template {0:?}: use http or cloudevents")]
    UnknownTemplate(String),
    #[error("there is no {kind} template for {language} ({language} has: {})", available.join(", "))]
    NoTemplate { language: Language, kind: TemplateKind, available: Vec<&'static str> },
    #[error("invalid function name: {reason}")]
    InvalidName { name: String, reason: String },
    #[error(
        "{} already has {}; nothing was written (serval init never overwrites: move them away or choose another directory)",
        dir.display(),
        files.join(", ")
    )]
    WouldOverwrite { dir: PathBuf, files: Vec<String> },
    #[error("{}: {reason}", file.display())]
    Manifest { file: PathBuf, reason: ManifestError },
    #[error(
        "cannot tell the language of {}: no serval.yaml, requirements.txt, pyproject.toml, package.json, Cargo.toml or go.mod",
        dir.display()
    )]
    NoLanguage { dir: PathBuf },
    #[error("cannot tell the language of {}: it has {}; say which with `language:` in serval.yaml", dir.display(), found.join(", "))]
    AmbiguousLanguage { dir: PathBuf, found: Vec<String> },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Checks a function name by a Service name's rules: a DNS label of lowercase letters,
/// digits and `-`, starting with a letter, at most [`MAX_NAME`] characters.
pub fn validate_function_name(name: &str) -> Result<(), String> {
    serval_model::validate_name(name, MAX_NAME)
}

/// The name a project in `dir` gets by default: the directory's own name (`.` and
/// relative paths are resolved against the working directory).
pub fn default_name(dir: &Path) -> Option<String> {
    let absolute = std::path::absolute(dir).ok()?;
    // `absolute` keeps `..`; resolve it by components rather than through links.
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in absolute.components() {
        match component {
            std::path::Component::Normal(part) => parts.push(part),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.last().map(|p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_name_is_the_directory_name() {
        assert_eq!(default_name(Path::new("/tmp/hello")).as_deref(), Some("hello"));
        assert_eq!(default_name(Path::new("/tmp/hello/")).as_deref(), Some("hello"));
        assert_eq!(default_name(Path::new("/tmp/hello/x/..")).as_deref(), Some("hello"));
        assert_eq!(default_name(Path::new("/")), None);
        let cwd = std::env::current_dir().expect("cwd");
        let here = cwd.file_name().map(|n| n.to_string_lossy().into_owned());
        assert_eq!(default_name(Path::new(".")), here);
    }

    #[test]
    fn function_names_follow_service_names() {
        assert!(validate_function_name("hello-2").is_ok());
        for bad in ["", "Hello", "2fast", "a_b", "end-", &"x".repeat(MAX_NAME + 1)] {
            assert!(validate_function_name(bad).is_err(), "{bad:?}");
        }
    }
}
