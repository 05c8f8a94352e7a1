//! Artifact storage: staged trainer packages, deployed model copies, job outputs.
//!
//! The embedded default is a local directory under the data dir. User-given URIs are confined
//! to the data dir and the configured storage roots here, so no request can reach files outside them,
//! and per project: a URI may not name the server's own files in the data dir (the database, the
//! admin token) nor anything under the storage root except its own project's folders
//! (`storage/{models,uploads,jobs,envs,cache}/<project>/`). `s3://` URIs name objects in the configured
//! buckets ([`objects`]), confined to their prefixes; a [`Location`] is either.

pub mod objects;

use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::names::ProjectId;
pub use objects::{AwsEnvironment, BucketConfig, Buckets, ObjectError, ObjectUri, ObjectWriter, ProjectKeys};

/// Where a resolved URI points: a local path inside the roots, or an object in a configured
/// bucket. Stored in plans as the text of its URI (a plain path for a local one).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    Local(PathBuf),
    Object(ObjectUri),
}

impl Location {
    /// `name` inside this location taken as a folder.
    pub fn join(&self, name: &str) -> Self {
        match self {
            Self::Local(path) => Self::Local(path.join(name)),
            Self::Object(uri) => Self::Object(uri.join(name)),
        }
    }

    /// The local path, for a local location.
    pub fn as_local(&self) -> Option<&Path> {
        match self {
            Self::Local(path) => Some(path),
            Self::Object(_) => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::Object(uri) => uri.fmt(f),
        }
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Self {
        Self::Local(path)
    }
}

impl serde::Serialize for Location {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Location {
    /// A plain path (what plans held before object storage) or an `s3://` URI.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if ObjectUri::is_object(&text) {
            ObjectUri::parse("location", &text).map(Self::Object).map_err(serde::de::Error::custom)
        } else {
            Ok(Self::Local(PathBuf::from(text)))
        }
    }
}

/// The folders of the storage root that hold one subfolder per project: deployed model copies,
/// uploads, jobs' own folders (logs, metrics, replicas' working folders, trials), installed
/// package environments and downloads from buckets. Everything else there (`replica-ids`, probes) is the server's.
const PER_PROJECT: [&str; 5] = ["models", "uploads", "jobs", "envs", "cache"];

/// The data dir's files no URI may name: the SQLite database with its journals, and the admin
/// token.
fn server_file(name: &str) -> bool {
    name.starts_with("anneal.db") || name == crate::auth::ADMIN_TOKEN_FILE
}

/// Why storage could not be opened, checked or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage root cannot be created.
    #[error("cannot create the storage root {}: {source}", .path.display())]
    Create { path: PathBuf, source: std::io::Error },
    /// A root cannot be resolved.
    #[error("storage root {} is not usable: {source}", .path.display())]
    Unusable { path: PathBuf, source: std::io::Error },
    /// The probe file cannot be written, read back or removed.
    #[error("storage root {} is not writable: {source}", .path.display())]
    NotWritable { path: PathBuf, source: std::io::Error },
    /// The probe file read back differs from what was written.
    #[error("storage root {} returned different bytes than written", .0.display())]
    Corrupt(PathBuf),
    /// Copying a folder the request named failed: a link out of the roots, or a file that
    /// cannot be read or written.
    #[error("cannot copy {}: {source}", .from.display())]
    Copy { from: PathBuf, source: std::io::Error },
    /// A symbolic link in a copied folder points at the folder it is in or at one of that
    /// folder's ancestors: following it would copy the same folders again without end.
    #[error(
        "cannot copy {}: {} is a symbolic link that loops back into the folder being copied; \
         remove it or replace it with a copy of what it points to",
        .from.display(),
        .link.display()
    )]
    LinkLoop { from: PathBuf, link: PathBuf },
    /// A copied folder nests deeper than [`MAX_COPY_DEPTH`] folders below the one named.
    #[error("cannot copy {}: {} is more than {limit} folders deep", .from.display(), .path.display())]
    TooDeep { from: PathBuf, path: PathBuf, limit: usize },
}

/// How many folders deep a folder copied into storage ([`Storage::copy_into`]) may nest below
/// the one the request named; deeper is refused ([`StorageError::TooDeep`]), so links that lead
/// round in a way the loop check cannot see (bind mounts) still end.
pub const MAX_COPY_DEPTH: usize = 64;

/// Local-directory storage rooted at one directory, plus the other directories users may point
/// URIs at, and the configured buckets.
#[derive(Clone, Debug)]
pub struct Storage {
    root: PathBuf,
    buckets: Buckets,
    /// Where Anneal's own artifacts (versions' model copies) are published, when in a bucket.
    artifacts: Option<ObjectUri>,
    /// The canonical storage root, where a URI may name only its project's folders.
    canonical_root: PathBuf,
    /// Canonical forms of the roots user URIs may name (the storage root's data dir first).
    allowed: Vec<PathBuf>,
}

impl Storage {
    /// Opens storage at `root` (as `<data dir>/storage`), creating the directory, and checks that
    /// it is writable; user URIs may name files under `root`'s parent, the data dir.
    pub fn open(root: &Path) -> Result<Self, StorageError> {
        let data_dir: Vec<PathBuf> = root.parent().map(Path::to_path_buf).into_iter().collect();
        Self::open_with_roots(root, &data_dir)
    }

    /// Opens storage at `root`; user URIs may name files under `root` or under any of
    /// `extra_roots` (the server passes its data dir first, then `storage_roots`).
    pub fn open_with_roots(root: &Path, extra_roots: &[PathBuf]) -> Result<Self, StorageError> {
        std::fs::create_dir_all(root).map_err(|source| StorageError::Create { path: root.to_path_buf(), source })?;
        let canonical = |dir: &Path| {
            dir.canonicalize().map_err(|source| StorageError::Unusable { path: dir.to_path_buf(), source })
        };
        let mut allowed = Vec::new();
        for dir in extra_roots.iter().map(PathBuf::as_path).chain(std::iter::once(root)) {
            allowed.push(canonical(dir)?);
        }
        let canonical_root = canonical(root)?;
        let storage =
            Self { root: root.to_path_buf(), buckets: Buckets::default(), artifacts: None, canonical_root, allowed };
        storage.check_writable()?;
        Ok(storage)
    }

    /// The same storage with `buckets` for `s3://` URIs.
    pub fn with_buckets(self, buckets: Buckets) -> Self {
        Self { buckets, ..self }
    }

    /// The same storage publishing its artifacts under `artifacts` (in one of its buckets).
    pub fn with_artifacts(self, artifacts: Option<ObjectUri>) -> Self {
        Self { artifacts, ..self }
    }

    /// Uploads `dir`, a folder of the storage root, to the same place under the artifacts URI
    /// (nothing without one), so that every node can fetch it ([`Storage::local_copy`]).
    pub async fn publish(&self, dir: &Path) -> Result<(), ObjectError> {
        match self.published(dir) {
            Some(uri) => self.buckets.upload_tree(dir, &uri).await.map(drop),
            None => Ok(()),
        }
    }

    /// Uploads those of the files `names` in `dir` (a folder of the storage root) that exist to
    /// the same place under the artifacts URI (nothing without one): a job's log and metrics,
    /// which any node then serves ([`Storage::fetch_published`]).
    pub async fn publish_files(&self, dir: &Path, names: &[&str]) -> Result<(), ObjectError> {
        let Some(uri) = self.published(dir) else { return Ok(()) };
        for name in names {
            let path = dir.join(name);
            if tokio::fs::metadata(&path).await.is_ok() {
                self.buckets.upload(&path, &uri.join(name)).await?;
            }
        }
        Ok(())
    }

    /// Makes sure `path`, a file of the storage root, is on this node: downloaded from the
    /// artifacts URI when this node lacks it and it was published there. Nothing happens when
    /// it is here already, or was never published.
    pub async fn fetch_published(&self, path: &Path) -> Result<(), ObjectError> {
        if tokio::fs::metadata(path).await.is_ok() {
            return Ok(());
        }
        let Some(uri) = self.published(path) else { return Ok(()) };
        if self.buckets.head(&uri).await?.is_none() {
            return Ok(());
        }
        // Written beside and renamed: a reader never sees half of it.
        self.buckets.download(&uri, path).await
    }

    /// Where `dir` (a folder of the storage root) is published, with an artifacts URI.
    fn published(&self, dir: &Path) -> Option<ObjectUri> {
        let artifacts = self.artifacts.as_ref()?;
        let relative = dir.strip_prefix(&self.root).ok()?;
        let key: Vec<String> = relative.iter().map(|part| part.to_string_lossy().into_owned()).collect();
        Some(artifacts.join(&key.join("/")))
    }

    /// How the store records `dir`, a folder of the storage root: its URI under the artifacts
    /// URI when there is one, else its local path.
    pub fn stored_name(&self, dir: &Path) -> String {
        self.published(dir).map_or_else(|| dir.display().to_string(), |uri| uri.to_string())
    }

    /// The local folder of a stored name ([`Storage::stored_name`]): a local path as it is; a
    /// published one at its place under the storage root, downloaded first when this node does
    /// not have it (a node that did not create the version, or a fresh storage folder).
    pub async fn local_copy(&self, stored: &str) -> Result<PathBuf, ObjectError> {
        if !ObjectUri::is_object(stored) {
            return Ok(PathBuf::from(stored));
        }
        let uri = ObjectUri::parse("artifact", stored).map_err(|_| ObjectError::NotFound(stored.to_owned()))?;
        let local = self
            .local_place(&uri)
            .ok_or_else(|| ObjectError::NotFound(format!("{stored} (outside the artifacts URI)")))?;
        if tokio::fs::metadata(&local).await.is_ok() {
            return Ok(local);
        }
        let partial = local.with_extension(format!("download-{}", std::process::id()));
        let _ = tokio::fs::remove_dir_all(&partial).await;
        self.buckets.download_tree(&uri, &partial).await?;
        tokio::fs::rename(&partial, &local).await.map_err(|source| ObjectError::Local {
            action: "move",
            path: local.clone(),
            source,
        })?;
        Ok(local)
    }

    /// Removes a stored folder: this node's copy, and the published objects.
    pub async fn remove_stored(&self, stored: &str) -> Result<(), ObjectError> {
        if !ObjectUri::is_object(stored) {
            let (storage, dir) = (self.clone(), PathBuf::from(stored));
            let _ = tokio::task::spawn_blocking(move || storage.remove_dir(&dir)).await;
            return Ok(());
        }
        let uri = ObjectUri::parse("artifact", stored).map_err(|_| ObjectError::NotFound(stored.to_owned()))?;
        if let Some(local) = self.local_place(&uri) {
            let storage = self.clone();
            let _ = tokio::task::spawn_blocking(move || storage.remove_dir(&local)).await;
        }
        self.buckets.delete_tree(&uri).await
    }

    /// The place under the storage root of a published URI.
    fn local_place(&self, uri: &ObjectUri) -> Option<PathBuf> {
        let artifacts = self.artifacts.as_ref()?;
        let rest = if artifacts.key.is_empty() {
            Some(uri.key.as_str())
        } else {
            uri.key.strip_prefix(&artifacts.key)?.strip_prefix('/')
        };
        (uri.bucket == artifacts.bucket).then_some(())?;
        let rest = rest?;
        Some(rest.split('/').fold(self.root.clone(), |path, part| path.join(part)))
    }

    /// Where Anneal's own artifacts are published, when in a bucket.
    pub fn artifacts(&self) -> Option<&ObjectUri> {
        self.artifacts.as_ref()
    }

    /// The storage root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The configured buckets.
    pub fn buckets(&self) -> &Buckets {
        &self.buckets
    }

    /// Resolves a user-given URI of `project` that is read: an `s3://` URI confined to the
    /// configured buckets (whether the object exists is not asked here), or a local one as
    /// [`Storage::resolve_uri`] does it.
    pub fn locate(&self, project: &ProjectId, field: &str, uri: &str) -> crate::Result<Location> {
        if ObjectUri::is_object(uri) {
            return self.buckets.confine(field, uri).map(Location::Object);
        }
        self.resolve_uri(project, field, uri).map(Location::Local)
    }

    /// [`Storage::locate`] for a place written to: a local one as
    /// [`Storage::resolve_output_uri`] does it.
    pub fn locate_output(&self, project: &ProjectId, field: &str, uri: &str) -> crate::Result<Location> {
        if ObjectUri::is_object(uri) {
            return self.buckets.confine(field, uri).map(Location::Object);
        }
        self.resolve_output_uri(project, field, uri).map(Location::Local)
    }

    /// Checks that `location` names something to read: a local one was checked when it was
    /// located; an object must exist, or hold objects under it as a folder. A missing one is
    /// INVALID_ARGUMENT naming `field`; a store that refuses or cannot be reached says so.
    pub async fn check_readable(&self, field: &str, location: &Location) -> crate::Result<()> {
        let Location::Object(uri) = location else { return Ok(()) };
        if self.buckets.head(uri).await?.is_some() || !self.buckets.list(uri).await?.is_empty() {
            return Ok(());
        }
        Err(crate::Error::invalid(field, format!("'{uri}' does not exist")))
    }

    /// Whether the object store holds an object at `uri` (else, maybe a folder under it).
    pub async fn is_object(&self, uri: &ObjectUri) -> Result<bool, ObjectError> {
        Ok(self.buckets.head(uri).await?.is_some())
    }

    /// Downloads the object, or with `folder` every object under it, at `uri` into `dest` (a
    /// new folder; a single object keeps its file name there). Returns the local file or
    /// folder.
    pub async fn fetch(&self, uri: &ObjectUri, dest: &Path, folder: bool) -> Result<PathBuf, ObjectError> {
        if folder {
            self.buckets.download_tree(uri, dest).await?;
            return Ok(dest.to_path_buf());
        }
        let file = dest.join(uri.file_name());
        self.buckets.download(uri, &file).await?;
        Ok(file)
    }

    /// Resolves a user-given `file://` URI or plain absolute path of `project` to a directory or
    /// file inside the allowed roots that the project may name (see [`Storage::permits`]).
    /// `..`, symlinks that lead out, other schemes and missing paths are refused with
    /// INVALID_ARGUMENT naming `field`. A path outside the roots (another project's folders
    /// included) gets the same answer whether it exists or not; only a path inside them is said
    /// not to exist.
    pub fn resolve_uri(&self, project: &ProjectId, field: &str, uri: &str) -> crate::Result<PathBuf> {
        self.resolve_if_exists(project, field, uri)?
            .ok_or_else(|| crate::Error::invalid(field, format!("'{uri}' does not exist")))
    }

    /// [`Storage::resolve_uri`], except that a missing path inside the roots is `None`
    /// rather than an error (for a file looked for later).
    pub fn resolve_if_exists(&self, project: &ProjectId, field: &str, uri: &str) -> crate::Result<Option<PathBuf>> {
        let path = local_path(field, uri)?;
        match path.canonicalize() {
            Ok(canonical) => self.inside_roots(project, field, uri, canonical, "read").map(Some),
            Err(_) if self.missing_inside_roots(project, path) => Ok(None),
            Err(_) => Err(self.outside(field, uri, "read")),
        }
    }

    /// Whether a path that cannot be resolved would lie inside the roots: its nearest existing
    /// entry resolves inside them and nothing after it climbs out with `..`. Anything else (a
    /// dangling symlink, an unreadable folder, a path outside) is treated as outside, so the
    /// answer never depends on what exists outside the roots.
    fn missing_inside_roots(&self, project: &ProjectId, path: &Path) -> bool {
        let Some(existing) = path.ancestors().find(|a| a.symlink_metadata().is_ok()) else { return false };
        let rest = path.strip_prefix(existing).unwrap_or(path);
        if rest.components().any(|c| !matches!(c, Component::Normal(_))) {
            return false;
        }
        existing.canonicalize().is_ok_and(|canonical| self.permits(project, &canonical.join(rest)))
    }

    /// Whether a URI of `project` may name the canonical path `canonical`: it lies inside an
    /// allowed root, is not one of the data dir's server files ([`server_file`]), and lies in the
    /// storage root only inside `<per-project folder>/<project>/` ([`PER_PROJECT`]).
    pub fn permits(&self, project: &ProjectId, canonical: &Path) -> bool {
        if !self.allowed.iter().any(|root| canonical.starts_with(root)) {
            return false;
        }
        if let Ok(rest) = canonical.strip_prefix(&self.canonical_root) {
            let mut parts = rest.components();
            return match (parts.next(), parts.next()) {
                (Some(Component::Normal(folder)), Some(Component::Normal(owner))) => {
                    PER_PROJECT.iter().any(|f| folder == *f) && owner == project.as_str()
                }
                _ => false,
            };
        }
        let data_dir = self.canonical_root.parent().unwrap_or(Path::new("/"));
        match canonical.strip_prefix(data_dir).ok().and_then(|rest| rest.components().next()) {
            Some(Component::Normal(name)) => !server_file(&name.to_string_lossy()),
            _ => true,
        }
    }

    /// Resolves a user-given output location (a job dir) of `project` that may not exist yet: its
    /// nearest existing ancestor, with the rest of the path, must be a place the project may name
    /// ([`Storage::permits`]), and `..` is refused.
    pub fn resolve_output_uri(&self, project: &ProjectId, field: &str, uri: &str) -> crate::Result<PathBuf> {
        let path = local_path(field, uri)?;
        if path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(crate::Error::invalid(field, format!("'{uri}' must not contain '..'")));
        }
        // The nearest entry that exists, a dangling symlink included: it must resolve inside the
        // roots, so a link to a missing place outside cannot be written through.
        let existing = path.ancestors().find(|a| a.symlink_metadata().is_ok()).unwrap_or(Path::new("/"));
        let canonical = existing.canonicalize().map_err(|_| self.outside(field, uri, "write"))?;
        let full = canonical.join(path.strip_prefix(existing).unwrap_or(Path::new("")));
        self.inside_roots(project, field, uri, full, "write")
    }

    /// `canonical` if `project` may name it, else INVALID_ARGUMENT.
    fn inside_roots(
        &self,
        project: &ProjectId,
        field: &str,
        uri: &str,
        canonical: PathBuf,
        verb: &str,
    ) -> crate::Result<PathBuf> {
        if self.permits(project, &canonical) {
            Ok(canonical)
        } else {
            Err(self.outside(field, uri, verb))
        }
    }

    /// The one answer for a path outside the roots, whether it exists or not.
    fn outside(&self, field: &str, uri: &str, verb: &str) -> crate::Error {
        crate::Error::invalid(field, format!("'{uri}' is outside the storage roots this server may {verb}"))
    }

    /// Copies the regular files of `source` (recursively) into a new directory `dest` under the
    /// storage root, for `project`. A symlink inside `source` is followed only when it stays
    /// within what the project may name, and never when it points back at a folder being copied
    /// (a loop, [`StorageError::LinkLoop`]); no more than [`MAX_COPY_DEPTH`] folders deep.
    ///
    /// The copy is made in a hidden staging folder beside `dest` and renamed into place when
    /// complete, so `dest` never holds half a copy; a copy that fails (or panics) leaves nothing
    /// behind. Blocks: call it on a blocking thread.
    pub fn copy_into(&self, project: &ProjectId, source: &Path, relative_dest: &Path) -> Result<PathBuf, StorageError> {
        let dest = self.root.join(relative_dest);
        let failed = |error| StorageError::Copy { from: source.to_path_buf(), source: error };
        let staging = Staging::beside(&dest).map_err(failed)?;
        let permits = |target: &Path| self.permits(project, target);
        let top = source.canonicalize().map_err(failed)?;
        let mut copy = TreeCopy { from: source, permits: &permits, folders: vec![top.clone()] };
        copy.tree(&top, &staging.path, 0)?;
        staging.finish(&dest).map_err(failed)?;
        Ok(dest)
    }

    /// Removes a directory this storage created.
    pub fn remove_dir(&self, dir: &Path) {
        if dir.starts_with(&self.root) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Writes, reads back and removes a probe file under the root.
    pub fn check_writable(&self) -> Result<(), StorageError> {
        // A file of its own per probe (a new random name, created exclusively): concurrent
        // probes, of this node or of another on shared storage, never read or remove each
        // other's.
        use std::io::{Read, Seek, Write};
        let fail = |source| StorageError::NotWritable { path: self.root.clone(), source };
        let mut probe = tempfile::Builder::new().prefix(".probe-").tempfile_in(&self.root).map_err(fail)?;
        probe.write_all(b"anneal").and_then(|()| probe.flush()).map_err(fail)?;
        let mut back = Vec::new();
        probe.rewind().and_then(|()| probe.read_to_end(&mut back)).map_err(fail)?;
        probe.close().map_err(fail)?;
        if back == b"anneal" {
            Ok(())
        } else {
            Err(StorageError::Corrupt(self.root.clone()))
        }
    }
}

/// The absolute local path a `file://` URI or plain path names; other schemes and relative paths
/// are INVALID_ARGUMENT.
pub fn local_path<'a>(field: &str, uri: &'a str) -> crate::Result<&'a Path> {
    let path = match uri.split_once("://") {
        Some(("file", rest)) => rest,
        Some((scheme, _)) => {
            return Err(crate::Error::invalid(
                field,
                format!("'{uri}': the {scheme}:// scheme is not supported here; use a file:// or s3:// URI, or a path under the storage roots"),
            ))
        }
        None => uri,
    };
    let path = Path::new(path);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(crate::Error::invalid(field, format!("'{uri}' is not an absolute path")))
    }
}

/// A folder a copy is written into before it is renamed to its place; removed on drop unless
/// [`Staging::finish`] moved it there.
struct Staging {
    path: PathBuf,
    done: bool,
}

impl Staging {
    /// A new, empty staging folder in `dest`'s parent (created when missing), named after
    /// `dest` with a leading dot and a suffix no other copy uses.
    fn beside(dest: &Path) -> std::io::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let parent = dest.parent().ok_or_else(|| std::io::Error::other("the destination has no parent folder"))?;
        std::fs::create_dir_all(parent)?;
        let name = dest.file_name().map_or_else(|| "copy".into(), |n| n.to_string_lossy().into_owned());
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = parent.join(format!(".{name}.copying-{}-{n}", std::process::id()));
        std::fs::create_dir(&path)?;
        Ok(Self { path, done: false })
    }

    /// Renames the finished copy to `dest`.
    fn finish(mut self, dest: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, dest)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One copy of a folder tree: what it may read, and the folders it is inside of right now.
struct TreeCopy<'a> {
    /// The folder the request named, for errors.
    from: &'a Path,
    permits: &'a dyn Fn(&Path) -> bool,
    /// The canonical folders being copied, outermost first: the named folder, then each one
    /// entered below it (through links as well).
    folders: Vec<PathBuf>,
}

impl TreeCopy<'_> {
    /// Copies the folder `source` (canonical, `depth` folders below the named one) into the
    /// existing folder `dest`.
    fn tree(&mut self, source: &Path, dest: &Path, depth: usize) -> Result<(), StorageError> {
        let from = self.from;
        let failed = |error| StorageError::Copy { from: from.to_path_buf(), source: error };
        for entry in std::fs::read_dir(source).map_err(failed)? {
            let entry = entry.map_err(failed)?;
            let path = entry.path();
            let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
            // A link that cannot be followed gets the same error as one that leads out, so the
            // copy never tells whether something outside the roots exists.
            let links_out =
                || failed(std::io::Error::other(format!("{} links outside the storage roots", path.display())));
            let target = match path.canonicalize() {
                Ok(target) => target,
                Err(_) if is_link => return Err(links_out()),
                Err(e) => return Err(failed(e)),
            };
            if !(self.permits)(&target) {
                return Err(links_out());
            }
            let to = dest.join(entry.file_name());
            if !target.is_dir() {
                std::fs::copy(&target, &to).map_err(failed)?;
                continue;
            }
            // A link to a folder being copied, or to one above it, would bring that folder (and
            // this link) back in again.
            if is_link && self.folders.iter().any(|folder| folder.starts_with(&target)) {
                return Err(StorageError::LinkLoop { from: from.to_path_buf(), link: path });
            }
            if depth + 1 > MAX_COPY_DEPTH {
                return Err(StorageError::TooDeep { from: from.to_path_buf(), path, limit: MAX_COPY_DEPTH });
            }
            std::fs::create_dir(&to).map_err(failed)?;
            self.folders.push(target.clone());
            let copied = self.tree(&target, &to, depth + 1);
            self.folders.pop();
            copied?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> ProjectId {
        ProjectId::parse("project", "a").expect("project id")
    }

    #[test]
    fn opens_and_probes_a_fresh_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(&dir.path().join("storage")).expect("open");
        assert!(storage.root().is_dir());
        storage.check_writable().expect("writable");
        assert_eq!(std::fs::read_dir(storage.root()).expect("list").count(), 0, "probe removed");
    }

    #[test]
    fn uris_resolve_only_inside_the_roots() {
        let data = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(&data.path().join("storage")).expect("open");
        let model = data.path().join("models/m1");
        std::fs::create_dir_all(&model).expect("mkdir");
        let canonical = model.canonicalize().expect("canonical");
        assert_eq!(
            storage.resolve_uri(&project(), "f", &format!("file://{}", model.display())).expect("file uri"),
            canonical
        );
        assert_eq!(storage.resolve_uri(&project(), "f", model.to_str().expect("utf8")).expect("path"), canonical);

        let escape = format!(
            "{}/models/../../{}",
            data.path().display(),
            outside.path().file_name().expect("name").to_string_lossy()
        );
        let refused = [
            escape,
            outside.path().display().to_string(),
            "gs://bucket/model".to_string(),
            "relative/path".to_string(),
            format!("{}/missing", data.path().display()),
        ];
        for uri in refused {
            let err = storage.resolve_uri(&project(), "version.deploymentUri", &uri).expect_err(&uri);
            assert!(
                matches!(&err, crate::Error::InvalidArgument(v) if v.field == "version.deploymentUri"),
                "{uri}: {err}"
            );
        }

        let link = data.path().join("models/link-out");
        std::os::unix::fs::symlink(outside.path(), &link).expect("symlink");
        assert!(
            storage.resolve_uri(&project(), "f", link.to_str().expect("utf8")).is_err(),
            "a symlink out is refused"
        );
    }

    #[test]
    fn outside_paths_get_one_answer_whether_they_exist_or_not() {
        let data = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(&data.path().join("storage")).expect("open");
        std::fs::write(outside.path().join("secret"), b"x").expect("write");
        let message = |uri: String| match storage.resolve_uri(&project(), "f", &uri) {
            Err(crate::Error::InvalidArgument(v)) => v.description.replace(&uri, "URI"),
            other => panic!("{uri}: {other:?}"),
        };
        let root = data.path().display();
        let out = outside.path().display();
        let link = data.path().join("link");
        std::os::unix::fs::symlink(outside.path().join("secret"), &link).expect("symlink");
        let dangling = data.path().join("dangling");
        std::os::unix::fs::symlink(outside.path().join("missing"), &dangling).expect("symlink");
        let answers = [
            message(format!("{out}/secret")),
            message(format!("{out}/missing")),
            message(format!("{out}/missing/deeper")),
            message(format!("{root}/nothing/../../{}/secret", out.to_string().trim_start_matches('/'))),
            message(format!("{root}/nothing/../../{}/missing", out.to_string().trim_start_matches('/'))),
            message(link.display().to_string()),
            message(dangling.display().to_string()),
            message("/proc/1/root/etc/shadow".into()),
        ];
        for answer in &answers {
            assert_eq!(answer, &answers[0], "{answers:?}");
        }
        assert!(answers[0].contains("outside the storage roots"), "{}", answers[0]);
        assert!(message(format!("{root}/missing")).contains("does not exist"), "inside the roots it may say so");

        let out_dir = storage
            .resolve_output_uri(&project(), "jobDir", &format!("{}/out", dangling.display()))
            .expect_err("a dangling link out cannot be written through");
        assert!(out_dir.to_string().contains("outside the storage roots"), "{out_dir}");
    }

    #[test]
    fn a_project_names_only_its_own_storage_folders_and_never_the_server_files() {
        let data = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(&data.path().join("storage")).expect("open");
        for dir in ["storage/models/a/m", "storage/models/b/m", "storage/uploads/b/u", "storage/jobs/b/j", "mine"] {
            std::fs::create_dir_all(data.path().join(dir)).expect("mkdir");
        }
        for file in ["anneal.db", "anneal.db-wal", "admin.token", "storage/replica-ids"] {
            std::fs::write(data.path().join(file), b"x").expect("write");
        }
        std::os::unix::fs::symlink(data.path().join("storage/models/b/m"), data.path().join("mine/link"))
            .expect("link");
        let root = data.path().display();
        let answer = |uri: String, output: bool| {
            let result = if output {
                storage.resolve_output_uri(&project(), "f", &uri)
            } else {
                storage.resolve_uri(&project(), "f", &uri)
            };
            result.map(|_| ()).map_err(|e| e.to_string().replace(&uri, "URI"))
        };
        let outside = |output: bool| answer("/nowhere/at/all".into(), output).expect_err("outside");
        for refused in [
            "storage",
            "storage/models",
            "storage/models/b",
            "storage/models/b/m",
            "storage/models/b/missing",
            "storage/uploads/b/u",
            "storage/jobs/b/j",
            "storage/envs/b",
            "storage/replica-ids",
            "storage/outputs/a",
            "anneal.db",
            "anneal.db-wal",
            "anneal.db-shm",
            "admin.token",
            "mine/link",
        ] {
            for output in [false, true] {
                assert_eq!(answer(format!("{root}/{refused}"), output), Err(outside(output)), "{refused}");
            }
        }
        for output in [false, true] {
            assert_eq!(answer(format!("{root}/storage/models/b/m/out"), output), Err(outside(output)));
        }
        assert!(answer(format!("{root}/storage/models/a/m"), false).is_ok(), "its own model folder");
        assert!(answer(format!("{root}/storage/uploads/a/new"), true).is_ok(), "its own uploads");
        assert!(answer(format!("{root}/mine"), false).is_ok(), "the rest of the data dir");
        let missing = answer(format!("{root}/storage/jobs/a/missing"), false).expect_err("missing");
        assert!(missing.contains("does not exist"), "{missing}");
    }

    /// What is in `dir` (nothing when it does not exist).
    fn entries(dir: &Path) -> Vec<String> {
        let Ok(list) = std::fs::read_dir(dir) else { return Vec::new() };
        list.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn a_copy_refuses_symlink_loops_and_leaves_nothing_behind() {
        let data = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(&data.path().join("storage")).expect("open");
        let model = data.path().join("mine/m");
        std::fs::create_dir_all(model.join("sub/deeper")).expect("mkdir");
        std::fs::write(model.join("model.pt"), b"weights").expect("write");
        std::fs::write(model.join("sub/deeper/file"), b"x").expect("write");
        let dest_parent = Path::new("models/a/m");
        for (link, target) in [("loop", "."), ("up", ".."), ("sub/back", ".."), ("sub/deeper/top", "../../..")] {
            let link = model.join(link);
            std::os::unix::fs::symlink(target, &link).expect("symlink");
            let error = storage.copy_into(&project(), &model, &dest_parent.join("v1")).expect_err("a loop");
            assert!(
                matches!(&error, StorageError::LinkLoop { link: named, .. } if named.ends_with(link.strip_prefix(data.path()).expect("inside"))),
                "{error:?}"
            );
            let text = error.to_string();
            assert!(text.contains("loops back into the folder being copied") && text.contains("mine/m/"), "{text}");
            assert_eq!(entries(&storage.root().join(dest_parent)), Vec::<String>::new(), "nothing left for {link:?}");
            std::fs::remove_file(&link).expect("unlink");
        }

        // A link to another folder of the tree is not a loop: it is copied as a folder.
        std::os::unix::fs::symlink("sub/deeper", model.join("alias")).expect("symlink");
        let copy = storage.copy_into(&project(), &model, &dest_parent.join("v2")).expect("copy");
        assert_eq!(std::fs::read(copy.join("alias/file")).expect("read"), b"x");
        assert_eq!(std::fs::read(copy.join("sub/deeper/file")).expect("read"), b"x");
        assert!(!copy.join("alias").is_symlink(), "a folder, not a link");
        assert_eq!(entries(&storage.root().join(dest_parent)), ["v2"], "no staging folder left");
    }

    #[test]
    fn a_copy_is_bounded_in_depth_and_a_failed_one_leaves_nothing_behind() {
        let data = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(&data.path().join("storage")).expect("open");
        let deep = data.path().join("deep");
        let mut folder = deep.clone();
        for _ in 0..MAX_COPY_DEPTH {
            folder.push("d");
        }
        std::fs::create_dir_all(&folder).expect("mkdir");
        std::fs::write(folder.join("file"), b"x").expect("write");
        storage.copy_into(&project(), &deep, Path::new("models/a/m/fits")).expect("as deep as allowed");

        std::fs::create_dir(folder.join("d")).expect("one more");
        let error = storage.copy_into(&project(), &deep, Path::new("models/a/m/deep")).expect_err("too deep");
        assert!(matches!(error, StorageError::TooDeep { limit: MAX_COPY_DEPTH, .. }), "{error:?}");
        assert!(error.to_string().contains("folders deep"), "{error}");

        // What was copied before the link out was found goes with the staging folder.
        let model = data.path().join("model");
        std::fs::create_dir_all(&model).expect("mkdir");
        std::fs::write(model.join("a-file"), b"x").expect("write");
        std::os::unix::fs::symlink(outside.path(), model.join("z-out")).expect("symlink");
        let error = storage.copy_into(&project(), &model, Path::new("models/a/m/out")).expect_err("a link out");
        assert!(error.to_string().contains("links outside the storage roots"), "{error}");
        assert_eq!(entries(&storage.root().join("models/a/m")), ["fits"]);
    }

    #[test]
    fn refuses_a_root_below_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let err = Storage::open(&file.join("storage")).expect_err("cannot create below a file");
        assert!(err.to_string().contains("cannot create the storage root"), "{err}");
    }
}
