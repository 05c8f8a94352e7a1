//! The `anneal` client verbs: the real binary against a real server (port 0), each verb and its
//! failure paths (unknown resources, bad flags, an unreachable server).

mod common;

use std::process::Stdio;

use common::TestServer;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// Runs `anneal <args>` against `server` in project `p`, with its own (empty) config home;
/// returns exit code, stdout, stderr.
async fn anneal(server: &TestServer, args: &[&str]) -> (Option<i32>, String, String) {
    anneal_with_stdin(server, args, None).await
}

async fn anneal_with_stdin(server: &TestServer, args: &[&str], stdin: Option<&str>) -> (Option<i32>, String, String) {
    let home = server.data.path().join("cli-home");
    let mut command = common::anneal_command();
    command
        .args(["--endpoint", &server.base, "--project", "p"])
        .args(args)
        .env("XDG_CONFIG_HOME", &home)
        // The CLI finds the admin token of a server on this machine through its data dir.
        .env("ANNEAL_DATA_DIR", server.data.path())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn anneal");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("anneal finishes within 180 s")
        .expect("wait");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn models_versions_predict_and_operations() {
    let server = TestServer::start().await;
    let (code, _, err) =
        anneal(&server, &["models", "create", "mlp", "--description", "tiny", "--labels", "team=cli"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("Created model [mlp]."), "{err}");
    let (code, out, _) = anneal(&server, &["models", "list"]).await;
    assert_eq!(code, Some(0));
    assert!(out.lines().next().is_some_and(|h| h.starts_with("NAME")) && out.contains("mlp"), "{out}");
    let (_, out, _) = anneal(&server, &["models", "describe", "mlp", "--format", "json"]).await;
    assert_eq!(json(&out)["labels"]["team"], "cli");

    // A local model folder is uploaded, then deployed; the command waits for READY.
    let local = tempfile::tempdir().expect("tempdir");
    for file in ["model.pt", "signature.json"] {
        std::fs::copy(common::fixture_models().join("mlp").join(file), local.path().join(file)).expect("copy");
    }
    let origin = local.path().display().to_string();
    let (code, _, err) = anneal(&server, &["versions", "create", "v1", "--model", "mlp", "--origin", &origin]).await;
    assert_eq!(code, Some(0), "{err}");
    let (_, out, _) = anneal(&server, &["versions", "describe", "v1", "--model", "mlp", "--format", "json"]).await;
    let version = json(&out);
    assert_eq!((version["state"].as_str(), version["isDefault"].as_bool()), (Some("READY"), Some(true)), "{version}");
    assert!(version["deploymentUri"].as_str().expect("uri").contains("/uploads/p/"), "{version}");
    let (code, _, err) =
        anneal(&server, &["versions", "create", "v2", "--model", "mlp", "--origin", &origin, "--async", "--quiet"])
            .await;
    assert_eq!((code, err.as_str()), (Some(0), ""), "--quiet prints nothing on stderr");
    let (_, out, _) = anneal(&server, &["operations", "list", "--format", "json"]).await;
    let operations = json(&out);
    let newest = operations
        .as_array()
        .expect("list")
        .iter()
        .find(|op| op["name"].as_str().is_some_and(|n| n.contains("_v2-")))
        .expect("v2's operation");
    let (code, out, err) =
        anneal(&server, &["operations", "wait", newest["name"].as_str().expect("name"), "--format", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json(&out)["done"], true);
    let (code, _, _) = anneal(&server, &["versions", "set-default", "v2", "--model", "mlp"]).await;
    assert_eq!(code, Some(0));
    let (_, out, _) = anneal(&server, &["versions", "list", "--model", "mlp"]).await;
    let v2 = out.lines().find(|l| l.starts_with("v2")).expect("v2 row");
    assert!(v2.contains("READY") && v2.contains("true"), "{out}");

    // Predictions from a file and from stdin; bad instances fail with the API's message.
    let expected: Value =
        json(&std::fs::read_to_string(common::fixture_models().join("expected.json")).expect("expected"));
    let lines: String =
        expected["mlp"]["instances"].as_array().expect("instances").iter().map(|i| format!("{i}\n")).collect();
    let file = server.data.path().join("instances.json");
    std::fs::write(&file, &lines).expect("write");
    let (code, out, err) =
        anneal(&server, &["predict", "--model", "mlp", "--json-instances", &file.display().to_string()]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    let first: Vec<f64> = serde_json::from_str(out.lines().next().expect("line")).expect("prediction");
    let want: Vec<f64> = serde_json::from_value(expected["mlp"]["predictions"][0].clone()).expect("want");
    assert!(first.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5), "{first:?} vs {want:?}");
    let (code, out, _) = anneal_with_stdin(
        &server,
        &["predict", "--model", "mlp", "--version", "v1", "--json-instances", "-", "--format", "json"],
        Some(&lines),
    )
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(json(&out)["predictions"].as_array().map(Vec::len), Some(3));
    let (code, _, err) =
        anneal_with_stdin(&server, &["predict", "--model", "mlp", "--json-instances", "-"], Some("[1, 2]\n")).await;
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: Failed to process element: 0") && err.contains("shape"), "{err}");

    // local predict loads the model in process.
    let (code, out, err) = common::run_anneal(
        &["local", "predict", "--model-dir", &origin, "--json-instances", &file.display().to_string()],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");

    // Deleting: a model with versions cannot go; versions can, then the model.
    let (code, _, err) = anneal(&server, &["models", "delete", "mlp"]).await;
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: ") && err.contains("FAILED_PRECONDITION"), "{err}");
    for version in ["v1", "v2"] {
        let (code, _, err) = anneal(&server, &["versions", "delete", version, "--model", "mlp"]).await;
        assert_eq!(code, Some(0), "{version}: {err}");
    }
    let (code, _, err) = anneal(&server, &["models", "delete", "mlp"]).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = anneal(&server, &["models", "describe", "mlp"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("not found") && err.trim_end().ends_with("(NOT_FOUND)") && err.lines().count() == 1, "{err}");
}

#[tokio::test]
async fn training_and_prediction_jobs_from_the_terminal() {
    let server = TestServer::start().await;
    // A package folder without setup.py: uploaded as is.
    let source = tempfile::tempdir().expect("tempdir");
    let package = source.path().join("clitrainer");
    std::fs::create_dir_all(&package).expect("mkdir");
    std::fs::write(package.join("__init__.py"), "").expect("init");
    std::fs::write(
        package.join("task.py"),
        "import sys\nprint('training with', sys.argv[1:])\nif '--fail' in sys.argv:\n    sys.exit(5)\n",
    )
    .expect("task");
    let path = package.display().to_string();
    let (code, out, err) = anneal(
        &server,
        &[
            "jobs",
            "submit",
            "training",
            "cli_1",
            "--module-name",
            "clitrainer.task",
            "--package-path",
            &path,
            "--labels",
            "team=cli",
            "--stream-logs",
            "--",
            "--epochs",
            "2",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("master-replica-0  training with ['--epochs', '2']"), "{out}");
    assert!(err.contains("Job [cli_1] SUCCEEDED."), "{err}");
    let (code, out, err) = anneal(
        &server,
        &[
            "jobs",
            "submit",
            "training",
            "cli_2",
            "--module-name",
            "clitrainer.task",
            "--package-path",
            &path,
            "--stream-logs",
            "--",
            "--fail",
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("error: job cli_2 ended FAILED: Replica master-replica-0 exited with exit code 5"), "{err}");

    // A job config file (gcloud's --config) and a long job to cancel.
    let config = source.path().join("job.yaml");
    std::fs::write(
        &config,
        "trainingInput:\n  scaleTier: BASIC\n  pythonModule: clitrainer.task\n  region: us-central1\n",
    )
    .expect("config");
    std::fs::write(package.join("task.py"), "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n")
        .expect("task");
    let (code, _, err) = anneal(
        &server,
        &["jobs", "submit", "training", "cli_3", "--config", &config.display().to_string(), "--package-path", &path],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let (_, out, _) = anneal(&server, &["jobs", "describe", "cli_3", "--format", "json"]).await;
    assert_eq!(json(&out)["trainingInput"]["region"], "us-central1");
    let (code, _, err) = anneal(&server, &["jobs", "cancel", "cli_3"]).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = anneal(&server, &["jobs", "stream-logs", "cli_3"]).await;
    assert_eq!(code, Some(1), "a cancelled job is not a success");
    assert!(err.contains("ended CANCELLED"), "{err}");

    let (code, out, _) = anneal(&server, &["jobs", "list", "--filter", "labels.team:cli"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("cli_1") && !out.contains("cli_2"), "{out}");
    let (_, out, _) = anneal(&server, &["jobs", "list", "--limit", "2", "--format", "yaml"]).await;
    let listed: Value = yaml_serde::from_str(&out).expect("yaml");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{out}");
    let (_, out, _) = anneal(&server, &["jobs", "stream-logs", "cli_1", "--task-name", "master-replica-0"]).await;
    assert!(out.contains("training with"), "{out}");

    // A batch prediction job over an undeployed model directory.
    let model = server.stage_fixture("mlp");
    let input = server.data.path().join("batch/in.json");
    std::fs::create_dir_all(input.parent().expect("parent")).expect("mkdir");
    std::fs::write(&input, "[1, 2, 3, 4]\n[0, 0, 0, 0]\n").expect("input");
    let output = server.data.path().join("batch/out");
    let (code, _, err) = anneal(
        &server,
        &[
            "jobs",
            "submit",
            "prediction",
            "cli_batch",
            "--model-dir",
            &model.display().to_string(),
            "--input-paths",
            &input.display().to_string(),
            "--output-path",
            &output.display().to_string(),
            "--data-format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, out, _) = anneal(&server, &["jobs", "describe", "cli_batch", "--format", "json"]).await;
        let job = json(&out);
        if job["state"] == "SUCCEEDED" {
            assert_eq!(job["predictionOutput"]["predictionCount"], "2", "{job}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn settings_failures_and_completions() {
    let server = TestServer::start().await;
    let home = tempfile::tempdir().expect("tempdir");
    let env = [
        ("XDG_CONFIG_HOME", home.path().to_str().expect("utf8")),
        ("ANNEAL_DATA_DIR", server.data.path().to_str().expect("utf8")),
    ];
    // `config set` makes later commands use the server without flags.
    let (code, _, err) = common::run_anneal(&["config", "set", "endpoint", &server.base], &env).await;
    assert_eq!(code, Some(0), "{err}");
    common::run_anneal(&["config", "set", "project", "elsewhere"], &env).await;
    let (code, out, _) = common::run_anneal(&["config", "list", "--format", "json"], &env).await;
    assert_eq!(code, Some(0));
    assert_eq!(json(&out), serde_json::json!({"endpoint": server.base, "project": "elsewhere"}));
    let (code, out, err) = common::run_anneal(&["models", "list"], &env).await;
    assert_eq!((code, out.trim()), (Some(0), "NAME  DEFAULT_VERSION_NAME"), "{err}");
    // The environment beats the file; flags beat both.
    let (_, out, _) =
        common::run_anneal(&["config", "list", "--format", "json"], &[env[0], env[1], ("ANNEAL_PROJECT", "from_env")])
            .await;
    assert_eq!(json(&out)["project"], "from_env");
    let (code, _, err) = common::run_anneal(&["config", "set", "colour", "blue"], &env).await;
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: unknown key 'colour'"), "{err}");

    let (code, _, err) = common::run_anneal(&["--endpoint", "http://127.0.0.1:9", "models", "list"], &env).await;
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: cannot reach Anneal at http://127.0.0.1:9") && err.lines().count() == 1, "{err}");
    let (code, _, err) = common::run_anneal(&["models", "create"], &env).await;
    assert_eq!(code, Some(2), "missing argument is a usage error");
    assert!(err.starts_with("error:") && err.lines().count() == 1, "{err}");
    let (code, _, err) = common::run_anneal(
        &["jobs", "submit", "prediction", "x", "--input-paths", "a", "--output-path", "b", "--data-format", "parquet"],
        &env,
    )
    .await;
    assert_eq!(code, Some(2), "{err}");
    let (code, out, _) = common::run_anneal(&["completions", "bash"], &[]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("_anneal()") && out.contains("stream-logs"), "bash completion script");
}

#[tokio::test]
async fn uploads_stay_inside_their_folder() {
    let server = TestServer::start().await;
    let (status, upload) = server.post_json("/v1/projects/p/uploads", &serde_json::json!({})).await;
    assert_eq!(status, 200, "{upload}");
    let id = upload["name"].as_str().and_then(|n| n.rsplit('/').next()).expect("id").to_owned();
    let folder = upload["uri"].as_str().and_then(|u| u.strip_prefix("file://")).expect("uri").to_owned();
    let put = |path: String, body: &'static str| {
        let url = server.url(&path);
        let client = server.client.clone();
        async move {
            let response = client.put(url).body(body).send().await.expect("put");
            (response.status().as_u16(), response.text().await.expect("body"))
        }
    };
    let (status, body) = put(format!("/v1/projects/p/uploads/{id}/pkg/mod.py"), "print('hi')\n").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(std::fs::read_to_string(format!("{folder}/pkg/mod.py")).expect("written"), "print('hi')\n");
    let (status, body) = put(format!("/v1/projects/p/uploads/{id}/a%2F..%2F..%2Fescape.py"), "x").await;
    assert_eq!(status, 400, "{body}");
    assert!(!std::path::Path::new(&folder).parent().expect("parent").join("escape.py").exists());
    let (status, _) = put("/v1/projects/p/uploads/abc123/f.py".into(), "x").await;
    assert_eq!(status, 404);
    let (status, _) = put("/v1/projects/p/uploads/not-hex/f.py".into(), "x").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn auth_login_and_token_management() {
    let server = TestServer::start().await;
    let home = tempfile::tempdir().expect("tempdir");
    let home_env = ("XDG_CONFIG_HOME", home.path().to_str().expect("utf8"));
    let endpoint = ["--endpoint", server.base.as_str(), "--project", "p"];
    let with = |args: &[&'static str]| -> Vec<String> { endpoint.iter().chain(args).map(|s| s.to_string()).collect() };
    let run = |args: Vec<String>, envs: Vec<(&'static str, String)>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        common::run_anneal(&args, &envs).await
    };
    let home_only = vec![(home_env.0, home_env.1.to_owned())];

    // Without the data dir (and with an empty config home) there is no token: 401, said plainly.
    let (code, _, err) = run(with(&["models", "list"]), home_only.clone()).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("UNAUTHENTICATED"), "{err}");

    // The admin (found through the data dir) makes a developer token...
    // The admin has a config home of its own (a kept token would come before the data dir's).
    let admin_home = tempfile::tempdir().expect("tempdir");
    let admin_env = vec![
        ("XDG_CONFIG_HOME", admin_home.path().display().to_string()),
        ("ANNEAL_DATA_DIR", server.data.path().display().to_string()),
    ];
    let mut args = with(&["auth", "token", "create", "--name", "ci", "--role", "developer", "--projects", "p"]);
    args.push("--quiet".into());
    let (code, out, err) = run(args, admin_env.clone()).await;
    assert_eq!(code, Some(0), "{err}");
    let developer = out.trim().to_owned();
    assert!(developer.starts_with("ann_"), "{out}");
    let (code, out, _) = run(with(&["auth", "token", "list"]), admin_env.clone()).await;
    assert_eq!(code, Some(0));
    assert!(out.starts_with("ID") && out.contains("ci") && out.contains("developer"), "{out}");

    // ...which `auth login` keeps for later commands (mode 0600).
    let mut args = with(&["auth", "login", "--token"]);
    args.push(developer.clone());
    let (code, _, err) = run(args, home_only.clone()).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("Logged in as ci (developer)"), "{err}");
    use std::os::unix::fs::PermissionsExt;
    let kept = home.path().join("anneal/token");
    assert_eq!(std::fs::metadata(&kept).expect("token file").permissions().mode() & 0o777, 0o600);
    let (code, out, err) = run(with(&["models", "list"]), home_only.clone()).await;
    assert_eq!((code, out.trim()), (Some(0), "NAME  DEFAULT_VERSION_NAME"), "{err}");
    let (code, out, _) = run(with(&["auth", "whoami", "--format", "json"]), home_only.clone()).await;
    assert_eq!(code, Some(0));
    assert_eq!(json(&out)["role"], "developer");
    let id = json(&out)["id"].as_str().expect("id").to_owned();

    // A developer cannot manage tokens; the admin revokes the developer's, which stops at once.
    let (code, _, err) = run(with(&["auth", "token", "list"]), home_only.clone()).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("PERMISSION_DENIED"), "{err}");
    let mut args = with(&["auth", "token", "revoke"]);
    args.push(id);
    let (code, _, err) = run(args, admin_env.clone()).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(with(&["models", "list"]), home_only.clone()).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("UNAUTHENTICATED"), "{err}");
    let (code, _, _) = run(with(&["auth", "logout"]), home_only).await;
    assert_eq!(code, Some(0));
    assert!(!kept.exists());
}
