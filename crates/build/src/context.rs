//! The build context: the directory `serval build` builds from. Finding and reading the
//! Containerfile, the ignore rules, the files a `COPY`/`ADD` source selects, and their digest.
//! The only module of this crate that does IO; it only reads.
//!
//! Docker's rules, as followed here:
//! - A source is a path relative to the context root; a leading `/` changes nothing (`COPY /x`
//!   is `context/x`). A path that climbs out (`../x`, `a/../../x`) is rejected.
//! - Symbolic links on a source's path, the source itself included, are followed, and must
//!   stay inside the context: a link with an absolute target, or one whose target climbs out, is
//!   rejected. Links *inside* a copied directory are not followed: they are copied as links
//!   (Docker does the same), so no file outside the context is ever read.
//! - A source that is a file is copied under its own name; a directory is copied by its
//!   contents (recursively, empty directories included); a source with wildcards (`*`, `?`,
//!   `[…]`, Go's `filepath.Match` per path component) selects every match, each then a file or
//!   a directory source. A wildcard that matches nothing, or a path that does not exist, is an
//!   error.
//! - Paths the ignore rules (`.containerignore`, else `.dockerignore`) exclude are not in the
//!   context: not selected, not matched, not walked (an excluded directory is still walked when
//!   the rules have exceptions, for the files they bring back). The Containerfile and the
//!   ignore file are read by the builder whatever the rules say, but `COPY` sees them only when
//!   the rules do not exclude them.
//!
//! The digest of a [`Selection`] covers what the copy produces: for each source, whether it is
//! a directory, then for each entry its path under the source, kind, permission bits and
//! content (a file's bytes, a link's target) — not timestamps, owners, or where the context
//! lies. It is the input digest of the step's cache key. The executor reads the files again
//! when it copies; a file changed in between makes a layer the key does not describe, as with
//! any builder that reads a live directory.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::ignore::{Ignore, Pattern};
use crate::limits::{
    MAX_CONTAINERFILE_BYTES, MAX_IGNORE_BYTES, MAX_SELECTED_ENTRIES, MAX_SYMLINK_HOPS, MAX_WALK_DEPTH,
};
use crate::{BuildError, ParseError};

/// The names looked for in the context root, in order, when no Containerfile is named.
pub const CONTAINERFILE_NAMES: [&str; 2] = ["Containerfile", "Dockerfile"];

/// The ignore files looked for in the context root, in order (Podman's name first).
pub const IGNORE_FILE_NAMES: [&str; 2] = [".containerignore", ".dockerignore"];

/// An opened build context.
#[derive(Debug, Clone)]
pub struct Context {
    root: PathBuf,
    ignore: Ignore,
}

/// What one `COPY`/`ADD` selects from the context, source by source (a wildcard source gives
/// one entry per match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub sources: Vec<SelectedSource>,
}

/// One selected source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedSource {
    /// Where it is in the context (relative to the root, links resolved; empty for the root).
    pub path: String,
    /// A directory (copied by its contents) or a file (copied under its name).
    pub is_dir: bool,
    /// For a file, one entry named after the source; for a directory, everything under it,
    /// sorted by path, directories before their contents.
    pub entries: Vec<Entry>,
}

/// A file, directory or link to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its path under the destination, `/`-separated.
    pub rel: String,
    /// Where to read it.
    pub host_path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
    },
    Dir,
    /// A link copied as a link, with its target as written.
    Symlink {
        target: String,
    },
}

impl Context {
    /// Opens the context directory and reads its ignore rules (bounded).
    pub fn open(dir: &Path) -> Result<Self, BuildError> {
        let root = dir.canonicalize().map_err(|e| BuildError::io(dir, e))?;
        if !root.is_dir() {
            return Err(BuildError::io(dir, io::Error::new(io::ErrorKind::NotADirectory, "not a directory")));
        }
        let mut ignore = Ignore::empty();
        for name in IGNORE_FILE_NAMES {
            let path = root.join(name);
            if path.is_file() {
                let text = read_bounded(&path, MAX_IGNORE_BYTES)?
                    .ok_or_else(|| BuildError::Limit { what: format!("{name} bytes"), limit: MAX_IGNORE_BYTES })?;
                let text = String::from_utf8(text)
                    .map_err(|_| BuildError::Ignore { line: 0, message: format!("{name} is not UTF-8 text") })?;
                ignore = Ignore::parse(&text)?;
                break;
            }
        }
        Ok(Self { root, ignore })
    }

    /// A context with the given rules instead of the directory's ignore file.
    pub fn with_ignore(dir: &Path, ignore: Ignore) -> Result<Self, BuildError> {
        let root = dir.canonicalize().map_err(|e| BuildError::io(dir, e))?;
        Ok(Self { root, ignore })
    }

    /// The context directory, canonical.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ignore(&self) -> &Ignore {
        &self.ignore
    }

    /// The context's `Containerfile`, else its `Dockerfile`.
    pub fn containerfile_path(&self) -> Result<PathBuf, BuildError> {
        CONTAINERFILE_NAMES
            .iter()
            .map(|name| self.root.join(name))
            .find(|path| path.is_file())
            .ok_or_else(|| BuildError::NoContainerfile(self.root.clone()))
    }

    /// What `sources` (expanded `COPY`/`ADD` sources) select. See the module's documentation.
    pub fn select(&self, sources: &[String]) -> Result<Selection, BuildError> {
        let mut budget = MAX_SELECTED_ENTRIES;
        let mut selected = Vec::new();
        for source in sources {
            let parts = lexical_parts(source)?;
            let globs: Vec<Option<Pattern>> = parts.iter().map(|p| wildcard(p)).collect();
            if globs.iter().any(Option::is_some) {
                let matches = self.glob(source, &parts, &globs, &mut budget)?;
                if matches.is_empty() {
                    return Err(BuildError::NoMatch { pattern: source.clone() });
                }
                for logical in matches {
                    selected.push(self.select_one(source, &logical, &mut budget)?);
                }
            } else {
                let parts: Vec<String> = parts.iter().map(|p| unescape(p)).collect();
                selected.push(self.select_one(source, &parts, &mut budget)?);
            }
        }
        Ok(Selection { sources: selected })
    }

    /// The logical paths a wildcard source matches, sorted per component, ignored paths left out.
    fn glob(
        &self,
        source: &str,
        parts: &[String],
        globs: &[Option<Pattern>],
        budget: &mut usize,
    ) -> Result<Vec<Vec<String>>, BuildError> {
        let mut current: Vec<Vec<String>> = vec![vec![]];
        for (part, glob) in parts.iter().zip(globs) {
            let mut next = Vec::new();
            for prefix in &current {
                match glob {
                    None => {
                        let mut candidate = prefix.clone();
                        candidate.push(unescape(part));
                        if self.resolve(source, &candidate)?.is_some() {
                            next.push(candidate);
                        }
                    }
                    Some(pattern) => {
                        let Some(dir) = self.resolve(source, prefix)? else { continue };
                        let host = self.host(&dir);
                        if !fs::symlink_metadata(&host).map_err(|e| BuildError::io(&host, e))?.is_dir() {
                            continue;
                        }
                        for name in sorted_names(&host)? {
                            let Some(name) = name.to_str() else { continue };
                            if !pattern.matches(name) {
                                continue;
                            }
                            let mut candidate = prefix.clone();
                            candidate.push(name.to_string());
                            let Some(real) = self.resolve(source, &candidate)? else { continue };
                            if self.skipped(&real) {
                                continue;
                            }
                            spend(budget)?;
                            next.push(candidate);
                        }
                    }
                }
            }
            current = next;
        }
        Ok(current)
    }

    fn select_one(&self, source: &str, logical: &[String], budget: &mut usize) -> Result<SelectedSource, BuildError> {
        let real = self
            .resolve(source, logical)?
            .ok_or_else(|| BuildError::NotFound { source_path: source.to_string(), excluded: false })?;
        let path = real.join("/");
        let host = self.host(&real);
        let meta = fs::symlink_metadata(&host).map_err(|e| BuildError::io(&host, e))?;
        let excluded = !path.is_empty() && self.ignore.is_ignored(&path);
        if meta.is_dir() {
            if excluded && !self.ignore.has_exceptions() {
                return Err(BuildError::NotFound { source_path: source.to_string(), excluded: true });
            }
            let mut entries = Vec::new();
            self.walk(&path, "", &host, 1, &mut entries, budget)?;
            return Ok(SelectedSource { path, is_dir: true, entries });
        }
        if excluded {
            return Err(BuildError::NotFound { source_path: source.to_string(), excluded: true });
        }
        if !meta.is_file() {
            return Err(BuildError::Unsupported { source_path: source.to_string() });
        }
        spend(budget)?;
        let name = logical.last().or(real.last()).cloned().unwrap_or_default();
        let entry = Entry { rel: name, host_path: host, kind: EntryKind::File { size: meta.len() }, mode: mode(&meta) };
        Ok(SelectedSource { path, is_dir: false, entries: vec![entry] })
    }

    /// Adds what is under the directory `dir` (context-relative) to `entries`, named under
    /// `prefix`; links are not followed.
    fn walk(
        &self,
        dir: &str,
        prefix: &str,
        host_dir: &Path,
        depth: usize,
        entries: &mut Vec<Entry>,
        budget: &mut usize,
    ) -> Result<(), BuildError> {
        if depth > MAX_WALK_DEPTH {
            return Err(BuildError::Limit { what: format!("directory depth under {dir:?}"), limit: MAX_WALK_DEPTH });
        }
        for name in sorted_names(host_dir)? {
            let host = host_dir.join(&name);
            let Some(name) = name.to_str() else {
                return Err(BuildError::Unsupported { source_path: host.display().to_string() });
            };
            let in_context = join(dir, name);
            let rel = join(prefix, name);
            let ignored = self.ignore.is_ignored(&in_context);
            let meta = fs::symlink_metadata(&host).map_err(|e| BuildError::io(&host, e))?;
            let kind = if meta.is_dir() {
                if ignored && !self.ignore.has_exceptions() {
                    continue;
                }
                spend(budget)?;
                let at = entries.len();
                entries.push(Entry {
                    rel: rel.clone(),
                    host_path: host.clone(),
                    kind: EntryKind::Dir,
                    mode: mode(&meta),
                });
                self.walk(&in_context, &rel, &host, depth + 1, entries, budget)?;
                // An ignored directory walked for exceptions stays only if one matched inside.
                if ignored && entries.len() == at + 1 {
                    entries.pop();
                }
                continue;
            } else if ignored {
                continue;
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&host).map_err(|e| BuildError::io(&host, e))?;
                let Some(target) = target.to_str() else {
                    return Err(BuildError::Unsupported { source_path: host.display().to_string() });
                };
                EntryKind::Symlink { target: target.to_string() }
            } else if meta.is_file() {
                EntryKind::File { size: meta.len() }
            } else {
                // Sockets, fifos and devices are not part of a context (Docker skips them too).
                continue;
            };
            spend(budget)?;
            entries.push(Entry { rel, host_path: host, kind, mode: mode(&meta) });
        }
        Ok(())
    }

    /// Resolves a logical path (clean components) to the real one, following links inside the
    /// context. `None` when a component does not exist (or is not a directory).
    fn resolve(&self, source: &str, logical: &[String]) -> Result<Option<Vec<String>>, BuildError> {
        let mut done: Vec<String> = Vec::new();
        let mut todo: std::collections::VecDeque<String> = logical.iter().cloned().collect();
        let mut hops = 0;
        while let Some(part) = todo.pop_front() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    // Only link targets bring `..` here, and they were checked to stay inside.
                    done.pop();
                    continue;
                }
                _ => {}
            }
            let host = self.host(&done).join(&part);
            let meta = match fs::symlink_metadata(&host) {
                Ok(meta) => meta,
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                    return Ok(None);
                }
                Err(e) => return Err(BuildError::io(&host, e)),
            };
            if !meta.file_type().is_symlink() {
                done.push(part);
                continue;
            }
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(BuildError::Limit {
                    what: format!("symbolic links followed for {source}"),
                    limit: MAX_SYMLINK_HOPS,
                });
            }
            let target = fs::read_link(&host).map_err(|e| BuildError::io(&host, e))?;
            let link = join(&done.join("/"), &part);
            let escapes = || BuildError::SymlinkEscapes { link: link.clone(), target: target.display().to_string() };
            let Some(text) = target.to_str() else { return Err(escapes()) };
            if text.starts_with('/') {
                return Err(escapes());
            }
            let mut depth = done.len();
            for component in text.split('/') {
                match component {
                    "" | "." => {}
                    ".." if depth == 0 => return Err(escapes()),
                    ".." => depth -= 1,
                    _ => depth += 1,
                }
            }
            for component in text.split('/').rev() {
                todo.push_front(component.to_string());
            }
        }
        Ok(Some(done))
    }

    /// Whether a wildcard match is left out: an ignored path, unless it is a directory that
    /// exceptions may bring files back from.
    fn skipped(&self, real: &[String]) -> bool {
        let path = real.join("/");
        if path.is_empty() || !self.ignore.is_ignored(&path) {
            return false;
        }
        !(self.ignore.has_exceptions() && self.host(real).is_dir())
    }

    fn host(&self, parts: &[String]) -> PathBuf {
        let mut path = self.root.clone();
        path.extend(parts);
        path
    }
}

impl Selection {
    /// `sha256:<hex>` over what the copy produces (see the module's documentation); reads every
    /// selected file.
    pub fn digest(&self) -> Result<String, BuildError> {
        let mut hasher = Sha256::new();
        hasher.update(b"serval-build-context-v1\0");
        field(&mut hasher, &(self.sources.len() as u64).to_be_bytes());
        for source in &self.sources {
            field(&mut hasher, if source.is_dir { b"dir" } else { b"file" });
            field(&mut hasher, &(source.entries.len() as u64).to_be_bytes());
            for entry in &source.entries {
                field(&mut hasher, entry.rel.as_bytes());
                field(&mut hasher, &entry.mode.to_be_bytes());
                match &entry.kind {
                    EntryKind::Dir => field(&mut hasher, b"d"),
                    EntryKind::Symlink { target } => {
                        field(&mut hasher, b"l");
                        field(&mut hasher, target.as_bytes());
                    }
                    EntryKind::File { .. } => {
                        field(&mut hasher, b"f");
                        field(&mut hasher, &file_digest(&entry.host_path)?);
                    }
                }
            }
        }
        Ok(format!("sha256:{}", crate::cache::hex(&hasher.finalize())))
    }
}

/// Reads a Containerfile (bounded, UTF-8).
pub fn read_containerfile(path: &Path) -> Result<String, BuildError> {
    let bytes = read_bounded(path, MAX_CONTAINERFILE_BYTES)?
        .ok_or_else(|| ParseError::new(0, format!("larger than {MAX_CONTAINERFILE_BYTES} bytes")))?;
    String::from_utf8(bytes).map_err(|_| ParseError::new(0, "not UTF-8 text").into())
}

/// The file's bytes, or `None` when it is longer than `limit`.
fn read_bounded(path: &Path, limit: usize) -> Result<Option<Vec<u8>>, BuildError> {
    let file = fs::File::open(path).map_err(|e| BuildError::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(|e| BuildError::io(path, e))?;
    Ok((bytes.len() <= limit).then_some(bytes))
}

/// A file's length and sha256, streamed.
fn file_digest(path: &Path) -> Result<Vec<u8>, BuildError> {
    let mut file = fs::File::open(path).map_err(|e| BuildError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len: u64 = 0;
    loop {
        let n = file.read(&mut buf).map_err(|e| BuildError::io(path, e))?;
        if n == 0 {
            break;
        }
        len += n as u64;
        hasher.update(&buf[..n]);
    }
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&hasher.finalize());
    Ok(out)
}

/// A length-prefixed field, so that no two different inputs hash the same bytes.
fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// The clean components of a source, relative to the context root.
fn lexical_parts(source: &str) -> Result<Vec<String>, BuildError> {
    let mut parts: Vec<String> = Vec::new();
    for part in source.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(BuildError::OutsideContext { source_path: source.to_string() });
                }
            }
            part => parts.push(part.to_string()),
        }
    }
    Ok(parts)
}

/// The component's pattern when it has wildcards. A component that is not a valid pattern is
/// taken literally.
fn wildcard(part: &str) -> Option<Pattern> {
    if !part.contains(['*', '?', '[']) {
        return None;
    }
    Pattern::compile(part, false).ok().filter(|p| !p.is_literal())
}

/// A literal component with its `\` escapes removed (`a\*b` names the file `a*b`).
fn unescape(part: &str) -> String {
    if !part.contains(['*', '?', '[']) {
        return part.to_string();
    }
    let mut out = String::with_capacity(part.len());
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>, BuildError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| BuildError::io(dir, e))? {
        names.push(entry.map_err(|e| BuildError::io(dir, e))?.file_name());
    }
    names.sort();
    Ok(names)
}

fn spend(budget: &mut usize) -> Result<(), BuildError> {
    *budget = budget.checked_sub(1).ok_or_else(|| BuildError::Limit {
        what: "entries selected by one COPY".into(),
        limit: MAX_SELECTED_ENTRIES,
    })?;
    Ok(())
}

fn mode(meta: &fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Self {
            Self(tempfile::tempdir().expect("temp dir"))
        }

        fn file(&self, rel: &str, content: &str) -> &Self {
            let path = self.0.path().join(rel);
            fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            fs::write(path, content).expect("write");
            self
        }

        fn link(&self, rel: &str, target: &str) -> &Self {
            let path = self.0.path().join(rel);
            fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            symlink(target, path).expect("symlink");
            self
        }

        fn context(&self) -> Context {
            Context::open(self.0.path()).expect("opens")
        }

        fn path(&self) -> &Path {
            self.0.path()
        }
    }

    fn select(ctx: &Context, sources: &[&str]) -> Result<Selection, BuildError> {
        ctx.select(&sources.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn rels(selection: &Selection) -> Vec<Vec<&str>> {
        selection.sources.iter().map(|s| s.entries.iter().map(|e| e.rel.as_str()).collect()).collect()
    }

    fn digest(ctx: &Context, sources: &[&str]) -> String {
        select(ctx, sources).expect("selects").digest().expect("digests")
    }

    #[test]
    fn files_directories_and_globs() {
        let d = Dir::new();
        d.file("a.txt", "a").file("b.txt", "b").file("c.md", "c").file("src/main.rs", "fn main() {}");
        d.file("src/lib/x.rs", "x");
        fs::create_dir_all(d.path().join("src/empty")).expect("mkdir");
        let ctx = d.context();

        let s = select(&ctx, &["a.txt"]).expect("file");
        assert_eq!(s.sources[0].path, "a.txt");
        assert!(!s.sources[0].is_dir);
        assert_eq!(s.sources[0].entries[0].kind, EntryKind::File { size: 1 });

        let s = select(&ctx, &["/src/"]).expect("dir");
        assert!(s.sources[0].is_dir);
        assert_eq!(rels(&s), [["empty", "lib", "lib/x.rs", "main.rs"]]);

        let s = select(&ctx, &["*.txt", "s?c/l*/*.rs"]).expect("globs");
        assert_eq!(rels(&s), [vec!["a.txt"], vec!["b.txt"], vec!["x.rs"]]);
        assert_eq!(s.sources[2].path, "src/lib/x.rs");

        let s = select(&ctx, &["."]).expect("root");
        assert_eq!(s.sources[0].path, "");
        assert!(rels(&s)[0].contains(&"src/lib/x.rs"));

        assert!(matches!(select(&ctx, &["*.none"]), Err(BuildError::NoMatch { .. })));
        assert!(matches!(select(&ctx, &["missing"]), Err(BuildError::NotFound { excluded: false, .. })));
        assert!(matches!(select(&ctx, &["a.txt/x"]), Err(BuildError::NotFound { .. })));
    }

    #[test]
    fn escapes_are_rejected() {
        let d = Dir::new();
        d.file("inside/f", "f").link("etc", "/etc").link("up", "../..").link("inside/rel", "../inside/f");
        d.link("inside/out", "../../x").link("passwd", "/etc/passwd");
        let ctx = d.context();
        for source in ["../x", "a/../../x", "inside/../../x"] {
            assert!(matches!(select(&ctx, &[source]), Err(BuildError::OutsideContext { .. })), "{source}");
        }
        for source in ["etc", "etc/passwd", "passwd", "up", "up/x", "inside/out", "*"] {
            assert!(matches!(select(&ctx, &[source]), Err(BuildError::SymlinkEscapes { .. })), "{source}");
        }
        // A link that stays inside is followed; the file keeps the source's name.
        let s = select(&ctx, &["inside/rel"]).expect("inside link");
        assert_eq!((s.sources[0].path.as_str(), s.sources[0].entries[0].rel.as_str()), ("inside/f", "rel"));
        // Inside a copied directory links are copied as links, not followed.
        let s = select(&ctx, &["inside"]).expect("dir with links");
        let out = s.sources[0].entries.iter().find(|e| e.rel == "out").expect("the link is listed");
        assert_eq!(out.kind, EntryKind::Symlink { target: "../../x".into() });
        // An absolute source is relative to the context.
        assert_eq!(select(&ctx, &["/inside/f"]).expect("absolute").sources[0].path, "inside/f");
    }

    #[test]
    fn symlink_loops_are_bounded() {
        let d = Dir::new();
        d.link("a", "b").link("b", "a");
        assert!(matches!(select(&d.context(), &["a"]), Err(BuildError::Limit { .. })));
    }

    #[test]
    fn dockerignore_applies() {
        let d = Dir::new();
        d.file(".dockerignore", "*.pyc\n**/*.pyc\nsecret\nlogs\n!logs/keep.log\nDockerfile\n");
        d.file("Dockerfile", "FROM a\n").file("app.py", "print()").file("app.pyc", "x").file("pkg/m.pyc", "x");
        d.file("secret", "s").file("logs/a.log", "a").file("logs/keep.log", "k").file("pkg/m.py", "m");
        let ctx = d.context();
        let s = select(&ctx, &["."]).expect("root");
        assert_eq!(rels(&s), [[".dockerignore", "app.py", "logs", "logs/keep.log", "pkg", "pkg/m.py"]]);
        assert!(matches!(select(&ctx, &["secret"]), Err(BuildError::NotFound { excluded: true, .. })));
        assert!(matches!(select(&ctx, &["*.pyc"]), Err(BuildError::NoMatch { .. })));
        assert_eq!(rels(&select(&ctx, &["logs"]).expect("walked for the exception")), [["keep.log"]]);
        // With exceptions in the rules, a wildcard still skips the ignored matches.
        assert_eq!(rels(&select(&ctx, &["logs/*.log"]).expect("the exception matches")), [["keep.log"]]);
        assert_eq!(rels(&select(&ctx, &["*"]).expect("root wildcard")).len(), 4, "app.py, logs, pkg, .dockerignore");
        // The Containerfile is still found and read, though COPY cannot see it.
        assert_eq!(ctx.containerfile_path().expect("found"), ctx.root().join("Dockerfile"));
        assert!(matches!(select(&ctx, &["Dockerfile"]), Err(BuildError::NotFound { excluded: true, .. })));
    }

    #[test]
    fn digest_follows_content_not_ignored_files() {
        let d = Dir::new();
        d.file(".dockerignore", "**/*.log\n").file("app/main.py", "print('hi')").file("app/debug.log", "1");
        let ctx = d.context();
        let before = digest(&ctx, &["app"]);
        assert_eq!(before, digest(&ctx, &["app"]), "stable");
        assert!(before.starts_with("sha256:") && before.len() == 7 + 64);

        d.file("app/debug.log", "2, and longer");
        assert_eq!(before, digest(&ctx, &["app"]), "an ignored file does not count");

        d.file("app/main.py", "print('ho')");
        let changed = digest(&ctx, &["app"]);
        assert_ne!(before, changed, "one byte changed");

        let main = d.path().join("app/main.py");
        fs::set_permissions(&main, fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_ne!(changed, digest(&ctx, &["app"]), "the mode counts");

        d.file("app/new.py", "");
        assert_ne!(changed, digest(&ctx, &["app"]), "a new empty file counts");
        // The same bytes under another name are another input.
        d.file("x/a", "same").file("y/b", "same");
        assert_ne!(digest(&ctx, &["x"]), digest(&ctx, &["y"]));
    }

    #[test]
    fn containerfile_lookup_and_bounds() {
        let d = Dir::new();
        assert!(matches!(d.context().containerfile_path(), Err(BuildError::NoContainerfile(_))));
        d.file("Dockerfile", "FROM b\n").file("Containerfile", "FROM a\n");
        let ctx = d.context();
        let path = ctx.containerfile_path().expect("found");
        assert!(path.ends_with("Containerfile"));
        assert_eq!(read_containerfile(&path).expect("reads"), "FROM a\n");
        d.file("Big", &"#".repeat(MAX_CONTAINERFILE_BYTES + 1));
        match read_containerfile(&d.path().join("Big")) {
            Err(BuildError::Containerfile(e)) => assert_eq!(e.line, 0),
            other => panic!("size bound expected, got {other:?}"),
        }
    }

    #[test]
    fn containerignore_wins_over_dockerignore() {
        let d = Dir::new();
        d.file(".containerignore", "a\n").file(".dockerignore", "b\n").file("a", "").file("b", "");
        let ctx = d.context();
        assert!(ctx.ignore().is_ignored("a"));
        assert!(!ctx.ignore().is_ignored("b"));
        d.file(".dockerignore", "[bad\n");
        assert!(Context::open(d.path()).is_ok(), "only the first ignore file is read");
        fs::remove_file(d.path().join(".containerignore")).expect("rm");
        assert!(matches!(Context::open(d.path()), Err(BuildError::Ignore { line: 1, .. })));
    }
}
