//! How a project runs on the host (`serval deploy --source DIR --runtime process`, and
//! `serval dev` next): its start command in its own directory, with its environment and
//! the annotations of its Service.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Manifest, ProjectError, detect_language};

/// A project as the process runtime runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRun {
    /// The project's directory, absolute (instances start in it).
    pub dir: PathBuf,
    /// The start command (`run.command` of `serval.yaml`, else the language's).
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl HostRun {
    /// Reads the project in `dir`: its `serval.yaml` when there is one, else its language
    /// from the marker files and that language's defaults.
    pub fn of(dir: &Path) -> Result<HostRun, ProjectError> {
        let io = |source| ProjectError::Io { path: dir.to_path_buf(), source };
        let dir = std::fs::canonicalize(dir).map_err(io)?;
        if !dir.is_dir() {
            return Err(io(std::io::Error::other("not a directory")));
        }
        let (command, env, annotations) = if let Some(manifest) = Manifest::find(&dir)? {
            (manifest.run_command(), manifest.env, manifest.annotations)
        } else {
            let language = detect_language(&dir)?.language;
            let command = language.default_run_command().iter().map(|w| w.to_string()).collect();
            (command, BTreeMap::new(), BTreeMap::new())
        };
        Ok(HostRun { dir, command, env, annotations })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MANIFEST_FILE;

    #[test]
    fn a_manifest_gives_command_env_and_annotations_and_markers_give_defaults() {
        let temp = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            temp.path().join(MANIFEST_FILE),
            "name: hello\nlanguage: node\nrun:\n  command: [node, server.js]\nenv:\n  GREETING: hi\n\
             annotations:\n  autoscaling.knative.dev/max-scale: \"3\"\n",
        )
        .expect("write serval.yaml");
        let run = HostRun::of(temp.path()).expect("a project");
        assert_eq!(run.command, ["node", "server.js"]);
        assert_eq!(run.env.get("GREETING").map(String::as_str), Some("hi"));
        assert_eq!(run.annotations.get("autoscaling.knative.dev/max-scale").map(String::as_str), Some("3"));
        assert!(run.dir.is_absolute());

        let bare = tempfile::tempdir().expect("tempdir");
        std::fs::write(bare.path().join("requirements.txt"), "").expect("write requirements.txt");
        assert_eq!(HostRun::of(bare.path()).expect("a python project").command, ["python3", "-u", "main.py"]);

        let empty = tempfile::tempdir().expect("tempdir");
        let err = HostRun::of(empty.path()).expect_err("no language");
        assert!(err.to_string().contains("cannot tell the language"), "{err}");
        assert!(HostRun::of(&empty.path().join("missing")).is_err());
    }
}
