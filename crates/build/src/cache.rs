//! Layer cache keys: an unchanged rebuild finds every step's layer under the same key.
//!
//! Keys chain. A stage starts from its base's key — [`base_key_image`] of the base image's
//! manifest digest, [`base_key_scratch`], or the last key of the stage it is built `FROM` — and
//! each step that changes the filesystem (`COPY`/`ADD`, `RUN`, and the directory a `WORKDIR`
//! creates) has the key [`step_key`]`(previous key, step.cache_text(), input digest)`. The input
//! digest is the [`crate::Selection::digest`] of the context files a `COPY`/`ADD` selects, the
//! last key of the stage a `COPY --from=stage` reads, the manifest digest of the image a
//! `COPY --from=image` reads, and empty for `RUN` (whose text holds its argv, environment,
//! working directory, user and network). Config-only steps (`ENV`, `LABEL`, …) make no layer
//! and need no key: a `RUN` after an `ENV` sees the change in its own text, and a `LABEL` edit
//! does not invalidate the layers after it (BuildKit's behaviour, not the classic builder's).
//!
//! A key is the hex sha256 of its length-prefixed parts and a version tag, so no two
//! different inputs give the same bytes, and a change of the scheme changes every key.

use sha2::{Digest, Sha256};

const VERSION: &[u8] = b"serval-build-cache-v1";

/// The key of a step: see the module's documentation.
pub fn step_key(parent_key: &str, instruction: &str, input_digest: &str) -> String {
    key(&[b"step", parent_key.as_bytes(), instruction.as_bytes(), input_digest.as_bytes()])
}

/// The key a stage built on an image starts from: its manifest digest decides.
pub fn base_key_image(manifest_digest: &str) -> String {
    key(&[b"image", manifest_digest.as_bytes()])
}

/// The key a stage built `FROM scratch` starts from.
pub fn base_key_scratch() -> String {
    key(&[b"scratch"])
}

fn key(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(VERSION);
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex(&hasher.finalize())
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerfile::parse;
    use crate::plan::{BuildOptions, Step, plan};

    #[test]
    fn keys_are_hex_sha256_and_depend_on_every_part() {
        let base = base_key_image("sha256:abc");
        let k = step_key(&base, "RUN make", "");
        assert_eq!(k.len(), 64);
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(k, step_key(&base, "RUN make", ""), "deterministic");
        assert_ne!(k, step_key(&base_key_image("sha256:abd"), "RUN make", ""));
        assert_ne!(k, step_key(&base, "RUN make install", ""));
        assert_ne!(k, step_key(&base, "RUN make", "sha256:1"));
        // Moving bytes between parts changes the key.
        assert_ne!(step_key("a", "bc", ""), step_key("ab", "c", ""));
        assert_ne!(base_key_scratch(), base_key_image(""));
        assert_eq!(hex(&[0x00, 0x7f, 0xff]), "007fff");
    }

    /// Replays a plan's chain the way the executor will: same plan, same inputs, same keys.
    fn chain(text: &str, input: &str) -> Vec<String> {
        let file = parse(text).expect("parses");
        let built = plan(&file, &BuildOptions::default()).expect("plans");
        let mut key = base_key_image("sha256:base");
        let mut keys = Vec::new();
        for step in &built.stages[0].steps {
            let digest = match step.value {
                Step::Copy(_) => input,
                Step::Run(_) => "",
                Step::Config(_) => continue,
            };
            key = step_key(&key, &step.value.cache_text(), digest);
            keys.push(key.clone());
        }
        keys
    }

    #[test]
    fn an_unchanged_rebuild_hits_every_step_and_a_change_misses_from_there() {
        let text = "FROM a\nCOPY . /src\nRUN make\nLABEL x=1\nRUN make install\n";
        let first = chain(text, "sha256:ctx1");
        assert_eq!(first, chain(text, "sha256:ctx1"));
        let edited = chain(text, "sha256:ctx2");
        assert!(first.iter().zip(&edited).all(|(a, b)| a != b), "a changed input invalidates everything after it");
        let relabelled = chain(&text.replace("x=1", "x=2"), "sha256:ctx1");
        assert_eq!(first, relabelled, "a LABEL makes no layer");
        let later = chain(&text.replace("make install", "make check"), "sha256:ctx1");
        assert_eq!(first[..2], later[..2]);
        assert_ne!(first[2], later[2]);
    }
}
