//! Starting one run of a training plan (the job, or one tuning trial): every replica in its own
//! process group with the ML Engine and PyTorch-distributed environment (`TF_CONFIG`,
//! `CLOUD_ML_*`, `MASTER_ADDR`/`MASTER_PORT`, `RANK`, `WORLD_SIZE`, `CUDA_VISIBLE_DEVICES`), then
//! watching it to its end: the master's exit, a failed replica, a cancel or the running-time
//! limit. `anneal local train` uses the same launcher.
//!
//! Every task a run starts is owned and joined before it returns: the output pumps of each
//! replica (so a failed replica's last lines are all read before they are reported, without
//! waiting on a timer), the exit waiters, and the metric collection, which reads files on a
//! blocking thread.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{logs, metrics, RunError};
use crate::jobs::plan::{Pool, TrainingPlan};
use crate::jobs::Ending;
use crate::sandbox::{Group, Limits, Sandbox};

/// Where a run's output lines go: `(replica, line)`, bounded (a replica that prints faster than
/// the log is written waits).
pub type LogSender = mpsc::Sender<(String, String)>;

/// Lines of a job's log a [`LogSender`]'s channel holds before senders wait.
pub const LOG_BUFFER: usize = 1024;

/// How long a replica's output pumps may take to finish after it exited (a process it left
/// behind may hold its pipes open).
const PUMP_GRACE: Duration = Duration::from_secs(2);

type Tail = Arc<Mutex<VecDeque<String>>>;

/// What every run of one job shares.
#[derive(Clone, Debug)]
pub struct Environment<'a> {
    /// The runtime Python.
    pub python: &'a Path,
    /// `CLOUD_ML_JOB_ID`.
    pub job_id: &'a str,
    /// `ANNEAL_JOB`, which lets a restarted server find leftover replicas.
    pub tag: Option<String>,
    /// `PYTHONPATH` entries that make the packages importable.
    pub python_path: &'a [PathBuf],
    /// Runs every replica here instead of its own directory.
    pub cwd: Option<&'a Path>,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// The longest replica output line kept, in bytes (longer ones are cut).
    pub max_log_line: usize,
    /// Where the replicas run: each in its own cell of the project's (see [`crate::sandbox`]).
    pub sandbox: Arc<Sandbox>,
    /// The project the job belongs to.
    pub project: &'a str,
}

/// One run: the job itself, or one trial of its study.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Holds `replicas/<task>/` (each replica's working directory and metrics file) and
    /// `metrics.jsonl`.
    pub dir: PathBuf,
    /// `--job-dir` (a trial's own subfolder of the job's): a local folder or an `s3://` URI.
    pub job_dir: Option<crate::storage::Location>,
    /// More environment variables of every replica: the `AWS_*` ones that reach an `s3://` job
    /// dir's bucket.
    pub env: Vec<(String, String)>,
    /// GPU device numbers the run holds, handed out to replicas in order.
    pub gpus: Vec<usize>,
    /// Prefixes replica names in logs and metrics (`trial-3/` for a tuning trial).
    pub label: String,
    /// The tuning trial this run is (`CLOUD_ML_TRIAL_ID`, `TF_CONFIG.task.trial`).
    pub trial: Option<String>,
    /// Where collected metrics go (default: `<dir>/metrics.jsonl`).
    pub series: Option<PathBuf>,
    /// Extra trainer arguments (a trial's `--name=value`), after the plan's.
    pub extra_args: Vec<String>,
}

/// How to start one run of a training plan.
#[derive(Clone, Debug)]
pub struct Launch<'a> {
    pub plan: &'a TrainingPlan,
    pub env: Environment<'a>,
    pub run: Run,
}

/// Processes and threads one replica may run at once (its control group's `pids.max`, as root):
/// enough for libtorch's threads and data loader workers, not for a fork bomb.
const REPLICA_PIDS: u64 = 4096;

/// A started replica and the tasks forwarding its output.
struct Replica {
    task: String,
    child: Child,
    pumps: Vec<JoinHandle<()>>,
    /// Its limits, where the host sets them.
    group: Option<Group>,
}

/// Starts every replica and waits for the run's end.
pub async fn supervise(launch: &Launch<'_>, log: LogSender, token: &CancellationToken) -> Result<Ending, RunError> {
    let replicas = launch.plan.replicas.all();
    let ports: Vec<u16> = replicas.iter().map(|_| free_port()).collect::<Result<_, _>>()?;
    let cluster = cluster(&replicas, &ports);
    let tail: Tail = Arc::default();
    let mut gpus = launch.run.gpus.iter();
    let mut started = Vec::with_capacity(replicas.len());
    for &(pool, index) in &replicas {
        let devices: Vec<usize> =
            gpus.by_ref().take(launch.plan.replicas.gpus_of(pool).max(0) as usize).copied().collect();
        let replica = start_replica(launch, &cluster, &ports, (pool, index), &devices, &log, &tail).await?;
        started.push(replica);
    }
    drop(log);
    watch(launch, started, &tail, token).await
}

/// `TF_CONFIG.cluster`: every pool's replica addresses.
fn cluster(replicas: &[(Pool, i64)], ports: &[u16]) -> serde_json::Map<String, serde_json::Value> {
    let mut cluster = serde_json::Map::new();
    for pool in [Pool::Master, Pool::Worker, Pool::ParameterServer] {
        let addresses: Vec<String> = replicas
            .iter()
            .zip(ports)
            .filter(|((p, _), _)| *p == pool)
            .map(|(_, port)| format!("127.0.0.1:{port}"))
            .collect();
        if pool == Pool::Master || !addresses.is_empty() {
            cluster.insert(pool.as_str().into(), addresses.into());
        }
    }
    cluster
}

/// Starts one replica with its environment and its output pumps.
async fn start_replica(
    launch: &Launch<'_>,
    cluster: &serde_json::Map<String, serde_json::Value>,
    ports: &[u16],
    (pool, index): (Pool, i64),
    devices: &[usize],
    log: &LogSender,
    tail: &Tail,
) -> Result<Replica, RunError> {
    let (plan, env, run) = (launch.plan, &launch.env, &launch.run);
    let task = format!("{}-replica-{index}", pool.as_str());
    let own = run.dir.join("replicas").join(&task);
    let folder = own.clone();
    tokio::task::spawn_blocking(move || std::fs::create_dir_all(&folder))
        .await?
        .map_err(RunError::io("create", &own))?;
    // A named machine type sizes the replica's memory and CPUs; any replica's processes are
    // counted.
    let machine = plan.machine_of(pool);
    let limits =
        Limits { memory: machine.memory, pids: Some(REPLICA_PIDS), cpus: machine.memory.map(|_| machine.cpus) };
    let mut cell = env.sandbox.cell(env.project, Some(own.clone())).await?.grace(env.kill_grace).limit(limits);
    for folder in env.python_path {
        cell = cell.read(folder);
    }
    // The run's job dir, and the job's: a tuning trial's is a subfolder of the job's that its
    // trainer creates.
    for job_dir in [&run.job_dir, &plan.job_dir] {
        if let Some(crate::storage::Location::Local(job_dir)) = job_dir {
            cell = cell.write(job_dir);
        }
    }
    if let Some(cwd) = env.cwd {
        cell = cell.write(cwd);
    }
    let task_config = match &run.trial {
        Some(trial) => serde_json::json!({"type": pool.as_str(), "index": index, "trial": trial}),
        None => serde_json::json!({"type": pool.as_str(), "index": index}),
    };
    let tf_config = serde_json::json!({
        "cluster": cluster,
        "task": task_config,
        "job": plan.tf_config_job,
        "environment": "cloud",
    });
    let devices: Vec<String> = devices.iter().map(usize::to_string).collect();
    let world_size = 1 + plan.replicas.workers;
    let group_name: String = format!("{}-{}-{}-{}{task}", std::process::id(), env.project, env.job_id, run.label)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    if env.python.is_absolute() && !env.python.exists() {
        // Said by the server, as an unconfined start would, not by the launcher inside the job.
        return Err(RunError::Spawn { program: task, source: std::io::Error::from_raw_os_error(nix::libc::ENOENT) });
    }
    let group = cell.group(&group_name)?;
    let mut command = Command::from(cell.command_in(env.python, group.as_ref())?);
    command.arg("-m").arg(&plan.module).args(&plan.args).args(&run.extra_args);
    if let Some(job_dir) = &run.job_dir {
        command.arg(format!("--job-dir={job_dir}"));
    }
    let python_path = std::env::join_paths(env.python_path.iter())
        .map_err(|e| RunError::Storage(format!("a package path cannot be on PYTHONPATH: {e}")))?;
    command
        .current_dir(env.cwd.unwrap_or(&own))
        .env("TF_CONFIG", tf_config.to_string())
        .env("CLOUD_ML_JOB_ID", env.job_id)
        .env("CLOUD_ML_HP_METRIC_FILE", own.join("hypertune.metrics"))
        // A replica sees the GPUs it was given and no others.
        .env("CUDA_VISIBLE_DEVICES", devices.join(","))
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", ports[0].to_string())
        .env("WORLD_SIZE", world_size.to_string())
        .env("LOCAL_RANK", "0")
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONPATH", python_path)
        .envs(run.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let rank = match pool {
        Pool::Master => Some(0),
        Pool::Worker => Some(index + 1),
        Pool::ParameterServer => None,
    };
    if let Some(rank) = rank {
        command.env("RANK", rank.to_string());
    }
    if let Some(tag) = &env.tag {
        command.env("ANNEAL_JOB", tag);
    }
    if let Some(trial) = &run.trial {
        command.env("CLOUD_ML_TRIAL_ID", trial);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(source) => {
            if let Some(group) = &group {
                group.remove();
            }
            return Err(RunError::Spawn { program: task.clone(), source });
        }
    };
    if let (Some(group), Some(pid)) = (&group, child.id()) {
        if let Err(e) = group.enter(pid) {
            let _ = child.start_kill();
            group.remove();
            return Err(RunError::Sandbox(crate::sandbox::SandboxError::Cgroup(e)));
        }
    }
    let shown = format!("{}{task}", run.label);
    let mut pumps = Vec::with_capacity(2);
    if let Some(stdout) = child.stdout.take() {
        pumps.push(tokio::spawn(logs::pump(stdout, shown.clone(), log.clone(), tail.clone(), env.max_log_line)));
    }
    if let Some(stderr) = child.stderr.take() {
        pumps.push(tokio::spawn(logs::pump(stderr, shown, log.clone(), tail.clone(), env.max_log_line)));
    }
    Ok(Replica { task, child, pumps, group })
}

/// Waits for the run's end, stops every replica, and joins everything the run started.
async fn watch(
    launch: &Launch<'_>,
    started: Vec<Replica>,
    tail: &Tail,
    token: &CancellationToken,
) -> Result<Ending, RunError> {
    let (env, run) = (&launch.env, &launch.run);
    let (exits, mut exited) = mpsc::channel::<(usize, std::io::Result<ExitStatus>)>(started.len().max(1));
    let pids: Vec<Option<u32>> = started.iter().map(|r| r.child.id()).collect();
    let tasks: Vec<String> = started.iter().map(|r| r.task.clone()).collect();
    let mut pumps: Vec<Vec<JoinHandle<()>>> = Vec::with_capacity(started.len());
    let mut groups: Vec<Option<Group>> = Vec::with_capacity(started.len());
    let mut waiters = Vec::with_capacity(started.len());
    for (i, mut replica) in started.into_iter().enumerate() {
        pumps.push(std::mem::take(&mut replica.pumps));
        groups.push(replica.group.take());
        let exits = exits.clone();
        waiters.push(tokio::spawn(async move {
            let status = replica.child.wait().await;
            let _ = exits.send((i, status)).await;
        }));
    }
    drop(exits);
    let deadline = launch.plan.max_running_time.map(|d| tokio::time::Instant::now() + d);
    let mut alive = tasks.len();
    let metric_files: Arc<Vec<(String, PathBuf)>> = Arc::new(
        tasks
            .iter()
            .map(|t| (format!("{}{t}", run.label), run.dir.join("replicas").join(t).join("hypertune.metrics")))
            .collect(),
    );
    let series = run.series.clone().unwrap_or_else(|| run.dir.join("metrics.jsonl"));
    let collector = Arc::new(Mutex::new(metrics::Collector::default()));
    let collect = || {
        let (collector, files, series) = (collector.clone(), metric_files.clone(), series.clone());
        tokio::task::spawn_blocking(move || super::lock(&collector).collect(&files, &series))
    };
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
                collect().await?;
                continue;
            }
            () = token.cancelled() => break Ending::Stopped,
            () = timeout => break Ending::TimedOut,
            event = exited.recv() => {
                let Some((i, status)) = event else { break Ending::Failed("every replica stopped without a status".into()) };
                alive -= 1;
                let status = status.map_err(|source| RunError::Spawn { program: tasks[i].clone(), source })?;
                if status.success() {
                    if i == 0 { break Ending::Succeeded; }
                    if alive == 0 { break Ending::Failed("the master replica did not finish".into()); }
                    continue;
                }
                // Its output is all forwarded once its pumps reach the end of its pipes.
                join_all(std::mem::take(&mut pumps[i])).await;
                let last = super::lock(tail).iter().cloned().collect::<Vec<_>>().join("\n");
                let out_of_memory = groups[i].as_ref().filter(|g| g.killed_for_memory()).and_then(Group::memory_limit);
                if let Some(limit) = out_of_memory {
                    break Ending::Failed(format!(
                        "Replica {}{} exceeded its memory limit of {} and was killed ({}). Last log lines:\n{last}",
                        run.label, tasks[i], crate::sandbox::cgroup::gigabytes(limit), describe(status)
                    ));
                }
                break Ending::Failed(format!("Replica {}{} exited with {}. Last log lines:\n{last}", run.label, tasks[i], describe(status)));
            }
        }
    };
    stop_all(&pids, (env.kill_grace, env.sandbox.is_confined()), &mut exited, alive).await;
    collect().await?;
    for waiter in waiters {
        let _ = waiter.await;
    }
    join_all(pumps.into_iter().flatten().collect()).await;
    let groups: Vec<Group> = groups.into_iter().flatten().collect();
    if !groups.is_empty() {
        let _ = tokio::task::spawn_blocking(move || groups.iter().for_each(Group::remove)).await;
    }
    Ok(ending)
}

/// Waits for `pumps` to finish, up to [`PUMP_GRACE`]; those still running then are stopped.
async fn join_all(pumps: Vec<JoinHandle<()>>) {
    let deadline = tokio::time::Instant::now() + PUMP_GRACE;
    for mut pump in pumps {
        if tokio::time::timeout_at(deadline, &mut pump).await.is_err() {
            pump.abort();
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => "an unknown status".into(),
    }
}

/// SIGTERM to every replica, SIGKILL to those still alive after `grace`. A confined replica's
/// SIGTERM goes to its launcher, which passes it to the replica's whole tree (processes that left
/// the group with `setsid` included) and kills that tree after the same grace; the group's
/// SIGKILL, a second later, is the fallback. An unconfined replica's goes to its process group.
async fn stop_all(
    pids: &[Option<u32>],
    (grace, confined): (Duration, bool),
    exited: &mut mpsc::Receiver<(usize, std::io::Result<ExitStatus>)>,
    mut alive: usize,
) {
    for pid in pids.iter().flatten() {
        let pid = Pid::from_raw(*pid as i32);
        let _ = if confined { nix::sys::signal::kill(pid, Signal::SIGTERM) } else { killpg(pid, Signal::SIGTERM) };
    }
    let grace = if confined { grace + Duration::from_secs(1) } else { grace };
    let deadline = tokio::time::Instant::now() + grace;
    while alive > 0 {
        match tokio::time::timeout_at(deadline, exited.recv()).await {
            Ok(Some(_)) => alive -= 1,
            Ok(None) | Err(_) => break,
        }
    }
    // Children of replicas may outlive them in the group: the group gets SIGKILL either way.
    for pid in pids.iter().flatten() {
        let _ = killpg(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
}

fn free_port() -> Result<u16, RunError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(RunError::io("find a free port on", "127.0.0.1"))
}
