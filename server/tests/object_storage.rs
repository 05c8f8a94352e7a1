//! `s3://` URIs end to end against a real S3-compatible server (moto, started per test on
//! 127.0.0.1): versions deployed from a bucket, batch prediction over a wildcard in a bucket into
//! a bucket, training from a package in a bucket with its job dir there, confinement of buckets
//! and prefixes, and what a missing bucket, refused credentials and a store that is down answer;
//! the CLI's uploads into a bucket, and a node with an artifacts URI keeping versions, uploads and
//! ended jobs' logs and metrics there for any node.

mod common;

use std::time::Duration;

use common::s3::S3Server;
use common::TestServer;
use serde_json::{json, Value};

/// A server whose configured buckets are `configs`.
async fn server_with(configs: &[anneal::storage::BucketConfig]) -> TestServer {
    let buckets = S3Server::buckets_env(configs);
    TestServer::start_with(&[], &[("ANNEAL_BUCKETS", buckets.as_str())]).await
}

fn field_of(body: &Value) -> &Value {
    &body["error"]["details"][0]["fieldViolations"][0]["field"]
}

#[tokio::test]
async fn a_version_deploys_from_a_bucket_and_predicts() {
    let s3 = S3Server::start().await;
    s3.create_bucket("models").await;
    s3.upload_tree("models", &common::fixture_models().join("mlp"), "team/mlp/1").await;
    let server = server_with(&[s3.bucket("models", &["team"])]).await;
    server.create_model("m").await;
    let done = server.deploy_uri("m", "v1", "s3://models/team/mlp/1/").await;
    assert!(done.get("error").is_none(), "{done}");
    let (status, version) = server.get_json("/v1/projects/p/models/m/versions/v1").await;
    assert_eq!((status, version["state"].as_str()), (200, Some("READY")), "{version}");
    assert_eq!(version["deploymentUri"], "s3://models/team/mlp/1/", "the URI as given");
    assert_eq!(version["framework"], "PYTORCH", "detected from the downloaded files: {version}");
    let (status, answer) = server
        .post_json("/v1/projects/p/models/m/versions/v1:predict", &json!({"instances": [[0.5, 0.25, 1.0, 2.0]]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["predictions"].as_array().map(Vec::len), Some(1), "{answer}");
    // The download went once the version had its own copy.
    let cache = server.data.path().join("storage/cache/p");
    let left = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "downloads are removed");

    let (status, body) = server
        .post_json(
            "/v1/projects/p/models/m/versions",
            &json!({"name": "v2", "deploymentUri": "s3://models/team/missing"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(field_of(&body), "version.deploymentUri", "{body}");
    assert!(body.to_string().contains("does not exist"), "{body}");
}

#[tokio::test]
async fn batch_prediction_reads_a_wildcard_in_a_bucket_and_writes_its_shards_there() {
    let s3 = S3Server::start().await;
    s3.create_bucket("data").await;
    let first: String = (0..300).map(|i| format!("[{i}, 0, 0]\n")).collect();
    let second: String = (300..500).map(|i| format!("{{\"x\": [{i}, 0.0, 0.0]}}\n")).collect::<String>() + "not json\n";
    s3.put("data", "in/part-0.json", first.as_bytes()).await;
    s3.put("data", "in/part-1.json", second.as_bytes()).await;
    s3.put("data", "in/ignored.txt", b"[1000, 0, 0]\n").await;
    s3.put("data", "in/deeper/part-9.json", b"[2000, 0, 0]\n").await;
    let server = server_with(&[s3.bucket("data", &[])]).await;
    server.create_model("sums").await;
    server.deploy("sums", "v1", "tuple_out").await;
    let (status, job) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "batch_s3", "predictionInput": {
                "modelName": "projects/p/models/sums", "dataFormat": "JSON", "region": "us-central1",
                "inputPaths": ["s3://data/in/part-*.json"], "outputPath": "s3://data/out/run1",
                "maxWorkerCount": 2}}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let done = server.wait_job("batch_s3", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    let out = &done["predictionOutput"];
    assert_eq!((out["predictionCount"].as_str(), out["errorCount"].as_str()), (Some("500"), Some("1")), "{done}");
    assert_eq!(out["outputPath"], "s3://data/out/run1");

    let keys = s3.keys("data", "out/run1").await;
    assert_eq!(
        keys,
        [
            "out/run1/prediction.errors_stats-00000-of-00002",
            "out/run1/prediction.errors_stats-00001-of-00002",
            "out/run1/prediction.results-00000-of-00002",
            "out/run1/prediction.results-00001-of-00002",
        ],
        "only complete shards are visible"
    );
    let mut totals = Vec::new();
    for key in &keys[2..] {
        for line in s3.text("data", key).await.lines() {
            let prediction: Value = serde_json::from_str(line).expect("JSON line");
            totals.push(prediction["total"].as_f64().expect("total") as i64);
        }
    }
    totals.sort_unstable();
    assert_eq!(totals, (0..500).collect::<Vec<i64>>(), "every instance of the matched files once, nothing else");
    let stats = s3.text("data", &keys[0]).await + &s3.text("data", &keys[1]).await;
    assert!(stats.contains("Invalid JSON instance"), "{stats}");

    // The same output again is refused when the job runs: earlier predictions are never replaced.
    let (status, _) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "batch_again", "predictionInput": {
                "modelName": "projects/p/models/sums", "dataFormat": "JSON", "region": "us-central1",
                "inputPaths": ["s3://data/in/part-0.json"], "outputPath": "s3://data/out/run1"}}),
        )
        .await;
    assert_eq!(status, 200);
    let again = server.wait_job("batch_again", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(again["state"], "FAILED", "{again}");
    assert!(again["errorMessage"].as_str().unwrap_or_default().contains("already exists"), "{again}");
}

/// A trainer that writes its "export" into its job dir in the bucket with boto3, reaching the
/// store through the `AWS_*` variables Anneal gives it.
const S3_TRAINER: &str = r#"
import argparse, os, boto3
parser = argparse.ArgumentParser()
parser.add_argument("--job-dir")
parser.add_argument("--greeting")
args = parser.parse_args()
print("job dir", args.job_dir, flush=True)
print("key", os.environ.get("AWS_ACCESS_KEY_ID"), flush=True)
assert args.job_dir.startswith("s3://"), args.job_dir
bucket, _, prefix = args.job_dir[len("s3://"):].partition("/")
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
s3.put_object(Bucket=bucket, Key=prefix + "/export/model.txt", Body=args.greeting.encode())
print("exported", flush=True)
"#;

#[tokio::test]
async fn a_training_job_runs_a_package_from_a_bucket_and_writes_to_its_job_dir_there() {
    let s3 = S3Server::start().await;
    s3.create_bucket("work").await;
    // Project p's trainers get p's keys for the bucket, not the server's ("testing").
    let server = server_with(&[S3Server::with_projects(s3.bucket("work", &["packages", "jobs"]), &["p"])]).await;
    let package = server.trainer("s3trainer", S3_TRAINER);
    s3.upload_tree("work", &package, "packages/s3trainer").await;
    let (status, body) = server
        .submit_training(
            "train_s3",
            json!({"scaleTier": "BASIC", "region": "us-central1", "pythonModule": "s3trainer.task",
                   "packageUris": ["s3://work/packages/s3trainer"], "args": ["--greeting=hello-from-s3"],
                   "jobDir": "s3://work/jobs/train_s3"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_job("train_s3", &["SUCCEEDED", "FAILED"]).await;
    let (_, logs) = server.get_json("/v1/projects/p/jobs/train_s3/logs").await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{logs}");
    assert!(logs.to_string().contains("job dir s3://work/jobs/train_s3"), "{logs}");
    assert!(logs.to_string().contains("key p-key"), "the trainer got its project's key: {logs}");
    assert!(!logs.to_string().contains("key testing"), "the trainer got the server's key: {logs}");
    assert_eq!(s3.text("work", "jobs/train_s3/export/model.txt").await, "hello-from-s3");

    let (status, body) = server
        .submit_training(
            "train_missing",
            json!({"scaleTier": "BASIC", "region": "us-central1", "pythonModule": "s3trainer.task",
                   "packageUris": ["s3://work/packages/nothing-here.tar.gz"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(field_of(&body), "job.trainingInput.packageUris[0]", "{body}");
}

#[tokio::test]
async fn uris_outside_the_configured_buckets_and_prefixes_are_refused_naming_the_field() {
    let s3 = S3Server::start().await;
    s3.create_bucket("data").await;
    let server = server_with(&[s3.bucket("data", &["allowed"])]).await;
    server.create_model("m").await;
    let version = |uri: &str| json!({"name": "v", "deploymentUri": uri});
    for uri in
        ["s3://other/allowed/m", "s3://data/allowed-not/m", "s3://data/m", "s3://data/allowed/../m", "s3://Data/x"]
    {
        let (status, body) = server.post_json("/v1/projects/p/models/m/versions", &version(uri)).await;
        assert_eq!((status, field_of(&body).as_str()), (400, Some("version.deploymentUri")), "{uri}: {body}");
    }
    let training = |package: &str, job_dir: &str| {
        json!({"scaleTier": "BASIC", "region": "us-central1", "pythonModule": "t.task",
               "packageUris": [package], "jobDir": job_dir})
    };
    let (status, body) =
        server.submit_training("t1", training("s3://data/elsewhere/p.tar.gz", "s3://data/allowed/j")).await;
    assert_eq!((status, field_of(&body).as_str()), (400, Some("job.trainingInput.packageUris[0]")), "{body}");
    let (status, body) = server.submit_training("t2", training("s3://data/allowed/p.tar.gz", "s3://elsewhere/j")).await;
    assert_eq!((status, field_of(&body).as_str()), (400, Some("job.trainingInput.jobDir")), "{body}");
    let batch = |input: &str, output: &str| {
        json!({"jobId": "b", "predictionInput": {"uri": "s3://data/allowed/model", "dataFormat": "JSON",
               "region": "us-central1", "inputPaths": [input], "outputPath": output}})
    };
    let (status, body) =
        server.post_json("/v1/projects/p/jobs", &batch("s3://data/in/*.json", "s3://data/allowed/out")).await;
    assert_eq!((status, field_of(&body).as_str()), (400, Some("job.predictionInput.inputPaths[0]")), "{body}");
    let (status, body) =
        server.post_json("/v1/projects/p/jobs", &batch("s3://data/allowed/*.json", "s3://data/out")).await;
    assert_eq!((status, field_of(&body).as_str()), (400, Some("job.predictionInput.outputPath")), "{body}");
}

#[tokio::test]
async fn a_missing_bucket_refused_credentials_and_a_store_that_is_down_say_what_failed() {
    let s3 = S3Server::start().await;
    let checked = S3Server::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).await;
    let mut down = s3.bucket("down", &[]);
    down.endpoint = Some("http://127.0.0.1:9".into());
    let server = server_with(&[s3.bucket("absent", &[]), checked.bucket("locked", &[]), down]).await;
    server.create_model("m").await;
    let attempt = |uri: &str| json!({"name": "v", "deploymentUri": uri});

    let (status, body) = server.post_json("/v1/projects/p/models/m/versions", &attempt("s3://absent/m")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("NoSuchBucket"), "names the store's reason: {body}");

    let (status, body) = server.post_json("/v1/projects/p/models/m/versions", &attempt("s3://locked/m")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("InvalidAccessKeyId"), "names the store's reason: {body}");

    let started = std::time::Instant::now();
    let (status, body) = server.post_json("/v1/projects/p/models/m/versions", &attempt("s3://down/m")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["status"], "UNAVAILABLE", "{body}");
    assert!(body.to_string().contains("s3://down/m"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(30), "retries are bounded: {:?}", started.elapsed());
}

#[tokio::test]
async fn versions_published_to_a_bucket_load_on_a_node_that_never_had_their_files() {
    let s3 = S3Server::start().await;
    s3.create_bucket("artifacts").await;
    let buckets = S3Server::buckets_env(&[s3.bucket("artifacts", &["anneal"])]);
    let first_storage = tempfile::tempdir().expect("tempdir");
    let envs = |storage: &std::path::Path| {
        vec![
            ("ANNEAL_BUCKETS".to_owned(), buckets.clone()),
            ("ANNEAL_ARTIFACTS_URI".to_owned(), "s3://artifacts/anneal".to_owned()),
            ("ANNEAL_STORAGE_DIR".to_owned(), storage.display().to_string()),
        ]
    };
    let first_envs = envs(first_storage.path());
    let pairs: Vec<(&str, &str)> = first_envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = TestServer::start_with(&[], &pairs).await;
    // The CLI's upload goes to the artifacts bucket; the job's log and metrics follow it there.
    let package = server.trainer("reporter", REPORTING_TRAINER);
    let (code, _, err) = cli(
        &server,
        &[
            "jobs",
            "submit",
            "training",
            "report_1",
            "--package-path",
            &package.join("reporter").display().to_string(),
            "--module-name",
            "reporter.task",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let done = server.wait_job("report_1", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    let keys = s3.keys("artifacts", "anneal/").await;
    assert!(keys.iter().any(|k| k.starts_with("anneal/uploads/p/") && k.ends_with("/reporter/task.py")), "{keys:?}");
    assert!(keys.iter().any(|k| k == "anneal/jobs/p/report_1/job.log"), "{keys:?}");
    assert!(keys.iter().any(|k| k == "anneal/jobs/p/report_1/metrics.jsonl"), "{keys:?}");
    server.create_model("m").await;
    for version in ["v1", "v2"] {
        let op = server.deploy("m", version, "mlp").await;
        assert!(op.get("error").is_none(), "{op}");
    }
    let keys = s3.keys("artifacts", "anneal/models/p/m").await;
    assert!(keys.iter().any(|k| k.starts_with("anneal/models/p/m/v1-") && k.ends_with("/model.pt")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("anneal/models/p/m/v2-") && k.ends_with("/signature.json")), "{keys:?}");

    // The same database on a node with an empty storage folder: it serves the versions from the bucket.
    let data = server.stop_keeping_data().await;
    let second_storage = tempfile::tempdir().expect("tempdir");
    let second_envs = envs(second_storage.path());
    let pairs: Vec<(&str, &str)> = second_envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = TestServer::start_in(data, &[], &pairs).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer) = server
            .post_json("/v1/projects/p/models/m/versions/v1:predict", &json!({"instances": [[0.1, 0.2, 0.3, 0.4]]}))
            .await;
        if status == 200 {
            assert_eq!(answer["predictions"].as_array().map(Vec::len), Some(1), "{answer}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never served after the restart: {status} {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(second_storage.path().join("models/p/m").is_dir(), "fetched into the new storage folder");
    let (status, logs) = server.get_json("/v1/projects/p/jobs/report_1/logs").await;
    assert_eq!(status, 200, "{logs}");
    assert!(logs.to_string().contains("reported step 2"), "the ended job's log, from the bucket: {logs}");
    let (status, metrics) = server.get_json("/v1/projects/p/jobs/report_1/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    let series = metrics["series"].as_array().cloned().unwrap_or_default();
    assert!(series.iter().any(|s| s["tag"] == "loss" && s["points"].as_array().map(Vec::len) == Some(2)), "{metrics}");

    let (status, op) = server.delete_json("/v1/projects/p/models/m/versions/v2").await;
    assert_eq!(status, 200, "{op}");
    server.wait_operation(op["name"].as_str().expect("name")).await;
    let keys = s3.keys("artifacts", "anneal/models/p/m").await;
    assert!(!keys.iter().any(|k| k.starts_with("anneal/models/p/m/v2-")), "a deleted version's objects go: {keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("anneal/models/p/m/v1-")), "{keys:?}");
}

/// A trainer that reports two metric points and says so in its log.
const REPORTING_TRAINER: &str = r#"
import json, os, time
path = os.environ["CLOUD_ML_HP_METRIC_FILE"]
lines = []
for step, loss in [(1, 0.9), (2, 0.4)]:
    lines.append(json.dumps({"global_step": str(step), "loss": str(loss), "timestamp": time.time(), "trial": "0"}))
    open(path, "w").write("\n".join(lines) + "\n")
    print("reported step", step, flush=True)
    time.sleep(0.3)
"#;

/// Runs the CLI against `server` in project `p`, as its admin.
async fn cli(server: &TestServer, args: &[&str]) -> (Option<i32>, String, String) {
    let data = server.data.path().display().to_string();
    let home = server.data.path().join("cli-home").display().to_string();
    let mut all = vec!["--endpoint", server.base.as_str(), "--project", "p"];
    all.extend_from_slice(args);
    common::run_anneal(&all, &[("ANNEAL_DATA_DIR", data.as_str()), ("XDG_CONFIG_HOME", home.as_str())]).await
}

#[tokio::test]
async fn the_cli_stages_a_package_in_a_bucket_and_uploads_there_are_whole_or_absent() {
    let s3 = S3Server::start().await;
    s3.create_bucket("staging").await;
    let buckets = S3Server::buckets_env(&[s3.bucket("staging", &["pkgs"])]);
    let server =
        TestServer::start_with(&[], &[("ANNEAL_BUCKETS", buckets.as_str()), ("ANNEAL_MAX_UPLOAD_BYTES", "4096")]).await;
    let package = server.trainer("staged", "print('the staged trainer ran', flush=True)\n");
    let package = package.join("staged").display().to_string();
    let (code, out, err) = cli(
        &server,
        &[
            "jobs",
            "submit",
            "training",
            "staged_1",
            "--package-path",
            &package,
            "--module-name",
            "staged.task",
            "--staging-bucket",
            "s3://staging/pkgs",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let keys = s3.keys("staging", "pkgs/").await;
    assert!(keys.iter().any(|k| k.ends_with("/staged/task.py")), "{keys:?}");
    let done = server.wait_job("staged_1", &["SUCCEEDED", "FAILED"]).await;
    let (_, logs) = server.get_json("/v1/projects/p/jobs/staged_1/logs").await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{logs}");
    assert!(logs.to_string().contains("the staged trainer ran"), "{logs}");
    assert_eq!(
        done["trainingInput"]["packageUris"][0].as_str().map(|u| u.starts_with("s3://staging/pkgs/")),
        Some(true),
        "{done}"
    );

    // Outside the bucket's prefixes: refused before anything is sent, naming the field.
    let (code, _, err) = cli(
        &server,
        &[
            "jobs",
            "submit",
            "training",
            "staged_2",
            "--package-path",
            &package,
            "--module-name",
            "staged.task",
            "--staging-bucket",
            "s3://staging/elsewhere",
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("INVALID_ARGUMENT") && err.contains("uri"), "{err}");

    // A file over max_upload_bytes is refused and leaves no object; one within it appears whole.
    let (status, upload) = server.post_json("/v1/projects/p/uploads", &json!({"uri": "s3://staging/pkgs/raw"})).await;
    assert_eq!(status, 200, "{upload}");
    let id = upload["name"].as_str().and_then(|n| n.rsplit('/').next()).expect("id").to_owned();
    let prefix = format!("pkgs/raw/{id}/");
    assert_eq!(
        upload["uri"].as_str(),
        Some(format!("s3://staging/{}", prefix.trim_end_matches('/')).as_str()),
        "{upload}"
    );
    let put = |name: &str, size: usize| {
        let url = server.url(&format!("/v1/projects/p/uploads/{id}/{name}"));
        server.client.put(url).body(vec![b'x'; size]).send()
    };
    let refused = put("big.bin", 5000).await.expect("PUT");
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(s3.keys("staging", &prefix).await, Vec::<String>::new(), "nothing half-visible");
    let kept = put("small.bin", 100).await.expect("PUT");
    assert_eq!(kept.status().as_u16(), 200);
    assert_eq!(s3.text("staging", &format!("{prefix}small.bin")).await.len(), 100);

    let (status, body) = server.post_json("/v1/projects/p/uploads", &json!({"uri": "file:///tmp"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(field_of(&body), "uri", "{body}");
}

#[tokio::test]
async fn the_example_trains_into_a_bucket_on_one_node_and_another_deploys_and_predicts_from_it() {
    let s3 = S3Server::start().await;
    s3.create_bucket("work").await;
    let config = [S3Server::with_projects(s3.bucket("work", &[]), &["p"])];
    let trainer_node = server_with(&config).await;
    let package = trainer_node.stage_example("digits");
    let (status, job) = trainer_node
        .submit_training(
            "digits_s3",
            json!({"scaleTier": "BASIC", "region": "us-central1", "pythonModule": "trainer.task",
                   "packageUris": [package.display().to_string()], "jobDir": "s3://work/runs/digits",
                   "args": ["--epochs", "3"]}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let done = trainer_node.wait_job("digits_s3", &["SUCCEEDED", "FAILED"]).await;
    let (_, logs) = trainer_node.get_json("/v1/projects/p/jobs/digits_s3/logs").await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{logs}");
    let keys = s3.keys("work", "runs/digits/").await;
    for key in ["runs/digits/checkpoints/epoch-3.pt", "runs/digits/model/model.pt", "runs/digits/model/signature.json"]
    {
        assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
    }

    // Another node, with nothing of the first one's but the bucket.
    let serving_node = server_with(&config).await;
    serving_node.create_model("digits").await;
    let op = serving_node.deploy_uri("digits", "v1", "s3://work/runs/digits/model").await;
    assert_eq!(op["response"]["state"], "READY", "{op}");
    let pixels: Vec<Vec<f64>> = (0..4).map(|i| (0..64).map(|j| f64::from((i * 7 + j) % 16) / 16.0).collect()).collect();
    let (status, body) =
        serving_node.post_json("/v1/projects/p/models/digits:predict", &json!({"instances": pixels})).await;
    assert_eq!(status, 200, "{body}");
    let predictions = body["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), 4, "{body}");
    assert!(predictions.iter().all(|p| p.as_array().map(Vec::len) == Some(10)), "ten logits each: {body}");
}

/// A place in a bucket that one project's job writes (its `jobDir`, a batch `outputPath`) is
/// that project's: another project naming it, or anything under it, in any URI field gets the
/// answer a URI outside the bucket's prefixes gets.
#[tokio::test]
async fn a_job_dir_in_a_bucket_is_outside_the_prefixes_for_every_other_project() {
    let s3 = S3Server::start().await;
    s3.create_bucket("work").await;
    let server = server_with(&[s3.bucket("work", &["jobs"])]).await;
    let package = server.trainer("s3trainer", S3_TRAINER).display().to_string();
    let claim = json!({"jobId": "owner", "trainingInput": {"packageUris": [package], "pythonModule": "s3trainer.task",
                       "args": ["--greeting=a"], "jobDir": "s3://work/jobs/a_job"}});
    let (status, body) = server.post_json("/v1/projects/a/jobs", &claim).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.post_json("/v1/projects/b/models", &json!({"name": "m"})).await;
    assert_eq!(status, 200, "{body}");
    // Each case: the request with `URI` in the field, the URI of A's place and one outside the
    // prefixes, and how the answer names each (a batch input by its folder).
    let cases = [
        (
            "jobs",
            "job.trainingInput.jobDir",
            json!({"jobId": "b1", "trainingInput": {"packageUris": [package], "pythonModule": "s3trainer.task", "jobDir": "URI"}}),
            ("s3://work/jobs/a_job/mine", "s3://work/elsewhere/mine"),
            None,
        ),
        (
            "jobs",
            "job.trainingInput.packageUris[0]",
            json!({"jobId": "b2", "trainingInput": {"packageUris": ["URI"], "pythonModule": "x.task"}}),
            ("s3://work/jobs/a_job/export/model.txt", "s3://work/elsewhere/model.txt"),
            None,
        ),
        (
            "jobs",
            "job.predictionInput.inputPaths[0]",
            json!({"jobId": "b3", "predictionInput": {"dataFormat": "JSON", "inputPaths": ["URI"], "outputPath": "s3://work/jobs/b_out", "region": "us-central1", "uri": package}}),
            ("s3://work/jobs/a_job/in/*.json", "s3://work/elsewhere/in/*.json"),
            Some("/*.json"),
        ),
        (
            "jobs",
            "job.predictionInput.outputPath",
            json!({"jobId": "b4", "predictionInput": {"dataFormat": "JSON", "inputPaths": [format!("{package}/s3trainer/task.py")], "outputPath": "URI", "region": "us-central1", "uri": package}}),
            ("s3://work/jobs/a_job/out", "s3://work/elsewhere/out"),
            None,
        ),
        (
            "models/m/versions",
            "version.deploymentUri",
            json!({"name": "v1", "deploymentUri": "URI"}),
            ("s3://work/jobs/a_job/export", "s3://work/elsewhere/export"),
            None,
        ),
    ];
    for (path, field, request, (claimed, outside), cut) in cases {
        let answer = |named: &'static str| {
            let request: Value = serde_json::from_str(&request.to_string().replace("URI", named)).expect("json");
            let server = &server;
            async move {
                let (status, body) = server.post_json(&format!("/v1/projects/b/{path}"), &request).await;
                assert_eq!(status, 400, "{field} naming {named}: {body}");
                assert_eq!(field_of(&body), field, "{body}");
                let shown = cut.map_or(named.to_owned(), |cut| named.replace(cut, ""));
                body["error"]["message"].as_str().expect("message").replace(&shown, "URI")
            }
        };
        let message = answer(claimed).await;
        assert!(message.contains("'URI' is outside the prefixes of bucket work"), "{field}: {message}");
        assert_eq!(message, answer(outside).await, "{field}: A's place reads like a place outside the prefixes");
    }
}
