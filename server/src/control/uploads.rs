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
    /// Returns its size. The upload must exist; the path must stay inside it. A file larger than
    /// `max_upload_bytes`, or one that would take the project's uploads past
    /// `upload_quota_bytes`, is removed and answered RESOURCE_EXHAUSTED.
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
            tokio::fs::create_dir_all(parent).await.map_err(|e| path_error(relative, e))?;
        }
        // One upload per project at a time past this point: the quota is checked against what the
        // project holds, so two concurrent writes must not both see the same room.
        let _turn = self.growth.upload_turn(project.as_str()).await;
        let limits = self.limits().clone();
        let project_dir = self.storage.root().join("uploads").join(project.as_str());
        let replaced = target.clone();
        let used = tokio::task::spawn_blocking(move || tree_size(&project_dir).saturating_sub(tree_size(&replaced)))
            .await
            .map_err(Error::internal)?;
        let room = limits.upload_quota_bytes.saturating_sub(used);
        let mut file = tokio::fs::File::create(&target).await.map_err(|e| path_error(relative, e))?;
        let mut size = 0u64;
        let written = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::invalid("body", format!("the upload was interrupted: {e}")))?;
                size += chunk.len() as u64;
                if size > limits.max_upload_bytes {
                    return Err(Error::ResourceExhausted(format!(
                        "The file is larger than {} bytes, the most one upload may carry (max_upload_bytes).",
                        limits.max_upload_bytes
                    )));
                }
                if size > room {
                    return Err(Error::ResourceExhausted(format!(
                        "Project {} would keep more than {} bytes of uploads (upload_quota_bytes); \
                         the server's operator can remove old uploads or raise the quota.",
                        project.as_str(),
                        limits.upload_quota_bytes
                    )));
                }
                file.write_all(&chunk).await.map_err(Error::internal)?;
            }
            file.flush().await.map_err(Error::internal)?;
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = written {
            drop(file);
            let _ = tokio::fs::remove_file(&target).await;
            return Err(e);
        }
        Ok(size)
    }

    fn upload_dir(&self, project: &ProjectId, id: &str) -> PathBuf {
        self.storage.root().join("uploads").join(project.as_str()).join(id)
    }
}

/// A file path the upload cannot hold (a name too long, a folder where a file is, a NUL byte) is
/// the client's mistake; anything else is internal.
fn path_error(relative: &Path, error: std::io::Error) -> Error {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidFilename
        | ErrorKind::InvalidInput
        | ErrorKind::NotADirectory
        | ErrorKind::IsADirectory
        | ErrorKind::AlreadyExists => Error::invalid(
            "path",
            format!(
                "'{}' cannot be written in this upload: {error}",
                super::limits::short(&relative.to_string_lossy())
            ),
        ),
        _ => Error::internal(error),
    }
}

/// The bytes of the regular files under `path` (0 when it does not exist). Blocks.
fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return if meta.is_file() { meta.len() } else { 0 };
    }
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries.flatten().map(|entry| tree_size(&entry.path())).sum()
}

/// A few random bits from the standard library's hasher seed.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish() as u32
}
