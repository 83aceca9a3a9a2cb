//! Stamps the binary with the git commit it was built from (`SERVAL_GIT_COMMIT`, or
//! `unknown` outside a git checkout or without git), for `serval version`.
//!
//! The build script reruns only when the checked-out commit can have changed: when HEAD
//! moves (a checkout) or the branch it points to does (a commit), so incremental builds
//! stay cheap.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SERVAL_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=build.rs");
    let mut watched = vec!["HEAD".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
        // A branch whose loose ref was packed lives in packed-refs.
        watched.push("packed-refs".to_string());
    }
    for name in watched {
        // Only files that exist: cargo reruns a build script whose watched file is missing
        // on every build.
        if let Some(path) = git(&["rev-parse", "--git-path", &name]).map(|p| absolute(&p))
            && path.exists()
        {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// The trimmed stdout of a successful `git ARGS` run in this crate's directory.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// `git --git-path` answers relative to the working directory, which is the crate's.
fn absolute(path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from);
    crate_dir.join(path)
}
