//! Where things live: the repository, the kernel tree, build and cache dirs.

use std::path::PathBuf;

/// The repository root (the parent of the xtask crate).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository")
        .to_path_buf()
}

/// The kernel work tree: base commit + `git am patches/*` (gitignored).
pub fn linux() -> PathBuf {
    repo().join("linux")
}

/// Out-of-tree build directories, one per flavour (gitignored).
pub fn build() -> PathBuf {
    repo().join("build")
}

/// Per-user cache: base kernel, private apt state, ccache.
pub fn cache() -> PathBuf {
    if let Some(d) = std::env::var_os("KSM_RS_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    base.join("ksm-rs")
}

pub fn patches() -> PathBuf {
    repo().join("patches")
}
