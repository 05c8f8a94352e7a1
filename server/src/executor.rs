//! The local process executor: runs submitted jobs' replicas as processes of this host. It is the
//! embedded default implementation of [`JobExecutor`] (see [`crate::jobs::executor`]): control
//! submits a plan when the job fits in the free slots and GPUs, and the executor reports what
//! happens on its event channel. It never reads or writes the store.
//!
//! Each submitted job is an owned task (spawned through [`Tasks`]) with its own cancellation
//! token, holding its slots and GPU devices until it ends.

mod error;
mod logs;
mod metrics;
mod predict;
mod prepare;
mod ray;
mod run;
mod study;
mod supervise;

pub use crate::sandbox::{check_output_folder, server_secrets, Identity, IsolationError, Sandbox};
pub use error::RunError;
pub use logs::{read_logs, LogCursor, LogLine};
pub use metrics::{group_series, read_series, MetricPoint, Series};
pub use ray::shard::run as run_ray_shard;
pub use ray::{RayConfig, RayExecutor};
pub use supervise::{supervise, Environment, Launch, LogSender, Run, LOG_BUFFER};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::jobs::executor::{Recovered, SubmitError};
use crate::jobs::{Capacity, Ending, Event, JobEvent, JobExecutor, JobFiles, Needs, Submission, Work};
use crate::names::JobName;
use crate::storage::Storage;
use crate::tasks::Tasks;

/// How the executor runs replicas.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// The Python that runs replicas (with torch).
    pub python: PathBuf,
    /// Replica slots of this host.
    pub slots: usize,
    /// GPU devices of this host (numbered 0..gpus for `CUDA_VISIBLE_DEVICES`).
    pub gpus: usize,
    /// Time between SIGTERM and SIGKILL when replicas are stopped.
    pub kill_grace: Duration,
    /// The longest replica output line kept in a job's log, in bytes.
    pub max_log_line: usize,
    /// Where replicas, their pip installs and batch jobs' Python workers run (see
    /// [`crate::sandbox`]).
    pub sandbox: Arc<Sandbox>,
}

/// How many events may wait for control before a job's task waits for room.
pub const EVENT_BUFFER: usize = 256;

/// The handle to the local executor; cheap to clone.
#[derive(Clone, Debug)]
pub struct LocalExecutor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storage: Storage,
    config: ExecutorConfig,
    tasks: Tasks,
    /// Where events go; dropped when the server shuts down, so the channel closes once the last
    /// job's task has reported its end.
    events: Mutex<Option<mpsc::Sender<Event>>>,
    /// Submitted jobs by full name.
    running: Mutex<HashMap<String, Running>>,
}

/// What a submitted job holds.
#[derive(Debug)]
struct Running {
    name: JobName,
    token: CancellationToken,
    slots: usize,
    gpus: Vec<usize>,
}

/// What one job's task works with.
pub(crate) struct JobContext {
    pub storage: Storage,
    pub config: ExecutorConfig,
    pub job: JobName,
    pub gpus: Vec<usize>,
    pub token: CancellationToken,
    events: mpsc::Sender<Event>,
}

impl JobContext {
    /// Reports `event` of this job to control (waits while the channel is full).
    pub async fn report(&self, event: JobEvent) {
        if self.events.send(Event { job: self.job.clone(), event }).await.is_err() {
            tracing::warn!(job.name = %self.job, "control stopped listening to the executor");
        }
    }

    /// The job's own folder: its log, metrics and the replicas' working directories.
    pub fn dir(&self) -> PathBuf {
        work_dir(&self.storage, &self.job)
    }
}

impl LocalExecutor {
    /// Creates the executor; it reports on `events`.
    pub fn new(storage: Storage, config: ExecutorConfig, tasks: Tasks, events: mpsc::Sender<Event>) -> Self {
        let inner = Arc::new(Inner {
            storage,
            config,
            tasks,
            events: Mutex::new(Some(events)),
            running: Mutex::new(HashMap::new()),
        });
        let closing = inner.clone();
        inner.tasks.spawn("executor-events", move |token| async move {
            token.cancelled().await;
            lock(&closing.events).take();
        });
        Self { inner }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        lock(&self.inner.running)
    }

    /// GPU devices no running job holds, lowest first.
    fn free_gpus(running: &HashMap<String, Running>, gpus: usize) -> Vec<usize> {
        let held: HashSet<usize> = running.values().flat_map(|r| r.gpus.iter().copied()).collect();
        (0..gpus).filter(|g| !held.contains(g)).collect()
    }

    fn fits(&self, running: &HashMap<String, Running>, needs: &Needs) -> bool {
        let used: usize = running.values().map(|r| r.slots).sum();
        used + needs.slots <= self.inner.config.slots
            && needs.gpus <= Self::free_gpus(running, self.inner.config.gpus).len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait::async_trait]
impl JobExecutor for LocalExecutor {
    fn capacity(&self) -> Capacity {
        let config = &self.inner.config;
        Capacity { slots: config.slots, gpus: config.gpus, isolated: config.sandbox.is_isolated() }
    }

    fn has_room(&self, needs: &Needs) -> bool {
        self.fits(&self.running(), needs)
    }

    fn submit(&self, submission: Submission) -> Result<(), SubmitError> {
        let Some(events) = lock(&self.inner.events).clone() else { return Err(SubmitError::NoRoom) };
        let Submission { job, plan, model_dir } = submission;
        let token = self.inner.tasks.shutdown_token().child_token();
        let gpus = {
            let mut running = self.running();
            if !self.fits(&running, &plan.needs) {
                return Err(SubmitError::NoRoom);
            }
            let mut gpus = Self::free_gpus(&running, self.inner.config.gpus);
            gpus.truncate(plan.needs.gpus);
            running.insert(
                job.to_string(),
                Running { name: job.clone(), token: token.clone(), slots: plan.needs.slots, gpus: gpus.clone() },
            );
            gpus
        };
        let context = JobContext {
            storage: self.inner.storage.clone(),
            config: self.inner.config.clone(),
            job,
            gpus,
            token,
            events,
        };
        let executor = self.clone();
        self.inner.tasks.spawn("job", move |_| async move {
            let ending = match plan.work {
                Work::Training(training) => run::run_training(&context, &training).await,
                Work::Prediction(prediction) => match model_dir {
                    Some(model_dir) => predict::run_prediction(&context, &prediction, model_dir).await,
                    None => Err(RunError::Unresolved),
                },
            };
            let ending = ending.unwrap_or_else(|e| Ending::Failed(e.to_string()));
            executor.running().remove(&context.job.to_string());
            context.report(JobEvent::Ended(ending)).await;
        });
        Ok(())
    }

    fn cancel(&self, job: &JobName) {
        if let Some(running) = self.running().get(&job.to_string()) {
            running.token.cancel();
        }
    }

    fn running_jobs(&self) -> Vec<JobName> {
        self.running().values().map(|running| running.name.clone()).collect()
    }

    /// Replicas of this executor cannot be picked up again: every job is lost, and any of its
    /// replicas that outlived the previous server (one killed with SIGKILL cannot stop them) are
    /// stopped now.
    async fn recover(&self, jobs: &[JobName]) -> Vec<(JobName, Recovered)> {
        let tags: HashSet<String> = jobs.iter().map(|job| run::replica_tag(&self.inner.storage, job)).collect();
        let stopped = tokio::task::spawn_blocking(move || run::kill_leftovers(&tags)).await.unwrap_or(0);
        if stopped > 0 {
            tracing::warn!(processes = stopped, "stopped replicas left running by a previous server");
        }
        jobs.iter().map(|job| (job.clone(), Recovered::Lost)).collect()
    }

    fn files(&self, job: &JobName) -> JobFiles {
        let dir = work_dir(&self.inner.storage, job);
        JobFiles { log: dir.join("job.log"), metrics: dir.join("metrics.jsonl") }
    }
}

fn work_dir(storage: &Storage, name: &JobName) -> PathBuf {
    storage.root().join("jobs").join(name.project.as_str()).join(&name.job)
}

#[cfg(test)]
mod tests {
    //! The executor interface with the local backend: real processes of the machine's Python.
    use super::*;
    use crate::jobs::plan::Replicas;
    use crate::jobs::{JobOutput, JobPlan, TrainingPlan};

    struct Fixture {
        _dir: tempfile::TempDir,
        storage: Storage,
        executor: LocalExecutor,
        events: mpsc::Receiver<Event>,
        tasks: Tasks,
    }

    fn fixture(slots: usize) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Storage::open(dir.path()).expect("storage");
        let tasks = Tasks::new();
        let (sender, events) = mpsc::channel(EVENT_BUFFER);
        let config = ExecutorConfig {
            python: PathBuf::from("python3"),
            slots,
            gpus: 0,
            kill_grace: Duration::from_secs(2),
            max_log_line: 4096,
            sandbox: Arc::new(Sandbox::off()),
        };
        let executor = LocalExecutor::new(storage.clone(), config, tasks.clone(), sender);
        Fixture { _dir: dir, storage, executor, events, tasks }
    }

    /// A plan whose master runs `code` as the module `trainer.task`.
    fn plan(storage: &Storage, code: &str, slots: usize) -> JobPlan {
        let package = storage.root().join("p").join("pkg");
        std::fs::create_dir_all(package.join("trainer")).expect("package folder");
        std::fs::write(package.join("trainer/__init__.py"), "").expect("init");
        std::fs::write(package.join("trainer/task.py"), code).expect("task");
        let training = TrainingPlan {
            packages: vec![package.into()],
            module: "trainer.task".into(),
            args: vec!["--greeting=hello".into()],
            job_dir: None,
            replicas: Replicas::default(),
            max_running_time: None,
            metric_tag: "loss".into(),
            tf_config_job: serde_json::json!({"pythonModule": "trainer.task"}),
            study: None,
        };
        JobPlan::new(Needs { slots, gpus: 0 }, None, Work::Training(training))
    }

    fn job(id: &str) -> JobName {
        JobName::new("name", "p", id).expect("job name")
    }

    /// Events of `job` until its end (60 s at most).
    async fn until_end(events: &mut mpsc::Receiver<Event>, job: &JobName) -> Vec<JobEvent> {
        let mut seen = Vec::new();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
                .await
                .expect("an event within 60 s")
                .expect("the channel stays open");
            assert_eq!(&event.job, job);
            let end = matches!(event.event, JobEvent::Ended(_));
            seen.push(event.event);
            if end {
                return seen;
            }
        }
    }

    #[tokio::test]
    async fn a_submitted_plan_runs_and_reports_running_output_and_its_end() {
        let mut f = fixture(2);
        let name = job("ok");
        let code = "import sys, os, json\nprint('args', sys.argv[1:])\nprint('task', json.loads(os.environ['TF_CONFIG'])['task']['type'])\n";
        assert!(f.executor.has_room(&Needs { slots: 2, gpus: 0 }));
        assert!(!f.executor.has_room(&Needs { slots: 3, gpus: 0 }), "more slots than the host has");
        f.executor
            .submit(Submission { job: name.clone(), plan: plan(&f.storage, code, 2), model_dir: None })
            .expect("submitted");
        assert!(!f.executor.has_room(&Needs { slots: 1, gpus: 0 }), "the job holds both slots");
        let events = until_end(&mut f.events, &name).await;
        assert_eq!(events.first(), Some(&JobEvent::Running));
        assert_eq!(events.last(), Some(&JobEvent::Ended(Ending::Succeeded)));
        let output = events.iter().find_map(|e| match e {
            JobEvent::Output(JobOutput::Training(output)) => Some(output.clone()),
            _ => None,
        });
        assert!(output.expect("a training output").consumed_ml_units.is_some());
        assert!(f.executor.has_room(&Needs { slots: 2, gpus: 0 }), "its slots are free again");
        let log = std::fs::read_to_string(f.executor.files(&name).log).expect("job log");
        assert!(log.contains("args ['--greeting=hello']"), "{log}");
        assert!(log.contains("task master"), "{log}");
    }

    #[tokio::test]
    async fn a_failing_replica_ends_the_job_with_its_last_lines() {
        let mut f = fixture(1);
        let name = job("boom");
        let code = "import sys\nfor i in range(50):\n    print('line', i)\nprint('boom: the data is missing', file=sys.stderr)\nsys.exit(3)\n";
        f.executor
            .submit(Submission { job: name.clone(), plan: plan(&f.storage, code, 1), model_dir: None })
            .expect("submitted");
        let events = until_end(&mut f.events, &name).await;
        let Some(JobEvent::Ended(Ending::Failed(message))) = events.last() else { panic!("not failed: {events:?}") };
        assert!(message.contains("master-replica-0 exited with exit code 3"), "{message}");
        // Every line the replica printed is read before the failure is reported.
        assert!(message.contains("boom: the data is missing"), "{message}");
    }

    #[tokio::test]
    async fn cancel_stops_the_replicas_and_recover_finds_leftovers() {
        let mut f = fixture(1);
        let name = job("long");
        let code = "import time\nprint('started', flush=True)\ntime.sleep(120)\n";
        f.executor
            .submit(Submission { job: name.clone(), plan: plan(&f.storage, code, 1), model_dir: None })
            .expect("submitted");
        let first = tokio::time::timeout(Duration::from_secs(30), f.events.recv()).await.expect("event").expect("open");
        assert_eq!(first.event, JobEvent::Running);
        assert!(
            f.executor
                .submit(Submission { job: job("other"), plan: plan(&f.storage, code, 1), model_dir: None })
                .is_err(),
            "no room for a second job"
        );
        f.executor.cancel(&name);
        let events = until_end(&mut f.events, &name).await;
        assert_eq!(events.last(), Some(&JobEvent::Ended(Ending::Stopped)));

        // A process tagged as a replica of a job, left by a previous server, is stopped (with its
        // process group: replicas lead their own, as this one does).
        use std::os::unix::process::CommandExt;
        let left = job("left");
        let mut leftover = std::process::Command::new("sleep")
            .arg("120")
            .process_group(0)
            .env("ANNEAL_JOB", run::replica_tag(&f.storage, &left))
            .spawn()
            .expect("sleep");
        // `spawn` returns once the exec began, but the kernel sets a new program's environment
        // (what /proc/PID/environ shows) a moment later; a leftover of a previous server has long
        // been running, so wait for it to show its tag first.
        let environ = format!("/proc/{}/environ", leftover.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read(&environ).is_ok_and(|env| env.windows(11).any(|w| w == b"ANNEAL_JOB=")) {
            assert!(std::time::Instant::now() < deadline, "the leftover shows no environment");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let recovered = f.executor.recover(std::slice::from_ref(&left)).await;
        assert_eq!(recovered, vec![(left, Recovered::Lost)]);
        let status = leftover.wait().expect("reaped");
        assert!(!status.success(), "the leftover was killed");
        assert!(f.tasks.shutdown(Duration::from_secs(10)).await);
    }
}
