//! Projects are kept apart for what request bodies name: a project's version, training job or
//! batch prediction may not name another project's storage folders (`storage/{models,uploads,
//! jobs,envs}/<other>/`), the server's own storage files, the database or the admin token, and
//! gets the answer a path outside the roots gets; nor another project's models or versions, and
//! gets the answer a missing one gets. So nothing of another project is revealed. Its own
//! folders work as before. And a batch job never writes through a symlink in its output folder.

mod common;

use std::path::{Path, PathBuf};

use common::TestServer;
use serde_json::{json, Value};

/// A new upload of `project` holding the fixture model `fixture`; returns its folder.
async fn upload_fixture(server: &TestServer, project: &str, fixture: &str) -> PathBuf {
    let (status, upload) = server.post_json(&format!("/v1/projects/{project}/uploads"), &json!({})).await;
    assert_eq!(status, 200, "{upload}");
    let id = upload["name"].as_str().expect("name").rsplit('/').next().expect("id").to_owned();
    for entry in std::fs::read_dir(common::fixture_models().join(fixture)).expect("fixture") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let url = server.url(&format!("/v1/projects/{project}/uploads/{id}/{name}"));
        let bytes = std::fs::read(entry.path()).expect("read");
        let response = server.client.put(url).body(bytes).send().await.expect("PUT");
        assert_eq!(response.status(), 200);
    }
    server.data.path().join("storage/uploads").join(project).join(id)
}

/// Creates `project/models/m` and deploys `v1` from `dir`; asserts it worked.
async fn deploy_from(server: &TestServer, project: &str, dir: &Path) {
    let (status, body) = server.post_json(&format!("/v1/projects/{project}/models"), &json!({"name": "m"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, op) = server
        .post_json(
            &format!("/v1/projects/{project}/models/m/versions"),
            &json!({"name": "v1", "deploymentUri": dir.display().to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{op}");
    let op = server.wait_operation(op["name"].as_str().expect("operation name")).await;
    assert!(op.get("error").is_none(), "{op}");
}

/// Submits job `job` of project `p` with `input` as its `trainingInput` or `predictionInput`.
async fn submit(server: &TestServer, job: &str, kind: &str, input: &Value) -> (u16, Value) {
    server.post_json("/v1/projects/p/jobs", &json!({"jobId": job, kind: input})).await
}

#[tokio::test]
async fn another_projects_folders_and_the_server_files_are_outside_the_roots() {
    let server = TestServer::start().await;
    let data = server.data.path().to_path_buf();
    // Project `other`'s version, deployed from its own upload (its own folders work).
    let other_upload = upload_fixture(&server, "other", "tuple_out").await;
    deploy_from(&server, "other", &other_upload).await;
    let models = data.join("storage/models/other/m");
    let other_version = std::fs::read_dir(&models).expect("other's model").flatten().next().expect("copy").path();

    // Project `p` does the same with its own upload, and predicts from its own folders.
    let own_upload = upload_fixture(&server, "p", "tuple_out").await;
    deploy_from(&server, "p", &own_upload).await;
    std::fs::write(own_upload.join("in.json"), "[1, 2, 3]\n").expect("input");
    let (status, body) = submit(
        &server,
        "own",
        "predictionInput",
        &json!({"versionName": "projects/p/models/m/versions/v1", "dataFormat": "JSON",
                "inputPaths": [own_upload.join("in.json").display().to_string()],
                "outputPath": data.join("storage/jobs/p/own-predictions").display().to_string()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_job("own", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["predictionOutput"]["predictionCount"], "1", "{done}");

    let package = data.join("packages/noop");
    std::fs::create_dir_all(package.join("noop")).expect("mkdir");
    std::fs::write(package.join("noop/__init__.py"), "").expect("init");
    std::fs::write(package.join("noop/task.py"), "pass\n").expect("task");
    let package = package.display().to_string();
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(outside.path().join("exists")).expect("mkdir");
    let paths: Vec<String> = [
        outside.path().join("exists"),
        outside.path().join("missing"),
        other_version,
        other_upload,
        data.join("storage/models/other/m/missing"),
        data.join("storage/jobs/other"),
        data.join("storage"),
        data.join("anneal.db"),
        data.join("anneal.db-journal"),
        data.join("admin.token"),
    ]
    .iter()
    .map(|p| p.display().to_string())
    .collect();
    let templates = [
        ("version", json!({"name": "v2", "deploymentUri": "PATH"})),
        ("trainingInput", json!({"packageUris": ["PATH"], "pythonModule": "noop.task"})),
        ("trainingInput", json!({"packageUris": [package], "pythonModule": "noop.task", "jobDir": "PATH/out"})),
        (
            "predictionInput",
            json!({"uri": "PATH", "dataFormat": "JSON", "inputPaths": [format!("{}/*.json", data.display())],
                   "outputPath": data.join("o").display().to_string()}),
        ),
        (
            "predictionInput",
            json!({"modelName": "m", "dataFormat": "JSON", "inputPaths": ["PATH/*.json"],
                   "outputPath": data.join("o").display().to_string()}),
        ),
        (
            "predictionInput",
            json!({"modelName": "m", "dataFormat": "JSON", "inputPaths": ["PATH"],
                   "outputPath": data.join("o").display().to_string()}),
        ),
        (
            "predictionInput",
            json!({"modelName": "m", "dataFormat": "JSON", "inputPaths": [format!("{}/*.json", data.display())],
                   "outputPath": "PATH/o"}),
        ),
    ];
    let mut i = 0;
    for (kind, template) in templates {
        let mut answers = Vec::new();
        for path in &paths {
            i += 1;
            let body: Value = serde_json::from_str(&template.to_string().replace("PATH", path)).expect("json");
            let (status, reply) = match kind {
                "version" => server.post_json("/v1/projects/p/models/m/versions", &body).await,
                _ => submit(&server, &format!("paths_{i}"), kind, &body).await,
            };
            assert_eq!(status, 400, "{path} in {template}: {reply}");
            let message = reply["error"]["message"].as_str().expect("message").replace(path.as_str(), "PATH");
            assert!(message.contains("outside the storage roots"), "{path} in {template}: {message}");
            answers.push((reply["error"]["details"][0]["fieldViolations"][0]["field"].clone(), message));
        }
        assert!(answers.iter().all(|a| a == &answers[0]), "{template}: {answers:?}");
    }
    assert_eq!(std::fs::read_dir(data.join("storage/models/p/m")).expect("p's models").count(), 1, "nothing deployed");

    // A model folder of its own whose model.pt links to the other project's.
    let linked = data.join("linked-model");
    std::fs::create_dir_all(&linked).expect("mkdir");
    std::os::unix::fs::symlink(Path::new(&paths[2]).join("model.pt"), linked.join("model.pt")).expect("symlink");
    let (status, body) = submit(
        &server,
        "linked",
        "predictionInput",
        &json!({"uri": linked.display().to_string(), "dataFormat": "JSON",
                "inputPaths": [own_upload.join("in.json").display().to_string()],
                "outputPath": data.join("o").display().to_string()}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("outside the storage roots"), "{body}");
}

#[tokio::test]
async fn another_projects_models_and_versions_are_answered_as_missing() {
    let server = TestServer::start().await;
    let data = server.data.path().to_path_buf();
    let other_upload = upload_fixture(&server, "other", "tuple_out").await;
    deploy_from(&server, "other", &other_upload).await;
    std::fs::write(data.join("in.json"), "[1, 2, 3]\n").expect("input");
    let input = |field: &str, name: &str| {
        json!({field: name, "dataFormat": "JSON", "inputPaths": [data.join("in.json").display().to_string()],
               "outputPath": data.join("out").display().to_string()})
    };
    let mut i = 0;
    for (field, existing, missing) in [
        ("modelName", "projects/other/models/m", "projects/other/models/x"),
        ("versionName", "projects/other/models/m/versions/v1", "projects/other/models/x/versions/y"),
    ] {
        let mut answers = Vec::new();
        for name in [existing, missing] {
            i += 1;
            let (status, body) = submit(&server, &format!("names_{i}"), "predictionInput", &input(field, name)).await;
            assert_eq!(status, 404, "{name}: {body}");
            assert_eq!(body["error"]["status"], "NOT_FOUND", "{body}");
            let message = body["error"]["message"].as_str().expect("message");
            answers.push(message.replace(name, "NAME"));
        }
        assert_eq!(answers[0], answers[1], "{field}");
    }
    // Its own model still works by full name.
    let own_upload = upload_fixture(&server, "p", "tuple_out").await;
    deploy_from(&server, "p", &own_upload).await;
    let (status, body) = submit(&server, "own", "predictionInput", &input("modelName", "projects/p/models/m")).await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_job("own", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
}

#[tokio::test]
async fn a_batch_job_never_writes_through_a_link_in_its_output_folder() {
    let server = TestServer::start().await;
    let data = server.data.path().to_path_buf();
    server.create_model("m").await;
    server.deploy("m", "v1", "tuple_out").await;
    std::fs::write(data.join("in.json"), "[1, 2, 3]\nnot json\n").expect("input");
    let victim = data.join("victim.txt");
    std::fs::write(&victim, "precious").expect("victim");
    let mut i = 0;
    for shard in ["prediction.results-00000-of-00001", "prediction.errors_stats-00000-of-00001"] {
        i += 1;
        let output = data.join(format!("out-{i}"));
        std::fs::create_dir_all(&output).expect("mkdir");
        std::os::unix::fs::symlink(&victim, output.join(shard)).expect("symlink");
        let input = json!({"modelName": "m", "dataFormat": "JSON", "maxWorkerCount": "1",
            "inputPaths": [data.join("in.json").display().to_string()], "outputPath": output.display().to_string()});
        let (status, body) = submit(&server, &format!("linked_{i}"), "predictionInput", &input).await;
        assert_eq!(status, 200, "{body}");
        let done = server.wait_job(&format!("linked_{i}"), &["SUCCEEDED", "FAILED"]).await;
        assert_eq!(done["state"], "FAILED", "{shard}: {done}");
        assert!(done["errorMessage"].as_str().unwrap_or_default().contains("already exists"), "{done}");
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "precious", "{shard}: the victim is unchanged");
    }
}

/// The message of a 400 naming `field`, with the URI replaced by `URI`.
fn refusal(status: u16, body: &Value, field: &str, uri: &str) -> String {
    assert_eq!(status, 400, "{field}: {body}");
    assert_eq!(body["error"]["details"][0]["fieldViolations"][0]["field"], field, "{body}");
    body["error"]["message"].as_str().expect("message").replace(uri, "URI")
}

/// A job dir (or batch output) a project's job named outside the storage folders becomes that
/// project's: another project cannot name it, anything inside it or a folder holding it in any
/// URI field, and gets the answer a place outside the roots gets, whether it exists or not. The
/// owner still uses it.
#[tokio::test]
async fn a_job_dir_named_by_one_project_is_outside_the_roots_for_every_other() {
    let server = TestServer::start().await;
    let outputs = server.data.path().join("outputs");
    let a_dir = outputs.join("a_job");
    let trainer = server.trainer(
        "exporter",
        "import os, shutil, sys\njob_dir = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--job-dir=')][0]\nos.makedirs(job_dir, exist_ok=True)\nopen(os.path.join(job_dir, 'inputs.json'), 'w').write('[1.0, 2.0, 3.0, 4.0]\\n')\n",
    );
    let input = json!({"packageUris": [trainer.display().to_string()], "pythonModule": "exporter.task",
                       "jobDir": a_dir.display().to_string()});
    let (status, body) =
        server.post_json("/v1/projects/a/jobs", &json!({"jobId": "export", "trainingInput": input})).await;
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (_, job) = server.get_json("/v1/projects/a/jobs/export").await;
        if job["state"] == "SUCCEEDED" {
            break;
        }
        assert!(!["FAILED", "CANCELLED"].contains(&job["state"].as_str().unwrap_or("")), "{job}");
        assert!(std::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(a_dir.join("inputs.json").is_file());

    let outside = tempfile::tempdir().expect("outside the roots");
    let nowhere = outside.path().join("missing").display().to_string();
    let expected = |field: &str| -> String {
        // What a place outside the roots gets, in the same field.
        format!("Field: {field} Error: 'URI' is outside the storage roots this server may")
    };
    let a = a_dir.display().to_string();
    let inside = a_dir.join("inputs.json").display().to_string();
    let holder = outputs.display().to_string();
    let trainer_uri = trainer.display().to_string();
    let cases: Vec<(&str, &str, Value, String, String)> = vec![
        (
            "jobs",
            "job.trainingInput.jobDir",
            json!({"jobId": "b1", "trainingInput": {"packageUris": [trainer_uri], "pythonModule": "exporter.task", "jobDir": a}}),
            a.clone(),
            "jobs".into(),
        ),
        (
            "jobs",
            "job.trainingInput.jobDir",
            json!({"jobId": "b2", "trainingInput": {"packageUris": [trainer_uri], "pythonModule": "exporter.task", "jobDir": format!("{a}/sub")}}),
            format!("{a}/sub"),
            "jobs".into(),
        ),
        (
            "jobs",
            "job.trainingInput.packageUris[0]",
            json!({"jobId": "b3", "trainingInput": {"packageUris": [inside], "pythonModule": "x.task"}}),
            inside.clone(),
            "jobs".into(),
        ),
        (
            "jobs",
            "job.predictionInput.inputPaths[0]",
            json!({"jobId": "b4", "predictionInput": {"dataFormat": "JSON", "inputPaths": [inside], "outputPath": outputs.join("b_out").display().to_string(), "region": "us-central1", "uri": trainer_uri}}),
            inside.clone(),
            "jobs".into(),
        ),
        (
            "jobs",
            "job.predictionInput.outputPath",
            json!({"jobId": "b5", "predictionInput": {"dataFormat": "JSON", "inputPaths": [trainer.join("exporter/task.py").display().to_string()], "outputPath": format!("{a}/out"), "region": "us-central1", "uri": trainer_uri}}),
            format!("{a}/out"),
            "jobs".into(),
        ),
        (
            "models/m/versions",
            "version.deploymentUri",
            json!({"name": "v1", "deploymentUri": a}),
            a.clone(),
            "version".into(),
        ),
        (
            "models/m/versions",
            "version.deploymentUri",
            json!({"name": "v2", "deploymentUri": holder}),
            holder.clone(),
            "version".into(),
        ),
    ];
    let (status, body) = server.post_json("/v1/projects/b/models", &json!({"name": "m"})).await;
    assert_eq!(status, 200, "{body}");
    for (path, field, request, uri, _) in &cases {
        let (status, body) = server.post_json(&format!("/v1/projects/b/{path}"), request).await;
        let message = refusal(status, &body, field, uri);
        assert!(message.starts_with(&expected(field)), "{field} naming {uri}: {message}");
        // The same field naming a missing place outside the roots reads the same.
        let text = request.to_string().replace(uri.as_str(), &nowhere);
        let (status, body) =
            server.post_json(&format!("/v1/projects/b/{path}"), &serde_json::from_str(&text).expect("json")).await;
        let other = refusal(status, &body, field, &nowhere);
        assert_eq!(message, other, "{field}: a claimed place reads like a missing one outside the roots");
    }
    // Nothing of B's was created in A's folder.
    assert!(!a_dir.join("sub").exists() && !a_dir.join("out").exists());

    // A still names its own job dir.
    let (status, body) = server
        .post_json(
            "/v1/projects/a/jobs",
            &json!({"jobId": "again", "trainingInput": {"packageUris": [trainer.display().to_string()], "pythonModule": "exporter.task", "jobDir": a_dir.display().to_string()}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}
