//! The client verbs' flags, named as `gcloud ml-engine` names them.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::output::Format;

/// Flags every client verb takes.
#[derive(Debug, Args, Clone)]
pub struct ClientOptions {
    /// The Anneal server [default: http://127.0.0.1:8080; env ANNEAL_ENDPOINT; `anneal config set endpoint`].
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The project [default: default; env ANNEAL_PROJECT; `anneal config set project`].
    #[arg(long, global = true, value_name = "PROJECT")]
    pub project: Option<String>,
    /// Output format: readable tables, or json / yaml for scripts.
    #[arg(long, global = true, value_enum)]
    pub format: Option<Format>,
    /// The API token [env ANNEAL_TOKEN; `anneal auth login`; for a server on this machine, its
    /// data dir's admin token].
    #[arg(long, global = true, value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// No progress bars or summaries on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Submit a job.
    #[command(subcommand)]
    Submit(SubmitCommand),
    /// List jobs.
    List {
        /// A filter, e.g. `state:RUNNING AND labels.team:vision`.
        #[arg(long)]
        filter: Option<String>,
        /// At most this many jobs.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show a job.
    Describe { job: String },
    /// Cancel a job.
    Cancel { job: String },
    /// Print a job's logs as they arrive, until it ends (exits non-zero if it failed).
    StreamLogs {
        job: String,
        /// Only this replica, e.g. `master-replica-0`.
        #[arg(long)]
        task_name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SubmitCommand {
    /// A training job: packages the trainer, uploads it, creates the job.
    Training(SubmitTraining),
    /// A batch prediction job.
    Prediction(SubmitPrediction),
}

#[derive(Debug, Args)]
pub struct SubmitTraining {
    pub job: String,
    /// The module to run, e.g. `trainer.task`.
    #[arg(long)]
    pub module_name: Option<String>,
    /// The local Python package folder (e.g. `trainer/`); its parent is uploaded when it has a
    /// setup.py or pyproject.toml (the server installs it), else the package alone.
    #[arg(long, conflicts_with = "packages")]
    pub package_path: Option<PathBuf>,
    /// Package URIs already on the server, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub packages: Vec<String>,
    /// An `s3://bucket/prefix` folder (in a bucket the server has configured) that
    /// `--package-path` is uploaded into, through the server, instead of the server's storage.
    #[arg(long, requires = "package_path")]
    pub staging_bucket: Option<String>,
    #[arg(long)]
    pub job_dir: Option<String>,
    /// BASIC, BASIC_GPU, STANDARD_1, PREMIUM_1 or CUSTOM.
    #[arg(long)]
    pub scale_tier: Option<String>,
    #[arg(long)]
    pub worker_count: Option<u32>,
    #[arg(long)]
    pub parameter_server_count: Option<u32>,
    /// A YAML (or JSON) file with `trainingInput` (or its fields), as gcloud's `--config`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Labels, `k=v,k=v`.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub runtime_version: Option<String>,
    #[arg(long)]
    pub python_version: Option<String>,
    /// Follow the job's logs until it ends; exit non-zero if it failed.
    #[arg(long)]
    pub stream_logs: bool,
    /// Arguments for the trainer, after `--`.
    #[arg(last = true)]
    pub user_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SubmitPrediction {
    pub job: String,
    /// Use the model's default version (or --version).
    #[arg(long, conflicts_with = "model_dir")]
    pub model: Option<String>,
    #[arg(long, requires = "model")]
    pub version: Option<String>,
    /// A model directory on the server that is not deployed.
    #[arg(long)]
    pub model_dir: Option<String>,
    /// Input files (wildcards allowed in file names), comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub input_paths: Vec<String>,
    #[arg(long)]
    pub output_path: String,
    /// json, text or csv.
    #[arg(long, value_parser = ["json", "text", "csv"])]
    pub data_format: String,
    #[arg(long)]
    pub batch_size: Option<u32>,
    #[arg(long)]
    pub max_worker_count: Option<u32>,
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    #[arg(long)]
    pub region: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Create a model.
    Create {
        model: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Accepted for gcloud compatibility; Anneal serves where it runs.
        #[arg(long, value_delimiter = ',')]
        regions: Vec<String>,
    },
    /// List models.
    List,
    /// Show a model.
    Describe { model: String },
    /// Delete a model (it must have no versions).
    Delete { model: String },
}

#[derive(Debug, Subcommand)]
pub enum VersionsCommand {
    /// Create a version from a model directory (a local folder is uploaded) and wait until it is
    /// ready.
    Create {
        version: String,
        #[arg(long)]
        model: String,
        /// A local folder with model.pt (uploaded), or a path/URI on the server.
        #[arg(long)]
        origin: String,
        /// An `s3://bucket/prefix` folder that a local `--origin` is uploaded into, through the
        /// server, instead of the server's storage.
        #[arg(long)]
        staging_bucket: Option<String>,
        #[arg(long, default_value = "pytorch")]
        framework: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        runtime_version: Option<String>,
        /// Return at once instead of waiting for the operation.
        #[arg(long = "async")]
        no_wait: bool,
    },
    /// List a model's versions.
    List {
        #[arg(long)]
        model: String,
    },
    /// Show a version.
    Describe {
        version: String,
        #[arg(long)]
        model: String,
    },
    /// Delete a version and wait until it is gone.
    Delete {
        version: String,
        #[arg(long)]
        model: String,
    },
    /// Make a version its model's default.
    SetDefault {
        version: String,
        #[arg(long)]
        model: String,
    },
}

/// Flags of `anneal predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub version: Option<String>,
    /// One JSON instance per line (`-` for stdin).
    #[arg(long, group = "input")]
    pub json_instances: Option<PathBuf>,
    /// One text instance per line (`-` for stdin).
    #[arg(long, group = "input")]
    pub text_instances: Option<PathBuf>,
    /// A whole request body `{"instances": [...]}` (`-` for stdin).
    #[arg(long, group = "input")]
    pub json_request: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum OperationsCommand {
    /// Show an operation.
    Describe { operation: String },
    /// List operations.
    List,
    /// Wait for an operation to finish (non-zero exit if it failed).
    Wait { operation: String },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Set `endpoint` or `project` for later commands.
    Set { key: String, value: String },
    /// Show the settings in effect and where they come from.
    List,
}
