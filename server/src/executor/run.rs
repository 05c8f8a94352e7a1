//! Running one job: prepare its packages, start every replica in its own process group with the
//! ML Engine and PyTorch-distributed environment, supervise them, and record how the job ended.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{isolation, logs, metrics, work_dir, ExecutorConfig, Identity};
use crate::control::{training_spec, TrainingInput, TrainingSpec};
use crate::names::{JobName, ProjectId};
use crate::storage::LocalStorage;
use crate::store::{JobRecord, JobState, Store};

type Tail = Arc<Mutex<VecDeque<String>>>;

/// How a job's run ended.
pub enum Ending {
    Succeeded,
    Failed(String),
    Stopped,
    TimedOut,
}

/// Runs `job` to its end and records the outcome.
pub async fn run_job(
    store: &Store,
    storage: &LocalStorage,
    config: &ExecutorConfig,
    name: &JobName,
    job: JobRecord,
    gpus: &[usize],
    token: CancellationToken,
) {
    let ending = match prepare_and_run(store, storage, config, name, &job, gpus, &token).await {
        Ok(ending) => ending,
        Err(message) => Ending::Failed(message),
    };
    let tuning = job.input.get("hyperparameters").is_some_and(|h| h.get("params").is_some());
    if tuning {
        // The study keeps trainingOutput up to date itself.
    } else if let Err(e) = record_training_output(store, storage, name, &job).await {
        tracing::warn!(job.name = %name, error = %e, "cannot record the job's training output");
    }
    record_ending(store, name, ending).await;
}

/// Moves the job to the end state `ending` implies.
pub(super) async fn record_ending(store: &Store, name: &JobName, ending: Ending) {
    let all = [JobState::Preparing, JobState::Running, JobState::Cancelling];
    let result = match ending {
        Ending::Succeeded => store.transition_job(name, &[JobState::Running], JobState::Succeeded, None).await,
        Ending::Failed(message) => store.transition_job(name, &all, JobState::Failed, Some(&message)).await,
        Ending::TimedOut => {
            store
                .transition_job(
                    name,
                    &all,
                    JobState::Cancelled,
                    Some("Cancelled: the job ran longer than scheduling.maxRunningTime."),
                )
                .await
        }
        Ending::Stopped => match store.get_job(name).await {
            Ok(Some(current)) if current.state == JobState::Cancelling => {
                store.transition_job(name, &all, JobState::Cancelled, Some("Cancelled by request.")).await
            }
            _ => {
                store
                    .transition_job(
                        name,
                        &all,
                        JobState::Failed,
                        Some("The server stopped while the job ran; submit it again."),
                    )
                    .await
            }
        },
    };
    if let Err(e) = result {
        tracing::error!(job.name = %name, error = %e, "cannot record how a job ended");
    }
}

async fn prepare_and_run(
    store: &Store,
    storage: &LocalStorage,
    config: &ExecutorConfig,
    name: &JobName,
    job: &JobRecord,
    gpus: &[usize],
    token: &CancellationToken,
) -> Result<Ending, String> {
    let input: TrainingInput =
        serde_json::from_value(job.input.clone()).map_err(|e| format!("stored job is unreadable: {e}"))?;
    let spec = training_spec(storage, &name.project, &input).map_err(|e| e.to_string())?;
    let identity = config.isolation.identity(name.project.as_str())?;
    let dir = work_dir(storage, name);
    std::fs::create_dir_all(dir.join("replicas")).map_err(|e| format!("cannot create the job's directory: {e}"))?;
    if identity.is_some() {
        // The job's folder is the server's: replicas reach their own folders in it, nothing else.
        for folder in [dir.parent().unwrap_or(&dir), &dir, &dir.join("replicas")] {
            isolation::server_folder(folder)?;
        }
        for file in ["job.log", "metrics.jsonl"] {
            isolation::private_file(&dir.join(file))?;
        }
    }
    let (log, writer) = logs::writer(&dir.join("job.log")).map_err(|e| format!("cannot open the job log: {e}"))?;
    if let Some(job_dir) = &spec.job_dir {
        let made = match &identity {
            Some(id) => isolation::make_job_dir(job_dir, storage.root(), id),
            None => std::fs::create_dir_all(job_dir)
                .map_err(|e| format!("cannot create the job dir {}: {e}", job_dir.display())),
        };
        if let Err(message) = made {
            let _ = log.send(("service".into(), message.clone()));
            drop(log);
            let _ = writer.await;
            return Err(message);
        }
    }

    let prepared = tokio::select! {
        prepared = prepare(storage, &config.python, &name.project, identity.as_ref(), &spec.packages, &log) => Some(prepared),
        () = token.cancelled() => None,
    };
    let python_path = match prepared {
        Some(Ok(path)) => path,
        Some(Err(message)) => {
            drop(log);
            let _ = writer.await;
            return Err(message);
        }
        None => return Ok(Ending::Stopped),
    };
    if !store.transition_job(name, &[JobState::Preparing], JobState::Running, None).await.map_err(|e| e.to_string())? {
        return Ok(Ending::Stopped);
    }
    let launch = Launch {
        python: &config.python,
        job_id: &name.job,
        tag: Some(replica_tag(storage, name)),
        training_input: &job.input,
        spec: &spec,
        dir: &dir,
        cwd: None,
        python_path: &python_path,
        gpus,
        kill_grace: config.kill_grace,
        max_log_line: config.max_log_line,
        identity: identity.clone(),
        label: String::new(),
        trial: None,
        series: None,
        extra_args: Vec::new(),
    };
    if let Some(study) = &spec.study {
        let ending = super::study::run_study(store, name, job, study, &launch, log, token).await;
        let _ = writer.await;
        return ending;
    }
    let ending = supervise(&launch, log, token).await;
    let _ = writer.await;
    ending
}

/// The metric tag ML Engine reads when a job names none.
const DEFAULT_METRIC_TAG: &str = "training/hptuning/metric";

/// Records `trainingOutput`: replica hours used (`consumedMLUnits`) and the master's last report of
/// the `hyperparameterMetricTag` (the job's, else the default one) as `finalMetric`, when it made
/// one.
async fn record_training_output(
    store: &Store,
    storage: &LocalStorage,
    name: &JobName,
    job: &JobRecord,
) -> crate::Result<()> {
    let Some(current) = store.get_job(name).await? else { return Ok(()) };
    let series = work_dir(storage, name).join("metrics.jsonl");
    let points = tokio::task::spawn_blocking(move || metrics::read_series(&series))
        .await
        .map_err(crate::Error::internal)?
        .map_err(crate::Error::internal)?;
    let hours = current.start_time.map_or(0.0, |start| {
        (chrono::Utc::now() - start).num_milliseconds().max(0) as f64 / 3_600_000.0 * job.replicas as f64
    });
    let mut output = serde_json::json!({ "consumedMLUnits": (hours * 1e6).round() / 1e6 });
    let tag = job
        .input
        .pointer("/hyperparameters/hyperparameterMetricTag")
        .and_then(|t| t.as_str())
        .unwrap_or(DEFAULT_METRIC_TAG);
    let last = points.iter().filter(|p| p.tag == tag && p.replica == "master-replica-0").last();
    if let Some(point) = last {
        output["hyperparameterMetricTag"] = tag.into();
        output["finalMetric"] =
            serde_json::json!({ "trainingStep": point.step.to_string(), "objectiveValue": point.value });
    }
    store.set_job_output(name, &output).await
}

/// The value of `ANNEAL_JOB` in a job's replicas: names the job and this server's storage, so
/// leftover replicas can be found after a crash without touching another server's.
pub fn replica_tag(storage: &LocalStorage, name: &JobName) -> String {
    format!("{}|{name}", storage.root().display())
}

/// Sends SIGKILL to every process (and its process group) whose `ANNEAL_JOB` is one of `tags`.
/// Returns how many processes matched.
pub fn kill_leftovers(tags: &std::collections::HashSet<String>) -> usize {
    if tags.is_empty() {
        return 0;
    }
    let mut matched = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let tagged = environ
            .split(|b| *b == 0)
            .filter_map(|var| var.strip_prefix(b"ANNEAL_JOB="))
            .any(|value| tags.contains(String::from_utf8_lossy(value).as_ref()));
        if tagged {
            matched += 1;
            let pid = Pid::from_raw(pid);
            if let Ok(group) = nix::unistd::getpgid(Some(pid)) {
                let _ = killpg(group, Signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
    }
    matched
}

/// Installs the packages (once per distinct set and project: cached by their content under
/// `storage/envs/<project>/`, so no project's trainer can change what another project imports)
/// and returns the PYTHONPATH entries that make them importable. With an `identity`, pip runs as
/// it, into a folder it owns, and the finished environment is sealed: root's and read-only, so
/// later replicas, of this project too, can import it but not change it.
async fn prepare(
    storage: &LocalStorage,
    python: &Path,
    project: &ProjectId,
    identity: Option<&Identity>,
    packages: &[PathBuf],
    log: &mpsc::UnboundedSender<(String, String)>,
) -> Result<Vec<PathBuf>, String> {
    let mut path = Vec::new();
    let mut installable = Vec::new();
    for package in packages {
        let is_project = package.join("setup.py").exists() || package.join("pyproject.toml").exists();
        if package.is_dir() && !is_project {
            path.push(package.clone());
        } else {
            installable.push(package.clone());
        }
    }
    if installable.is_empty() {
        return Ok(path);
    }
    let key = fingerprint(&installable);
    let envs = storage.root().join("envs").join(project.as_str());
    std::fs::create_dir_all(&envs).map_err(|e| format!("cannot create {}: {e}", envs.display()))?;
    if identity.is_some() {
        isolation::server_folder(&envs)?;
    }
    let env = envs.join(format!("{key:016x}"));
    if env.join(".complete").exists() {
        let _ = log.send(("service".into(), format!("Using the cached environment for these packages ({key:016x}).")));
        path.insert(0, env);
        return Ok(path);
    }
    let _ = log.send(("service".into(), "Installing the trainer packages with pip.".into()));
    let fail = |e: std::io::Error| format!("cannot create a folder to install the packages in: {e}");
    let staging = tempfile::Builder::new().prefix(&format!(".{key:016x}-")).tempdir_in(&envs).map_err(fail)?;
    // pip builds a source folder in place; build a copy so the user's folder stays clean.
    let sources = tempfile::Builder::new().prefix(".src-").tempdir_in(&envs).map_err(fail)?;
    let home = sources.path().join(".home");
    std::fs::create_dir_all(home.join("tmp")).map_err(fail)?;
    let mut targets = Vec::with_capacity(installable.len());
    let mut copies = Vec::new();
    for (i, package) in installable.iter().enumerate() {
        if !package.is_dir() {
            targets.push(package.clone());
        } else if identity.is_some() {
            // Copied below as the replica's user, so the copy reads only what that user may
            // (not another project's job dir named as a package).
            copies.push((package.clone(), sources.path().join(i.to_string())));
            targets.push(sources.path().join(i.to_string()));
        } else {
            let relative = sources.path().strip_prefix(storage.root()).unwrap_or(sources.path()).join(i.to_string());
            targets.push(storage.copy_into(project, package, &relative)?);
        }
    }
    let mut command = Command::new(python);
    command
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-cache-dir",
            "--no-deps",
            "--no-build-isolation",
            "--target",
        ])
        .arg(staging.path())
        .args(&targets)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(id) = identity {
        let (tree, owner) = (sources.path().to_path_buf(), id.clone());
        tokio::task::spawn_blocking(move || isolation::hand_over_tree(&tree, &owner))
            .await
            .map_err(|e| e.to_string())??;
        isolation::hand_over(staging.path(), id)?;
        for (package, copy) in copies {
            let mut cp = Command::new("cp");
            cp.arg("-R").arg("--").arg(&package).arg(&copy).stdin(Stdio::null());
            id.apply(&mut cp, &home);
            let out = cp.output().await.map_err(|e| format!("cannot run cp to copy the package: {e}"))?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(format!(
                    "cannot copy the package {} as the replica user: {}",
                    package.display(),
                    stderr.lines().last().unwrap_or_default()
                ));
            }
        }
        id.apply(&mut command, &home);
    }
    let child = command.spawn().map_err(|e| format!("cannot run {} -m pip: {e}", python.display()))?;
    let group = child.id();
    let output = child.wait_with_output().await.map_err(|e| format!("pip did not finish: {e}"));
    // Whatever the build started and left behind goes with it.
    if let Some(group) = group {
        let _ = killpg(Pid::from_raw(group as i32), Signal::SIGKILL);
    }
    drop(sources);
    let output = output?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last: Vec<&str> = stderr.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(format!(
            "Installing the packages failed (pip exit {}): {}",
            output.status.code().unwrap_or(-1),
            last.join("\n")
        ));
    }
    let staging = staging.keep();
    if identity.is_some() {
        let tree = staging.clone();
        let sealed = tokio::task::spawn_blocking(move || isolation::seal(&tree)).await.map_err(|e| e.to_string());
        if let Err(message) = sealed.and_then(|sealed| sealed) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(message);
        }
    }
    let finish = || -> std::io::Result<()> {
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755))?;
        std::fs::write(staging.join(".complete"), b"")
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!("cannot finish the package environment: {e}"));
    }
    if std::fs::rename(&staging, &env).is_err() {
        // Another job installed the same set meanwhile; use theirs.
        let _ = std::fs::remove_dir_all(&staging);
    }
    path.insert(0, env);
    Ok(path)
}

/// A stable hash of the packages' paths, sizes and modification times (FNV-1a).
fn fingerprint(packages: &[PathBuf]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    let mut files = Vec::new();
    for package in packages {
        collect_files(package, &mut files);
    }
    files.sort();
    for file in files {
        feed(file.to_string_lossy().as_bytes());
        if let Ok(meta) = std::fs::metadata(&file) {
            feed(&meta.len().to_le_bytes());
            let modified =
                meta.modified().ok().and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
            feed(&modified.as_nanos().to_le_bytes());
        }
    }
    hash
}

/// The files that make up a package, leaving out what building it leaves behind (pip builds a
/// folder in place: `build/`, `*.egg-info/`, `__pycache__/`).
fn collect_files(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if matches!(name.as_str(), "build" | "dist" | "__pycache__") || name.ends_with(".egg-info") {
                continue;
            }
            collect_files(&entry.path(), files);
        }
    } else {
        files.push(path.to_path_buf());
    }
}

struct Replica {
    task: String,
    child: Child,
}

/// How to start one job's replicas; the server and `anneal local train` both use it.
pub struct Launch<'a> {
    /// The runtime Python.
    pub python: &'a Path,
    /// `CLOUD_ML_JOB_ID`.
    pub job_id: &'a str,
    /// `ANNEAL_JOB`, which lets a restarted server find leftover replicas.
    pub tag: Option<String>,
    /// The job's TrainingInput, `TF_CONFIG.job`.
    pub training_input: &'a serde_json::Value,
    pub spec: &'a TrainingSpec,
    /// Holds `replicas/<task>/` (each replica's working directory and metrics file) and
    /// `metrics.jsonl`.
    pub dir: &'a Path,
    /// Runs every replica here instead of its own directory.
    pub cwd: Option<&'a Path>,
    /// `PYTHONPATH` entries that make the packages importable.
    pub python_path: &'a [PathBuf],
    /// GPU device numbers the job holds, handed out to replicas in order.
    pub gpus: &'a [usize],
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// The longest replica output line kept, in bytes (longer ones are cut).
    pub max_log_line: usize,
    /// Who the replicas run as (their project's replica uid); `None`: the server's own user.
    pub identity: Option<Identity>,
    /// Prefixes replica names in logs and metrics (`trial-3/` for a tuning trial).
    pub label: String,
    /// The tuning trial this run is (`CLOUD_ML_TRIAL_ID`, `TF_CONFIG.task.trial`).
    pub trial: Option<String>,
    /// Where collected metrics go (default: `<dir>/metrics.jsonl`).
    pub series: Option<PathBuf>,
    /// Extra trainer arguments (a trial's `--name=value`), after `spec.args`.
    pub extra_args: Vec<String>,
}

/// Starts every replica and waits for the job's end.
pub async fn supervise(
    launch: &Launch<'_>,
    log: mpsc::UnboundedSender<(String, String)>,
    token: &CancellationToken,
) -> Result<Ending, String> {
    let Launch { spec, dir, python_path, .. } = launch;
    let replicas = spec.replicas.all();
    let ports: Vec<u16> = replicas.iter().map(|_| free_port()).collect::<Result<_, _>>()?;
    let address = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let pool = |kind: &str| -> Vec<String> {
        replicas.iter().enumerate().filter(|(_, (k, _))| *k == kind).map(|(i, _)| address(i)).collect()
    };
    let mut cluster = serde_json::Map::new();
    cluster.insert("master".into(), pool("master").into());
    if spec.replicas.workers > 0 {
        cluster.insert("worker".into(), pool("worker").into());
    }
    if spec.replicas.parameter_servers > 0 {
        cluster.insert("ps".into(), pool("ps").into());
    }
    let world_size = 1 + spec.replicas.workers;
    let tail: Tail = Arc::default();
    let mut children = Vec::new();
    let mut gpus = launch.gpus.iter();
    for (kind, index) in &replicas {
        let task = format!("{kind}-replica-{index}");
        let own = dir.join("replicas").join(&task);
        std::fs::create_dir_all(&own).map_err(|e| format!("cannot create {}: {e}", own.display()))?;
        if let Some(id) = &launch.identity {
            id.make_home(&own)?;
        }
        let mut tf_config = serde_json::json!({
            "cluster": cluster,
            "task": {"type": kind, "index": index},
            "job": launch.training_input,
            "environment": "cloud",
        });
        if let Some(trial) = &launch.trial {
            tf_config["task"]["trial"] = trial.clone().into();
        }
        let devices: Vec<String> =
            gpus.by_ref().take(spec.replicas.gpus_of(kind).max(0) as usize).map(usize::to_string).collect();
        let mut command = Command::new(launch.python);
        command.arg("-m").arg(&spec.module).args(&spec.args).args(&launch.extra_args);
        if let Some(job_dir) = &spec.job_dir {
            command.arg(format!("--job-dir={}", job_dir.display()));
        }
        let rank = match *kind {
            "master" => Some(0),
            "worker" => Some(index + 1),
            _ => None,
        };
        command
            .current_dir(launch.cwd.unwrap_or(&own))
            .env("TF_CONFIG", tf_config.to_string())
            .env("CLOUD_ML_JOB_ID", launch.job_id)
            .env("CLOUD_ML_HP_METRIC_FILE", own.join("hypertune.metrics"))
            // A replica sees the GPUs it was given and no others.
            .env("CUDA_VISIBLE_DEVICES", devices.join(","))
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", ports[0].to_string())
            .env("WORLD_SIZE", world_size.to_string())
            .env("LOCAL_RANK", "0")
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONPATH", std::env::join_paths(python_path.iter()).map_err(|e| e.to_string())?)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(rank) = rank {
            command.env("RANK", rank.to_string());
        }
        if let Some(id) = &launch.identity {
            id.apply(&mut command, &own);
        }
        if let Some(tag) = &launch.tag {
            command.env("ANNEAL_JOB", tag);
        }
        if let Some(trial) = &launch.trial {
            command.env("CLOUD_ML_TRIAL_ID", trial);
        }
        let mut child = command.spawn().map_err(|e| format!("cannot start {task}: {e}"))?;
        let shown = format!("{}{task}", launch.label);
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(logs::pump(stdout, shown.clone(), log.clone(), tail.clone(), launch.max_log_line));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(logs::pump(stderr, shown, log.clone(), tail.clone(), launch.max_log_line));
        }
        children.push(Replica { task, child });
    }
    drop(log);

    let (exits, mut exited) = mpsc::unbounded_channel::<(usize, std::io::Result<ExitStatus>)>();
    let pids: Vec<Option<u32>> = children.iter().map(|r| r.child.id()).collect();
    let tasks: Vec<String> = children.iter().map(|r| r.task.clone()).collect();
    let mut waiters = Vec::new();
    for (i, mut replica) in children.into_iter().enumerate() {
        let exits = exits.clone();
        waiters.push(tokio::spawn(async move {
            let status = replica.child.wait().await;
            let _ = exits.send((i, status));
        }));
    }
    drop(exits);
    let deadline = spec.max_running_time.map(|d| tokio::time::Instant::now() + d);
    let mut alive = tasks.len();
    let metric_files: Vec<(String, PathBuf)> = tasks
        .iter()
        .map(|t| (format!("{}{t}", launch.label), dir.join("replicas").join(t).join("hypertune.metrics")))
        .collect();
    let series = launch.series.clone().unwrap_or_else(|| dir.join("metrics.jsonl"));
    let mut collector = metrics::Collector::default();
    let mut collect_tick = tokio::time::interval(Duration::from_millis(500));
    let ending = loop {
        let timeout = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = collect_tick.tick() => {
                collector.collect(&metric_files, &series);
                continue;
            }
            () = token.cancelled() => break Ending::Stopped,
            () = timeout => break Ending::TimedOut,
            event = exited.recv() => {
                let Some((i, status)) = event else { break Ending::Failed("every replica stopped without a status".into()) };
                alive -= 1;
                let status = status.map_err(|e| e.to_string())?;
                if status.success() {
                    if i == 0 { break Ending::Succeeded; }
                    if alive == 0 { break Ending::Failed("the master replica did not finish".into()); }
                    continue;
                }
                // Let the pumps forward the last lines before reading the tail.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let last = tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect::<Vec<_>>().join("\n");
                break Ending::Failed(format!("Replica {}{} exited with {}. Last log lines:\n{last}", launch.label, tasks[i], describe(status)));
            }
        }
    };
    stop_all(&pids, launch.kill_grace, &mut exited, alive).await;
    collector.collect(&metric_files, &series);
    for waiter in waiters {
        let _ = waiter.await;
    }
    Ok(ending)
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => "an unknown status".into(),
    }
}

/// SIGTERM to every replica's process group, SIGKILL to those still alive after `grace`.
async fn stop_all(
    pids: &[Option<u32>],
    grace: Duration,
    exited: &mut mpsc::UnboundedReceiver<(usize, std::io::Result<ExitStatus>)>,
    mut alive: usize,
) {
    let signal_all = |signal: Signal| {
        for pid in pids.iter().flatten() {
            let _ = killpg(Pid::from_raw(*pid as i32), signal);
        }
    };
    signal_all(Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while alive > 0 {
        match tokio::time::timeout_at(deadline, exited.recv()).await {
            Ok(Some(_)) => alive -= 1,
            Ok(None) => break,
            Err(_) => break,
        }
    }
    // Children of replicas may outlive them in the group: the group gets SIGKILL either way.
    signal_all(Signal::SIGKILL);
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}
