//! Uploads: files a client sends into the server's storage (a trainer package, a model
//! directory), so that later requests can name them by URI. An upload is a folder
//! `storage/uploads/<project>/<id>/`; files are written into it one by one under relative paths.

use std::path::{Component, Path, PathBuf};

use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::Control;
use crate::error::{Error, Result};
use crate::names::ProjectId;

/// A new upload folder.
pub struct Upload {
    pub id: String,
    pub path: PathBuf,
}

impl Control {
    /// Creates an empty upload folder for `project`.
    pub async fn create_upload(&self, project: &ProjectId) -> Result<Upload> {
        let id = format!("{:x}{:08x}", chrono::Utc::now().timestamp_micros(), std::process::id() ^ rand_u32());
        let path = self.upload_dir(project, &id);
        tokio::fs::create_dir_all(&path).await.map_err(Error::internal)?;
        Ok(Upload { id, path })
    }

    /// Writes one file of upload `id` at `relative` (folders are created), streaming `body`.
    /// Returns its size. The upload must exist; the path must stay inside it.
    pub async fn write_upload_file<S, E>(
        &self,
        project: &ProjectId,
        id: &str,
        relative: &str,
        mut body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid("upload", format!("'{id}' is not an upload id.")));
        }
        let dir = self.upload_dir(project, id);
        if !dir.is_dir() {
            return Err(Error::not_found("upload", format!("Upload {id} not found; create one first.")));
        }
        let relative = Path::new(relative);
        let clean =
            !relative.as_os_str().is_empty() && relative.components().all(|c| matches!(c, Component::Normal(_)));
        if !clean {
            return Err(Error::invalid("path", "A file path inside an upload is relative, without '..'."));
        }
        let target = dir.join(relative);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(Error::internal)?;
        }
        let mut file = tokio::fs::File::create(&target).await.map_err(Error::internal)?;
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::invalid("body", format!("the upload was interrupted: {e}")))?;
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(Error::internal)?;
        }
        file.flush().await.map_err(Error::internal)?;
        Ok(size)
    }

    fn upload_dir(&self, project: &ProjectId, id: &str) -> PathBuf {
        self.storage.root().join("uploads").join(project.as_str()).join(id)
    }
}

/// A few random bits from the standard library's hasher seed.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish() as u32
}
