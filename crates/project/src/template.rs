//! The embedded templates and writing one into a directory.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::str::FromStr;

use crate::ProjectError;
use crate::language::Language;
use crate::manifest::{MANIFEST_FILE, Manifest};

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// What a function takes and gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TemplateKind {
    /// An HTTP request in, a response out.
    #[serde(rename = "http")]
    Http,
    /// A CloudEvent in (binary or structured content mode), an optional CloudEvent out.
    #[serde(rename = "cloudevents")]
    CloudEvents,
}

impl TemplateKind {
    pub const ALL: [TemplateKind; 2] = [TemplateKind::Http, TemplateKind::CloudEvents];

    /// Its name in `serval.yaml` and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TemplateKind::Http => "http",
            TemplateKind::CloudEvents => "cloudevents",
        }
    }
}

impl fmt::Display for TemplateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TemplateKind {
    type Err = ProjectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TemplateKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| ProjectError::UnknownTemplate(s.to_string()))
    }
}

/// One template: a language and a kind, what it is, and how its project starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    pub language: Language,
    pub kind: TemplateKind,
    pub description: &'static str,
    /// The project's host start command (`run.command` of its `serval.yaml`).
    pub command: &'static [&'static str],
}

/// Every template, in the order `serval init --list` shows them. A shell function is a
/// CGI-style script behind a small Python server; it has no CloudEvents template.
pub static TEMPLATES: &[Template] = &[
    Template {
        language: Language::Python,
        kind: TemplateKind::Http,
        description: "handle(request) -> body or (body, status, headers); http.server harness; unittest",
        command: Language::Python.default_run_command(),
    },
    Template {
        language: Language::Python,
        kind: TemplateKind::CloudEvents,
        description: "handle(event) -> CloudEvent or None; binary and structured mode; unittest",
        command: Language::Python.default_run_command(),
    },
    Template {
        language: Language::Node,
        kind: TemplateKind::Http,
        description: "async handle(request) -> {status, headers, body}; node:http harness; node --test",
        command: Language::Node.default_run_command(),
    },
    Template {
        language: Language::Node,
        kind: TemplateKind::CloudEvents,
        description: "async handle(event) -> event or undefined; binary and structured mode; node --test",
        command: Language::Node.default_run_command(),
    },
    Template {
        language: Language::Rust,
        kind: TemplateKind::Http,
        description: "fn handle(&Request) -> Response; std::net server, no dependencies; cargo test",
        command: Language::Rust.default_run_command(),
    },
    Template {
        language: Language::Rust,
        kind: TemplateKind::CloudEvents,
        description: "fn handle(&CloudEvent) -> Option<CloudEvent>; std only, no dependencies; cargo test",
        command: Language::Rust.default_run_command(),
    },
    Template {
        language: Language::Go,
        kind: TemplateKind::Http,
        description: "Handle(http.ResponseWriter, *http.Request); net/http; go test",
        command: Language::Go.default_run_command(),
    },
    Template {
        language: Language::Go,
        kind: TemplateKind::CloudEvents,
        description: "Handle(ctx, Event) (*Event, error); net/http, encoding/json; go test",
        command: Language::Go.default_run_command(),
    },
    Template {
        language: Language::Shell,
        kind: TemplateKind::Http,
        description: "handler.sh, CGI-style (request in env and stdin, response on stdout); test.sh",
        command: Language::Shell.default_run_command(),
    },
];

/// The template of a language and kind; asking for one that does not exist names the ones
/// that do.
pub fn find_template(language: Language, kind: TemplateKind) -> Result<&'static Template, ProjectError> {
    TEMPLATES.iter().find(|t| t.language == language && t.kind == kind).ok_or_else(|| {
        let available = TEMPLATES.iter().filter(|t| t.language == language).map(|t| t.kind.name()).collect();
        ProjectError::NoTemplate { language, kind, available }
    })
}

/// One file of a rendered project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectFile {
    /// Relative to the project's directory, `/`-separated.
    pub path: String,
    pub contents: String,
    /// Scripts (contents starting with `#!`) are written executable.
    pub executable: bool,
}

impl Template {
    /// The files of a project of this template named `name` (`{{name}}` replaced; a
    /// trailing `.tmpl` dropped from file names, so that a template's `Cargo.toml` is no
    /// manifest in serval's own tree), its `serval.yaml` included, sorted by path.
    pub fn files(&self, name: &str) -> Vec<ProjectFile> {
        let mut files: Vec<ProjectFile> = Vec::new();
        // `common` first, so that a kind's own file of the same path replaces it.
        for wanted in ["common", self.kind.name()] {
            for (language, kind, path, contents) in FILES {
                if *language != self.language.name() || *kind != wanted {
                    continue;
                }
                let path = path.strip_suffix(".tmpl").unwrap_or(path).to_string();
                let contents = contents.replace("{{name}}", name);
                let file = ProjectFile { executable: contents.starts_with("#!"), path, contents };
                match files.iter_mut().find(|f| f.path == file.path) {
                    Some(existing) => *existing = file,
                    None => files.push(file),
                }
            }
        }
        let manifest = Manifest::new(name, self.language, self.kind, self.command);
        files.push(ProjectFile { path: MANIFEST_FILE.to_string(), contents: manifest.to_yaml(), executable: false });
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// Writes a new project named `name` into `dir` (created if missing) and returns the
    /// paths written. Never overwrites: when any of the project's files already exists
    /// (as a file, a directory or a link), nothing is written and the error lists them
    /// all — as `func create` refuses a directory with conflicting files, rather than
    /// leaving a project half old, half new. Other files in `dir` (`.git`, notes) are no
    /// conflict and are left alone.
    pub fn render(&self, dir: &Path, name: &str) -> Result<Vec<String>, ProjectError> {
        crate::validate_function_name(name)
            .map_err(|reason| ProjectError::InvalidName { name: name.to_string(), reason })?;
        let files = self.files(name);
        let mut existing = Vec::new();
        for file in &files {
            let path = dir.join(&file.path);
            match std::fs::symlink_metadata(&path) {
                Ok(_) => existing.push(file.path.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // A parent that is a file (`src` as a file) is in the way too.
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => existing.push(file.path.clone()),
                Err(source) => return Err(ProjectError::Io { path, source }),
            }
        }
        if !existing.is_empty() {
            return Err(ProjectError::WouldOverwrite { dir: dir.to_path_buf(), files: existing });
        }
        for file in &files {
            let path = dir.join(&file.path);
            let io = |source| ProjectError::Io { path: path.clone(), source };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            // create_new: a file that appeared since the check is not overwritten either.
            let mode = if file.executable { 0o755 } else { 0o644 };
            let mut out =
                std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&path).map_err(io)?;
            out.write_all(file.contents.as_bytes()).map_err(io)?;
        }
        Ok(files.into_iter().map(|f| f.path).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn every_template_has_its_files_and_every_file_a_template() {
        for template in TEMPLATES {
            let (language, kind) = (template.language, template.kind);
            let files = template.files("hello");
            let paths: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
            for needed in ["serval.yaml", ".dockerignore", "README.md"] {
                assert!(paths.contains(needed), "{language} {kind} lacks {needed}");
            }
            for file in &files {
                let placeholder = file.contents.match_indices("{{").any(|(at, _)| {
                    let rest = &file.contents[at + 2..];
                    rest.find("}}")
                        .is_some_and(|end| rest[..end].chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                });
                assert!(!placeholder, "{language} {kind} {}: a placeholder is left", file.path);
            }
        }
        for (language, kind, path, _) in FILES {
            let known = TEMPLATES
                .iter()
                .any(|t| t.language.name() == *language && (t.kind.name() == *kind || *kind == "common"));
            assert!(known, "templates/{language}/{kind}/{path} belongs to no template");
        }
    }

    #[test]
    fn a_project_is_detected_as_its_language() {
        for template in TEMPLATES {
            let dir = tempfile::tempdir().expect("tempdir");
            template.render(dir.path(), "hello").expect("render");
            let detected = crate::detect_language(dir.path()).expect("detected");
            assert_eq!(detected.language, template.language);
            let manifest = Manifest::load(&dir.path().join(MANIFEST_FILE)).expect("the written serval.yaml loads");
            assert_eq!(manifest.name, "hello");
            assert_eq!(manifest.template, Some(template.kind));
            assert_eq!(manifest.run_command(), template.command);
            assert_eq!(manifest.base_image(), template.language.default_base_image());
            // Without serval.yaml the marker files tell the same, except for shell.
            std::fs::remove_file(dir.path().join(MANIFEST_FILE)).expect("remove serval.yaml");
            match crate::detect_language(dir.path()) {
                Ok(d) => assert_eq!(d.language, template.language),
                Err(e) => assert_eq!(template.language, Language::Shell, "{e}"),
            }
        }
    }

    #[test]
    fn rendering_substitutes_the_name_and_marks_scripts_executable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("deep/er");
        let template = find_template(Language::Rust, TemplateKind::Http).expect("rust http");
        let written = template.render(&target, "my-fn").expect("render");
        assert!(written.contains(&"src/main.rs".to_string()), "{written:?}");
        let cargo = std::fs::read_to_string(target.join("Cargo.toml")).expect("Cargo.toml, not Cargo.toml.tmpl");
        assert!(cargo.contains("name = \"my-fn\""), "{cargo}");

        let shell = find_template(Language::Shell, TemplateKind::Http).expect("shell http");
        shell.render(&dir.path().join("sh"), "tool").expect("render");
        let mode = |f: &str| std::fs::metadata(dir.path().join("sh").join(f)).expect(f).permissions().mode() & 0o777;
        assert_eq!(mode("handler.sh"), 0o755);
        assert_eq!(mode("README.md"), 0o644);
    }

    #[test]
    fn rendering_never_overwrites_and_then_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("main.py"), "mine").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "unrelated").expect("write");
        std::fs::create_dir(dir.path().join("README.md")).expect("a directory in the way");
        let template = find_template(Language::Python, TemplateKind::Http).expect("python http");
        let err = template.render(dir.path(), "hello").expect_err("conflicts");
        match &err {
            ProjectError::WouldOverwrite { files, .. } => assert_eq!(files, &["README.md", "main.py"]),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("README.md, main.py"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join("main.py")).expect("kept"), "mine");
        let left: BTreeSet<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, BTreeSet::from(["README.md".into(), "main.py".into(), "notes.txt".into()]));

        // Unrelated files are no conflict.
        let other = tempfile::tempdir().expect("tempdir");
        std::fs::write(other.path().join("notes.txt"), "unrelated").expect("write");
        template.render(other.path(), "hello").expect("render beside other files");
        // A second run conflicts with everything the first wrote.
        let again = template.render(other.path(), "hello").expect_err("second run");
        let ProjectError::WouldOverwrite { files, .. } = again else { panic!("{again}") };
        assert_eq!(files.len(), template.files("hello").len());
    }

    #[test]
    fn names_and_kinds_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let template = find_template(Language::Go, TemplateKind::Http).expect("go http");
        let err = template.render(dir.path(), "My_Func").expect_err("invalid name");
        assert!(err.to_string().starts_with("invalid function name: \"My_Func\" is not a valid name"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);

        let err = find_template(Language::Shell, TemplateKind::CloudEvents).expect_err("no shell cloudevents");
        assert_eq!(err.to_string(), "there is no cloudevents template for shell (shell has: http)");
        let err = "grpc".parse::<TemplateKind>().expect_err("unknown");
        assert_eq!(err.to_string(), "unknown template \"grpc\": use http or cloudevents");
    }
}
