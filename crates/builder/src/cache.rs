//! The layer cache: a step's key (its parent's key, its instruction and its inputs' digest)
//! → the layer it made, one small JSON record per key. A record whose blob the image store
//! no longer holds (removed with its last image) is a miss.

use std::path::{Path, PathBuf};

use serde_json::json;
use serval_runtime::oci::{LayerRef, StoredLayer};

pub(crate) struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    pub(crate) fn open(dir: &Path) -> std::io::Result<LayerCache> {
        std::fs::create_dir_all(dir)?;
        Ok(LayerCache { dir: dir.to_path_buf() })
    }

    fn path(&self, key: &str) -> PathBuf {
        let name: String = key.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        self.dir.join(format!("{name}.json"))
    }

    /// The layer recorded for `key`, if any.
    pub(crate) fn lookup(&self, key: &str) -> Option<StoredLayer> {
        let text = std::fs::read(self.path(key)).ok()?;
        let record: serde_json::Value = serde_json::from_slice(&text).ok()?;
        let field = |name: &str| record[name].as_str().map(String::from);
        Some(StoredLayer {
            layer: LayerRef {
                digest: field("digest")?,
                media_type: field("mediaType")?,
                size: record["size"].as_u64()?,
            },
            diff_id: field("diffId")?,
        })
    }

    /// Records the layer `key` made (written whole, then renamed into place).
    pub(crate) fn record(&self, key: &str, stored: &StoredLayer) -> std::io::Result<()> {
        let record = json!({
            "digest": stored.layer.digest,
            "mediaType": stored.layer.media_type,
            "size": stored.layer.size,
            "diffId": stored.diff_id,
        });
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::io::Write::write_all(&mut tmp, record.to_string().as_bytes())?;
        tmp.persist(self.path(key)).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_found_by_key_and_others_miss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = LayerCache::open(dir.path()).expect("open");
        let stored = StoredLayer {
            layer: LayerRef { digest: "sha256:ab".into(), media_type: "application/x".into(), size: 3 },
            diff_id: "sha256:cd".into(),
        };
        cache.record("sha256:k1", &stored).expect("record");
        assert_eq!(cache.lookup("sha256:k1"), Some(stored));
        assert_eq!(cache.lookup("sha256:k2"), None);
    }
}
