//! No request takes the server down: each input that once aborted the process, panicked a handler
//! or built billions of values is refused with 400 naming its field (or 429 for growth limits),
//! and the server answers `/healthz` afterwards. Paths outside the storage roots get one answer
//! whether they exist or not.

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::{json, Value};

/// Asserts a 400 INVALID_ARGUMENT envelope naming `field`, with `needle` in its message.
fn assert_invalid(status: u16, body: &Value, field: &str, needle: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{body}");
    assert_eq!(body["error"]["details"][0]["fieldViolations"][0]["field"], field, "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains(needle), "{field}: '{needle}' not in {message}");
}

async fn assert_alive(server: &TestServer) {
    let response = server.get("/healthz").await;
    assert_eq!(response.status(), 200, "the server still answers");
}

/// An `acceleratorConfig.count` of any pool, in any scale tier, past the GPUs the executor has
/// is refused naming its field; within them it is accepted as before.
#[tokio::test]
async fn accelerator_counts_beyond_the_servers_gpus_are_refused_naming_the_field() {
    let server = TestServer::start_with(&[], &[("ANNEAL_GPU_DEVICES", "2")]).await;
    let package = server.trainer("noop", "pass\n").display().to_string();
    let with = |extra: Value| {
        let mut input = json!({"packageUris": [package], "pythonModule": "noop.task"});
        input.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        input
    };
    let accelerators = |count: Value| json!({"acceleratorConfig": {"count": count, "type": "NVIDIA_TESLA_T4"}});
    let field = |pool: &str| format!("job.trainingInput.{pool}Config.acceleratorConfig.count");
    let cases = [
        (
            json!({"scaleTier": "CUSTOM", "masterType": "n1-standard-4", "masterConfig": accelerators(json!("1000000"))}),
            field("master"),
            "trainingInput.masterConfig.acceleratorConfig.count is 1000000, more than the 2 GPUs this server has",
        ),
        // Not only in CUSTOM, where the configs are read: a BASIC job's is refused too.
        (json!({"masterConfig": accelerators(json!(1000000))}), field("master"), "is 1000000, more than the 2 GPUs"),
        (
            json!({"scaleTier": "CUSTOM", "workerCount": "1", "workerConfig": accelerators(json!("3"))}),
            field("worker"),
            "workerConfig.acceleratorConfig.count is 3, more than the 2 GPUs",
        ),
        (
            json!({"scaleTier": "CUSTOM", "parameterServerCount": 1, "parameterServerConfig": accelerators(json!(5))}),
            field("parameterServer"),
            "is 5, more than the 2 GPUs",
        ),
        (
            json!({"scaleTier": "CUSTOM", "masterConfig": accelerators(json!("lots"))}),
            field("master"),
            "not a GPU count",
        ),
        (json!({"scaleTier": "CUSTOM", "masterConfig": accelerators(json!(-1))}), field("master"), "between 0 and 64"),
    ];
    for (i, (extra, field, needle)) in cases.into_iter().enumerate() {
        let (status, body) = server.submit_training(&format!("gpus_{i}"), with(extra)).await;
        assert_invalid(status, &body, &field, needle);
    }
    let (status, body) = server.get_json("/v1/projects/p/jobs").await;
    assert_eq!((status, &body["jobs"]), (200, &Value::Null), "nothing was created: {body}");
    // Within the host's GPUs, and none at all: accepted as before.
    let (status, body) = server
        .submit_training("fits", with(json!({"scaleTier": "CUSTOM", "masterConfig": accelerators(json!("2"))})))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.submit_training("none", with(json!({"masterConfig": accelerators(json!("0"))}))).await;
    assert_eq!(status, 200, "{body}");
    assert_alive(&server).await;
}

#[tokio::test]
async fn huge_replica_and_trial_counts_are_refused_before_anything_is_allocated() {
    let server = TestServer::start().await;
    let package = server.trainer("noop", "pass\n").display().to_string();
    let base = json!({"scaleTier": "CUSTOM", "packageUris": [package], "pythonModule": "noop.task"});
    let with = |extra: Value| {
        let mut input = base.clone();
        input.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        input
    };
    let cases = [
        (json!({"workerCount": "10000000000"}), "job.trainingInput.workerCount", "between 0 and 1000"),
        (json!({"parameterServerCount": "10000000000"}), "job.trainingInput.parameterServerCount", "1000"),
        (json!({"workerCount": -1}), "job.trainingInput.workerCount", "between 0"),
        (
            json!({"masterConfig": {"acceleratorConfig": {"count": "10000000000"}}}),
            "job.trainingInput.masterConfig.acceleratorConfig.count",
            "is 10000000000, more than the",
        ),
    ];
    for (i, (extra, field, needle)) in cases.into_iter().enumerate() {
        let (status, body) = server.submit_training(&format!("big_{i}"), with(extra)).await;
        assert_invalid(status, &body, field, needle);
    }
    let params = json!([{"parameterName": "lr", "type": "DOUBLE", "minValue": 0.001, "maxValue": 0.1}]);
    let tuning = [
        (json!({"params": params, "maxTrials": "10000000000"}), "maxTrials", "between 1 and 10000"),
        (
            json!({"params": params, "maxTrials": 10, "maxParallelTrials": "10000000000"}),
            "maxParallelTrials",
            "between 1 and 1000",
        ),
        (json!({"params": params, "maxTrials": 10000, "maxParallelTrials": 5000}), "maxParallelTrials", "1000"),
        (json!({"params": params, "maxFailedTrials": "10000000000"}), "maxFailedTrials", "at most 10000"),
        (
            json!({"algorithm": "GRID_SEARCH", "params": [{"parameterName": "n", "type": "INTEGER",
                "minValue": -9.2e18, "maxValue": 9.2e18}]}),
            "params[0].maxValue",
            "INTEGER bounds",
        ),
        (
            json!({"params": (0..101).map(|i| json!({"parameterName": format!("p{i}"), "type": "DOUBLE",
                "minValue": 0, "maxValue": 1})).collect::<Vec<_>>()}),
            "params",
            "at most 100",
        ),
    ];
    for (i, (spec, field, needle)) in tuning.into_iter().enumerate() {
        let (status, body) =
            server.submit_training(&format!("study_{i}"), with(json!({"hyperparameters": spec}))).await;
        assert_invalid(status, &body, &format!("job.trainingInput.hyperparameters.{field}"), needle);
    }
    assert_alive(&server).await;
}

#[tokio::test]
async fn durations_past_the_limit_are_refused_not_panicked_on() {
    let server = TestServer::start().await;
    let package = server.trainer("noop", "pass\n").display().to_string();
    for field in ["maxWaitTime", "maxRunningTime"] {
        let cases = [
            ("1e30s", "315360000s"),
            ("315360001s", "315360000s"),
            ("1e400s", "not a duration"),
            ("-5s", "not a duration"),
            ("soon", "not a duration"),
        ];
        for (i, (value, needle)) in cases.into_iter().enumerate() {
            let input = json!({"packageUris": [package], "pythonModule": "noop.task", "scheduling": {field: value}});
            let (status, body) = server.submit_training(&format!("{field}_{i}"), input).await;
            assert_invalid(status, &body, &format!("job.trainingInput.scheduling.{field}"), needle);
        }
    }
    // The longest allowed duration is accepted (and the scheduler, which reads it back, lives).
    let input = json!({"packageUris": [package], "pythonModule": "noop.task",
        "scheduling": {"maxWaitTime": "315360000s", "maxRunningTime": "315360000s"}});
    let (status, body) = server.submit_training("longest", input).await;
    assert_eq!(status, 200, "{body}");
    server.wait_job("longest", &["SUCCEEDED", "FAILED"]).await;
    assert_alive(&server).await;
}

#[tokio::test]
async fn counts_and_sizes_of_request_fields_have_limits() {
    let server = TestServer::start().await;
    let package = server.trainer("noop", "pass\n").display().to_string();
    let args: Vec<String> = (0..1001).map(|i| format!("--a{i}")).collect();
    let (status, body) = server
        .submit_training("args", json!({"packageUris": [package], "pythonModule": "noop.task", "args": args}))
        .await;
    assert_invalid(status, &body, "job.trainingInput.args", "at most 1000");
    let uris = vec![package.clone(); 101];
    let (status, body) =
        server.submit_training("uris", json!({"packageUris": uris, "pythonModule": "noop.task"})).await;
    assert_invalid(status, &body, "job.trainingInput.packageUris", "at most 100");

    let labels: serde_json::Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (status, body) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "labels", "labels": labels, "trainingInput":
            {"packageUris": [package], "pythonModule": "noop.task"}}),
        )
        .await;
    assert_invalid(status, &body, "job.labels", "at most 64");
    let (status, body) =
        server.post_json("/v1/projects/p/models", &json!({"name": "m", "labels": {"k": "v".repeat(64)}})).await;
    assert_invalid(status, &body, "model.labels.k", "63");

    // Batch prediction: batchSize and maxWorkerCount.
    let inputs = server.data.path().join("inputs");
    std::fs::create_dir_all(&inputs).expect("mkdir");
    let prediction = |extra: Value| {
        let mut input = json!({"modelName": "projects/p/models/m", "dataFormat": "JSON",
            "inputPaths": [format!("{}/*.json", inputs.display())],
            "outputPath": server.data.path().join("out").display().to_string()});
        input.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        input
    };
    for (i, (extra, field, needle)) in [
        (json!({"batchSize": "10000000000"}), "batchSize", "between 1 and 100000"),
        (json!({"maxWorkerCount": "10000000000"}), "maxWorkerCount", "between 1 and 1000"),
        (json!({"inputPaths": vec!["/x/*.json"; 101]}), "inputPaths", "at most 100"),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body) = server
            .post_json(
                "/v1/projects/p/jobs",
                &json!({"jobId": format!("batch_{i}"), "predictionInput": prediction(extra)}),
            )
            .await;
        assert_invalid(status, &body, &format!("job.predictionInput.{field}"), needle);
    }

    // List methods: an over-long filter is refused; a huge pageSize is capped at 100.
    let long = format!("labels.k:{}", "x".repeat(3000));
    let (status, body) = server.get_json(&format!("/v1/projects/p/models?filter={long}")).await;
    assert_invalid(status, &body, "filter", "2000");
    let (status, body) = server.get_json("/v1/projects/p/jobs?pageSize=9223372036854775807").await;
    assert_eq!(status, 200, "{body}");

    // Online prediction: at most 10000 instances per request.
    let instances = vec![json!(0); 10_001];
    let (status, body) = server.post_json("/v1/projects/p/models/m:predict", &json!({"instances": instances})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().expect("message").contains("at most 10000"), "{body}");
    assert_alive(&server).await;
}

#[tokio::test]
async fn a_signature_with_a_huge_shape_fails_its_version_with_a_clear_message() {
    let server = TestServer::start().await;
    server.create_model("m").await;
    let dir = server.stage_fixture("mlp");
    std::fs::write(
        dir.join("signature.json"),
        r#"{"inputs": [{"name": "x", "dtype": "float32", "shape": [100000, 100000, 100000]}]}"#,
    )
    .expect("signature");
    let (status, op) = server
        .post_json(
            "/v1/projects/p/models/m/versions",
            &json!({"name": "v", "deploymentUri": dir.display().to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{op}");
    let op = server.wait_operation(op["name"].as_str().expect("name")).await;
    let message = op["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("1048576"), "{op}");
    let (status, version) = server.get_json("/v1/projects/p/models/m/versions/v").await;
    assert_eq!(status, 200, "{version}");
    assert_eq!(version["state"], "FAILED", "{version}");
    assert!(version["errorMessage"].as_str().unwrap_or_default().contains("1048576"), "{version}");
    assert_alive(&server).await;
}

#[tokio::test]
async fn paths_outside_the_roots_get_one_answer_whether_they_exist_or_not() {
    let server = TestServer::start().await;
    server.create_model("m").await;
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(outside.path().join("exists")).expect("mkdir");
    let existing = outside.path().join("exists").display().to_string();
    let missing = outside.path().join("missing").display().to_string();
    let package = server.trainer("noop", "pass\n").display().to_string();

    // Each request, with a placeholder for the path; the answer must not differ between the two.
    let answer = |status: u16, body: &Value, path: &str| {
        assert_eq!(status, 400, "{body}");
        let message = body["error"]["message"].as_str().expect("message").replace(path, "PATH");
        assert!(message.contains("outside the storage roots"), "{message}");
        (body["error"]["details"][0]["fieldViolations"][0]["field"].clone(), message)
    };
    let mut i = 0;
    for (kind, template) in [
        ("version", json!({"name": "v", "deploymentUri": "PATH"})),
        ("training", json!({"packageUris": ["PATH"], "pythonModule": "noop.task"})),
        ("training", json!({"packageUris": [package], "pythonModule": "noop.task", "jobDir": "PATH/out"})),
        (
            "prediction",
            json!({"uri": "PATH", "dataFormat": "JSON", "inputPaths": ["PATH/*.json"],
            "outputPath": server.data.path().join("o").display().to_string()}),
        ),
        (
            "prediction",
            json!({"modelName": "m", "dataFormat": "JSON", "inputPaths": ["PATH/*.json"],
            "outputPath": server.data.path().join("o").display().to_string()}),
        ),
        (
            "prediction",
            json!({"modelName": "m", "dataFormat": "JSON",
            "inputPaths": [format!("{}/*.json", server.data.path().display())], "outputPath": "PATH/o"}),
        ),
    ] {
        let mut answers = Vec::new();
        for path in [&existing, &missing] {
            i += 1;
            let body: Value = serde_json::from_str(&template.to_string().replace("PATH", path)).expect("json");
            let (status, reply) = match kind {
                "version" => server.post_json("/v1/projects/p/models/m/versions", &body).await,
                "training" => server.submit_training(&format!("paths_{i}"), body).await,
                _ => {
                    server
                        .post_json(
                            "/v1/projects/p/jobs",
                            &json!({"jobId": format!("paths_{i}"), "predictionInput": body}),
                        )
                        .await
                }
            };
            answers.push(answer(status, &reply, path));
        }
        assert_eq!(answers[0], answers[1], "{template}");
    }
    // Inside the roots, a missing path may be named as missing.
    let inside = server.data.path().join("nothing-here").display().to_string();
    let (status, body) =
        server.post_json("/v1/projects/p/models/m/versions", &json!({"name": "v", "deploymentUri": inside})).await;
    assert_invalid(status, &body, "version.deploymentUri", "does not exist");
}

async fn new_upload(server: &TestServer) -> String {
    let (status, body) = server.post_json("/v1/projects/p/uploads", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    body["name"].as_str().expect("name").rsplit('/').next().expect("id").to_owned()
}

async fn put(server: &TestServer, upload: &str, path: &str, bytes: usize) -> (u16, Value) {
    let url = server.url(&format!("/v1/projects/p/uploads/{upload}/{path}"));
    let response = server.client.put(url).body(vec![b'x'; bytes]).send().await.expect("PUT");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn uploads_are_bounded_per_file_and_per_project() {
    let server =
        TestServer::start_with(&[], &[("ANNEAL_MAX_UPLOAD_BYTES", "600"), ("ANNEAL_UPLOAD_QUOTA_BYTES", "1000")]).await;
    let upload = new_upload(&server).await;
    let (status, body) = put(&server, &upload, "big.bin", 700).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED", "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("max_upload_bytes"), "{body}");
    assert_eq!(put(&server, &upload, "a.bin", 500).await.0, 200);
    assert_eq!(put(&server, &upload, "a.bin", 500).await.0, 200, "replacing a file counts it once");
    let other = new_upload(&server).await;
    let (status, body) = put(&server, &other, "b.bin", 501).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("upload_quota_bytes"), "{body}");
    let refused = server.data.path().join("storage/uploads/p").join(&other).join("b.bin");
    assert!(!refused.exists(), "a refused file is not kept");
    assert_eq!(put(&server, &other, "b.bin", 500).await.0, 200, "exactly the quota fits");
    assert_alive(&server).await;
}

/// Prints one line far longer than the log keeps, without a newline for a while, then waits for
/// `<job dir>/release` before it exits.
const LONG_LINE: &str = r#"
import os, sys, time
sys.stdout.write("x" * 10_000_000)
sys.stdout.flush()
time.sleep(0.2)
print("", flush=True)
print("after", flush=True)
job_dir = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--job-dir=")][0]
while not os.path.exists(os.path.join(job_dir, "release")):
    time.sleep(0.05)
"#;

#[tokio::test]
async fn long_log_lines_are_cut_and_log_followers_are_counted() {
    let server =
        TestServer::start_with(&[], &[("ANNEAL_MAX_LOG_LINE_BYTES", "1000"), ("ANNEAL_MAX_LOG_FOLLOWERS", "1")]).await;
    let package = server.trainer("long", LONG_LINE);
    let job_dir = server.data.path().join("outputs").join("long_1");
    let input = json!({"packageUris": [package.display().to_string()], "pythonModule": "long.task",
        "jobDir": job_dir.display().to_string()});
    let (status, body) = server.submit_training("long_1", input).await;
    assert_eq!(status, 200, "{body}");

    // One follower fits; a second one is refused while the first is open.
    let first =
        server.client.get(server.url("/v1/projects/p/jobs/long_1/logs?follow=true")).send().await.expect("follow");
    assert_eq!(first.status(), 200);
    let (status, body) = server.get_json("/v1/projects/p/jobs/long_1/logs?follow=true").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED", "{body}");

    // The long line is kept cut to the limit and marked; the next line follows it.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let lines = loop {
        let (_, logs) = server.get_json("/v1/projects/p/jobs/long_1/logs?replica=master-replica-0").await;
        let lines = logs["lines"].as_array().cloned().unwrap_or_default();
        if lines.iter().any(|l| l["text"] == "after") {
            break lines;
        }
        assert!(std::time::Instant::now() < deadline, "no 'after' line: {logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let long = lines.iter().filter_map(|l| l["text"].as_str()).find(|t| t.starts_with("xxx")).expect("the long line");
    assert!(long.len() < 1100, "cut to about 1000 bytes, got {}", long.len());
    assert!(long.ends_with("[line cut: longer than max_log_line_bytes]"), "{}", &long[long.len() - 60..]);

    std::fs::create_dir_all(&job_dir).expect("job dir");
    std::fs::write(job_dir.join("release"), "").expect("release");
    let ended = tokio::time::timeout(Duration::from_secs(60), first.text()).await.expect("the stream ends");
    assert!(ended.expect("body").trim_end().ends_with("data: the job has ended"));
    // The first follower's permit is back: following the ended job works again.
    let again =
        server.client.get(server.url("/v1/projects/p/jobs/long_1/logs?follow=true")).send().await.expect("follow");
    assert_eq!(again.status(), 200);
    assert_alive(&server).await;
}

/// A trainer that waits for `release` in its job dir.
const WAITER: &str = "import os, sys, time\njob_dir = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--job-dir=')][0]\nprint('waiting', flush=True)\nwhile not os.path.exists(os.path.join(job_dir, 'release')):\n    time.sleep(0.05)\n";

/// Log followers are shared fairly: one token holds at most a quarter of `max_log_followers`
/// streams and one project half, so another project (and another token) still gets one.
#[tokio::test]
async fn one_tokens_or_projects_log_followers_leave_room_for_the_others() {
    let server = TestServer::start_with(&[], &[("ANNEAL_MAX_LOG_FOLLOWERS", "8")]).await;
    let package = server.trainer("waiter", WAITER).display().to_string();
    let mut job_dirs = Vec::new();
    for project in ["p", "q"] {
        let job_dir = server.data.path().join("outputs").join(project);
        let input =
            json!({"packageUris": [package], "pythonModule": "waiter.task", "jobDir": job_dir.display().to_string()});
        let (status, body) = server
            .post_json(&format!("/v1/projects/{project}/jobs"), &json!({"jobId": "w", "trainingInput": input}))
            .await;
        assert_eq!(status, 200, "{body}");
        job_dirs.push(job_dir);
    }
    let follow = |token: String, project: &'static str| {
        let url = server.url(&format!("/v1/projects/{project}/jobs/w/logs?follow=true"));
        async move { common::client_with(Some(&token)).get(url).send().await.expect("follow") }
    };
    let (first, second) = (server.create_token("viewer", &["p"]).await, server.create_token("viewer", &["p"]).await);
    let mut open = Vec::new();
    for _ in 0..2 {
        let stream = follow(first.clone(), "p").await;
        assert_eq!(stream.status(), 200);
        open.push(stream);
    }
    let refused = follow(first.clone(), "p").await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.expect("json");
    assert!(
        body["error"]["message"].as_str().unwrap_or_default().contains("This token has 2 log streams open"),
        "{body}"
    );
    for _ in 0..2 {
        let stream = follow(second.clone(), "p").await;
        assert_eq!(stream.status(), 200);
        open.push(stream);
    }
    let third = server.create_token("viewer", &["p"]).await;
    let refused = follow(third, "p").await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.expect("json");
    assert!(
        body["error"]["message"].as_str().unwrap_or_default().contains("Project p has 4 log streams open"),
        "{body}"
    );
    // The other project still follows its job.
    let other = follow(server.create_token("viewer", &["q"]).await, "q").await;
    assert_eq!(other.status(), 200);
    drop(open);
    for dir in &job_dirs {
        std::fs::create_dir_all(dir).expect("job dir");
        std::fs::write(dir.join("release"), "").expect("release");
    }
    assert_alive(&server).await;
}

/// Readiness probes do not collide: 72 at once all answer 200.
#[tokio::test]
async fn concurrent_readiness_probes_all_answer_ready() {
    let server = TestServer::start().await;
    let probes = (0..72).map(|_| async { server.get("/readyz").await.status().as_u16() });
    let statuses = futures_util::future::join_all(probes).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

/// `/metrics` names every project's versions: with auth on it needs a token that reads every
/// project; a token of one project gets 403, none 401; `metrics_public` opens it.
#[tokio::test]
async fn metrics_need_a_token_that_reads_every_project_unless_public() {
    let server = TestServer::start().await;
    assert_eq!(server.get("/metrics").await.status(), 200, "the admin token reads them");
    let anonymous = common::client_with(None).get(server.url("/metrics")).send().await.expect("GET");
    assert_eq!(anonymous.status(), 401);
    let viewer = server.create_token("viewer", &["p"]).await;
    let scoped = common::client_with(Some(&viewer)).get(server.url("/metrics")).send().await.expect("GET");
    assert_eq!(scoped.status(), 403);
    let body: Value = scoped.json().await.expect("json");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("all projects"), "{body}");
    let everywhere = server.create_token("viewer", &[]).await;
    let allowed = common::client_with(Some(&everywhere)).get(server.url("/metrics")).send().await.expect("GET");
    assert_eq!(allowed.status(), 200);

    let public = TestServer::start_with(&[], &[("ANNEAL_METRICS_PUBLIC", "true")]).await;
    let open = common::client_with(None).get(public.url("/metrics")).send().await.expect("GET");
    assert_eq!(open.status(), 200);
}

/// A trainer that reports 3,000 tags keeps at most 1,000 series; the metrics read answers, and
/// the server with it.
#[tokio::test]
async fn a_job_keeps_a_bounded_number_of_metric_series() {
    let server = TestServer::start().await;
    let source = "import json, os\nreport = {'global_step': 1, **{'t%d' % i: i for i in range(3000)}}\nopen(os.environ['CLOUD_ML_HP_METRIC_FILE'], 'w').write(json.dumps(report) + '\\n')\n";
    let package = server.trainer("tags", source).display().to_string();
    let (status, body) =
        server.submit_training("tags_1", json!({"packageUris": [package], "pythonModule": "tags.task"})).await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_job("tags_1", &["SUCCEEDED", "FAILED", "CANCELLED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    let (status, metrics) = server.get_json("/v1/projects/p/jobs/tags_1/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    assert_eq!(metrics["series"].as_array().map(Vec::len), Some(1000));
    assert_alive(&server).await;
}
