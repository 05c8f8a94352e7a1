//! The whole story on the example trainer: train it as a two-replica DDP job, deploy its export as
//! a version, and predict digits with it.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::json;

#[tokio::test]
async fn train_the_digits_example_deploy_it_and_predict() {
    let server = TestServer::start().await;
    let package = server.stage_example("digits");
    let job_dir = server.data.path().join("outputs/digits_1");
    let (status, job) = server
        .post_json(
            "/v1/projects/demo/jobs",
            &json!({"jobId": "digits_1", "trainingInput": {
                "scaleTier": "CUSTOM", "masterType": "n1-standard-4", "workerType": "n1-standard-4", "workerCount": "1",
                "packageUris": [package.display().to_string()], "pythonModule": "trainer.task",
                "jobDir": job_dir.display().to_string(), "args": ["--epochs", "15"], "region": "us-central1"}}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let (_, job) = server.get_json("/v1/projects/demo/jobs/digits_1").await;
        if ["SUCCEEDED", "FAILED", "CANCELLED"].iter().any(|s| job["state"] == *s) {
            break job;
        }
        assert!(Instant::now() < deadline, "training did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (_, logs) = server.get_json("/v1/projects/demo/jobs/digits_1/logs?replica=master-replica-0").await;
    let text: Vec<&str> =
        logs["lines"].as_array().expect("lines").iter().map(|l| l["text"].as_str().expect("text")).collect();
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{}", text.join("\n"));
    let last_epoch = text.iter().rev().find(|l| l.starts_with("epoch 15 ")).expect("epoch 15 logged");
    let accuracy: f64 = last_epoch.rsplit(' ').next().expect("accuracy").parse().expect("number");
    assert!(accuracy > 0.9, "the MLP learns the digits: {last_epoch}");
    assert!(job_dir.join("checkpoints/epoch-15.pt").is_file(), "checkpoints written");
    let metrics = std::fs::read_to_string(
        server.data.path().join("storage/jobs/demo/digits_1/replicas/master-replica-0/hypertune.metrics"),
    )
    .expect("metrics file");
    assert!(metrics.lines().count() >= 30 && metrics.contains("\"accuracy\""), "{metrics}");

    server.post_json("/v1/projects/demo/models", &json!({"name": "digits"})).await;
    let op = server
        .post_json(
            "/v1/projects/demo/models/digits/versions",
            &json!({"name": "v1", "deploymentUri": job_dir.join("model").display().to_string()}),
        )
        .await
        .1;
    let op = server.wait_operation(op["name"].as_str().expect("operation")).await;
    assert_eq!(op["response"]["state"], "READY", "{op}");

    // Predict the first test digits of scikit-learn's set, as pixels 0..1.
    let output = std::process::Command::new(common::python())
        .args(["-c", "import json; from sklearn.datasets import load_digits; d = load_digits(); print(json.dumps({'x': (d.data[-20:] / 16).tolist(), 'y': d.target[-20:].tolist()}))"])
        .output()
        .expect("python");
    let sample: serde_json::Value = serde_json::from_slice(&output.stdout).expect("sample json");
    let (status, body) =
        server.post_json("/v1/projects/demo/models/digits:predict", &json!({"instances": sample["x"]})).await;
    assert_eq!(status, 200, "{body}");
    let predictions = body["predictions"].as_array().expect("predictions");
    let correct = predictions
        .iter()
        .zip(sample["y"].as_array().expect("labels"))
        .filter(|(logits, label)| {
            let logits = logits.as_array().expect("logits");
            let best = (0..logits.len())
                .max_by(|a, b| logits[*a].as_f64().unwrap_or(0.0).total_cmp(&logits[*b].as_f64().unwrap_or(0.0)))
                .expect("argmax");
            best as u64 == label.as_u64().expect("label")
        })
        .count();
    assert!(correct >= 17, "{correct}/20 digits right");
}
