//! Artifact storage: staged trainer packages, deployed model copies, job outputs.
//!
//! The embedded default is a local directory under the data dir. User-given URIs will be confined
//! to the configured storage roots here, so no request can reach files outside them.

use std::path::{Path, PathBuf};

/// Local-directory storage rooted at one directory.
#[derive(Clone, Debug)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Opens storage at `root`, creating the directory, and checks that it is writable.
    pub fn open(root: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(root)
            .map_err(|e| format!("cannot create the storage root {}: {e}", root.display()))?;
        let storage = Self {
            root: root.to_path_buf(),
        };
        storage.check_writable()?;
        Ok(storage)
    }

    /// The storage root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes, reads back and removes a probe file under the root.
    pub fn check_writable(&self) -> Result<(), String> {
        let probe = self.root.join(format!(".probe-{}", std::process::id()));
        let fail = |e: std::io::Error| {
            format!("storage root {} is not writable: {e}", self.root.display())
        };
        std::fs::write(&probe, b"anneal").map_err(fail)?;
        let back = std::fs::read(&probe).map_err(fail)?;
        std::fs::remove_file(&probe).map_err(fail)?;
        if back == b"anneal" {
            Ok(())
        } else {
            Err(format!(
                "storage root {} returned different bytes than written",
                self.root.display()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_and_probes_a_fresh_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = LocalStorage::open(&dir.path().join("storage")).expect("open");
        assert!(storage.root().is_dir());
        storage.check_writable().expect("writable");
        assert_eq!(
            std::fs::read_dir(storage.root()).expect("list").count(),
            0,
            "probe removed"
        );
    }

    #[test]
    fn refuses_a_root_below_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let err =
            LocalStorage::open(&file.join("storage")).expect_err("cannot create below a file");
        assert!(err.contains("cannot create the storage root"), "{err}");
    }
}
