//! The front half of `serval build`, a daemonless OCI image builder: everything that can be
//! decided before a layer is made.
//!
//! Owns: the Containerfile/Dockerfile parser (`containerfile`: text → stages of located
//! instructions, with the words Docker expands left unexpanded) and Docker's word rules
//! (`words`: quotes, escapes, `$VAR`/`${VAR:-default}` substitution); build planning (`plan`:
//! build arguments, ARG/ENV scoping per stage, `--from` references, the stages a target needs,
//! typed steps); the build context (`context`: the Containerfile, `.dockerignore` rules from
//! `ignore`, the files a `COPY`/`ADD` source selects, confined to the context, and their
//! digest); layer cache keys (`cache`). Only `context` does IO (it reads the context directory);
//! the rest is pure. Every input is bounded (sizes, counts, nesting): see [`limits`].
//!
//! Must not depend on: any other serval crate, tokio, the network. The executor (pulling bases,
//! running `RUN` in a container, writing layers and the image) is `serval-builder`, which drives
//! this crate: `Context::open` → `Context::containerfile_path` + `context::read_containerfile` →
//! `containerfile::parse` → `plan::plan` (twice: see `plan`'s documentation) → for each step,
//! `Context::select` + `Selection::digest` and `cache::step_key`.

pub mod cache;
pub mod containerfile;
pub mod context;
pub mod ignore;
pub mod plan;
pub mod words;

use std::fmt;
use std::path::PathBuf;

pub use cache::{base_key_image, base_key_scratch, step_key};
pub use containerfile::{Containerfile, Located, Stage, parse};
pub use context::{Context, Entry, EntryKind, SelectedSource, Selection, read_containerfile};
pub use ignore::Ignore;
pub use plan::{
    Base, BaseConfig, BuildOptions, BuildPlan, ConfigStep, CopySource, CopyStep, Network, Platform, RunStep, StagePlan,
    Step, plan,
};

/// Bounds on untrusted input: the Containerfile, `.dockerignore`, the context directory.
pub mod limits {
    /// Largest Containerfile read.
    pub const MAX_CONTAINERFILE_BYTES: usize = 1024 * 1024;
    /// Longest physical line of a Containerfile.
    pub const MAX_LINE_BYTES: usize = 64 * 1024;
    /// Most stages (`FROM`s) in a Containerfile.
    pub const MAX_STAGES: usize = 128;
    /// Most instructions in a Containerfile, all stages together.
    pub const MAX_INSTRUCTIONS: usize = 10_000;
    /// Deepest nesting of `${…}` substitutions in one word.
    pub const MAX_SUBSTITUTION_DEPTH: usize = 16;
    /// Longest word after substitution (bounds `ENV A=$A$A` doubling).
    pub const MAX_WORD_BYTES: usize = 1024 * 1024;
    /// Largest `.dockerignore`.
    pub const MAX_IGNORE_BYTES: usize = 1024 * 1024;
    /// Most patterns in a `.dockerignore`.
    pub const MAX_IGNORE_PATTERNS: usize = 10_000;
    /// Longest single `.dockerignore` or `COPY` glob pattern.
    pub const MAX_PATTERN_BYTES: usize = 4096;
    /// Most files, directories and links one `COPY`/`ADD` selects.
    pub const MAX_SELECTED_ENTRIES: usize = 1_000_000;
    /// Deepest directory nesting walked under a `COPY`/`ADD` source.
    pub const MAX_WALK_DEPTH: usize = 256;
    /// Most symbolic links followed while resolving one source path.
    pub const MAX_SYMLINK_HOPS: usize = 40;
}

/// A Containerfile error at a line: syntax, substitution, or a reference that does not resolve.
///
/// Displayed `Containerfile:12: message` (line 0, a whole-file error: `Containerfile: message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line of the instruction (its keyword's line); 0 for the whole file.
    pub line: usize,
    pub message: String,
}

impl ParseError {
    pub fn new(line: usize, message: impl Into<String>) -> Self {
        Self { line, message: message.into() }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "Containerfile: {}", self.message)
        } else {
            write!(f, "Containerfile:{}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for ParseError {}

/// The errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Containerfile does not parse, or does not resolve (unknown stage, bad substitution).
    #[error(transparent)]
    Containerfile(#[from] ParseError),
    /// `--target` names no stage.
    #[error("target stage {0:?} not found in the Containerfile")]
    UnknownTarget(String),
    /// A `.dockerignore` line that is not a valid pattern.
    #[error(".dockerignore:{line}: {message}")]
    Ignore { line: usize, message: String },
    /// Neither `Containerfile` nor `Dockerfile` is in the context directory.
    #[error("no Containerfile or Dockerfile in {0}")]
    NoContainerfile(PathBuf),
    /// A `COPY`/`ADD` source path that leaves the build context (`../x`).
    #[error("{source_path}: forbidden path outside the build context")]
    OutsideContext { source_path: String },
    /// A symbolic link on a source's path whose target is absolute or leaves the context.
    #[error("{link}: symbolic link to {target:?} points outside the build context")]
    SymlinkEscapes { link: String, target: String },
    /// A source that is not in the context (or is excluded by `.dockerignore`).
    #[error("{source_path}: not found in the build context{}", excluded_note(*.excluded))]
    NotFound { source_path: String, excluded: bool },
    /// A wildcard source that matched nothing.
    #[error("{pattern}: no source files were specified (the pattern matches nothing in the build context)")]
    NoMatch { pattern: String },
    /// A source that is neither a file, a directory nor a link (a socket, a device).
    #[error("{source_path}: not a regular file or directory")]
    Unsupported { source_path: String },
    /// A bound of [`limits`] was passed.
    #[error("{what}: more than {limit}")]
    Limit { what: String, limit: usize },
    /// Reading the context failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn excluded_note(excluded: bool) -> &'static str {
    if excluded { " (excluded by .dockerignore)" } else { "" }
}

impl BuildError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
