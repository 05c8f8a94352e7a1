//! Uploads: files a client sends into the server's storage (a trainer package, a model
//! directory), so that later requests can name them by URI. An upload is a folder
//! `storage/uploads/<project>/<id>/`; files are written into it one by one under relative paths.
//!
//! An upload can live in a bucket instead: one created with an `s3://` URI (the CLI's
//! `--staging-bucket`) is the folder `<uri>/<id>/`, and without one, a server with an
//! `artifacts_uri` puts every upload under `<artifacts_uri>/uploads/<project>/<id>/`, where
//! every node finds it. Each file is streamed to the store as it arrives (multipart when large)
//! and appears only when whole. `max_upload_bytes` bounds each file; `upload_quota_bytes`, which
//! protects this machine's disk, does not count what is in buckets.

use std::path::{Component, Path, PathBuf};

use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::Control;
use crate::error::{Error, Result};
use crate::names::ProjectId;
use crate::storage::ObjectUri;

/// A new upload: its id and the URI its files are under.
pub struct Upload {
    pub id: String,
    pub uri: String,
}

/// Where an upload's files go.
enum Place {
    Local(PathBuf),
    Object(ObjectUri),
}

impl Control {
    /// Creates an empty upload for `project`: under `target` (an `s3://` folder in a configured
    /// bucket) when given, else under the artifacts URI when the server has one, else in the
    /// storage folder.
    pub async fn create_upload(&self, project: &ProjectId, target: Option<&str>) -> Result<Upload> {
        let id = format!("{:x}{:08x}", chrono::Utc::now().timestamp_micros(), std::process::id() ^ rand_u32());
        let object = match target {
            Some(uri) if ObjectUri::is_object(uri) => Some(self.storage.buckets().confine("uri", uri)?.join(&id)),
            Some(uri) => {
                return Err(Error::invalid(
                    "uri",
                    format!(
                        "'{uri}' is not an s3:// folder; an upload goes to a bucket, or to this server without a uri."
                    ),
                ))
            }
            None => self.default_object_upload(project, &id),
        };
        let Some(uri) = object else {
            let path = self.upload_dir(project, &id);
            tokio::fs::create_dir_all(&path).await.map_err(Error::internal)?;
            return Ok(Upload { id, uri: format!("file://{}", path.display()) });
        };
        // A bucket that is missing or refuses us fails here, before any file is sent.
        self.storage.buckets().head(&uri).await?;
        if target.is_some() {
            let marker = self.object_marker(project, &id);
            if let Some(parent) = marker.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(Error::internal)?;
            }
            tokio::fs::write(&marker, uri.to_string()).await.map_err(Error::internal)?;
        }
        Ok(Upload { id, uri: uri.to_string() })
    }

    /// Writes one file of upload `id` at `relative` (folders are created), streaming `body`.
    /// Returns its size. The upload must exist; the path must stay inside it. A file larger than
    /// `max_upload_bytes`, or one that would take the project's uploads past
    /// `upload_quota_bytes`, is removed and answered RESOURCE_EXHAUSTED.
    pub async fn write_upload_file<S, E>(&self, project: &ProjectId, id: &str, relative: &str, body: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid("upload", format!("'{id}' is not an upload id.")));
        }
        let relative = Path::new(relative);
        let clean =
            !relative.as_os_str().is_empty() && relative.components().all(|c| matches!(c, Component::Normal(_)));
        if !clean {
            return Err(Error::invalid("path", "A file path inside an upload is relative, without '..'."));
        }
        match self.upload_place(project, id).await? {
            Place::Local(dir) => self.write_local_file(project, &dir, relative, body).await,
            Place::Object(uri) => {
                let key: Vec<String> = relative.iter().map(|part| part.to_string_lossy().into_owned()).collect();
                self.write_object_file(&uri.join(&key.join("/")), body).await
            }
        }
    }

    /// Where upload `id`'s files go; NOT_FOUND for an upload this node does not know.
    async fn upload_place(&self, project: &ProjectId, id: &str) -> Result<Place> {
        if let Ok(text) = tokio::fs::read_to_string(self.object_marker(project, id)).await {
            return Ok(Place::Object(self.storage.buckets().confine("upload", text.trim())?));
        }
        let dir = self.upload_dir(project, id);
        if dir.is_dir() {
            return Ok(Place::Local(dir));
        }
        match self.default_object_upload(project, id) {
            Some(uri) => Ok(Place::Object(uri)),
            None => Err(Error::not_found("upload", format!("Upload {id} not found; create one first."))),
        }
    }

    /// An upload's folder under the artifacts URI, when the server has one.
    fn default_object_upload(&self, project: &ProjectId, id: &str) -> Option<ObjectUri> {
        Some(self.storage.artifacts()?.join(&format!("uploads/{}/{id}", project.as_str())))
    }

    /// The file that records the bucket folder of an upload created with a URI.
    fn object_marker(&self, project: &ProjectId, id: &str) -> PathBuf {
        self.storage.root().join("uploads").join(project.as_str()).join(format!("{id}.bucket"))
    }

    /// Streams `body` into the new object `uri`; it appears only when whole.
    async fn write_object_file<S, E>(&self, uri: &ObjectUri, mut body: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let max = self.limits().max_upload_bytes;
        let mut writer = self.storage.buckets().async_writer(uri)?;
        let mut size = 0u64;
        let written = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::invalid("body", format!("the upload was interrupted: {e}")))?;
                size += chunk.len() as u64;
                if size > max {
                    return Err(too_large(max));
                }
                writer.write_all(&chunk).await.map_err(|e| store_error(uri, e))?;
            }
            writer.shutdown().await.map_err(|e| store_error(uri, e))
        }
        .await;
        if let Err(e) = written {
            let _ = writer.abort().await;
            return Err(e);
        }
        Ok(size)
    }

    /// Streams `body` into `dir/relative` under the project's quota.
    async fn write_local_file<S, E>(&self, project: &ProjectId, dir: &Path, relative: &Path, mut body: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
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
                    return Err(too_large(limits.max_upload_bytes));
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

fn too_large(max: u64) -> Error {
    Error::ResourceExhausted(format!(
        "The file is larger than {max} bytes, the most one upload may carry (max_upload_bytes)."
    ))
}

/// A write the store refused, or could not take, as the object error it carries.
fn store_error(uri: &ObjectUri, error: std::io::Error) -> Error {
    let message = error.to_string();
    match error.into_inner().map(|inner| inner.downcast::<object_store::Error>()) {
        Some(Ok(source)) => {
            crate::storage::ObjectError::Store { action: "write", uri: uri.to_string(), source: *source }.into()
        }
        _ => Error::Unavailable(format!("Cannot write {uri}: {message}")),
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
