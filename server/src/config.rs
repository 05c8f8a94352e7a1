//! Anneal's one typed configuration, layered: built-in defaults → config file → `ANNEAL_*`
//! environment → command-line flags, and validated once at start.
//!
//! Nothing else in Anneal reads the environment; everything gets what it needs from [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The server's configuration after layering and validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address to listen on; port 0 picks a free port (the bound address is printed).
    pub addr: SocketAddr,
    /// Holds the SQLite database (`anneal.db`) and the local storage root (`storage/`).
    pub data_dir: PathBuf,
    /// The metadata store: `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DATABASE`
    /// (with `?sslmode=…` and the other libpq URL parameters). Unset: `sqlite://<data
    /// dir>/anneal.db`.
    pub database_url: Option<crate::store::DatabaseUrl>,
    /// The most connections the server keeps open to the database.
    pub database_max_connections: u32,
    /// Readable text or JSON log lines.
    pub log_format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `anneal=debug,tower_http=info`.
    pub log: String,
    /// Where the console's built assets (`pkg/anneal.js`, `pkg/anneal.wasm`, `pkg/anneal.css`)
    /// are. When unset, Anneal looks next to its own executable (see [`crate::console`]).
    pub site_root: Option<PathBuf>,
    /// How long shutdown waits for in-flight requests and background tasks, in seconds.
    pub shutdown_grace_secs: u64,
    /// Directories besides the data dir that user URIs (`deploymentUri`, package URIs) may name.
    pub storage_roots: Vec<PathBuf>,
    /// Whether callers must present a token (`Authorization: Bearer`, or a console session).
    /// `false` (`--no-auth`) is allowed only when `addr` is a loopback address.
    pub auth: bool,
    /// The largest request body accepted, in bytes (predict requests included).
    pub max_request_bytes: usize,
    /// The most rows one forward pass takes (1 turns batching off).
    pub predict_max_batch_size: usize,
    /// How long a model worker waits for more requests to fill a batch, in microseconds; 0 batches
    /// only what is already queued.
    pub predict_max_queue_delay_us: u64,
    /// Predict requests that may wait per version before new ones get 429.
    pub predict_queue_capacity: usize,
    /// The largest answer a model's worker process may send for one request, in bytes (a pass
    /// of several requests may send that many times as much); a larger one fails the request and
    /// restarts the process. Unset: 4 × `max_request_bytes`.
    pub predict_max_answer_bytes: Option<usize>,
    /// Worker threads per served version.
    pub predict_workers: usize,
    /// libtorch intra-op threads per worker.
    pub predict_intra_op_threads: i32,
    /// The Python that runs training replicas (it must have torch). Unset: the `.venv` next to
    /// the binary's repository if there is one, else `python3` on PATH.
    pub python: Option<PathBuf>,
    /// Replica slots of this host: a job starts when all of its replicas fit.
    pub training_slots: usize,
    /// Seconds between SIGTERM and SIGKILL when replicas are stopped.
    pub kill_grace_secs: u64,
    /// GPU devices training jobs may use (replicas get `CUDA_VISIBLE_DEVICES`). Unset: the NVIDIA
    /// devices found in `/dev`.
    pub gpu_devices: Option<usize>,
    /// When the server runs as root: the unprivileged account whose group replicas (training
    /// jobs, tuning trials, the pip install of a job's packages) run in; created at start (a
    /// system account without home or login shell) when missing. Ignored when not root: replicas
    /// then run as the server's user.
    pub replica_user: String,
    /// When the server runs as root: each project's replicas run as uid `replica_uid_base + n`,
    /// n numbering the projects by their first program (kept in the database, so every node of
    /// one database agrees), so trainers of different projects cannot reach each other. Two
    /// servers with different databases on one host need different bases.
    pub replica_uid_base: u32,
    /// Whether user code (trainers, pip installs, Python models) runs confined (`on`: Landlock,
    /// `no_new_privs`, a subreaper per program; see README's Security section) or not (`off`:
    /// accepted only with auth off on a loopback address, and logged at every start).
    pub sandbox: crate::sandbox::SandboxMode,
    /// The largest file one upload request (`PUT …/uploads/{id}/{path}`) may carry, in bytes.
    pub max_upload_bytes: u64,
    /// The most bytes of uploads one project may keep under `storage/uploads/<project>/`; an
    /// upload past it answers 429 RESOURCE_EXHAUSTED.
    pub upload_quota_bytes: u64,
    /// The longest line of a replica's output kept in a job's log, in bytes; a longer line is
    /// cut there and marked, so a replica that prints without newlines cannot grow memory.
    pub max_log_line_bytes: usize,
    /// The most `logs?follow=true` streams open at once on this server; more answer 429. One
    /// token may hold a quarter of them and one project half.
    pub max_log_followers: usize,
    /// Whether `/metrics` answers without a token. Its series name every project's versions, so
    /// by default (with auth on) it needs a token that reads every project (an `admin` or
    /// `viewer` token bound to `["*"]`); `true` opens it, for a scraper on a trusted network.
    pub metrics_public: bool,
    /// How long an ordinary API request may take, in seconds, before it answers 503; log
    /// follow streams and uploads are not cut.
    pub request_timeout_secs: u64,
    /// The address browsers reach this server at when it is behind a proxy or a public name,
    /// e.g. `https://anneal.example.com`: its host is an allowed `Host`, its origin an allowed
    /// `Origin`, and an `https` one makes the console's session cookie `Secure`.
    pub public_url: Option<String>,
    /// More host names (without port) that requests may name in `Host`, besides `localhost`, IP
    /// addresses and `public_url`'s host; `*` allows any (turns the DNS-rebinding check off).
    pub allowed_hosts: Vec<String>,
    /// This node's name among the nodes sharing one database. Unset: a name made at the first
    /// start and kept in `<data dir>/node-id`, so a restarted node is the same node.
    pub node_id: Option<String>,
    /// How long a node's claim on a job (and its heartbeat) holds without renewal, in seconds. A
    /// node renews every third of it; a job whose node has not renewed for this long is ended
    /// FAILED by another node, naming the lost node (so within two lease periods of the loss).
    /// A node that cannot renew stops its own replicas first (self-fencing), in time when this
    /// is at least three times `kill_grace_secs` + 2 (default 24).
    pub node_lease_secs: u64,
    /// Where artifacts, job logs and metrics live (default `<data dir>/storage`). Nodes sharing
    /// a database must share this folder (a network file system), so every node reads every
    /// job's log and loads every version.
    pub storage_dir: Option<PathBuf>,
    /// The S3-compatible buckets `s3://` URIs may name (`[[buckets]]` tables: `name`,
    /// `endpoint`, `region`, `access_key_id`, `secret_access_key`, `session_token`, `allow_http`,
    /// `virtual_hosted_style`, `prefixes`); as a variable, `ANNEAL_BUCKETS='[{name="data",
    /// endpoint="http://127.0.0.1:9000", allow_http=true}]'`.
    pub buckets: Vec<crate::storage::BucketConfig>,
    /// The standard AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`), for what a bucket leaves unset.
    #[serde(skip)]
    pub aws: crate::storage::AwsEnvironment,
    /// An `s3://` URI in one of `buckets` where Anneal publishes its own artifacts (each
    /// version's model copy), so nodes sharing a database need no shared disk: a node that did
    /// not create a version fetches it from there. Unset: artifacts stay in the storage folder.
    pub artifacts_uri: Option<String>,
    /// What runs jobs: `local` (replicas are processes of this host; the default) or `ray` (a
    /// Ray cluster, through the Jobs REST API of its head at `ray_address`).
    pub executor: ExecutorKind,
    /// With `executor = "ray"`: the Ray head's dashboard address, which serves the Jobs REST API,
    /// e.g. `http://ray-head:8265`.
    pub ray_address: Option<String>,
    /// The token of a Ray cluster with token authentication (`RAY_AUTH_MODE=token`), sent as
    /// `Authorization: Bearer`. Without it anyone who reaches the head can run code on it.
    pub ray_token: Option<String>,
    /// The Python on the Ray nodes that runs Anneal's driver and the replicas (it needs ray and
    /// what the trainers import, e.g. torch); an absolute path is safest.
    pub ray_python: String,
    /// How long a job on Ray waits for its placement group (all its replicas at once) before it
    /// ends FAILED, in seconds.
    pub ray_placement_timeout_secs: u64,
    /// The `anneal` binary on the Ray nodes, which runs batch prediction shards there (it links
    /// the libtorch of the nodes' PyTorch). Unset: this server's own executable's path.
    pub ray_anneal_binary: Option<PathBuf>,
}

/// Which executor runs jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Processes of this host.
    #[default]
    Local,
    /// A Ray cluster.
    Ray,
}

/// The environment variables that configure the server, without the `ANNEAL_` prefix.
/// A test checks that every field of [`Config`] is listed.
const ENV_KEYS: &[&str] = &[
    "addr",
    "data_dir",
    "database_url",
    "database_max_connections",
    "log_format",
    "log",
    "site_root",
    "shutdown_grace_secs",
    "storage_roots",
    "auth",
    "max_request_bytes",
    "predict_max_batch_size",
    "predict_max_queue_delay_us",
    "predict_queue_capacity",
    "predict_max_answer_bytes",
    "predict_workers",
    "predict_intra_op_threads",
    "python",
    "training_slots",
    "kill_grace_secs",
    "gpu_devices",
    "replica_user",
    "replica_uid_base",
    "sandbox",
    "max_upload_bytes",
    "upload_quota_bytes",
    "max_log_line_bytes",
    "max_log_followers",
    "metrics_public",
    "request_timeout_secs",
    "public_url",
    "allowed_hosts",
    "node_id",
    "node_lease_secs",
    "storage_dir",
    "buckets",
    "artifacts_uri",
    "executor",
    "ray_address",
    "ray_token",
    "ray_python",
    "ray_placement_timeout_secs",
    "ray_anneal_binary",
];

/// Values given on the command line; each one set overrides every other layer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<crate::store::DatabaseUrl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site_root: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<bool>,
}

/// Why the configuration could not be built, or the CLI's file not written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer held a value of the wrong type or an unknown key.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The config file named by `--config` or `ANNEAL_CONFIG` does not exist.
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    /// No data directory was given and there is no home directory to default to.
    #[error("no --data-dir given and HOME is not set to default it to ~/.anneal")]
    NoHome,
    /// `anneal config set` was given a key the CLI does not keep.
    #[error("unknown key '{0}'; use one of: {keys}", keys = CLIENT_KEYS.join(", "))]
    UnknownKey(String),
    /// There is no directory to keep the CLI's file in.
    #[error("neither XDG_CONFIG_HOME nor HOME is set")]
    NoConfigDir,
    /// The CLI's file exists but is not valid TOML of its keys.
    #[error("{}: {message}", .path.display())]
    BadFile { path: PathBuf, message: String },
    /// The CLI's file or its folder cannot be written.
    #[error("cannot {action} {}: {source}", .path.display())]
    Write { action: &'static str, path: PathBuf, source: std::io::Error },
}

impl Config {
    /// Builds the configuration from the process environment, an optional config file (flag
    /// first, then `ANNEAL_CONFIG`), and the command-line overrides.
    pub fn load(config_file: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let from_env = std::env::var_os("ANNEAL_CONFIG").map(PathBuf::from);
        let file = config_file.map(Path::to_path_buf).or(from_env);
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let mut config =
            Self::layered(home.as_deref(), file.as_deref(), Env::prefixed("ANNEAL_").only(ENV_KEYS), overrides)?;
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        config.aws = crate::storage::AwsEnvironment {
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            endpoint: var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")),
        };
        Ok(config)
    }

    fn layered(home: Option<&Path>, file: Option<&Path>, env: Env, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Defaults::new(home)));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::MissingFile(file.to_path_buf()));
            }
            figment = figment.merge(Toml::file(file));
        }
        let figment = figment.merge(env).merge(Serialized::defaults(overrides));
        let config: Self = figment.extract().map_err(|e| ConfigError::Invalid(one_line(&e)))?;
        if config.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::NoHome);
        }
        if config.sandbox == crate::sandbox::SandboxMode::Off && (config.auth || !config.addr.ip().is_loopback()) {
            return Err(ConfigError::Invalid(
                "sandbox = \"off\" runs every user's code with the server's rights: it is accepted only with auth off (--no-auth) on a loopback address".into(),
            ));
        }
        if config.executor == ExecutorKind::Ray && config.ray_address.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::Invalid(
                "executor = \"ray\" needs ray_address, the Ray head's dashboard address (e.g. http://127.0.0.1:8265)"
                    .into(),
            ));
        }
        Ok(config)
    }

    /// The metadata store: `database_url`, else the SQLite file `anneal.db` in the data dir.
    pub fn database_url(&self) -> crate::store::DatabaseUrl {
        self.database_url.clone().unwrap_or_else(|| crate::store::DatabaseUrl::Sqlite(self.data_dir.join("anneal.db")))
    }

    /// The SQLite database file, when the store is SQLite.
    pub fn database_path(&self) -> Option<PathBuf> {
        self.database_url().sqlite_path().map(Path::to_path_buf)
    }

    /// The root of local storage (staged packages, deployed model copies, job outputs).
    pub fn storage_root(&self) -> PathBuf {
        self.storage_dir.clone().unwrap_or_else(|| self.data_dir.join("storage"))
    }

    /// How versions are served.
    pub fn serving_options(&self) -> crate::serving::ServingOptions {
        crate::serving::ServingOptions {
            max_batch_size: self.predict_max_batch_size.max(1),
            max_queue_delay: Duration::from_micros(self.predict_max_queue_delay_us),
            queue_capacity: self.predict_queue_capacity.max(1),
            workers: self.predict_workers.max(1),
            intra_op_threads: self.predict_intra_op_threads.max(1),
            use_cuda: true,
            python: self.runtime_python(),
            worker_program: std::env::current_exe().unwrap_or_else(|_| "anneal".into()),
        }
    }

    /// GPU devices training jobs may use: `gpu_devices`, else the NVIDIA devices in `/dev`.
    pub fn gpu_count(&self) -> usize {
        self.gpu_devices.unwrap_or_else(|| {
            let numbered = |name: &str| name.strip_prefix("nvidia").is_some_and(|n| n.parse::<u32>().is_ok());
            std::fs::read_dir("/dev")
                .map(|dir| dir.flatten().filter(|e| numbered(&e.file_name().to_string_lossy())).count())
                .unwrap_or(0)
        })
    }

    /// The Python that runs training replicas and Python models' prediction workers.
    pub fn runtime_python(&self) -> PathBuf {
        if let Some(python) = &self.python {
            return python.clone();
        }
        let repo_venv = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.ancestors().nth(3).map(|root| root.join(".venv/bin/python")))
            .filter(|p| p.is_file());
        repo_venv.unwrap_or_else(|| PathBuf::from("python3"))
    }

    /// The largest answer of a model's worker process per request: `predict_max_answer_bytes`,
    /// else 4 × `max_request_bytes`.
    pub fn max_answer_bytes(&self) -> usize {
        self.predict_max_answer_bytes.unwrap_or(self.max_request_bytes.saturating_mul(4)).max(1)
    }

    /// What the sandbox for user code is set up from.
    pub fn sandbox_settings(&self) -> crate::sandbox::SandboxSettings {
        crate::sandbox::SandboxSettings {
            mode: self.sandbox,
            python: self.runtime_python(),
            data_dir: self.data_dir.clone(),
            storage_root: self.storage_root(),
            database_path: self.database_path(),
            replica_user: self.replica_user.clone(),
            replica_uid_base: self.replica_uid_base,
        }
    }

    /// The limits on growth that the use cases enforce.
    pub fn limits(&self) -> crate::control::Limits {
        crate::control::Limits {
            max_upload_bytes: self.max_upload_bytes,
            upload_quota_bytes: self.upload_quota_bytes,
            max_log_followers: self.max_log_followers.max(1),
            request_timeout: self.request_timeout(),
        }
    }

    /// How long an ordinary API request may take.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }

    /// How long shutdown waits for in-flight work.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// The built-in layer. `data_dir` defaults to `~/.anneal`; it is empty (and rejected) when there
/// is no home directory and nothing else sets it.
#[derive(Serialize)]
struct Defaults {
    addr: SocketAddr,
    data_dir: PathBuf,
    database_max_connections: u32,
    log_format: LogFormat,
    log: String,
    shutdown_grace_secs: u64,
    storage_roots: Vec<PathBuf>,
    auth: bool,
    max_request_bytes: usize,
    predict_max_batch_size: usize,
    predict_max_queue_delay_us: u64,
    predict_queue_capacity: usize,
    predict_workers: usize,
    predict_intra_op_threads: i32,
    training_slots: usize,
    kill_grace_secs: u64,
    replica_user: String,
    replica_uid_base: u32,
    sandbox: crate::sandbox::SandboxMode,
    max_upload_bytes: u64,
    upload_quota_bytes: u64,
    max_log_line_bytes: usize,
    max_log_followers: usize,
    metrics_public: bool,
    request_timeout_secs: u64,
    allowed_hosts: Vec<String>,
    node_lease_secs: u64,
    buckets: Vec<crate::storage::BucketConfig>,
    executor: ExecutorKind,
    ray_python: String,
    ray_placement_timeout_secs: u64,
}

impl Defaults {
    fn new(home: Option<&Path>) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: home.map(|h| h.join(".anneal")).unwrap_or_default(),
            database_max_connections: 8,
            log_format: LogFormat::Text,
            log: "info".into(),
            shutdown_grace_secs: 30,
            storage_roots: Vec::new(),
            auth: true,
            // The 1.5 MB online-prediction payload limit of ML Engine.
            max_request_bytes: 1_572_864,
            predict_max_batch_size: 64,
            predict_max_queue_delay_us: 0,
            predict_queue_capacity: 1024,
            predict_workers: 1,
            predict_intra_op_threads: 1,
            training_slots: std::thread::available_parallelism().map_or(4, |n| (2 * n.get()).max(4)),
            kill_grace_secs: 5,
            replica_user: "anneal-replica".into(),
            // Above the ranges systemd gives regular, dynamic and container users (up to
            // 0x6FFFFFFF), below the ones it tells programs to avoid (0x80000000 and up).
            replica_uid_base: 0x7000_0000,
            sandbox: crate::sandbox::SandboxMode::On,
            max_upload_bytes: 4 << 30,
            upload_quota_bytes: 20 << 30,
            max_log_line_bytes: 64 << 10,
            max_log_followers: 256,
            metrics_public: false,
            request_timeout_secs: 60,
            allowed_hosts: Vec::new(),
            // At least three times kill_grace_secs + 2, so self-fencing stops replicas in time.
            node_lease_secs: 24,
            buckets: Vec::new(),
            executor: ExecutorKind::Local,
            ray_python: "python3".into(),
            ray_placement_timeout_secs: 300,
        }
    }
}

/// Where the CLI's client verbs send their requests. Layers: the defaults
/// (`http://127.0.0.1:8080`, project `default`), then the file `anneal config set` writes
/// (`$XDG_CONFIG_HOME/anneal/cli.toml`, else `~/.config/anneal/cli.toml`), then `ANNEAL_ENDPOINT`
/// and `ANNEAL_PROJECT`, then the `--endpoint` and `--project` flags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    pub endpoint: String,
    pub project: String,
}

/// The keys `anneal config set` accepts.
pub const CLIENT_KEYS: &[&str] = &["endpoint", "project"];

impl ClientConfig {
    /// The file `anneal config set` writes, if a home or config directory is known.
    pub fn file() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
        Some(base.join("anneal").join("cli.toml"))
    }

    /// Loads the layers (see the type's docs).
    pub fn load(endpoint: Option<String>, project: Option<String>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Self {
            endpoint: "http://127.0.0.1:8080".into(),
            project: "default".into(),
        }));
        if let Some(file) = Self::file().filter(|f| f.is_file()) {
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("ANNEAL_").only(CLIENT_KEYS));
        if let Some(endpoint) = endpoint {
            figment = figment.merge(Serialized::default("endpoint", endpoint));
        }
        if let Some(project) = project {
            figment = figment.merge(Serialized::default("project", project));
        }
        figment.extract().map_err(|e| ConfigError::Invalid(one_line(&e)))
    }

    /// Sets `key` to `value` in the CLI's file (created if missing); returns the file.
    pub fn set(key: &str, value: &str) -> Result<PathBuf, ConfigError> {
        if !CLIENT_KEYS.contains(&key) {
            return Err(ConfigError::UnknownKey(key.to_owned()));
        }
        let file = Self::file().ok_or(ConfigError::NoConfigDir)?;
        let mut values: std::collections::BTreeMap<String, String> = match std::fs::read_to_string(&file) {
            Ok(text) => Figment::from(Toml::string(&text))
                .extract()
                .map_err(|e| ConfigError::BadFile { path: file.clone(), message: one_line(&e) })?,
            Err(_) => Default::default(),
        };
        values.insert(key.to_owned(), value.to_owned());
        // TOML basic strings take JSON's escapes for these characters.
        let text: String =
            values.iter().map(|(k, v)| format!("{k} = {}\n", serde_json::to_string(v).unwrap_or_default())).collect();
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ConfigError::Write {
                action: "create",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&file, text).map_err(|source| ConfigError::Write {
            action: "write",
            path: file.clone(),
            source,
        })?;
        Ok(file)
    }
}

/// The token the CLI sends, in this order: `--token`, `ANNEAL_TOKEN`, the file `anneal auth
/// login` writes (`<config dir>/anneal/token`), and — when `endpoint` is on this machine — the
/// admin token of the server's data dir (`ANNEAL_DATA_DIR`, else `~/.anneal`), so the CLI works
/// against a local server with nothing to set up.
pub fn client_token(flag: Option<&str>, endpoint: &str) -> Option<String> {
    let read =
        |path: PathBuf| std::fs::read_to_string(path).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    if let Some(token) =
        flag.map(str::to_owned).or_else(|| std::env::var("ANNEAL_TOKEN").ok()).filter(|t| !t.is_empty())
    {
        return Some(token);
    }
    if let Some(token) = client_token_file().and_then(read) {
        return Some(token);
    }
    if !is_loopback_endpoint(endpoint) {
        return None;
    }
    let data_dir = std::env::var_os("ANNEAL_DATA_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".anneal")))?;
    read(data_dir.join(crate::auth::ADMIN_TOKEN_FILE))
}

/// The file `anneal auth login` keeps the CLI's token in (mode 0600).
pub fn client_token_file() -> Option<PathBuf> {
    ClientConfig::file().and_then(|f| f.parent().map(|dir| dir.join("token")))
}

/// Whether an endpoint URL names this machine (`localhost`, `127.x.x.x`, `[::1]`).
pub fn is_loopback_endpoint(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(host, _)| host)
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// figment's errors can span several lines (one per nested cause); the CLI prints one line.
fn one_line(error: &figment::Error) -> String {
    error.clone().into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load(home: Option<&Path>, file: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        Config::layered(home, file, Env::prefixed("ANNEAL_").only(ENV_KEYS), overrides)
    }

    #[test]
    fn defaults_listen_on_loopback_8080_with_data_under_home() {
        Jail::expect_with(|_| {
            let config = load(Some(Path::new("/home/u")), None, Overrides::default()).expect("defaults");
            assert_eq!(config.addr.to_string(), "127.0.0.1:8080");
            assert_eq!(config.data_dir, PathBuf::from("/home/u/.anneal"));
            assert_eq!(config.log_format, LogFormat::Text);
            assert_eq!(config.database_path(), Some(PathBuf::from("/home/u/.anneal/anneal.db")));
            assert_eq!(config.database_url().to_string(), "sqlite:///home/u/.anneal/anneal.db");
            Ok(())
        });
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        Jail::expect_with(|jail| {
            jail.create_file("anneal.toml", "addr = \"127.0.0.1:9000\"\ndata_dir = \"/from/file\"\nlog = \"debug\"\n")?;
            jail.set_env("ANNEAL_DATA_DIR", "/from/env");
            jail.set_env("ANNEAL_LOG_FORMAT", "json");
            let overrides = Overrides { log_format: Some(LogFormat::Text), ..Overrides::default() };
            let config = load(None, Some(Path::new("anneal.toml")), overrides).expect("layered");
            assert_eq!(config.addr.port(), 9000, "file beats defaults");
            assert_eq!(config.data_dir, PathBuf::from("/from/env"), "env beats file");
            assert_eq!(config.log, "debug", "file value kept when nothing overrides it");
            assert_eq!(config.log_format, LogFormat::Text, "flag beats env");
            Ok(())
        });
    }

    #[test]
    fn every_config_field_has_an_environment_variable() {
        Jail::expect_with(|_| {
            let config = load(Some(Path::new("/h")), None, Overrides::default()).expect("defaults");
            let fields = serde_json::to_value(&config).expect("serialise");
            let mut names: Vec<&str> = fields.as_object().expect("object").keys().map(String::as_str).collect();
            let mut listed = ENV_KEYS.to_vec();
            names.sort_unstable();
            listed.sort_unstable();
            assert_eq!(names, listed);
            Ok(())
        });
    }

    #[test]
    fn serving_settings_come_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("ANNEAL_PREDICT_MAX_BATCH_SIZE", "1");
            jail.set_env("ANNEAL_STORAGE_ROOTS", "[/srv/models]");
            let config = load(Some(Path::new("/h")), None, Overrides::default()).expect("env");
            assert_eq!(config.serving_options().max_batch_size, 1);
            assert_eq!(config.storage_roots, vec![PathBuf::from("/srv/models")]);
            jail.set_env("ANNEAL_PREDICT_MAX_BATCH_SIZE", "abc");
            assert!(load(Some(Path::new("/h")), None, Overrides::default()).is_err(), "a bad number is refused");
            Ok(())
        });
    }

    #[test]
    fn database_url_comes_from_file_env_or_flag_and_bad_ones_are_refused() {
        Jail::expect_with(|jail| {
            jail.create_file("anneal.toml", "database_url = \"sqlite:///srv/anneal/meta.db\"\n")?;
            let config =
                load(Some(Path::new("/h")), Some(Path::new("anneal.toml")), Overrides::default()).expect("file");
            assert_eq!(config.database_path(), Some(PathBuf::from("/srv/anneal/meta.db")));
            jail.set_env("ANNEAL_DATABASE_URL", "postgres://anneal:pw@db.internal/anneal?sslmode=require");
            jail.set_env("ANNEAL_DATABASE_MAX_CONNECTIONS", "20");
            let config =
                load(Some(Path::new("/h")), Some(Path::new("anneal.toml")), Overrides::default()).expect("env");
            assert_eq!(config.database_path(), None, "env beats file");
            assert_eq!(config.database_url().to_string(), "postgres://anneal:***@db.internal/anneal?sslmode=require");
            assert_eq!(config.database_max_connections, 20);
            let flag =
                Overrides { database_url: Some("sqlite:///flag.db".parse().expect("url")), ..Overrides::default() };
            let config = load(Some(Path::new("/h")), None, flag).expect("flag");
            assert_eq!(config.database_path(), Some(PathBuf::from("/flag.db")), "flag beats env");
            jail.set_env("ANNEAL_DATABASE_URL", "mysql://root:pw@db/anneal");
            let err = load(Some(Path::new("/h")), None, Overrides::default()).expect_err("scheme");
            assert!(err.to_string().contains("sqlite:// or postgres://"), "{err}");
            assert!(!err.to_string().contains(":pw@"), "the password is not shown: {err}");
            Ok(())
        });
    }

    #[test]
    fn the_ray_executor_is_chosen_in_config_and_needs_an_address() {
        Jail::expect_with(|jail| {
            let config = load(Some(Path::new("/h")), None, Overrides::default()).expect("defaults");
            assert_eq!(config.executor, ExecutorKind::Local, "local is the default");
            jail.set_env("ANNEAL_EXECUTOR", "ray");
            let err = load(Some(Path::new("/h")), None, Overrides::default()).expect_err("no address");
            assert!(err.to_string().contains("ray_address"), "{err}");
            jail.set_env("ANNEAL_RAY_ADDRESS", "http://127.0.0.1:8265");
            jail.set_env("ANNEAL_RAY_TOKEN", "secret");
            let config = load(Some(Path::new("/h")), None, Overrides::default()).expect("ray");
            assert_eq!(config.executor, ExecutorKind::Ray);
            assert_eq!(config.ray_token.as_deref(), Some("secret"));
            assert_eq!(config.ray_placement_timeout_secs, 300);
            Ok(())
        });
    }

    #[test]
    fn client_variables_do_not_break_the_server_config() {
        Jail::expect_with(|jail| {
            jail.set_env("ANNEAL_ENDPOINT", "http://elsewhere");
            jail.set_env("ANNEAL_PROJECT", "demo");
            load(Some(Path::new("/h")), None, Overrides::default()).expect("unrelated ANNEAL_* ignored");
            Ok(())
        });
    }

    #[test]
    fn bad_values_and_unknown_keys_are_rejected() {
        Jail::expect_with(|jail| {
            jail.set_env("ANNEAL_ADDR", "not-an-address");
            let err = load(Some(Path::new("/h")), None, Overrides::default()).expect_err("bad addr");
            assert!(err.to_string().contains("addr"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("anneal.toml", "adr = \"127.0.0.1:1\"\n")?;
            let err = load(Some(Path::new("/h")), Some(Path::new("anneal.toml")), Overrides::default())
                .expect_err("typo in file");
            assert!(err.to_string().contains("adr"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_config_file_and_missing_home_are_clear_errors() {
        Jail::expect_with(|_| {
            let err =
                load(Some(Path::new("/h")), Some(Path::new("nope.toml")), Overrides::default()).expect_err("missing");
            assert!(matches!(err, ConfigError::MissingFile(_)), "{err}");
            let err = load(None, None, Overrides::default()).expect_err("no home");
            assert!(matches!(err, ConfigError::NoHome), "{err}");
            Ok(())
        });
    }
}
