//! Hyperparameter tuning jobs through the real server: a grid study runs exactly the grid with the
//! trial environment, early stopping stops a clearly worse trial, a study resumes an earlier one,
//! cancel stops every trial, and bad specs name their field.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{json, Value};

fn trainer(server: &TestServer, source: &str) -> PathBuf {
    let root = server.data.path().join("packages/tuned");
    std::fs::create_dir_all(root.join("tuned")).expect("mkdir");
    std::fs::write(root.join("tuned/__init__.py"), "").expect("init");
    std::fs::write(root.join("tuned/task.py"), source).expect("task");
    root
}

/// Reports `score` (from `--a` and `--b`) for steps 1..=3 through the hypertune file, and prints
/// its trial environment.
const REPORTER: &str = r#"
import json, os, sys, time
args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:] if "=" in a)
config = json.loads(os.environ["TF_CONFIG"])
print("trial", os.environ["CLOUD_ML_TRIAL_ID"], config["task"]["trial"], "values", args.get("a"), args.get("b"), "dir", args["job-dir"], flush=True)
os.makedirs(args["job-dir"], exist_ok=True)
score = float(args.get("a", 0)) + (0.5 if args.get("b") == "y" else 0.0)
lines = []
for step in (1, 2, 3):
    lines.append(json.dumps({"global_step": str(step), "score": str(score), "timestamp": time.time(), "trial": os.environ["CLOUD_ML_TRIAL_ID"]}))
    open(os.environ["CLOUD_ML_HP_METRIC_FILE"], "w").write("\n".join(lines) + "\n")
"#;

#[tokio::test]
async fn a_grid_study_runs_exactly_the_grid_best_first() {
    let server = TestServer::start_with(&[], &[("ANNEAL_TRAINING_SLOTS", "2")]).await;
    let package = trainer(&server, REPORTER);
    let job_dir = server.data.path().join("outputs/grid");
    let (status, body) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "grid_1", "trainingInput": {
                "packageUris": [package.display().to_string()], "pythonModule": "tuned.task", "jobDir": job_dir.display().to_string(),
                "hyperparameters": {"goal": "MAXIMIZE", "hyperparameterMetricTag": "score", "algorithm": "GRID_SEARCH",
                    "maxTrials": 10, "maxParallelTrials": 2,
                    "params": [{"parameterName": "a", "type": "INTEGER", "minValue": 1, "maxValue": 3},
                               {"parameterName": "b", "type": "CATEGORICAL", "categoricalValues": ["x", "y"]}]}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_job("grid_1", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    let output = &done["trainingOutput"];
    assert_eq!(
        (output["isHyperparameterTuningJob"].as_bool(), output["completedTrialCount"].as_str()),
        (Some(true), Some("6")),
        "{output}"
    );
    let trials = output["trials"].as_array().expect("trials");
    let mut points: Vec<String> = trials
        .iter()
        .map(|t| {
            format!(
                "{}{}",
                t["hyperparameters"]["a"].as_str().unwrap_or(""),
                t["hyperparameters"]["b"].as_str().unwrap_or("")
            )
        })
        .collect();
    points.sort();
    assert_eq!(points, ["1x", "1y", "2x", "2y", "3x", "3y"], "exactly the grid");
    let objectives: Vec<f64> =
        trials.iter().map(|t| t["finalMetric"]["objectiveValue"].as_f64().expect("objective")).collect();
    assert_eq!(objectives[0], 3.5, "best first: {objectives:?}");
    assert!(objectives.windows(2).all(|w| w[0] >= w[1]), "{objectives:?}");
    assert_eq!(trials[0]["finalMetric"]["trainingStep"], "3");
    assert!(
        trials.iter().all(|t| t["state"] == "SUCCEEDED" && t["startTime"].is_string() && t["endTime"].is_string()),
        "{output}"
    );
    let (_, logs) = server.get_json("/v1/projects/p/jobs/grid_1/logs?limit=100").await;
    let lines: Vec<String> = logs["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| format!("{} {}", l["replica"].as_str().unwrap_or(""), l["text"].as_str().unwrap_or("")))
        .collect();
    let best = trials[0]["trialId"].as_str().expect("id");
    let expected =
        format!("trial-{best}/master-replica-0 trial {best} {best} values 3 y dir {}/{best}", job_dir.display());
    assert!(lines.iter().any(|l| *l == expected), "{expected} in {lines:#?}");
    // Metrics are kept per trial.
    let (_, metrics) = server.get_json("/v1/projects/p/jobs/grid_1/metrics").await;
    assert_eq!(metrics["series"].as_array().map(Vec::len), Some(6), "{metrics}");
}

#[tokio::test]
async fn early_stopping_stops_a_clearly_worse_trial_and_a_study_resumes() {
    let server = TestServer::start_with(&[], &[("ANNEAL_TRAINING_SLOTS", "1")]).await;
    let source = r#"
import json, os, sys, time
args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:] if "=" in a)
good = args["q"] != "bad"
lines = []
for step in range(1, 31 if not good else 6):
    lines.append(json.dumps({"global_step": str(step), "score": "0.9" if good else "0.1", "timestamp": time.time()}))
    open(os.environ["CLOUD_ML_HP_METRIC_FILE"], "w").write("\n".join(lines) + "\n")
    time.sleep(0.02 if good else 0.3)
"#;
    let package = trainer(&server, source);
    let input = |job: &str, resume: Option<&str>, max_trials: u32| {
        let mut hp = json!({"hyperparameterMetricTag": "score", "algorithm": "GRID_SEARCH", "maxTrials": max_trials,
            "enableTrialEarlyStopping": true,
            "params": [{"parameterName": "q", "type": "CATEGORICAL", "categoricalValues": ["g1", "g2", "g3", "bad", "g4"]}]});
        if let Some(previous) = resume {
            hp["resumePreviousJobId"] = json!(previous);
        }
        json!({"jobId": job, "trainingInput": {"packageUris": [package.display().to_string()], "pythonModule": "tuned.task", "hyperparameters": hp}})
    };
    assert_eq!(server.post_json("/v1/projects/p/jobs", &input("stop_1", None, 4)).await.0, 200);
    let done = server.wait_job("stop_1", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    let trials = done["trainingOutput"]["trials"].as_array().expect("trials");
    let bad = trials.iter().find(|t| t["hyperparameters"]["q"] == "bad").expect("the bad trial");
    assert_eq!(bad["isTrialStoppedEarly"], true, "{bad}");
    let seconds = |t: &Value| {
        let parse = |k: &str| chrono::DateTime::parse_from_rfc3339(t[k].as_str().expect("time")).expect("rfc3339");
        (parse("endTime") - parse("startTime")).num_milliseconds() as f64 / 1000.0
    };
    assert!(seconds(bad) < 6.0, "stopped well before its 9 s run: {bad}");
    assert_eq!(trials.last().expect("last")["hyperparameters"]["q"], "bad", "worst last: {trials:?}");

    // Resume: the earlier trials count toward maxTrials and keep their numbers.
    assert_eq!(server.post_json("/v1/projects/p/jobs", &input("stop_2", Some("stop_1"), 5)).await.0, 200);
    let resumed = server.wait_job("stop_2", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(resumed["state"], "SUCCEEDED", "{resumed}");
    let trials = resumed["trainingOutput"]["trials"].as_array().expect("trials");
    let mut ids: Vec<u64> =
        trials.iter().map(|t| t["trialId"].as_str().expect("id").parse().expect("number")).collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    let fifth = trials.iter().find(|t| t["trialId"] == "5").expect("trial 5");
    assert_eq!(fifth["hyperparameters"]["q"], "g4", "the grid continues where it stopped");
    let (status, error) = server.post_json("/v1/projects/p/jobs", &input("stop_3", Some("nothing"), 5)).await;
    assert_eq!(status, 400, "{error}");
}

#[tokio::test]
async fn cancel_stops_every_trial_and_bad_specs_are_rejected() {
    let server = TestServer::start_with(&[], &[("ANNEAL_TRAINING_SLOTS", "4")]).await;
    let package = trainer(&server, "import os, time\nprint('pid', os.getpid(), flush=True)\ntime.sleep(600)\n");
    let hp = json!({"maxTrials": 6, "maxParallelTrials": 3,
                    "params": [{"parameterName": "lr", "type": "DOUBLE", "minValue": 0.001, "maxValue": 0.1, "scaleType": "UNIT_LOG_SCALE"}]});
    let body = json!({"jobId": "long_1", "trainingInput": {"packageUris": [package.display().to_string()], "pythonModule": "tuned.task", "hyperparameters": hp}});
    assert_eq!(server.post_json("/v1/projects/p/jobs", &body).await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    let pids: Vec<i32> = loop {
        let (_, logs) = server.get_json("/v1/projects/p/jobs/long_1/logs").await;
        let pids: Vec<i32> = logs["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .filter_map(|l| l["text"].as_str()?.strip_prefix("pid ")?.parse().ok())
            .collect();
        if pids.len() == 3 {
            break pids;
        }
        assert!(Instant::now() < deadline, "three trials at once: {logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, running) = server.get_json("/v1/projects/p/jobs/long_1").await;
    let values: Vec<f64> = running["trainingOutput"]["trials"]
        .as_array()
        .expect("trials")
        .iter()
        .map(|t| t["hyperparameters"]["lr"].as_str().expect("lr").parse().expect("number"))
        .collect();
    assert!(values.iter().all(|v| (0.001..=0.1).contains(v)), "{values:?}");
    assert_eq!(server.post_json("/v1/projects/p/jobs/long_1:cancel", &json!({})).await.0, 200);
    let done = server.wait_job("long_1", &["CANCELLED"]).await;
    assert!(
        done["trainingOutput"]["trials"].as_array().expect("trials").iter().all(|t| t["state"] == "CANCELLED"),
        "{done}"
    );
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z "),
            "trial process {pid} outlived cancel"
        );
    }
    let bad = json!({"jobId": "bad_1", "trainingInput": {"packageUris": [package.display().to_string()], "pythonModule": "tuned.task",
        "hyperparameters": {"maxTrials": 2, "maxParallelTrials": 3, "params": [{"parameterName": "x", "type": "INTEGER", "minValue": 1, "maxValue": 2}]}}});
    let (status, error) = server.post_json("/v1/projects/p/jobs", &bad).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(
        error["error"]["details"][0]["fieldViolations"][0]["field"],
        "job.trainingInput.hyperparameters.maxParallelTrials"
    );
}
