//! Tests of the image side: unpacking (including hostile layers), the store, registry pulls.

mod fuzz;
mod registry;
mod store;
mod unpack;

use std::path::{Path, PathBuf};

use super::{MT_LAYER_TAR, unpack_layer};
use crate::RuntimeError;
use serval_testimages::{LayerEntry, layer_tar};

/// A scratch area: `root` is the unpack destination, everything else in `base` is "outside".
struct Scratch {
    base: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let base = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(base.path().join("root")).expect("create root");
        Scratch { base }
    }

    fn root(&self) -> PathBuf {
        self.base.path().join("root")
    }

    fn outside(&self, name: &str) -> PathBuf {
        self.base.path().join(name)
    }
}

/// Applies each element of `layers` as an uncompressed layer, in order.
fn apply(dest: &Path, layers: &[Vec<LayerEntry>]) -> Result<(), RuntimeError> {
    for entries in layers {
        let tar = layer_tar(entries).expect("layer builds");
        unpack_layer(&tar[..], MT_LAYER_TAR, dest)?;
    }
    Ok(())
}

/// Whether tests that need external tools must fail instead of skipping.
fn tools_required() -> bool {
    std::env::var("SERVAL_REQUIRE_RUNC").is_ok_and(|v| v == "1")
}

/// Says that the running test is skipped and why: `SKIPPED <test>: <reason>`, with how many
/// tests of this test binary were skipped so far. Written to the process's stderr itself, not
/// through `eprintln!`, which libtest captures and shows only for failures.
fn skip(reason: &str) {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SKIPPED: AtomicUsize = AtomicUsize::new(0);
    let skipped = SKIPPED.fetch_add(1, Ordering::Relaxed) + 1;
    // libtest runs each test on a thread named after it.
    let test = std::thread::current().name().unwrap_or("<unnamed test>").to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason} ({skipped} test(s) skipped in this binary so far)");
}
