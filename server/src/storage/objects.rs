//! Object storage: `s3://bucket/key` URIs on any S3-compatible store (AWS S3, MinIO, Ceph, R2,
//! GCS's S3 interface, moto in the tests), through the `object_store` crate (request signing,
//! retries with backoff, multipart uploads, ranged reads).
//!
//! Only the buckets in the configuration can be named, and in each only under its configured
//! prefixes, as `storage_roots` confines local paths: anything else is INVALID_ARGUMENT naming
//! the request's field, checked without a request to the store. Reads and writes happen in
//! control (downloads of versions, existence checks) and in the executor (packages, batch
//! inputs and shards); a sync [`ObjectReader`] / [`ObjectWriter`] pair bridges to the batch
//! engine's blocking threads. A writer that is dropped before [`ObjectWriter::finish`] aborts
//! its upload, so an interrupted upload never leaves a half-visible object.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path as Key;
use object_store::{BackoffConfig, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig};
use serde::{Deserialize, Serialize};
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio_util::io::{StreamReader, SyncIoBridge};

/// Bytes fetched per ranged read of a streamed object (batch inputs).
const READ_AHEAD: usize = 8 << 20;
/// Ranged reads of one streamed object in flight at once (each retried on its own), so the
/// store's latency overlaps the reading.
const READS_IN_FLIGHT: usize = 3;
/// Bytes buffered before an upload turns multipart, and the size of each part.
const WRITE_BUFFER: usize = 8 << 20;

/// One configured bucket (`[[buckets]]` in the config file).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// The bucket's name, as `s3://<name>/…` URIs name it.
    pub name: String,
    /// The store's address, e.g. `http://127.0.0.1:9000` for a local store. Unset: the
    /// `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` variable, else AWS S3 itself.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Unset: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Unset: `AWS_ACCESS_KEY_ID` (and the secret and session token beside it).
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub session_token: Option<String>,
    /// Allow `http://` endpoints (local stores); off, only `https://` is used.
    #[serde(default)]
    pub allow_http: bool,
    /// Address the bucket as `https://<bucket>.<endpoint>` instead of `<endpoint>/<bucket>`.
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// The key prefixes URIs may name (at folder boundaries); empty: the whole bucket.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// The credentials each project's trainers get for this bucket (`[buckets.projects.<id>]`),
    /// keys the store limits to that project's prefixes. A project without an entry gets the
    /// bucket's endpoint and region only: never the server's own keys.
    #[serde(default)]
    pub projects: BTreeMap<String, ProjectKeys>,
}

/// One project's credentials for a bucket, handed to its trainers.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub session_token: Option<String>,
}

impl fmt::Debug for ProjectKeys {
    /// Without the secret and the session token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectKeys").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

impl fmt::Debug for BucketConfig {
    /// Without the secret and the session token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketConfig")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("prefixes", &self.prefixes)
            .field("projects", &self.projects)
            .finish_non_exhaustive()
    }
}

/// The standard AWS variables, read by `config` (the only reader of the environment), used for
/// whatever a bucket's own configuration leaves unset.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AwsEnvironment {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
}

impl fmt::Debug for AwsEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsEnvironment")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// `s3://bucket/key`: a bucket and a key without leading or trailing `/` (empty for the
/// bucket's root). Naming a folder or a file is up to the use.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectUri {
    pub bucket: String,
    pub key: String,
}

impl ObjectUri {
    /// Whether `uri` is an `s3://` URI (checked or not).
    pub fn is_object(uri: &str) -> bool {
        uri.starts_with("s3://")
    }

    /// Parses `s3://bucket/key`: a bucket name of S3's characters, a key without empty, `.` or
    /// `..` segments. INVALID_ARGUMENT naming `field` otherwise.
    pub fn parse(field: &str, uri: &str) -> crate::Result<Self> {
        let bad = |why: &str| crate::Error::invalid(field, format!("'{uri}' is not a usable s3:// URI: {why}"));
        let rest = uri.strip_prefix("s3://").ok_or_else(|| bad("it must start with s3://"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(bad("the bucket name must be 3 to 63 lowercase letters, digits, '-' or '.'"));
        }
        let key = key.trim_end_matches('/');
        if !key.is_empty() && key.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
            return Err(bad("the key must not hold empty, '.' or '..' segments"));
        }
        if key.chars().any(char::is_control) {
            return Err(bad("the key must not hold control characters"));
        }
        Ok(Self { bucket: bucket.to_owned(), key: key.to_owned() })
    }

    /// The URI of `name` inside this one taken as a folder.
    pub fn join(&self, name: &str) -> Self {
        let key = if self.key.is_empty() { name.to_owned() } else { format!("{}/{name}", self.key) };
        Self { bucket: self.bucket.clone(), key }
    }

    /// The last segment of the key.
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or_default()
    }

    fn path(&self) -> Key {
        Key::from(self.key.as_str())
    }
}

impl fmt::Display for ObjectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Why a request to an object store failed; it names the URI and the action.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The bucket cannot be configured (a bad endpoint).
    #[error("bucket {bucket}: {source}")]
    Configure { bucket: String, source: object_store::Error },
    /// No object at the URI (or, for a folder, none under it).
    #[error("{0} does not exist")]
    NotFound(String),
    /// The store answered with an error or could not be reached (after retries).
    #[error("cannot {action} {uri}: {}", summary(.source))]
    Store { action: &'static str, uri: String, source: object_store::Error },
    /// A local file of a download or an upload.
    #[error("cannot {action} {}: {source}", .path.display())]
    Local { action: &'static str, path: PathBuf, source: std::io::Error },
}

impl ObjectError {
    /// Whether the store could not be reached at all (refused, reset, timed out): nothing it
    /// answered, so worth trying again later.
    pub fn is_unreachable(&self) -> bool {
        let Self::Store { source, .. } = self else { return false };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(error) = cause {
            if let Some(io) = error.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, TimedOut};
                if matches!(io.kind(), ConnectionRefused | ConnectionReset | TimedOut) {
                    return true;
                }
            }
            cause = error.source();
        }
        let text = source.to_string();
        text.contains("error sending request") || text.contains("Connection refused") || text.contains("timed out")
    }
}

/// The store's answer in one line: its status and S3 error code when there is one (the crate's
/// full text carries the whole XML body).
fn summary(error: &object_store::Error) -> String {
    let text = error.to_string();
    let code = text.split("<Code>").nth(1).and_then(|rest| rest.split("</Code>").next());
    let message = text.split("<Message>").nth(1).and_then(|rest| rest.split("</Message>").next());
    match (code, message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => text.split(" <?xml").next().unwrap_or(&text).trim().to_owned(),
    }
}

/// One configured bucket.
struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// The bucket's configuration with what the environment filled in: the client was built from
    /// it, a trainer's `AWS_*` variables come from it, and a Ray shard opens the same bucket from
    /// it on another node.
    resolved: BucketConfig,
}

/// The configured buckets.
#[derive(Clone, Default)]
pub struct Buckets {
    by_name: Arc<BTreeMap<String, Bucket>>,
}

impl fmt::Debug for Buckets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

impl Buckets {
    /// Builds a client per configured bucket (no request is sent).
    pub fn open(configs: &[BucketConfig], aws: &AwsEnvironment) -> Result<Self, ObjectError> {
        let mut by_name = BTreeMap::new();
        for config in configs {
            by_name.insert(config.name.clone(), bucket(config, aws)?);
        }
        Ok(Self { by_name: Arc::new(by_name) })
    }

    /// Whether any bucket is configured.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Parses `uri` and checks that it names a configured bucket under one of its prefixes.
    pub fn confine(&self, field: &str, uri: &str) -> crate::Result<ObjectUri> {
        let object = ObjectUri::parse(field, uri)?;
        let Some(bucket) = self.by_name.get(&object.bucket) else {
            let known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
            let known = if known.is_empty() { "none is configured".to_owned() } else { known.join(", ") };
            return Err(crate::Error::invalid(
                field,
                format!(
                    "'{uri}' names bucket {}, which this server is not configured for (buckets: {known})",
                    object.bucket
                ),
            ));
        };
        let prefixes = &bucket.resolved.prefixes;
        let inside = prefixes.is_empty()
            || prefixes.iter().any(|prefix| {
                let prefix = prefix.trim_matches('/');
                prefix.is_empty()
                    || object.key == prefix
                    || object.key.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
            });
        if !inside {
            return Err(crate::Error::invalid(
                field,
                format!("'{uri}' is outside the prefixes of bucket {} this server may use", object.bucket),
            ));
        }
        Ok(object)
    }

    fn bucket(&self, uri: &ObjectUri) -> Result<&Bucket, ObjectError> {
        // A URI reaches here only through `confine`, or from a stored plan of this server.
        self.by_name.get(&uri.bucket).ok_or_else(|| ObjectError::NotFound(format!("bucket {}", uri.bucket)))
    }

    /// The `AWS_*` variables a trainer of `project` gets for `uri`'s bucket: its endpoint and
    /// region, and the project's own credentials (`projects`) when the bucket has them, never
    /// the server's. The second value says whether it has.
    pub fn env_for(&self, uri: &ObjectUri, project: &str) -> (Vec<(String, String)>, bool) {
        let Some(bucket) = self.by_name.get(&uri.bucket) else { return (Vec::new(), false) };
        let keys = bucket.resolved.projects.get(project);
        let shown = BucketConfig {
            access_key_id: keys.map(|k| k.access_key_id.clone()),
            secret_access_key: keys.map(|k| k.secret_access_key.clone()),
            session_token: keys.and_then(|k| k.session_token.clone()),
            projects: BTreeMap::new(),
            ..bucket.resolved.clone()
        };
        (aws_env(&shown), keys.is_some())
    }

    /// The configurations of the buckets `uris` name (each once, with the region, endpoint and
    /// credentials this server took from its environment), so another process opens the same
    /// buckets with [`Buckets::open`].
    pub fn resolved<'a>(&self, uris: impl IntoIterator<Item = &'a ObjectUri>) -> Vec<BucketConfig> {
        let names: std::collections::BTreeSet<&str> = uris.into_iter().map(|uri| uri.bucket.as_str()).collect();
        // Without the projects' keys: no process needs another project's.
        names
            .into_iter()
            .filter_map(|name| self.by_name.get(name))
            .map(|b| BucketConfig { projects: BTreeMap::new(), ..b.resolved.clone() })
            .collect()
    }

    /// [`Buckets::resolved`] with `project`'s keys (`projects`) in place of the server's, for a
    /// process that runs a project's code beside them (a batch job's shards on Ray); the first
    /// bucket without keys for the project is the error.
    pub fn resolved_for<'a>(
        &self,
        uris: impl IntoIterator<Item = &'a ObjectUri>,
        project: &str,
    ) -> Result<Vec<BucketConfig>, String> {
        self.resolved(uris)
            .into_iter()
            .map(|config| {
                let keys = self
                    .by_name
                    .get(&config.name)
                    .and_then(|b| b.resolved.projects.get(project))
                    .ok_or_else(|| config.name.clone())?;
                Ok(BucketConfig {
                    access_key_id: Some(keys.access_key_id.clone()),
                    secret_access_key: Some(keys.secret_access_key.clone()),
                    session_token: keys.session_token.clone(),
                    ..config
                })
            })
            .collect()
    }

    /// The object at `uri`, or `None`.
    pub async fn head(&self, uri: &ObjectUri) -> Result<Option<ObjectMeta>, ObjectError> {
        let bucket = self.bucket(uri)?;
        match bucket.store.head(&uri.path()).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(ObjectError::Store { action: "read", uri: uri.to_string(), source }),
        }
    }

    /// The objects under `uri` taken as a folder (at any depth), in key order.
    pub async fn list(&self, uri: &ObjectUri) -> Result<Vec<ObjectMeta>, ObjectError> {
        let bucket = self.bucket(uri)?;
        let prefix = (!uri.key.is_empty()).then(|| uri.path());
        let mut listing = bucket.store.list(prefix.as_ref());
        let mut objects = Vec::new();
        while let Some(meta) = listing.next().await {
            objects.push(meta.map_err(|source| ObjectError::Store { action: "list", uri: uri.to_string(), source })?);
        }
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// The object URIs directly in folder `uri` whose file names `matches` accepts, in name order.
    pub async fn matching(
        &self,
        uri: &ObjectUri,
        matches: impl Fn(&str) -> bool,
    ) -> Result<Vec<ObjectUri>, ObjectError> {
        let bucket = self.bucket(uri)?;
        let prefix = (!uri.key.is_empty()).then(|| uri.path());
        let listing = bucket.store.list_with_delimiter(prefix.as_ref()).await.map_err(|source| ObjectError::Store {
            action: "list",
            uri: uri.to_string(),
            source,
        })?;
        let mut names: Vec<String> = listing
            .objects
            .into_iter()
            .filter_map(|meta| meta.location.filename().map(str::to_owned))
            .filter(|name| matches(name))
            .collect();
        names.sort();
        Ok(names.iter().map(|name| uri.join(name)).collect())
    }

    /// Downloads the object `uri` to the new file `dest` (written beside it, then renamed).
    pub async fn download(&self, uri: &ObjectUri, dest: &Path) -> Result<(), ObjectError> {
        let bucket = self.bucket(uri)?;
        let local = |action, source| ObjectError::Local { action, path: dest.to_path_buf(), source };
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| local("create", e))?;
        }
        let partial = dest.with_extension("partial");
        let result = async {
            let got = bucket.store.get(&uri.path()).await.map_err(|source| match source {
                object_store::Error::NotFound { .. } => ObjectError::NotFound(uri.to_string()),
                source => ObjectError::Store { action: "read", uri: uri.to_string(), source },
            })?;
            let mut file = tokio::fs::File::create(&partial).await.map_err(|e| local("create", e))?;
            let mut stream = got.into_stream();
            while let Some(bytes) = stream.next().await {
                let bytes =
                    bytes.map_err(|source| ObjectError::Store { action: "read", uri: uri.to_string(), source })?;
                file.write_all(&bytes).await.map_err(|e| local("write", e))?;
            }
            file.flush().await.map_err(|e| local("write", e))?;
            tokio::fs::rename(&partial, dest).await.map_err(|e| local("write", e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }

    /// Downloads every object under folder `uri` into `dest`, keeping their relative keys.
    /// Returns how many files were written; none is [`ObjectError::NotFound`].
    pub async fn download_tree(&self, uri: &ObjectUri, dest: &Path) -> Result<usize, ObjectError> {
        let objects = self.list(uri).await?;
        let prefix = uri.path();
        let mut count = 0;
        for meta in &objects {
            let Some(parts) = meta.location.prefix_match(&prefix) else { continue };
            let relative: PathBuf = parts.map(|part| part.as_ref().to_owned()).collect();
            if relative.as_os_str().is_empty() {
                continue;
            }
            let key = ObjectUri { bucket: uri.bucket.clone(), key: meta.location.to_string() };
            self.download(&key, &dest.join(relative)).await?;
            count += 1;
        }
        if count == 0 {
            return Err(ObjectError::NotFound(format!("{uri} (no objects under it)")));
        }
        Ok(count)
    }

    /// Uploads the local file `source` as the object `uri` (multipart when large; the object
    /// appears only when complete).
    pub async fn upload(&self, source: &Path, uri: &ObjectUri) -> Result<(), ObjectError> {
        let bucket = self.bucket(uri)?;
        let local = |action, e| ObjectError::Local { action, path: source.to_path_buf(), source: e };
        let mut file = tokio::fs::File::open(source).await.map_err(|e| local("open", e))?;
        let mut writer = BufWriter::with_capacity(bucket.store.clone(), uri.path(), WRITE_BUFFER);
        let copied = tokio::io::copy(&mut file, &mut writer).await;
        let result = match copied {
            Ok(_) => writer.shutdown().await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let _ = writer.abort().await;
            return Err(ObjectError::Store { action: "write", uri: uri.to_string(), source: io_to_store(e) });
        }
        Ok(())
    }

    /// Uploads the files under `dir` into folder `uri`, keeping their relative paths.
    pub async fn upload_tree(&self, dir: &Path, uri: &ObjectUri) -> Result<usize, ObjectError> {
        let files = {
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || files_under(&dir))
                .await
                .map_err(|e| ObjectError::Local {
                    action: "list",
                    path: PathBuf::new(),
                    source: std::io::Error::other(e),
                })?
                .map_err(|e| ObjectError::Local { action: "list", path: PathBuf::new(), source: e })?
        };
        for relative in &files {
            let key = relative.iter().map(|part| part.to_string_lossy()).collect::<Vec<_>>().join("/");
            self.upload(&dir.join(relative), &uri.join(&key)).await?;
        }
        Ok(files.len())
    }

    /// Deletes every object under folder `uri`.
    pub async fn delete_tree(&self, uri: &ObjectUri) -> Result<(), ObjectError> {
        let bucket = self.bucket(uri)?;
        for meta in self.list(uri).await? {
            bucket.store.delete(&meta.location).await.map_err(|source| ObjectError::Store {
                action: "delete",
                uri: format!("s3://{}/{}", uri.bucket, meta.location),
                source,
            })?;
        }
        Ok(())
    }

    /// A blocking reader of the object `uri` (ranged reads of [`READ_AHEAD`] bytes,
    /// [`READS_IN_FLIGHT`] at once, each retried), for a thread outside the runtime that
    /// `handle` belongs to. Memory: at most `READS_IN_FLIGHT` ranges.
    pub fn reader(&self, uri: &ObjectUri, handle: &tokio::runtime::Handle) -> std::io::Result<ObjectReader> {
        let bucket = self.bucket(uri).map_err(std::io::Error::other)?;
        let meta = handle
            .block_on(self.head(uri))
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{uri} does not exist")))?;
        let (store, path, shown) = (bucket.store.clone(), meta.location.clone(), uri.to_string());
        let step = READ_AHEAD as u64;
        let ranges = (0..meta.size.div_ceil(step)).map(move |i| i * step..((i + 1) * step).min(meta.size));
        let chunks = futures_util::stream::iter(ranges)
            .map(move |range| {
                let (store, path, shown) = (store.clone(), path.clone(), shown.clone());
                async move {
                    store.get_range(&path, range).await.map_err(|source| {
                        std::io::Error::other(ObjectError::Store { action: "read", uri: shown, source })
                    })
                }
            })
            .buffered(READS_IN_FLIGHT);
        let reader: Pin<Box<dyn AsyncRead + Send>> = Box::pin(StreamReader::new(chunks));
        Ok(ObjectReader { inner: SyncIoBridge::new_with_handle(reader, handle.clone()) })
    }

    /// An asynchronous writer of the new object `uri` (multipart when large): the object appears,
    /// whole, on `shutdown`; `abort` (or a drop before `shutdown`) leaves nothing visible.
    pub fn async_writer(&self, uri: &ObjectUri) -> Result<BufWriter, ObjectError> {
        let bucket = self.bucket(uri)?;
        Ok(BufWriter::with_capacity(bucket.store.clone(), uri.path(), WRITE_BUFFER))
    }

    /// A blocking writer of the new object `uri`, visible only after [`ObjectWriter::finish`].
    pub fn writer(&self, uri: &ObjectUri, handle: &tokio::runtime::Handle) -> std::io::Result<ObjectWriter> {
        let bucket = self.bucket(uri).map_err(std::io::Error::other)?;
        let writer = BufWriter::with_capacity(bucket.store.clone(), uri.path(), WRITE_BUFFER);
        Ok(ObjectWriter { inner: Some(SyncIoBridge::new_with_handle(writer, handle.clone())), handle: handle.clone() })
    }
}

fn io_to_store(error: std::io::Error) -> object_store::Error {
    object_store::Error::Generic { store: "S3", source: Box::new(error) }
}

/// The regular files under `dir`, relative to it, in name order. Blocks.
fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(dir.join(&relative))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = relative.join(entry.file_name());
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The client of one bucket: its own settings first, then the AWS variables.
fn bucket(config: &BucketConfig, aws: &AwsEnvironment) -> Result<Bucket, ObjectError> {
    let pick = |own: &Option<String>, env: &Option<String>| own.clone().or_else(|| env.clone());
    // A secret and a token go with the key id they came with.
    let (secret, token) = if config.access_key_id.is_some() {
        (config.secret_access_key.clone(), config.session_token.clone())
    } else {
        (pick(&config.secret_access_key, &aws.secret_access_key), pick(&config.session_token, &aws.session_token))
    };
    let resolved = BucketConfig {
        region: Some(pick(&config.region, &aws.region).unwrap_or_else(|| "us-east-1".to_owned())),
        endpoint: pick(&config.endpoint, &aws.endpoint),
        access_key_id: pick(&config.access_key_id, &aws.access_key_id),
        secret_access_key: secret,
        session_token: token,
        ..config.clone()
    };
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 4,
        retry_timeout: Duration::from_secs(15),
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&resolved.name)
        .with_region(resolved.region.as_deref().unwrap_or_default())
        .with_allow_http(resolved.allow_http)
        .with_virtual_hosted_style_request(resolved.virtual_hosted_style)
        .with_retry(retry);
    if let Some(endpoint) = &resolved.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(id) = &resolved.access_key_id {
        builder = builder.with_access_key_id(id);
    }
    if let Some(secret) = &resolved.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = &resolved.session_token {
        builder = builder.with_token(token);
    }
    if resolved.access_key_id.is_none() {
        // No credentials anywhere: a public bucket, read unsigned.
        builder = builder.with_skip_signature(true);
    }
    let store = builder.build().map_err(|source| ObjectError::Configure { bucket: config.name.clone(), source })?;
    Ok(Bucket { store: Arc::new(store), resolved })
}

/// The `AWS_*` variables that reach the bucket `resolved` describes (region, endpoint,
/// credentials), for a trainer's environment.
fn aws_env(resolved: &BucketConfig) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(region) = &resolved.region {
        env.push(("AWS_REGION".to_owned(), region.clone()));
        env.push(("AWS_DEFAULT_REGION".to_owned(), region.clone()));
    }
    if let Some(endpoint) = &resolved.endpoint {
        env.push(("AWS_ENDPOINT_URL".to_owned(), endpoint.clone()));
        env.push(("AWS_ENDPOINT_URL_S3".to_owned(), endpoint.clone()));
    }
    let credentials = [
        ("AWS_ACCESS_KEY_ID", &resolved.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", &resolved.secret_access_key),
        ("AWS_SESSION_TOKEN", &resolved.session_token),
    ];
    env.extend(credentials.into_iter().filter_map(|(name, value)| Some((name.to_owned(), value.clone()?))));
    env
}

/// A blocking reader of one object.
pub struct ObjectReader {
    inner: SyncIoBridge<Pin<Box<dyn AsyncRead + Send>>>,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

/// A blocking writer of one new object; dropped before [`ObjectWriter::finish`], it aborts the
/// upload (nothing becomes visible).
pub struct ObjectWriter {
    inner: Option<SyncIoBridge<BufWriter>>,
    handle: tokio::runtime::Handle,
}

impl ObjectWriter {
    /// Completes the upload: the object becomes visible, whole.
    pub fn finish(mut self) -> std::io::Result<()> {
        match self.inner.as_mut() {
            Some(inner) => {
                let done = inner.shutdown();
                if done.is_ok() {
                    self.inner = None;
                }
                done
            }
            None => Ok(()),
        }
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.as_mut().map_or(Ok(0), |inner| inner.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Parts are sent as the buffer fills; a flush sends nothing early (S3's parts have a
        // minimum size).
        Ok(())
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let mut writer = inner.into_inner();
            let _ = self.handle.block_on(writer.abort());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(prefixes: &[&str]) -> Buckets {
        let config = BucketConfig {
            name: "data".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            region: None,
            access_key_id: Some("id".into()),
            secret_access_key: Some("secret".into()),
            session_token: None,
            allow_http: true,
            virtual_hosted_style: false,
            prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            projects: [(
                "p".to_owned(),
                ProjectKeys { access_key_id: "p-id".into(), secret_access_key: "p-secret".into(), session_token: None },
            )]
            .into(),
        };
        Buckets::open(&[config], &AwsEnvironment::default()).expect("open")
    }

    #[test]
    fn uris_parse_into_bucket_and_key() {
        let uri = ObjectUri::parse("f", "s3://data/models/m1/").expect("parse");
        assert_eq!((uri.bucket.as_str(), uri.key.as_str()), ("data", "models/m1"));
        assert_eq!(uri.to_string(), "s3://data/models/m1");
        assert_eq!(uri.join("model.pt").to_string(), "s3://data/models/m1/model.pt");
        assert_eq!(ObjectUri::parse("f", "s3://data").expect("root").key, "");
        for bad in [
            "s3://",
            "s3://UPPER/x",
            "s3://ab/x",
            "s3://data/a//b",
            "s3://data/a/../b",
            "gs://data/x",
            "s3://data/a\nb",
        ] {
            let err = ObjectUri::parse("version.deploymentUri", bad).expect_err(bad);
            assert!(
                matches!(&err, crate::Error::InvalidArgument(v) if v.field == "version.deploymentUri"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn only_configured_buckets_and_prefixes_are_named() {
        let open = buckets(&[]);
        assert!(open.confine("f", "s3://data/anything/at/all").is_ok());
        let confined = buckets(&["team-a/", "shared"]);
        assert!(confined.confine("f", "s3://data/team-a/model").is_ok());
        assert!(confined.confine("f", "s3://data/shared").is_ok());
        for refused in ["s3://data/team-ab/model", "s3://data/team-b/x", "s3://data", "s3://other/team-a/x"] {
            let err = confined.confine("job.trainingInput.jobDir", refused).expect_err(refused);
            assert!(
                matches!(&err, crate::Error::InvalidArgument(v) if v.field == "job.trainingInput.jobDir"),
                "{refused}: {err}"
            );
        }
        let other = confined.confine("f", "s3://other/x").expect_err("other bucket").to_string();
        assert!(other.contains("not configured") && other.contains("data"), "{other}");
    }

    #[test]
    fn trainers_get_their_projects_credentials_never_the_servers() {
        let uri = ObjectUri::parse("f", "s3://data/x").expect("uri");
        let (env, keyed) = buckets(&[]).env_for(&uri, "p");
        let env: BTreeMap<String, String> = env.into_iter().collect();
        assert!(keyed);
        assert_eq!(env.get("AWS_ENDPOINT_URL").map(String::as_str), Some("http://127.0.0.1:9"));
        assert_eq!(env.get("AWS_ACCESS_KEY_ID").map(String::as_str), Some("p-id"));
        assert_eq!(env.get("AWS_SECRET_ACCESS_KEY").map(String::as_str), Some("p-secret"));
        assert_eq!(env.get("AWS_REGION").map(String::as_str), Some("us-east-1"));
        let (env, keyed) = buckets(&[]).env_for(&uri, "q");
        assert!(!keyed);
        assert!(env.iter().all(|(k, _)| !k.contains("KEY") && k != "AWS_SESSION_TOKEN"), "{env:?}");
        assert!(buckets(&[]).resolved([&uri]).iter().all(|c| c.projects.is_empty()), "no project's keys go out");
        let shards = buckets(&[]).resolved_for([&uri], "p").expect("p has keys");
        assert_eq!(shards[0].access_key_id.as_deref(), Some("p-id"));
        assert!(shards[0].projects.is_empty());
        assert_eq!(buckets(&[]).resolved_for([&uri], "q").err().as_deref(), Some("data"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let shown = format!(
            "{:?}",
            BucketConfig {
                name: "data".into(),
                endpoint: None,
                region: None,
                access_key_id: Some("id".into()),
                secret_access_key: Some("very-secret".into()),
                session_token: Some("token-secret".into()),
                allow_http: false,
                virtual_hosted_style: false,
                prefixes: Vec::new(),
                projects: [(
                    "p".to_owned(),
                    ProjectKeys {
                        access_key_id: "p-id".into(),
                        secret_access_key: "project-secret".into(),
                        session_token: None,
                    },
                )]
                .into(),
            }
        );
        assert!(
            !shown.contains("very-secret") && !shown.contains("token-secret") && !shown.contains("project-secret"),
            "{shown}"
        );
    }
}
