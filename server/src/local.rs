//! `anneal local train`: runs a trainer package's replicas on this machine without a server,
//! through the same launcher the executor uses (same environment: `TF_CONFIG`, `MASTER_*`,
//! `RANK`, `WORLD_SIZE`, ...), streaming their output to the terminal as `gcloud ml-engine local
//! train` does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::executor::{supervise, Environment, Launch, Run, LOG_BUFFER};
use crate::jobs::plan::Replicas;
use crate::jobs::study::DEFAULT_METRIC_TAG;
use crate::jobs::{Ending, TrainingPlan};

/// What to run.
#[derive(Debug)]
pub struct LocalTrain {
    /// The Python package folder (its parent goes on `PYTHONPATH`, as gcloud does).
    pub package_path: PathBuf,
    pub module_name: String,
    pub job_dir: Option<PathBuf>,
    /// Workers besides the master (0 = one replica).
    pub workers: i64,
    pub parameter_servers: i64,
    pub python: PathBuf,
    pub args: Vec<String>,
}

/// Why `anneal local train` could not run the replicas to their end.
#[derive(Debug, thiserror::Error)]
enum LocalError {
    /// A folder a flag names cannot be used.
    #[error("{flag} {}: {source}", .path.display())]
    Folder { flag: &'static str, path: PathBuf, source: std::io::Error },
    /// `--package-path` names something other than a folder.
    #[error("--package-path {} is not a folder", .0.display())]
    NotAFolder(PathBuf),
    /// A folder the run needs of its own cannot be made or found.
    #[error("cannot {action}: {source}")]
    Setup { action: &'static str, source: std::io::Error },
    /// The replicas could not be started or supervised.
    #[error("{0}")]
    Run(String),
}

/// Runs the replicas to the end: exit code 0 when the master succeeded, 1 when a replica failed
/// (the reason on stderr), 130 when interrupted.
pub fn train(job: LocalTrain) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(job)) {
        Ok(Ending::Succeeded) => ExitCode::SUCCESS,
        // The replicas' output is already on the terminal: keep the first line.
        Ok(Ending::Failed(message)) => fail(first_line(&message)),
        Err(error) => fail(first_line(&error.to_string())),
        Ok(Ending::Stopped | Ending::TimedOut) => {
            eprintln!("stopped");
            ExitCode::from(130)
        }
    }
}

/// The first line of a failure, without the pointer to log lines the terminal shows already.
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or("the job failed").trim_end_matches(" Last log lines:")
}

async fn run(job: LocalTrain) -> Result<Ending, LocalError> {
    let folder = |flag, path: &Path| {
        let path = path.to_path_buf();
        move |source| LocalError::Folder { flag, path, source }
    };
    let package = std::fs::canonicalize(&job.package_path).map_err(folder("--package-path", &job.package_path))?;
    if !package.is_dir() {
        return Err(LocalError::NotAFolder(package));
    }
    let parent = package.parent().unwrap_or(Path::new("/")).to_path_buf();
    let job_dir = job
        .job_dir
        .map(|d| {
            std::fs::create_dir_all(&d).map_err(folder("--job-dir", &d))?;
            std::fs::canonicalize(&d).map_err(folder("--job-dir", &d))
        })
        .transpose()?
        .map(crate::storage::Location::Local);
    let scratch = tempfile::Builder::new()
        .prefix("anneal-local-")
        .tempdir()
        .map_err(|source| LocalError::Setup { action: "create a scratch folder", source })?;
    let cwd =
        std::env::current_dir().map_err(|source| LocalError::Setup { action: "read the current folder", source })?;
    let replicas = Replicas { workers: job.workers, parameter_servers: job.parameter_servers, ..Replicas::default() };
    let tf_config_job = serde_json::json!({
        "scaleTier": if job.workers + job.parameter_servers > 0 { "CUSTOM" } else { "BASIC" },
        "pythonModule": job.module_name,
        "args": job.args,
    });
    let plan = TrainingPlan {
        packages: vec![package.into()],
        module: job.module_name,
        args: job.args,
        job_dir: job_dir.clone(),
        replicas,
        max_running_time: None,
        metric_tag: DEFAULT_METRIC_TAG.into(),
        tf_config_job,
        study: None,
    };
    let python_path = [parent];
    let launch = Launch {
        plan: &plan,
        env: Environment {
            python: &job.python,
            job_id: "local",
            tag: None,
            python_path: &python_path,
            cwd: Some(&cwd),
            kill_grace: Duration::from_secs(5),
            // The terminal shows what the replica prints: lines are cut only far beyond any log line.
            max_log_line: 16 << 20,
            // `anneal local train` runs replicas as the calling user, as any program it starts:
            // the code is the caller's own, on the caller's machine.
            sandbox: std::sync::Arc::new(crate::sandbox::Sandbox::off()),
            project: "local",
        },
        run: Run { dir: scratch.path().to_path_buf(), job_dir, ..Run::default() },
    };
    let several = plan.replicas.all().len() > 1;
    let (log, mut lines) = tokio::sync::mpsc::channel::<(String, String)>(LOG_BUFFER);
    let printer = tokio::spawn(async move {
        while let Some((replica, text)) = lines.recv().await {
            if several {
                println!("[{replica}] {text}");
            } else {
                println!("{text}");
            }
        }
    });
    let token = CancellationToken::new();
    let interrupt = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(term) => {
                    term.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminated => {}
        }
        interrupt.cancel();
    });
    let ending = supervise(&launch, log, &token).await.map_err(|e| e.to_string());
    let _ = printer.await;
    ending.map_err(|e| LocalError::Run(e.to_string()))
}

/// The model `anneal local predict` runs: its folder, `--framework` and `--signature-name`.
pub struct LocalModel<'a> {
    pub dir: &'a Path,
    pub framework: Option<&'a str>,
    pub signature_name: Option<&'a str>,
}

/// `anneal local predict`: loads the model's folder (TorchScript in this process; scikit-learn,
/// XGBoost and TensorFlow models in one Python worker process, `framework` or detected from the
/// files; a TensorFlow model with the signature named, or its default) and prints one prediction
/// per instance of `instances` (JSON lines; `-` for stdin). Exit code 1 with the reason on a bad
/// model or instance.
pub fn predict(model: &LocalModel<'_>, instances: &Path, python: &Path) -> ExitCode {
    let LocalModel { dir: model_dir, framework, signature_name } = *model;
    let text = if instances == Path::new("-") {
        let mut text = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
            return fail(format!("cannot read stdin: {e}"));
        }
        text
    } else {
        match std::fs::read_to_string(instances) {
            Ok(text) => text,
            Err(e) => return fail(format!("--json-instances {}: {e}", instances.display())),
        }
    };
    let parsed: Result<Vec<serde_json::Value>, _> =
        text.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect();
    let instances = match parsed {
        Ok(instances) => instances,
        Err(e) => return fail(format!("--json-instances: not JSON lines: {e}")),
    };
    let framework = match framework.map(|f| f.trim().to_ascii_uppercase().replace('-', "_")) {
        None => crate::serving::python_framework(model_dir),
        Some(f) if f == crate::serving::frameworks::PYTORCH => None,
        Some(f) => match [
            crate::serving::frameworks::TENSORFLOW,
            crate::serving::frameworks::SCIKIT_LEARN,
            crate::serving::frameworks::XGBOOST,
        ]
        .into_iter()
        .find(|known| *known == f)
        {
            Some(known) => Some(known),
            None => return fail(format!("--framework {f}: use tensorflow, scikit-learn, xgboost or pytorch")),
        },
    };
    if let Some(framework) = framework {
        return predict_python(model_dir, instances, framework, signature_name, python);
    }
    if !matches!(signature_name, None | Some("" | "serving_default")) {
        return fail("--signature-name: a TorchScript model has one signature, serving_default");
    }
    let model = match crate::serving::model::LoadedModule::load(model_dir, true) {
        Ok(model) => model,
        Err(e) => return fail(format!("--model-dir {}: {e}", model_dir.display())),
    };
    let batch = match crate::serving::instances::Batch::from_instances(&instances, &model.signature.inputs) {
        Ok(batch) => batch,
        Err(e) => return fail(e),
    };
    let _guard = tch::no_grad_guard();
    match model.forward(&batch) {
        Ok(predictions) => {
            for prediction in predictions {
                println!("{prediction}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("Prediction failed: {e}")),
    }
}

/// `anneal local predict` of a Python framework's model: one worker process, all instances in
/// one pass.
fn predict_python(
    model_dir: &Path,
    instances: Vec<serde_json::Value>,
    framework: &str,
    signature_name: Option<&str>,
    python: &Path,
) -> ExitCode {
    let dir = model_dir.canonicalize().unwrap_or_else(|_| model_dir.to_path_buf());
    let spec = crate::serving::python_spec(python, &dir, framework, 1);
    let mut predictor = match crate::serving::python::Predictor::start("local", spec) {
        Ok((predictor, _)) => predictor.with_signature(signature_name.map(str::to_owned)),
        Err(e) => return fail(format!("--model-dir {}: {e}", model_dir.display())),
    };
    match predictor.predict(instances) {
        Ok(Ok(predictions)) => {
            for prediction in predictions {
                println!("{prediction}");
            }
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => fail(format!("Prediction failed: {error}")),
        Err(crash) => fail(format!("Prediction failed: {crash}")),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
