//! Running a hyperparameter tuning job from its [`StudyPlan`]: trials chosen by the plan's
//! suggester ([`crate::jobs::study`]), each a full run of the job's replicas with the trial's
//! values as `--name=value`, its own job-dir subfolder, metrics and `CLOUD_ML_TRIAL_ID`; up to the
//! plan's parallel trials at once; the median stopping rule when early stopping is on;
//! `trainingOutput.trials` reported as they change.
//!
//! The loop has three parts: [`Trials::suggest_and_start`] (schedule), [`Trials::finished`] and
//! [`Trials::stop_early`] (stop rules), and [`Trials::verdict`] (how the job ends). Where a trial
//! runs is a [`TrialRunner`]'s business: local processes here, a Ray job each on Ray.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use super::metrics::{read_series, MetricPoint};
use super::supervise::{supervise, LogSender, Run};
use super::{JobContext, Launch, RunError};
use crate::jobs::plan::StudyPlan;
use crate::jobs::study::{self, Algorithm, Observation, Rng, Study};
use crate::jobs::wire::{HyperparameterMetric, HyperparameterOutput, JobState, TrainingOutput};
use crate::jobs::{Ending, JobEvent, JobOutput};

/// How often running trials are checked against the stopping rule.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// A trial and what running it holds.
struct Trial {
    output: HyperparameterOutput,
    error: Option<String>,
    token: CancellationToken,
    gpus: Vec<usize>,
    /// From the resumed job: not run here.
    previous: bool,
}

type TrialRun<'a> = Pin<Box<dyn Future<Output = (usize, Result<Ending, RunError>)> + Send + 'a>>;

/// One trial's run to its end, as a future that borrows the runner.
pub(crate) type TrialFuture<'a> = Pin<Box<dyn Future<Output = Result<Ending, RunError>> + Send + 'a>>;

/// Where a study's trials run: this host's processes ([`LocalTrials`]) or one Ray job per trial
/// (the Ray executor's). The study's loop, its suggestions and stop rules are the same for both.
pub(crate) trait TrialRunner: Sync {
    /// Runs the trial `launch.run` describes (its label, trial id, job dir, extra arguments) to
    /// its end; its lines go to `log`, its metric reports to `launch.run.series`; `token` stops it.
    fn run<'a>(&'a self, launch: Launch<'a>, log: LogSender, token: CancellationToken) -> TrialFuture<'a>;
}

/// Trials as processes of this host, each started by [`supervise`].
pub(crate) struct LocalTrials;

impl TrialRunner for LocalTrials {
    fn run<'a>(&'a self, launch: Launch<'a>, log: LogSender, token: CancellationToken) -> TrialFuture<'a> {
        Box::pin(async move { supervise(&launch, log, &token).await })
    }
}

/// The study's trials and its schedule.
struct Trials<'a> {
    study: &'a Study,
    runner: &'a dyn TrialRunner,
    base: &'a Launch<'a>,
    log: &'a LogSender,
    series: PathBuf,
    parallel: usize,
    per_trial_gpus: usize,
    free_gpus: Vec<usize>,
    trials: Vec<Trial>,
    next: usize,
    limit: usize,
    rng: Rng,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Runs the study to its end.
pub async fn run_study(
    context: &JobContext,
    plan: &StudyPlan,
    base: &Launch<'_>,
    log: LogSender,
    runner: &dyn TrialRunner,
) -> Result<Ending, RunError> {
    let study = &plan.study;
    let limit = match study.algorithm {
        Algorithm::Grid => study.max_trials.min(study.grid_size()),
        _ => study.max_trials,
    };
    let trials = plan.previous_trials.iter().map(|output| Trial {
        output: output.clone(),
        error: None,
        token: CancellationToken::new(),
        gpus: Vec::new(),
        previous: true,
    });
    let mut state = Trials {
        study,
        runner,
        base,
        log: &log,
        series: base.run.dir.join("metrics.jsonl"),
        parallel: plan.parallel_trials.max(1),
        per_trial_gpus: base.plan.replicas.total_gpus().max(0) as usize,
        free_gpus: base.run.gpus.clone(),
        trials: trials.collect(),
        next: plan.previous_trials.len(),
        limit,
        rng: Rng::new(seed(&context.job.to_string())),
    };
    let per_trial = base.plan.replicas.count();
    let mut running: FuturesUnordered<TrialRun<'_>> = FuturesUnordered::new();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    let deadline = base.plan.max_running_time.map(|d| tokio::time::Instant::now() + d);
    let (mut cancelled, mut timed_out) = (false, false);
    let started = Instant::now();
    loop {
        if !cancelled && !timed_out {
            state.suggest_and_start(&context.token, &mut running);
        }
        context.report(JobEvent::Output(JobOutput::Training(state.output(started.elapsed(), per_trial)))).await;
        if running.is_empty() {
            break;
        }
        let timeout = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((index, ending)) = running.next() => state.finished(index, ending).await?,
            _ = tick.tick(), if study.early_stopping => state.stop_early().await?,
            () = context.token.cancelled(), if !cancelled => {
                cancelled = true;
                state.trials.iter().for_each(|t| t.token.cancel());
            }
            () = timeout, if !timed_out => {
                timed_out = true;
                state.trials.iter().for_each(|t| t.token.cancel());
            }
        }
    }
    context.report(JobEvent::Output(JobOutput::Training(state.output(started.elapsed(), per_trial)))).await;
    Ok(if cancelled {
        Ending::Stopped
    } else if timed_out {
        Ending::TimedOut
    } else {
        state.verdict()
    })
}

impl<'a> Trials<'a> {
    /// Trials of this job (not resumed ones) that failed.
    fn failed(&self) -> Vec<&Trial> {
        self.trials.iter().filter(|t| !t.previous && t.output.state == JobState::Failed).collect()
    }

    /// Starts new trials while there is room, trials left, and not too many failed.
    fn suggest_and_start(&mut self, token: &CancellationToken, running: &mut FuturesUnordered<TrialRun<'a>>) {
        let failed = self.failed().len();
        if self.study.max_failed_trials > 0 && failed > self.study.max_failed_trials {
            return;
        }
        while running.len() < self.parallel && self.next < self.limit {
            let observed: Vec<Observation> = self
                .trials
                .iter()
                .filter(|t| t.output.state == JobState::Succeeded)
                .filter_map(|t| {
                    let objective = t.output.final_metric?.objective_value;
                    Some(Observation { values: t.output.hyperparameters.clone(), objective })
                })
                .collect();
            let values = study::suggest(self.study, self.next, &observed, &mut self.rng);
            self.next += 1;
            let id = self.next.to_string();
            let gpus: Vec<usize> = self.free_gpus.drain(..self.per_trial_gpus.min(self.free_gpus.len())).collect();
            let trial_token = token.child_token();
            let base = self.base;
            let run = Run {
                dir: base.run.dir.join("trials").join(&id),
                job_dir: base.run.job_dir.as_ref().map(|d| d.join(&id)),
                gpus: gpus.clone(),
                label: format!("trial-{id}/"),
                trial: Some(id.clone()),
                series: Some(self.series.clone()),
                extra_args: values.iter().map(|(k, v)| format!("--{k}={v}")).collect(),
                env: base.run.env.clone(),
            };
            let launch = Launch { plan: base.plan, env: base.env.clone(), run };
            let (index, log, run_token) = (self.trials.len(), self.log.clone(), trial_token.clone());
            let trial = self.runner.run(launch, log, run_token);
            running.push(Box::pin(async move { (index, trial.await) }));
            self.trials.push(Trial {
                output: HyperparameterOutput {
                    trial_id: id,
                    hyperparameters: values,
                    state: JobState::Running,
                    start_time: now(),
                    end_time: None,
                    is_trial_stopped_early: false,
                    final_metric: None,
                },
                error: None,
                token: trial_token,
                gpus,
                previous: false,
            });
        }
    }

    /// Records how trial `index` ended, with its last objective report.
    async fn finished(&mut self, index: usize, ending: Result<Ending, RunError>) -> Result<(), RunError> {
        let points = self.points().await?;
        let trial = &mut self.trials[index];
        trial.output.end_time = Some(now());
        trial.output.final_metric = curve(&points, self.study, &trial.output.trial_id)
            .last()
            .map(|&(training_step, objective_value)| HyperparameterMetric { training_step, objective_value });
        self.free_gpus.append(&mut trial.gpus);
        trial.output.state = match ending {
            Ok(Ending::Succeeded) => JobState::Succeeded,
            Ok(Ending::Stopped) if trial.output.is_trial_stopped_early => JobState::Succeeded,
            Ok(Ending::Stopped | Ending::TimedOut) => JobState::Cancelled,
            Ok(Ending::Failed(message)) => {
                trial.error = Some(message);
                JobState::Failed
            }
            Err(e) => {
                trial.error = Some(e.to_string());
                JobState::Failed
            }
        };
        Ok(())
    }

    /// The median stopping rule: stops running trials clearly worse than the completed ones.
    async fn stop_early(&mut self) -> Result<(), RunError> {
        // The series file is read once per check, not once per trial.
        let points = self.points().await?;
        let completed: Vec<Vec<(i64, f64)>> = self
            .trials
            .iter()
            .filter(|t| t.output.state == JobState::Succeeded && !t.previous)
            .map(|t| curve(&points, self.study, &t.output.trial_id))
            .collect();
        for trial in self.trials.iter_mut() {
            if trial.output.state != JobState::Running || trial.output.is_trial_stopped_early {
                continue;
            }
            if study::should_stop(self.study, &curve(&points, self.study, &trial.output.trial_id), &completed) {
                let message = format!(
                    "Stopping trial {} early: its objective is worse than the median of completed trials.",
                    trial.output.trial_id
                );
                let _ = self.log.send(("service".into(), message)).await;
                trial.output.is_trial_stopped_early = true;
                trial.token.cancel();
            }
        }
        Ok(())
    }

    /// The metric reports so far, read on a blocking thread.
    async fn points(&self) -> Result<Vec<MetricPoint>, RunError> {
        let series = self.series.clone();
        Ok(tokio::task::spawn_blocking(move || read_series(&series).unwrap_or_default()).await?)
    }

    /// `trainingOutput`: trials best first by the goal.
    fn output(&self, elapsed: Duration, per_trial: i64) -> TrainingOutput {
        let mut trials: Vec<&HyperparameterOutput> = self.trials.iter().map(|t| &t.output).collect();
        trials.sort_by(|a, b| match (a.final_metric, b.final_metric) {
            (Some(x), Some(y)) => {
                let (x, y) = (x.objective_value, y.objective_value);
                if self.study.better(x, y) {
                    std::cmp::Ordering::Less
                } else if self.study.better(y, x) {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.number().cmp(&b.number()),
        });
        let completed = self.trials.iter().filter(|t| t.output.state != JobState::Running).count();
        let hours = elapsed.as_secs_f64() / 3600.0 * per_trial as f64;
        TrainingOutput {
            is_hyperparameter_tuning_job: true,
            hyperparameter_metric_tag: Some(self.study.metric_tag.clone()),
            completed_trial_count: Some(completed as i64),
            consumed_ml_units: Some((hours * 1e6).round() / 1e6),
            trials: trials.into_iter().cloned().collect(),
            final_metric: None,
        }
    }

    /// How a study whose trials all ran ends: FAILED when more than `maxFailedTrials` failed (or,
    /// without that limit, when every trial did).
    fn verdict(&self) -> Ending {
        let ours = self.trials.iter().filter(|t| !t.previous).count();
        let failed = self.failed();
        let too_many = if self.study.max_failed_trials > 0 {
            failed.len() > self.study.max_failed_trials
        } else {
            ours > 0 && failed.len() == ours
        };
        if !too_many {
            return Ending::Succeeded;
        }
        let first = failed.first();
        Ending::Failed(format!(
            "{} of {ours} trials failed (maxFailedTrials {}). Trial {}: {}",
            failed.len(),
            self.study.max_failed_trials,
            first.map_or("", |t| t.output.trial_id.as_str()),
            first.and_then(|t| t.error.as_deref()).unwrap_or(""),
        ))
    }
}

/// A trial's reports of the study's metric from its master, in report order.
fn curve(points: &[MetricPoint], study: &Study, id: &str) -> Vec<(i64, f64)> {
    let replica = format!("trial-{id}/master-replica-0");
    points.iter().filter(|p| p.tag == study.metric_tag && p.replica == replica).map(|p| (p.step, p.value)).collect()
}

/// A stable seed from the job's name (FNV-1a).
fn seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
