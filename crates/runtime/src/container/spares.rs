//! Bundle directories prepared ahead of a start, at most one per revision: the directory
//! with a fresh upper and work layer, and the overlay of the image's root filesystem already
//! mounted on its `rootfs`. A start from zero takes the revision's spare and only writes
//! `config.json` (port, container id and cgroup are per instance) before running runc; a
//! new spare is made when an instance of the revision is gone (or when asked to prepare).
//!
//! Spares live in the runtime's bundles directory like instances' bundles, so the leftover
//! cleanup at the next start removes them after a crash. A released revision (deleted,
//! retired) and a closed runtime (server stop) keep none.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::RuntimeError;

/// One prepared bundle directory and the image root filesystem mounted below it.
struct Spare {
    bundle: PathBuf,
    image_rootfs: PathBuf,
}

#[derive(Default)]
struct State {
    ready: HashMap<String, Spare>,
    /// Revisions released since they were last used: spares made for them meanwhile are
    /// discarded.
    released: HashSet<String>,
    closed: bool,
}

impl State {
    /// Whether a new spare for the revision would be kept.
    fn wants(&self, key: &str) -> bool {
        !self.closed && !self.released.contains(key) && !self.ready.contains_key(key)
    }
}

/// The spares of one runtime.
pub(crate) struct Spares {
    bundles: PathBuf,
    next: AtomicU64,
    state: Mutex<State>,
}

/// How spares are keyed: a revision within its namespace.
pub(crate) fn revision_key(namespace: &str, revision: &str) -> String {
    format!("{namespace}/{revision}")
}

impl Spares {
    pub(crate) fn new(bundles: PathBuf) -> Spares {
        Spares { bundles, next: AtomicU64::new(1), state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The revision's spare bundle directory when there is one for `image_rootfs`; the
    /// revision counts as in use again.
    pub(crate) fn take(&self, key: &str, image_rootfs: &Path) -> Option<PathBuf> {
        let spare = {
            let mut state = self.lock();
            state.released.remove(key);
            state.ready.remove(key)?
        };
        if spare.image_rootfs == image_rootfs {
            return Some(spare.bundle);
        }
        // The image behind the revision's reference was replaced (pulled or imported again).
        discard(&spare.bundle);
        None
    }

    /// A fresh bundle directory name: spares are named apart from instances' bundles.
    fn new_bundle(&self) -> PathBuf {
        self.bundles.join(format!("spare-{}", self.next.fetch_add(1, Ordering::Relaxed)))
    }

    /// Makes a spare for the revision unless it has one, was released, or the runtime is
    /// closed. Blocking (mkdir, mount): run it off the async threads.
    pub(crate) fn replenish(&self, key: &str, image_rootfs: &Path) -> Result<(), RuntimeError> {
        if !self.lock().wants(key) {
            return Ok(());
        }
        let bundle = self.new_bundle();
        if let Err(e) = mount_overlay(&bundle, image_rootfs) {
            discard(&bundle);
            return Err(e);
        }
        let spare = Spare { bundle, image_rootfs: image_rootfs.to_path_buf() };
        let unwanted = {
            let mut state = self.lock();
            if state.wants(key) {
                state.ready.insert(key.to_string(), spare);
                None
            } else {
                Some(spare)
            }
        };
        if let Some(spare) = unwanted {
            discard(&spare.bundle);
        }
        Ok(())
    }

    /// The revision is in use again (asked to be prepared): spares for it are kept.
    pub(crate) fn revive(&self, key: &str) {
        self.lock().released.remove(key);
    }

    /// Drops the revision's spare; none is made for it until it is started or prepared
    /// again.
    pub(crate) fn release(&self, key: &str) {
        let spare = {
            let mut state = self.lock();
            state.released.insert(key.to_string());
            state.ready.remove(key)
        };
        if let Some(spare) = spare {
            discard(&spare.bundle);
        }
    }

    /// Drops every spare and makes no more.
    pub(crate) fn close(&self) {
        let spares: Vec<Spare> = {
            let mut state = self.lock();
            state.closed = true;
            state.ready.drain().map(|(_, spare)| spare).collect()
        };
        for spare in spares {
            discard(&spare.bundle);
        }
    }

    /// How many spares are ready (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.lock().ready.len()
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        self.close();
    }
}

/// Makes `bundle` with `upper`, `work` and `rootfs` directories and mounts the overlay root
/// on `rootfs`: the image's root filesystem below, the empty upper layer above.
pub(crate) fn mount_overlay(bundle: &Path, image_rootfs: &Path) -> Result<PathBuf, RuntimeError> {
    let rootfs = bundle.join("rootfs");
    for d in ["upper", "work", "rootfs"] {
        std::fs::create_dir_all(bundle.join(d))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        image_rootfs.display(),
        bundle.join("upper").display(),
        bundle.join("work").display()
    );
    nix::mount::mount(Some("overlay"), &rootfs, Some("overlay"), nix::mount::MsFlags::empty(), Some(options.as_str()))
        .map_err(|e| {
            RuntimeError::Io(std::io::Error::other(format!("mounting the instance's root filesystem: {e}")))
        })?;
    Ok(rootfs)
}

/// Unmounts the bundle's root and removes the directory (its writable layer with it).
pub(crate) fn discard(bundle: &Path) {
    let _ = nix::mount::umount2(&bundle.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(bundle);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overlay mounts need root; a run without it fails only when CI requires containers.
    fn can_mount() -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            assert!(std::env::var("SERVAL_REQUIRE_RUNC").as_deref() != Ok("1"), "root is required");
            eprintln!("skipped: overlay mounts need root");
        }
        root
    }

    fn image(dir: &Path, name: &str) -> PathBuf {
        let rootfs = dir.join(name);
        std::fs::create_dir_all(&rootfs).expect("image rootfs");
        std::fs::write(rootfs.join("hello"), name).expect("image file");
        rootfs
    }

    fn bundles_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("bundles dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_spare_is_taken_once_and_shows_the_image() {
        if !can_mount() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let bundles = dir.path().join("bundles");
        let spares = Spares::new(bundles.clone());
        let rootfs = image(dir.path(), "one");
        spares.replenish("ns/rev-1", &rootfs).expect("replenish");
        spares.replenish("ns/rev-1", &rootfs).expect("a second replenish is a no-op");
        assert_eq!(spares.count(), 1);
        let bundle = spares.take("ns/rev-1", &rootfs).expect("the spare");
        assert_eq!(std::fs::read_to_string(bundle.join("rootfs/hello")).expect("through the overlay"), "one");
        std::fs::write(bundle.join("rootfs/written"), "x").expect("the upper layer is writable");
        assert!(!rootfs.join("written").exists(), "writes stay out of the image");
        assert_eq!(spares.take("ns/rev-1", &rootfs), None, "taken once");
        discard(&bundle);
        assert!(bundles_in(&bundles).is_empty());
    }

    #[test]
    fn a_spare_of_a_replaced_image_is_discarded() {
        if !can_mount() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let bundles = dir.path().join("bundles");
        let spares = Spares::new(bundles.clone());
        spares.replenish("ns/rev-1", &image(dir.path(), "old")).expect("replenish");
        assert_eq!(spares.take("ns/rev-1", &image(dir.path(), "new")), None);
        assert!(bundles_in(&bundles).is_empty(), "unmounted and removed");
    }

    #[test]
    fn released_revisions_and_a_closed_runtime_keep_no_spares() {
        if !can_mount() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let bundles = dir.path().join("bundles");
        let spares = Spares::new(bundles.clone());
        let rootfs = image(dir.path(), "img");
        spares.replenish("ns/a", &rootfs).expect("replenish a");
        spares.replenish("ns/b", &rootfs).expect("replenish b");
        spares.release("ns/a");
        assert_eq!(bundles_in(&bundles).len(), 1, "a's spare is gone");
        spares.replenish("ns/a", &rootfs).expect("replenish after release");
        assert_eq!(spares.count(), 1, "none is made for a released revision");
        assert_eq!(spares.take("ns/a", &rootfs), None);
        spares.replenish("ns/a", &rootfs).expect("replenish after a new start");
        assert_eq!(spares.count(), 2, "a start makes the revision wanted again");

        spares.close();
        assert!(bundles_in(&bundles).is_empty(), "closing unmounts and removes every spare");
        spares.replenish("ns/b", &rootfs).expect("replenish after close");
        assert_eq!(spares.count(), 0);
        assert!(bundles_in(&bundles).is_empty());
    }
}
