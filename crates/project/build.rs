//! Embeds the project templates: every file under `templates/<language>/<kind>/` becomes an
//! entry of `FILES` (`$OUT_DIR/templates.rs`), read with `include_str!`, so that adding a
//! file to a template needs no code. `<kind>` is `http`, `cloudevents`, or `common` (files
//! of every kind of that language).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Directories a developer's test run may leave in a template; never part of one.
const SKIPPED: &[&str] = &["__pycache__", "node_modules", "target", ".pytest_cache"];

fn main() {
    let root =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("templates");
    println!("cargo:rerun-if-changed=templates");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let mut out = String::from(
        "/// Every template file: (language, kind, path in the project, contents).\n\
         pub(crate) static FILES: &[(&str, &str, &str, &str)] = &[\n",
    );
    for file in &files {
        let relative = file.strip_prefix(&root).expect("walked under the root");
        let parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let [language, kind, rest @ ..] = parts.as_slice() else {
            panic!("{} is not under templates/<language>/<kind>/", file.display());
        };
        let path = rest.join("/");
        // Relative to the crate, resolved when the crate compiles: a target directory shared
        // by two checkouts must not make one read the other's files.
        let from_crate = format!("/templates/{}", parts.join("/"));
        writeln!(
            out,
            "    ({language:?}, {kind:?}, {path:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), {from_crate:?}))),"
        )
        .expect("write to a String");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("templates.rs");
    std::fs::write(&dest, out).expect("write templates.rs");
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("read a directory entry");
        let path = entry.path();
        let name = entry.file_name();
        if SKIPPED.iter().any(|s| name == *s) {
            continue;
        }
        if entry.file_type().expect("file type").is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}
