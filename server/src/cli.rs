//! The `anneal` command line: `anneal serve` runs the server; `anneal local train|predict` run a
//! trainer or a model without one; the client verbs (`jobs`, `models`, `versions`, `predict`,
//! `operations`, `config`, in `client`) talk to a server over the REST API.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat, Overrides};
use crate::server::Server;

/// Anneal: train, version and serve PyTorch models; compatible with the Cloud ML Engine API.
#[derive(Debug, Parser)]
#[command(name = "anneal", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: crate::client::ClientOptions,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Anneal server: REST API under /v1, web console at /, /healthz, /readyz, /metrics.
    Serve(ServeArgs),
    /// Run a trainer or a model on this machine, without a server.
    #[command(subcommand)]
    Local(LocalCommand),
    /// Training and batch prediction jobs.
    #[command(subcommand)]
    Jobs(crate::client::JobsCommand),
    /// Models.
    #[command(subcommand)]
    Models(crate::client::ModelsCommand),
    /// Versions of a model.
    #[command(subcommand)]
    Versions(crate::client::VersionsCommand),
    /// Online prediction with a model's default version or a given version.
    Predict(crate::client::PredictArgs),
    /// Long-running operations.
    #[command(subcommand)]
    Operations(crate::client::OperationsCommand),
    /// Log the CLI in with a token, and manage tokens (admin).
    #[command(subcommand)]
    Auth(crate::client::AuthCommand),
    /// The CLI's settings (`endpoint`, `project`).
    #[command(subcommand)]
    Config(crate::client::ConfigCommand),
    /// One shard of a batch prediction job on Ray (started by Anneal's Ray driver on a node).
    #[command(hide = true, name = "ray-batch-shard")]
    RayBatchShard {
        /// The shard's spec, JSON.
        spec: String,
    },
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum LocalCommand {
    /// Run a trainer's replicas here as a training job would, streaming their output
    /// (like `gcloud ml-engine local train`).
    Train(LocalTrainArgs),
    /// Predict with a model directory loaded in this process (like `gcloud ml-engine local
    /// predict`).
    Predict(LocalPredictArgs),
}

/// Flags of `anneal local predict`.
#[derive(Debug, clap::Args)]
struct LocalPredictArgs {
    /// A model folder: model.pt (and signature.json), a SavedModel, model.joblib, model.pkl or
    /// model.bst.
    #[arg(long, value_name = "DIR")]
    model_dir: PathBuf,
    /// One JSON instance per line (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    json_instances: PathBuf,
    /// The model's framework (tensorflow, scikit-learn, xgboost, pytorch) [default: detected
    /// from the files, as versions are].
    #[arg(long, value_name = "FRAMEWORK")]
    framework: Option<String>,
    /// The TensorFlow signature to predict with [default: the model's only one, else
    /// serving_default].
    #[arg(long, value_name = "NAME")]
    signature_name: Option<String>,
    /// The Python that runs Python models [default: as `anneal serve`; env ANNEAL_PYTHON].
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
}

/// Flags of `anneal local train`.
#[derive(Debug, clap::Args)]
struct LocalTrainArgs {
    /// The module to run, e.g. `trainer.task`.
    #[arg(long, value_name = "MODULE")]
    module_name: String,
    /// The Python package folder holding the module (e.g. `examples/digits/trainer`); its parent
    /// goes on PYTHONPATH.
    #[arg(long, value_name = "DIR")]
    package_path: PathBuf,
    /// Passed to the trainer as `--job-dir=DIR` (created if missing).
    #[arg(long, value_name = "DIR")]
    job_dir: Option<PathBuf>,
    /// Run a master plus workers (and parameter servers) with the distributed environment.
    #[arg(long)]
    distributed: bool,
    /// Workers besides the master with --distributed [default: 2].
    #[arg(long, value_name = "N", requires = "distributed")]
    worker_count: Option<u32>,
    /// Parameter servers with --distributed [default: 0; PyTorch DDP has none].
    #[arg(long, value_name = "N", requires = "distributed")]
    parameter_server_count: Option<u32>,
    /// The Python that runs the replicas [default: as `anneal serve`; env ANNEAL_PYTHON].
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Arguments for the trainer, after `--`.
    #[arg(last = true, value_name = "USER_ARGS")]
    args: Vec<String>,
}

/// Flags of `anneal serve`. Each also has an `ANNEAL_*` environment variable and a config-file
/// key of the same name; a flag given here beats both.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080; env ANNEAL_ADDR]. Port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<std::net::SocketAddr>,
    /// Directory for the database and local storage [default: ~/.anneal; env ANNEAL_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The metadata store: `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DATABASE`
    /// [default: sqlite://<data dir>/anneal.db; env ANNEAL_DATABASE_URL].
    #[arg(long, value_name = "URL")]
    database_url: Option<crate::store::DatabaseUrl>,
    /// A TOML config file with the same keys (addr, data_dir, log, log_format, site_root,
    /// shutdown_grace_secs) [env ANNEAL_CONFIG].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log line format [default: text; env ANNEAL_LOG_FORMAT].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `anneal=debug` [default: info; env ANNEAL_LOG].
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    /// Directory holding the console's built assets (`pkg/`) [default: found next to the binary;
    /// env ANNEAL_SITE_ROOT].
    #[arg(long, value_name = "DIR")]
    site_root: Option<PathBuf>,
    /// The Python that runs training replicas (it needs torch) [default: the repository's .venv,
    /// else python3; env ANNEAL_PYTHON].
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Serve without authentication: every caller is an admin. Allowed only on a loopback
    /// address [env ANNEAL_AUTH=false].
    #[arg(long)]
    no_auth: bool,
}

/// Runs the command line and returns the process exit code: 0 on success, 2 for bad usage (from
/// clap), 1 for any other failure, reported as one `error:` line on stderr.
pub fn main() -> ExitCode {
    // The sandbox's launcher, started by the server for every user program: not a command for
    // people, and it must start no thread before it confines itself.
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        Some(verb) if verb == "sandbox-exec" => return crate::sandbox::launcher::main(args),
        // A TorchScript model's worker process, started by the server in a sandbox cell.
        Some(verb) if verb == "model-worker" => return crate::serving::worker::main(args),
        _ => {}
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Local(LocalCommand::Train(args)) => local_train(args),
        Command::Local(LocalCommand::Predict(args)) => local_predict(args),
        Command::Jobs(command) => crate::client::run(cli.client, crate::client::Verb::Jobs(command)),
        Command::Models(command) => crate::client::run(cli.client, crate::client::Verb::Models(command)),
        Command::Versions(command) => crate::client::run(cli.client, crate::client::Verb::Versions(command)),
        Command::Predict(args) => crate::client::run(cli.client, crate::client::Verb::Predict(args)),
        Command::Operations(command) => crate::client::run(cli.client, crate::client::Verb::Operations(command)),
        Command::Config(command) => crate::client::config(&cli.client, command),
        Command::Auth(command) => crate::client::auth(&cli.client, command),
        Command::RayBatchShard { spec } => crate::executor::run_ray_shard(&spec),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "anneal", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

fn local_predict(args: LocalPredictArgs) -> ExitCode {
    let config = match Config::load(None, Overrides { python: args.python, ..Overrides::default() }) {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    let python = config.runtime_python();
    let model = crate::local::LocalModel {
        dir: &args.model_dir,
        framework: args.framework.as_deref(),
        signature_name: args.signature_name.as_deref(),
    };
    crate::local::predict(&model, &args.json_instances, &python)
}

fn local_train(args: LocalTrainArgs) -> ExitCode {
    let config = match Config::load(None, Overrides { python: args.python, ..Overrides::default() }) {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    let (workers, parameter_servers) = if args.distributed {
        (args.worker_count.unwrap_or(2), args.parameter_server_count.unwrap_or(0))
    } else {
        (0, 0)
    };
    crate::local::train(crate::local::LocalTrain {
        package_path: args.package_path,
        module_name: args.module_name,
        job_dir: args.job_dir,
        workers: workers.into(),
        parameter_servers: parameter_servers.into(),
        python: config.runtime_python(),
        args: args.args,
    })
}

fn serve(args: ServeArgs) -> ExitCode {
    let overrides = Overrides {
        addr: args.addr,
        data_dir: args.data_dir,
        database_url: args.database_url,
        log_format: args.log_format,
        log: args.log,
        site_root: args.site_root,
        python: args.python,
        auth: args.no_auth.then_some(false),
    };
    let config = match Config::load(args.config.as_deref(), overrides) {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    if let Err(e) = crate::telemetry::init_logging(config.log_format, &config.log) {
        return fail(e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async move {
        let server = Server::start(config).await?;
        let addr = server.local_addr()?;
        // Tests and scripts read this line to learn the bound port.
        println!("Anneal is listening on http://{addr} (console: http://{addr}/)");
        // Whoever started us may have stopped reading after the first line: a closed stdout is
        // not an error worth dying for.
        let mut stdout = std::io::stdout().lock();
        for line in server.login_hints(addr) {
            let _ = writeln!(stdout, "{line}");
        }
        let _ = stdout.flush();
        drop(stdout);
        server.run().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Prints help and version as clap renders them; any other usage error as its first line (clap's
/// own `error: ...` line) with a pointer to `--help`, and exit code 2.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return if error.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
    }
    // clap's message runs until its blank line and `Usage:` section (a list of missing
    // arguments continues on indented lines): keep it on one line.
    let rendered = error.render().to_string();
    let message: Vec<&str> =
        rendered.lines().take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:")).map(str::trim).collect();
    let message = if message.is_empty() { "error: invalid arguments".to_owned() } else { message.join(" ") };
    eprintln!("{message} (see 'anneal --help')");
    ExitCode::from(2)
}

fn fail(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
