//! Batch prediction jobs through the real server: output shards in input order, bad lines
//! counted, CSV and undeployed model directories, failures, cancel with progress, bad input.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{json, Value};

async fn submit(server: &TestServer, job: &str, input: Value) -> (u16, Value) {
    server.post_json("/v1/projects/p/jobs", &json!({"jobId": job, "predictionInput": input})).await
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// The shards `prefix-0000i-of-0000n` under `dir`, each as its lines.
fn shards(dir: &Path, prefix: &str) -> Vec<Vec<String>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("output dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .collect();
    names.sort();
    names.iter().map(|p| std::fs::read_to_string(p).expect("shard").lines().map(str::to_owned).collect()).collect()
}

#[tokio::test]
async fn a_batch_job_writes_one_prediction_per_line_in_input_order_and_counts_bad_lines() {
    let server = TestServer::start().await;
    server.create_model("sums").await;
    server.deploy("sums", "v1", "tuple_out").await;
    let input = server.data.path().join("batch/in");
    let first: String = (0..300).map(|i| format!("[{i}, 0, 0]\n")).collect();
    let mut second: String = (300..600).map(|i| format!("{{\"x\": [{i}, 0.0, 0.0]}}\n")).collect();
    second.push_str("not json\n[1, 2]\n\n");
    write(&input.join("part-0.json"), &first);
    write(&input.join("part-1.json"), &second);
    write(&input.join("ignored.txt"), "[1000, 0, 0]\n");
    let output = server.data.path().join("batch/out");
    let (status, job) = submit(
        &server,
        "batch_1",
        json!({"modelName": "projects/p/models/sums", "dataFormat": "JSON", "region": "us-central1",
               "inputPaths": [format!("file://{}/part-*.json", input.display())],
               "outputPath": format!("file://{}", output.display()), "batchSize": "16", "maxWorkerCount": "3"}),
    )
    .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["predictionInput"]["region"], "us-central1", "{job}");
    assert!(job.get("trainingInput").is_none(), "{job}");
    let done = server.wait_job("batch_1", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    let out = &done["predictionOutput"];
    assert_eq!((out["predictionCount"].as_str(), out["errorCount"].as_str()), (Some("600"), Some("2")), "{done}");
    assert_eq!(out["outputPath"], format!("file://{}", output.display()));
    assert!(out["nodeHours"].as_f64().is_some(), "{done}");

    let results = shards(&output, "prediction.results-");
    assert_eq!(results.len(), 3, "one shard per worker");
    let mut seen = Vec::new();
    for shard in &results {
        let totals: Vec<i64> = shard
            .iter()
            .map(|line| {
                let p: Value = serde_json::from_str(line).expect("JSON line");
                p["total"].as_f64().expect("total") as i64
            })
            .collect();
        assert!(totals.windows(2).all(|w| w[0] < w[1]), "input order within a shard: {totals:?}");
        seen.extend(totals);
    }
    seen.sort();
    assert_eq!(seen, (0..600).collect::<Vec<_>>(), "every good line once; ignored.txt not read");
    let stats: Vec<Value> = shards(&output, "prediction.errors_stats-")
        .concat()
        .iter()
        .map(|l| serde_json::from_str(l).expect("stats line"))
        .collect();
    assert_eq!(stats.iter().map(|s| s["count"].as_u64().expect("count")).sum::<u64>(), 2, "{stats:?}");
    assert!(stats.iter().any(|s| s["error"].as_str().expect("error").starts_with("Invalid JSON")), "{stats:?}");
    assert!(stats.iter().any(|s| s["error"].as_str().expect("error").contains("shape")), "{stats:?}");
}

#[tokio::test]
async fn csv_input_and_an_undeployed_model_directory() {
    let server = TestServer::start().await;
    let model = server.stage_fixture("mlp");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture_models().join("expected.json")).expect("expected"),
    )
    .expect("json");
    let instances = expected["mlp"]["instances"].as_array().expect("instances");
    let csv: String = instances
        .iter()
        .map(|i| i.as_array().expect("row").iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",") + "\n")
        .collect();
    let input = server.data.path().join("csv/rows.csv");
    write(&input, &csv);
    let output = server.data.path().join("csv/out");
    let (status, job) = submit(
        &server,
        "csv_1",
        json!({"uri": model.display().to_string(), "dataFormat": "CSV", "inputPaths": [input.display().to_string()],
               "outputPath": output.display().to_string(), "maxWorkerCount": "1"}),
    )
    .await;
    assert_eq!(status, 200, "{job}");
    let done = server.wait_job("csv_1", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    let lines = shards(&output, "prediction.results-").concat();
    let predictions: Vec<Vec<f64>> = lines.iter().map(|l| serde_json::from_str(l).expect("prediction")).collect();
    let wanted: Vec<Vec<f64>> = serde_json::from_value(expected["mlp"]["predictions"].clone()).expect("predictions");
    assert_eq!(predictions.len(), wanted.len());
    for (got, want) in predictions.iter().zip(&wanted) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
}

#[tokio::test]
async fn a_job_whose_every_line_fails_or_whose_model_cannot_load_fails_clearly() {
    let server = TestServer::start().await;
    let model = server.stage_fixture("mlp");
    let input = server.data.path().join("bad/in.json");
    write(&input, "[1, 2]\n[3]\n");
    let output = server.data.path().join("bad/out");
    let spec = |uri: &Path| {
        json!({"uri": uri.display().to_string(), "dataFormat": "JSON", "inputPaths": [input.display().to_string()],
               "outputPath": output.display().to_string()})
    };
    assert_eq!(submit(&server, "all_bad", spec(&model)).await.0, 200);
    let done = server.wait_job("all_bad", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    let message = done["errorMessage"].as_str().expect("message");
    assert!(message.contains("Every instance failed (2 errors)") && message.contains("shape"), "{message}");
    assert_eq!(done["predictionOutput"]["errorCount"], "2", "{done}");

    let broken = server.stage_fixture("not_torchscript");
    assert_eq!(submit(&server, "broken", spec(&broken)).await.0, 200);
    let done = server.wait_job("broken", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert!(done["errorMessage"].as_str().expect("message").contains("not a loadable TorchScript model"), "{done}");
}

#[tokio::test]
async fn cancel_stops_the_workers_and_keeps_what_was_written() {
    let server = TestServer::start().await;
    let model = server.stage_fixture("mlp");
    let input = server.data.path().join("big/in.json");
    write(&input, &"[0.1, 0.2, 0.3, 0.4]\n".repeat(400_000));
    let output = server.data.path().join("big/out");
    let (status, job) = submit(
        &server,
        "big_1",
        json!({"uri": model.display().to_string(), "dataFormat": "TEXT", "inputPaths": [input.display().to_string()],
               "outputPath": output.display().to_string(), "batchSize": "1", "maxWorkerCount": "1"}),
    )
    .await;
    assert_eq!(status, 200, "{job}");
    // Progress shows while the job runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, job) = server.get_json("/v1/projects/p/jobs/big_1").await;
        let count: u64 = job["predictionOutput"]["predictionCount"].as_str().and_then(|c| c.parse().ok()).unwrap_or(0);
        if job["state"] == "RUNNING" && count > 0 {
            break;
        }
        assert_ne!(job["state"], "SUCCEEDED", "the job finished before it could be cancelled: {job}");
        assert!(Instant::now() < deadline, "no progress reported: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled_at = Instant::now();
    let (status, _) = server.post_json("/v1/projects/p/jobs/big_1:cancel", &json!({})).await;
    assert_eq!(status, 200);
    let done = server.wait_job("big_1", &["CANCELLED", "SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "CANCELLED", "{done}");
    assert!(cancelled_at.elapsed() < Duration::from_secs(5), "cancel took {:?}", cancelled_at.elapsed());
    let written = shards(&output, "prediction.results-").concat().len();
    assert!(written > 0 && written < 400_000, "{written} predictions kept");
    let count: usize = done["predictionOutput"]["predictionCount"].as_str().expect("count").parse().expect("number");
    assert_eq!(count, written, "the final count matches the files");
}

#[tokio::test]
async fn bad_prediction_jobs_are_rejected_naming_the_field() {
    let server = TestServer::start().await;
    server.create_model("empty").await;
    let input = server.data.path().join("in/x.json");
    write(&input, "[1, 2, 3, 4]\n");
    let base = json!({"uri": server.stage_fixture("mlp").display().to_string(), "dataFormat": "JSON",
                      "inputPaths": [input.display().to_string()],
                      "outputPath": server.data.path().join("out").display().to_string()});
    let with = |change: Value| {
        let mut spec = base.clone();
        for (k, v) in change.as_object().expect("object") {
            if v.is_null() {
                spec.as_object_mut().expect("object").remove(k);
            } else {
                spec[k] = v.clone();
            }
        }
        spec
    };
    let cases = [
        (with(json!({"modelName": "projects/p/models/empty"})), 400, "job.predictionInput.modelName"),
        (with(json!({"dataFormat": null})), 400, "job.predictionInput.dataFormat"),
        (with(json!({"dataFormat": "TF_RECORD"})), 400, "job.predictionInput.dataFormat"),
        (with(json!({"inputPaths": []})), 400, "job.predictionInput.inputPaths"),
        (with(json!({"inputPaths": ["/etc/*.conf"]})), 400, "job.predictionInput.inputPaths[0]"),
        (with(json!({"outputPath": "/etc/anneal-out"})), 400, "job.predictionInput.outputPath"),
        (with(json!({"batchSize": "0"})), 400, "job.predictionInput.batchSize"),
        (with(json!({"signatureName": "other"})), 400, "job.predictionInput.signatureName"),
    ];
    for (i, (spec, want, field)) in cases.iter().enumerate() {
        let (status, body) = submit(&server, &format!("bad_{i}"), spec.clone()).await;
        assert_eq!(status, *want, "{spec}: {body}");
        assert_eq!(body["error"]["details"][0]["fieldViolations"][0]["field"], *field, "{spec}: {body}");
    }
    let (status, body) =
        submit(&server, "missing", with(json!({"uri": null, "modelName": "projects/p/models/nothing"}))).await;
    assert_eq!((status, &body["error"]["status"]), (404, &json!("NOT_FOUND")), "{body}");
    let (status, body) =
        submit(&server, "no_default", with(json!({"uri": null, "modelName": "projects/p/models/empty"}))).await;
    assert_eq!((status, &body["error"]["status"]), (400, &json!("FAILED_PRECONDITION")), "{body}");
    let (status, body) = server
        .post_json("/v1/projects/p/jobs", &json!({"jobId": "both", "predictionInput": base, "trainingInput": {}}))
        .await;
    assert_eq!(status, 400, "{body}");
}

/// Writes `instances` as TFRecords of Examples with the feature `name` (by the fixture's pure-Python
/// writer, CRC32C included), gzipped and with one record's data corrupted when asked.
fn write_tfrecords(instances: &Value, name: &str, out: &Path, extra: &[&str]) {
    std::fs::create_dir_all(out.parent().expect("parent")).expect("mkdir");
    let json = out.with_extension("instances.json");
    std::fs::write(&json, instances.to_string()).expect("write");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/write_tfrecords.py");
    let status = std::process::Command::new(common::python())
        .arg(script)
        .arg(&json)
        .arg(name)
        .arg(out)
        .args(extra)
        .status()
        .expect("python");
    assert!(status.success(), "write_tfrecords.py failed");
}

#[tokio::test]
async fn tf_record_inputs_of_examples_predict_as_their_json_instances_do() {
    let server = TestServer::start().await;
    let model = server.stage_fixture("mlp");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture_models().join("expected.json")).expect("expected"),
    )
    .expect("json");
    let instances = &expected["mlp"]["instances"];
    let wanted: Vec<Vec<f64>> = serde_json::from_value(expected["mlp"]["predictions"].clone()).expect("predictions");
    let dir = server.data.path().join("tfr");
    // Plain, with the second record's data corrupted; gzipped, whole.
    write_tfrecords(instances, "x", &dir.join("in.tfrecord"), &["--corrupt", "1"]);
    write_tfrecords(instances, "x", &dir.join("in.tfrecord.gz"), &["--gzip"]);
    for (job, format, file, kept) in [
        ("tfr_1", "TF_RECORD", "in.tfrecord", vec![0, 2]),
        ("tfr_2", "TF_RECORD_GZIP", "in.tfrecord.gz", vec![0, 1, 2]),
    ] {
        let output = dir.join(format!("out-{job}"));
        let (status, body) = submit(
            &server,
            job,
            json!({"uri": model.display().to_string(), "dataFormat": format,
                   "inputPaths": [dir.join(file).display().to_string()],
                   "outputPath": output.display().to_string(), "maxWorkerCount": "1"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let done = server.wait_job(job, &["SUCCEEDED", "FAILED"]).await;
        assert_eq!(done["state"], "SUCCEEDED", "{done}");
        let errors = (wanted.len() - kept.len()).to_string();
        assert_eq!(done["predictionOutput"]["errorCount"].as_str(), Some(errors.as_str()), "{done}");
        let lines = shards(&output, "prediction.results-").concat();
        let predictions: Vec<Vec<f64>> = lines.iter().map(|l| serde_json::from_str(l).expect("prediction")).collect();
        assert_eq!(predictions.len(), kept.len(), "{job}: {lines:?}");
        for (got, index) in predictions.iter().zip(&kept) {
            for (g, w) in got.iter().zip(&wanted[*index]) {
                assert!((g - w).abs() < 1e-5, "{job}: {got:?} vs {:?}", wanted[*index]);
            }
        }
        if job == "tfr_1" {
            let stats = shards(&output, "prediction.errors_stats-").concat().join("\n");
            assert!(stats.contains("CRC does not match"), "{stats}");
        }
    }
    // A gzipped file named as plain TF_RECORD (or a JSON file) is refused when the job is made.
    let (status, body) = submit(
        &server,
        "tfr_3",
        json!({"uri": model.display().to_string(), "dataFormat": "TF_RECORD",
               "inputPaths": [dir.join("in.tfrecord.gz").display().to_string()],
               "outputPath": dir.join("out-3").display().to_string()}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("TFRecord header"), "{body}");
}
