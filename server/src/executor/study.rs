//! Running a hyperparameter tuning job: trials chosen by `control::tuning`, each a full run of the
//! job's replicas with the trial's values as `--name=value`, its own job-dir subfolder, metrics
//! file and `CLOUD_ML_TRIAL_ID`; up to the job's parallel trials at once; the median stopping rule
//! when early stopping is on; `trainingOutput.trials` kept current.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::metrics::{read_series, MetricPoint};
use super::run::{supervise, Ending, Launch};
use crate::control::tuning::{self, Assignment, Observation, Rng, Study};
use crate::names::JobName;
use crate::store::{JobRecord, Store};

/// How often running trials are checked against the stopping rule.
const CHECK_EVERY: Duration = Duration::from_millis(500);

struct Trial {
    id: String,
    values: Assignment,
    state: &'static str,
    start: String,
    end: Option<String>,
    stopped_early: bool,
    /// (step, objective) of the master's last report of the metric tag.
    final_metric: Option<(i64, f64)>,
    error: Option<String>,
    token: CancellationToken,
    gpus: Vec<usize>,
    /// From the resumed job: not run here.
    previous: bool,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Runs the study to its end.
pub async fn run_study(
    store: &Store,
    name: &JobName,
    job: &JobRecord,
    study: &Study,
    base: &Launch<'_>,
    log: mpsc::UnboundedSender<(String, String)>,
    token: &CancellationToken,
) -> Result<Ending, String> {
    let per_trial = base.spec.replicas.all().len() as i64;
    let parallel = (job.replicas / per_trial.max(1)).max(1) as usize;
    let per_trial_gpus = base.spec.replicas.total_gpus().max(0) as usize;
    let series = base.dir.join("metrics.jsonl");
    let mut trials = previous_trials(store, name, study).await;
    let mut next = trials.len();
    let limit = match study.algorithm {
        tuning::Algorithm::Grid => study.max_trials.min(study.grid_size()),
        _ => study.max_trials,
    };
    let mut rng = Rng::new(seed(name));
    let mut free_gpus: Vec<usize> = base.gpus.to_vec();
    let mut running = FuturesUnordered::new();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    let deadline = base.spec.max_running_time.map(|d| tokio::time::Instant::now() + d);
    let (mut cancelled, mut timed_out) = (false, false);
    let started = std::time::Instant::now();
    loop {
        let failed = trials.iter().filter(|t| !t.previous && t.state == "FAILED").count();
        let too_many_failed = study.max_failed_trials > 0 && failed > study.max_failed_trials;
        while running.len() < parallel && next < limit && !cancelled && !timed_out && !too_many_failed {
            let observed: Vec<Observation> = trials
                .iter()
                .filter(|t| t.state == "SUCCEEDED")
                .filter_map(|t| {
                    t.final_metric.map(|(_, objective)| Observation { values: t.values.clone(), objective })
                })
                .collect();
            let values = tuning::suggest(study, next, &observed, &mut rng);
            let id = (next + 1).to_string();
            next += 1;
            let gpus: Vec<usize> = free_gpus.drain(..per_trial_gpus.min(free_gpus.len())).collect();
            let trial_token = token.child_token();
            let index = trials.len();
            let mut spec = base.spec.clone();
            spec.job_dir = spec.job_dir.map(|d| d.join(&id));
            let extra_args: Vec<String> = values.iter().map(|(k, v)| format!("--{k}={v}")).collect();
            let dir: PathBuf = base.dir.join("trials").join(&id);
            let (log, run_token, series, gpus_for_run) =
                (log.clone(), trial_token.clone(), series.clone(), gpus.clone());
            let label = format!("trial-{id}/");
            let trial_id = id.clone();
            running.push(async move {
                let launch = Launch {
                    python: base.python,
                    job_id: base.job_id,
                    tag: base.tag.clone(),
                    training_input: base.training_input,
                    spec: &spec,
                    dir: &dir,
                    cwd: base.cwd,
                    python_path: base.python_path,
                    gpus: &gpus_for_run,
                    kill_grace: base.kill_grace,
                    max_log_line: base.max_log_line,
                    identity: base.identity.clone(),
                    label,
                    trial: Some(trial_id),
                    series: Some(series),
                    extra_args,
                };
                let ending = supervise(&launch, log, &run_token).await;
                (index, ending)
            });
            trials.push(Trial {
                id,
                values,
                state: "RUNNING",
                start: now(),
                end: None,
                stopped_early: false,
                final_metric: None,
                error: None,
                token: trial_token,
                gpus,
                previous: false,
            });
        }
        record(store, name, study, &trials, started.elapsed(), per_trial).await;
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
            Some((index, ending)) = running.next() => {
                let points = read_series(&series).unwrap_or_default();
                let final_metric = curve(&points, study, &trials[index].id).last().copied();
                let trial = &mut trials[index];
                trial.end = Some(now());
                trial.final_metric = final_metric;
                free_gpus.append(&mut trial.gpus);
                trial.state = match ending {
                    Ok(Ending::Succeeded) => "SUCCEEDED",
                    Ok(Ending::Stopped) if trial.stopped_early => "SUCCEEDED",
                    Ok(Ending::Stopped | Ending::TimedOut) => "CANCELLED",
                    Ok(Ending::Failed(message)) | Err(message) => {
                        trial.error = Some(message);
                        "FAILED"
                    }
                };
            }
            _ = tick.tick(), if study.early_stopping => {
                // The series file is read once per check, not once per trial.
                let points = read_series(&series).unwrap_or_default();
                let completed: Vec<Vec<(i64, f64)>> = trials
                    .iter()
                    .filter(|t| t.state == "SUCCEEDED" && !t.previous)
                    .map(|t| curve(&points, study, &t.id))
                    .collect();
                for trial in trials.iter_mut().filter(|t| t.state == "RUNNING" && !t.stopped_early) {
                    if tuning::should_stop(study, &curve(&points, study, &trial.id), &completed) {
                        let _ = log.send(("service".into(), format!("Stopping trial {} early: its objective is worse than the median of completed trials.", trial.id)));
                        trial.stopped_early = true;
                        trial.token.cancel();
                    }
                }
            }
            () = token.cancelled(), if !cancelled => {
                cancelled = true;
                trials.iter().for_each(|t| t.token.cancel());
            }
            () = timeout, if !timed_out => {
                timed_out = true;
                trials.iter().for_each(|t| t.token.cancel());
            }
        }
    }
    record(store, name, study, &trials, started.elapsed(), per_trial).await;
    if cancelled {
        return Ok(Ending::Stopped);
    }
    if timed_out {
        return Ok(Ending::TimedOut);
    }
    let ours: Vec<&Trial> = trials.iter().filter(|t| !t.previous).collect();
    let failed: Vec<&&Trial> = ours.iter().filter(|t| t.state == "FAILED").collect();
    let too_many = if study.max_failed_trials > 0 {
        failed.len() > study.max_failed_trials
    } else {
        !ours.is_empty() && failed.len() == ours.len()
    };
    if too_many {
        let first = failed.first().and_then(|t| t.error.as_deref()).unwrap_or("");
        return Ok(Ending::Failed(format!(
            "{} of {} trials failed (maxFailedTrials {}). Trial {}: {first}",
            failed.len(),
            ours.len(),
            study.max_failed_trials,
            failed.first().map_or("", |t| t.id.as_str())
        )));
    }
    Ok(Ending::Succeeded)
}

/// A trial's reports of the study's metric from its master, in report order.
fn curve(points: &[MetricPoint], study: &Study, id: &str) -> Vec<(i64, f64)> {
    let replica = format!("trial-{id}/master-replica-0");
    points.iter().filter(|p| p.tag == study.metric_tag && p.replica == replica).map(|p| (p.step, p.value)).collect()
}

/// The trials of the job this one resumes (they count and inform suggestions).
async fn previous_trials(store: &Store, name: &JobName, study: &Study) -> Vec<Trial> {
    let Some(previous) = &study.resume_previous_job_id else { return Vec::new() };
    let Ok(previous) = JobName::new("name", name.project.as_str(), previous) else { return Vec::new() };
    let Ok(Some(job)) = store.get_job(&previous).await else { return Vec::new() };
    let mut trials: Vec<Trial> = job.output["trials"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| Trial {
            id: t["trialId"].as_str().unwrap_or("").to_owned(),
            values: t["hyperparameters"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned())).collect())
                .unwrap_or_default(),
            state: match t["state"].as_str() {
                Some("SUCCEEDED") => "SUCCEEDED",
                Some("FAILED") => "FAILED",
                _ => "CANCELLED",
            },
            start: t["startTime"].as_str().unwrap_or("").to_owned(),
            end: t["endTime"].as_str().map(str::to_owned),
            stopped_early: t["isTrialStoppedEarly"].as_bool().unwrap_or(false),
            final_metric: t["finalMetric"]["objectiveValue"]
                .as_f64()
                .map(|v| (t["finalMetric"]["trainingStep"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0), v)),
            error: None,
            token: CancellationToken::new(),
            gpus: Vec::new(),
            previous: true,
        })
        .collect();
    trials.sort_by_key(|t| t.id.parse::<u64>().unwrap_or(0));
    trials
}

/// Writes `trainingOutput` (trials best first by the goal).
async fn record(store: &Store, name: &JobName, study: &Study, trials: &[Trial], elapsed: Duration, per_trial: i64) {
    let mut sorted: Vec<&Trial> = trials.iter().collect();
    sorted.sort_by(|a, b| match (a.final_metric, b.final_metric) {
        (Some((_, x)), Some((_, y))) => {
            if study.better(x, y) {
                std::cmp::Ordering::Less
            } else if study.better(y, x) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.id.parse::<u64>().unwrap_or(0).cmp(&b.id.parse::<u64>().unwrap_or(0)),
    });
    let trials_json: Vec<Value> = sorted
        .iter()
        .map(|t| {
            let mut trial = json!({
                "trialId": t.id,
                "hyperparameters": t.values,
                "state": t.state,
                "startTime": t.start,
                "isTrialStoppedEarly": t.stopped_early,
            });
            if let Some(end) = &t.end {
                trial["endTime"] = json!(end);
            }
            if let Some((step, value)) = t.final_metric {
                trial["finalMetric"] = json!({"trainingStep": step.to_string(), "objectiveValue": value});
            }
            trial
        })
        .collect();
    let completed = trials.iter().filter(|t| t.state != "RUNNING").count();
    let hours = elapsed.as_secs_f64() / 3600.0 * per_trial as f64;
    let output = json!({
        "isHyperparameterTuningJob": true,
        "hyperparameterMetricTag": study.metric_tag,
        "completedTrialCount": completed.to_string(),
        "consumedMLUnits": (hours * 1e6).round() / 1e6,
        "trials": trials_json,
    });
    if let Err(e) = store.set_job_output(name, &output).await {
        tracing::warn!(job.name = %name, error = %e, "cannot record the study's progress");
    }
}

/// A stable seed from the job's name (FNV-1a).
fn seed(name: &JobName) -> u64 {
    name.to_string().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
