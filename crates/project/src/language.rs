//! The languages serval knows a project by, and finding a project's language.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::ProjectError;
use crate::manifest::{MANIFEST_FILE, Manifest};

/// A function's language: which template `serval init` writes and how `serval build`
/// makes an image of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    Node,
    Rust,
    Go,
    Shell,
}

impl Language {
    /// Every language, in the order `serval init --list` shows them.
    pub const ALL: [Language; 5] = [Language::Python, Language::Node, Language::Rust, Language::Go, Language::Shell];

    /// Its name in `serval.yaml` and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Node => "node",
            Language::Rust => "rust",
            Language::Go => "go",
            Language::Shell => "shell",
        }
    }

    /// The image `serval build` starts from unless `build.base` says otherwise: the
    /// language's official image (slim where there is one). A shell function's server
    /// harness is Python's standard library.
    pub const fn default_base_image(self) -> &'static str {
        match self {
            Language::Python | Language::Shell => "python:3.12-slim",
            Language::Node => "node:22-slim",
            Language::Rust => "rust:1-slim",
            Language::Go => "golang:1.23-bookworm",
        }
    }

    /// How a project of this language starts on the host, from its directory, unless
    /// `run.command` says otherwise (the templates' own start commands).
    pub const fn default_run_command(self) -> &'static [&'static str] {
        match self {
            Language::Python => &["python3", "-u", "main.py"],
            Language::Node => &["node", "index.js"],
            Language::Rust => &["cargo", "run", "--release", "--quiet"],
            Language::Go => &["go", "run", "."],
            Language::Shell => &["python3", "-u", "server.py"],
        }
    }

    /// How a project of this language runs its unit tests, from its directory.
    pub const fn test_command(self) -> &'static [&'static str] {
        match self {
            Language::Python => &["python3", "-m", "unittest"],
            Language::Node => &["node", "--test"],
            Language::Rust => &["cargo", "test"],
            Language::Go => &["go", "test", "./..."],
            Language::Shell => &["sh", "test.sh"],
        }
    }

    /// The files whose presence says a directory holds a project of this language.
    pub const fn marker_files(self) -> &'static [&'static str] {
        match self {
            Language::Python => &["requirements.txt", "pyproject.toml"],
            Language::Node => &["package.json"],
            Language::Rust => &["Cargo.toml"],
            Language::Go => &["go.mod"],
            Language::Shell => &[],
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Language {
    type Err = ProjectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Language::ALL.into_iter().find(|l| l.name() == s).ok_or_else(|| ProjectError::UnknownLanguage(s.to_string()))
    }
}

/// How a project's language was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub language: Language,
    /// The file that told: `serval.yaml`, or a marker file such as `package.json`.
    pub file: &'static str,
}

/// The language of the project in `dir`: `serval.yaml`'s `language` when the file exists
/// (it must then load and validate), else the one language whose marker files are there
/// (`requirements.txt` or `pyproject.toml` → python, `package.json` → node, `Cargo.toml`
/// → rust, `go.mod` → go). Markers of two languages and no `serval.yaml` is an error
/// naming them, as is a directory with none.
pub fn detect_language(dir: &Path) -> Result<Detected, ProjectError> {
    let manifest = dir.join(MANIFEST_FILE);
    if exists(&manifest)? {
        let manifest = Manifest::load(&manifest)?;
        return Ok(Detected { language: manifest.language, file: MANIFEST_FILE });
    }
    let mut found = Vec::new();
    for language in Language::ALL {
        for file in language.marker_files() {
            if exists(&dir.join(file))? {
                found.push(Detected { language, file });
            }
        }
    }
    let mut languages: Vec<Language> = found.iter().map(|d| d.language).collect();
    languages.dedup();
    match languages.len() {
        0 => Err(ProjectError::NoLanguage { dir: dir.to_path_buf() }),
        1 => Ok(found.swap_remove(0)),
        _ => Err(ProjectError::AmbiguousLanguage {
            dir: dir.to_path_buf(),
            found: found.iter().map(|d| format!("{} ({})", d.file, d.language)).collect(),
        }),
    }
}

/// Whether `path` exists; errors other than "not found" (permissions) are errors.
fn exists(path: &Path) -> Result<bool, ProjectError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ProjectError::Io { path: path.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for file in files {
            std::fs::write(dir.path().join(file), "").expect("write a marker file");
        }
        dir
    }

    #[test]
    fn names_round_trip() {
        for language in Language::ALL {
            assert_eq!(language.name().parse::<Language>().expect("known name"), language);
        }
        let err = "java".parse::<Language>().expect_err("unknown");
        assert_eq!(err.to_string(), "unknown language \"java\": use python, node, rust, go or shell");
    }

    #[test]
    fn marker_files_tell_the_language() {
        for (file, language) in [
            ("requirements.txt", Language::Python),
            ("pyproject.toml", Language::Python),
            ("package.json", Language::Node),
            ("Cargo.toml", Language::Rust),
            ("go.mod", Language::Go),
        ] {
            let dir = project(&[file, "README.md"]);
            assert_eq!(detect_language(dir.path()).expect(file), Detected { language, file }, "{file}");
        }
        let both = project(&["requirements.txt", "pyproject.toml"]);
        assert_eq!(detect_language(both.path()).expect("one language").language, Language::Python);
    }

    #[test]
    fn serval_yaml_wins_over_marker_files() {
        let dir = project(&["package.json"]);
        std::fs::write(dir.path().join(MANIFEST_FILE), "name: tool\nlanguage: shell\n").expect("write serval.yaml");
        let detected = detect_language(dir.path()).expect("detected");
        assert_eq!(detected, Detected { language: Language::Shell, file: MANIFEST_FILE });
    }

    #[test]
    fn a_broken_serval_yaml_is_an_error_not_a_guess() {
        let dir = project(&["package.json"]);
        std::fs::write(dir.path().join(MANIFEST_FILE), "name: tool\nlanguage: cobol\n").expect("write serval.yaml");
        let err = detect_language(dir.path()).expect_err("invalid language");
        assert!(err.to_string().contains("language"), "{err}");
    }

    #[test]
    fn nothing_or_two_languages_is_an_error() {
        let empty = project(&["README.md"]);
        let err = detect_language(empty.path()).expect_err("no marker");
        assert!(matches!(err, ProjectError::NoLanguage { .. }), "{err}");
        assert!(err.to_string().contains("serval.yaml"), "{err}");

        let mixed = project(&["package.json", "go.mod"]);
        let err = detect_language(mixed.path()).expect_err("two languages");
        assert!(err.to_string().contains("package.json (node), go.mod (go)"), "{err}");
    }
}
