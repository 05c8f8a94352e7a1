//! What each client verb does: build the request, call the server, print the answer.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};

use super::args::*;
use super::http::{Client, ClientError, Result};
use super::output::{self, Format};

/// A verb's context: the client, how to print, whether to show progress.
pub struct Context {
    pub client: Client,
    pub format: Format,
    pub quiet: bool,
}

impl Context {
    /// A one-line summary on stderr (gcloud's "Created model [x].").
    fn note(&self, text: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", text.as_ref());
        }
    }

    fn spinner(&self, message: String) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new_spinner().with_message(message);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }
}

fn labels(pairs: &[String]) -> Result<Map<String, Value>> {
    let mut labels = Map::new();
    for pair in pairs.iter().filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| ClientError(format!("label '{pair}' is not key=value")))?;
        labels.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(labels)
}

// ---- jobs ------------------------------------------------------------------------------------

pub async fn jobs(cx: &Context, command: JobsCommand) -> Result<bool> {
    match command {
        JobsCommand::Submit(SubmitCommand::Training(args)) => submit_training(cx, args).await,
        JobsCommand::Submit(SubmitCommand::Prediction(args)) => submit_prediction(cx, args).await,
        JobsCommand::List { filter, limit } => {
            let mut items = Vec::new();
            let mut token = String::new();
            loop {
                let mut query = vec![format!("pageSize={}", limit.unwrap_or(100).min(100))];
                if let Some(filter) = &filter {
                    query.push(format!("filter={}", encode(filter)));
                }
                if !token.is_empty() {
                    query.push(format!("pageToken={}", encode(&token)));
                }
                let page = cx.client.get(&format!("/jobs?{}", query.join("&"))).await?;
                items.extend(page["jobs"].as_array().cloned().unwrap_or_default());
                token = page["nextPageToken"].as_str().unwrap_or("").to_owned();
                if token.is_empty() || limit.is_some_and(|l| items.len() >= l) {
                    break;
                }
            }
            if let Some(limit) = limit {
                items.truncate(limit);
            }
            output::table(cx.format, &items, &[("JOB_ID", "jobId"), ("STATUS", "state"), ("CREATED", "createTime")]);
            Ok(true)
        }
        JobsCommand::Describe { job } => {
            output::resource(cx.format, &cx.client.get(&format!("/jobs/{job}")).await?);
            Ok(true)
        }
        JobsCommand::Cancel { job } => {
            cx.client.post(&format!("/jobs/{job}:cancel"), &json!({})).await?;
            cx.note(format!("Cancelled job [{job}]."));
            Ok(true)
        }
        JobsCommand::StreamLogs { job, task_name } => stream_logs(cx, &job, task_name.as_deref()).await,
    }
}

async fn submit_training(cx: &Context, args: SubmitTraining) -> Result<bool> {
    let mut input = match &args.config {
        Some(file) => read_config(file)?,
        None => Map::new(),
    };
    let mut set = |key: &str, value: Value| {
        input.insert(key.to_owned(), value);
    };
    if let Some(module) = &args.module_name {
        set("pythonModule", json!(module));
    }
    if let Some(dir) = &args.job_dir {
        set("jobDir", json!(dir));
    }
    if let Some(tier) = &args.scale_tier {
        set("scaleTier", json!(tier.to_ascii_uppercase()));
    }
    if let Some(n) = args.worker_count {
        set("workerCount", json!(n.to_string()));
    }
    if let Some(n) = args.parameter_server_count {
        set("parameterServerCount", json!(n.to_string()));
    }
    for (key, value) in
        [("region", &args.region), ("runtimeVersion", &args.runtime_version), ("pythonVersion", &args.python_version)]
    {
        if let Some(value) = value {
            set(key, json!(value));
        }
    }
    if !args.user_args.is_empty() {
        set("args", json!(args.user_args));
    }
    let packages: Vec<String> = match &args.package_path {
        Some(path) => vec![upload_package(cx, path, args.staging_bucket.as_deref()).await?],
        None => args.packages.clone(),
    };
    if !packages.is_empty() {
        set("packageUris", json!(packages));
    }
    input.entry("region").or_insert_with(|| json!("local"));
    let body = json!({"jobId": args.job, "labels": labels(&args.labels)?, "trainingInput": input});
    let job = cx.client.post("/jobs", &body).await?;
    cx.note(format!("Job [{}] submitted successfully ({}).", args.job, job["state"].as_str().unwrap_or("")));
    if args.stream_logs {
        return stream_logs(cx, &args.job, None).await;
    }
    if cx.format != Format::Table {
        output::resource(cx.format, &job);
    }
    Ok(true)
}

/// gcloud's `--config`: a file with `trainingInput: {...}` (or the fields themselves).
fn read_config(file: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(file).map_err(|e| ClientError(format!("--config {}: {e}", file.display())))?;
    let value: Value =
        yaml_serde::from_str(&text).map_err(|e| ClientError(format!("--config {}: {e}", file.display())))?;
    let input = value.get("trainingInput").cloned().unwrap_or(value);
    input
        .as_object()
        .cloned()
        .ok_or_else(|| ClientError(format!("--config {}: expected a mapping with trainingInput", file.display())))
}

/// Uploads a trainer: the package's parent folder when it is a Python project (setup.py or
/// pyproject.toml; the server installs it), else a folder holding only the package. Returns the
/// upload's URI.
async fn upload_package(cx: &Context, package: &Path, staging: Option<&str>) -> Result<String> {
    let package = std::fs::canonicalize(package)
        .map_err(|e| ClientError(format!("--package-path {}: {e}", package.display())))?;
    if !package.is_dir() {
        return Err(ClientError(format!("--package-path {} is not a folder", package.display())));
    }
    let parent = package.parent().unwrap_or(Path::new("/"));
    let project = parent.join("setup.py").is_file() || parent.join("pyproject.toml").is_file();
    let (root, prefix) = if project {
        (parent.to_path_buf(), PathBuf::new())
    } else {
        (package.clone(), PathBuf::from(package.file_name().unwrap_or_default()))
    };
    upload_dir(cx, &root, &prefix, staging).await
}

/// Uploads the files of `root` (skipping build leftovers) under `prefix`, into the server's
/// storage or, with `staging`, into a new folder under that `s3://` URI; returns the URI.
async fn upload_dir(cx: &Context, root: &Path, prefix: &Path, staging: Option<&str>) -> Result<String> {
    let mut files = Vec::new();
    collect(root, root, &mut files)?;
    let total: u64 = files.iter().map(|(_, size)| size).sum();
    let request = match staging {
        Some(uri) => json!({ "uri": uri }),
        None => json!({}),
    };
    let upload = cx.client.post("/uploads", &request).await?;
    let id = upload["name"].as_str().and_then(|n| n.rsplit('/').next()).unwrap_or("").to_owned();
    let bar = if cx.quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("Uploading {msg} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(root.display().to_string());
    for (relative, size) in files {
        let file = tokio::fs::File::open(root.join(&relative))
            .await
            .map_err(|e| ClientError(format!("{}: {e}", relative.display())))?;
        let target = prefix.join(&relative);
        let path: Vec<String> = target.components().map(|c| encode(&c.as_os_str().to_string_lossy())).collect();
        cx.client.put_bytes(&format!("/uploads/{id}/{}", path.join("/")), reqwest::Body::from(file)).await?;
        bar.inc(size);
    }
    bar.finish_and_clear();
    Ok(upload["uri"].as_str().unwrap_or("").to_owned())
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(PathBuf, u64)>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| ClientError(format!("{}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if matches!(name.as_str(), "__pycache__" | ".git" | "build" | "dist" | ".venv") || name.ends_with(".egg-info") {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files)?;
        } else if let Ok(meta) = path.metadata() {
            files.push((path.strip_prefix(root).unwrap_or(&path).to_path_buf(), meta.len()));
        }
    }
    Ok(())
}

async fn submit_prediction(cx: &Context, args: SubmitPrediction) -> Result<bool> {
    let project = cx.client.project.clone();
    let mut input = json!({
        "dataFormat": args.data_format.to_ascii_uppercase(),
        "inputPaths": args.input_paths,
        "outputPath": args.output_path,
        "region": args.region.clone().unwrap_or_else(|| "local".into()),
    });
    match (&args.model, &args.version, &args.model_dir) {
        (Some(model), Some(version), None) => {
            input["versionName"] = json!(format!("projects/{project}/models/{model}/versions/{version}"))
        }
        (Some(model), None, None) => input["modelName"] = json!(format!("projects/{project}/models/{model}")),
        (None, None, Some(dir)) => input["uri"] = json!(dir),
        _ => return Err(ClientError("give --model (and optionally --version) or --model-dir".into())),
    }
    if let Some(n) = args.batch_size {
        input["batchSize"] = json!(n.to_string());
    }
    if let Some(n) = args.max_worker_count {
        input["maxWorkerCount"] = json!(n.to_string());
    }
    let body = json!({"jobId": args.job, "labels": labels(&args.labels)?, "predictionInput": input});
    let job = cx.client.post("/jobs", &body).await?;
    cx.note(format!("Job [{}] submitted successfully ({}).", args.job, job["state"].as_str().unwrap_or("")));
    if cx.format != Format::Table {
        output::resource(cx.format, &job);
    }
    Ok(true)
}

/// Follows a job's log (server-sent events) until the job ends; false when it did not succeed.
async fn stream_logs(cx: &Context, job: &str, task: Option<&str>) -> Result<bool> {
    let mut path = format!("/jobs/{job}/logs?follow=true");
    if let Some(task) = task {
        path.push_str(&format!("&replica={}", encode(task)));
    }
    let response = cx.client.stream(&path).await?;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut event = String::new();
    'read: while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ClientError(format!("the log stream broke: {e}")))?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_owned();
            } else if let Some(data) = line.strip_prefix("data:") {
                if event == "end" {
                    break 'read;
                }
                if let Ok(entry) = serde_json::from_str::<Value>(data.trim()) {
                    println!("{}  {}", entry["replica"].as_str().unwrap_or(""), entry["text"].as_str().unwrap_or(""));
                }
            }
        }
    }
    let done = cx.client.get(&format!("/jobs/{job}")).await?;
    let state = done["state"].as_str().unwrap_or("");
    match state {
        "SUCCEEDED" => {
            cx.note(format!("Job [{job}] SUCCEEDED."));
            Ok(true)
        }
        _ => Err(ClientError(format!(
            "job {job} ended {state}: {}",
            done["errorMessage"].as_str().unwrap_or("").lines().next().unwrap_or("")
        ))),
    }
}

// ---- models and versions ---------------------------------------------------------------------

pub async fn models(cx: &Context, command: ModelsCommand) -> Result<bool> {
    match command {
        ModelsCommand::Create { model, description, labels: pairs, regions: _ } => {
            let body =
                json!({"name": model, "description": description.unwrap_or_default(), "labels": labels(&pairs)?});
            let created = cx.client.post("/models", &body).await?;
            cx.note(format!("Created model [{model}]."));
            if cx.format != Format::Table {
                output::resource(cx.format, &created);
            }
        }
        ModelsCommand::List => {
            let page = cx.client.get("/models?pageSize=1000").await?;
            let items = page["models"].as_array().cloned().unwrap_or_default();
            output::table(cx.format, &items, &[("NAME", "name"), ("DEFAULT_VERSION_NAME", "/defaultVersion/name")]);
        }
        ModelsCommand::Describe { model } => {
            output::resource(cx.format, &cx.client.get(&format!("/models/{model}")).await?)
        }
        ModelsCommand::Delete { model } => {
            let op = cx.client.delete(&format!("/models/{model}")).await?;
            wait_operation(cx, &op, &format!("Deleting model [{model}]")).await?;
            cx.note(format!("Deleted model [{model}]."));
        }
    }
    Ok(true)
}

pub async fn versions(cx: &Context, command: VersionsCommand) -> Result<bool> {
    match command {
        VersionsCommand::Create {
            version,
            model,
            origin,
            staging_bucket,
            framework,
            description,
            runtime_version,
            no_wait,
        } => {
            let local = Path::new(&origin);
            let uri = if !origin.contains("://") && local.is_dir() {
                let root = std::fs::canonicalize(local).map_err(|e| ClientError(format!("--origin {origin}: {e}")))?;
                upload_dir(cx, &root, Path::new(""), staging_bucket.as_deref()).await?
            } else {
                origin.clone()
            };
            let mut body = json!({"name": version, "deploymentUri": uri, "framework": framework.to_ascii_uppercase(),
                                  "description": description.unwrap_or_default()});
            if let Some(runtime) = runtime_version {
                body["runtimeVersion"] = json!(runtime);
            }
            let op = cx.client.post(&format!("/models/{model}/versions"), &body).await?;
            if no_wait {
                cx.note(format!("Creating version [{version}] ({}).", op["name"].as_str().unwrap_or("")));
                if cx.format != Format::Table {
                    output::resource(cx.format, &op);
                }
                return Ok(true);
            }
            let done =
                wait_operation(cx, &op, &format!("Creating version [{version}] (this might take a moment)")).await?;
            cx.note(format!("Created version [{version}] of model [{model}]."));
            if cx.format != Format::Table {
                output::resource(cx.format, &done["response"]);
            }
        }
        VersionsCommand::List { model } => {
            let page = cx.client.get(&format!("/models/{model}/versions?pageSize=1000")).await?;
            let items = page["versions"].as_array().cloned().unwrap_or_default();
            output::table(
                cx.format,
                &items,
                &[("NAME", "name"), ("STATE", "state"), ("DEFAULT", "isDefault"), ("DEPLOYMENT_URI", "deploymentUri")],
            );
        }
        VersionsCommand::Describe { version, model } => {
            output::resource(cx.format, &cx.client.get(&format!("/models/{model}/versions/{version}")).await?);
        }
        VersionsCommand::Delete { version, model } => {
            let op = cx.client.delete(&format!("/models/{model}/versions/{version}")).await?;
            wait_operation(cx, &op, &format!("Deleting version [{version}]")).await?;
            cx.note(format!("Deleted version [{version}]."));
        }
        VersionsCommand::SetDefault { version, model } => {
            let updated = cx.client.post(&format!("/models/{model}/versions/{version}:setDefault"), &json!({})).await?;
            cx.note(format!("Version [{version}] is the default of model [{model}]."));
            if cx.format != Format::Table {
                output::resource(cx.format, &updated);
            }
        }
    }
    Ok(true)
}

/// Polls an operation until it is done, with a spinner; its error fails the command.
async fn wait_operation(cx: &Context, op: &Value, message: &str) -> Result<Value> {
    let id = op["name"].as_str().and_then(|n| n.rsplit('/').next()).unwrap_or("").to_owned();
    let spinner = cx.spinner(message.to_owned());
    let mut current = op.clone();
    while current["done"] != json!(true) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        current = cx.client.get(&format!("/operations/{id}")).await?;
    }
    spinner.finish_and_clear();
    if let Some(error) = current.get("error") {
        return Err(ClientError(format!("operation {id} failed: {}", error["message"].as_str().unwrap_or(""))));
    }
    Ok(current)
}

// ---- predict and operations ------------------------------------------------------------------

pub async fn predict(cx: &Context, args: PredictArgs) -> Result<bool> {
    let body = if let Some(file) = &args.json_request {
        serde_json::from_str::<Value>(&read_input(file)?).map_err(|e| ClientError(format!("--json-request: {e}")))?
    } else if let Some(file) = &args.json_instances {
        let instances: std::result::Result<Vec<Value>, _> =
            read_input(file)?.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect();
        json!({"instances": instances.map_err(|e| ClientError(format!("--json-instances: {e}")))?})
    } else if let Some(file) = &args.text_instances {
        let instances: Vec<Value> = read_input(file)?.lines().filter(|l| !l.is_empty()).map(|l| json!(l)).collect();
        json!({"instances": instances})
    } else {
        return Err(ClientError("give --json-instances, --text-instances or --json-request".into()));
    };
    let path = match &args.version {
        Some(version) => format!("/models/{}/versions/{version}:predict", args.model),
        None => format!("/models/{}:predict", args.model),
    };
    let answer = cx.client.post(&path, &body).await?;
    match cx.format {
        Format::Table => {
            for prediction in answer["predictions"].as_array().into_iter().flatten() {
                println!("{prediction}");
            }
        }
        format => output::resource(format, &answer),
    }
    Ok(true)
}

/// A file's text, or stdin's for `-`.
fn read_input(file: &Path) -> Result<String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| ClientError(format!("cannot read stdin: {e}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(file).map_err(|e| ClientError(format!("{}: {e}", file.display())))
}

pub async fn operations(cx: &Context, command: OperationsCommand) -> Result<bool> {
    let id = |op: &str| op.rsplit('/').next().unwrap_or(op).to_owned();
    match command {
        OperationsCommand::Describe { operation } => {
            output::resource(cx.format, &cx.client.get(&format!("/operations/{}", id(&operation))).await?);
        }
        OperationsCommand::List => {
            let page = cx.client.get("/operations?pageSize=1000").await?;
            let items = page["operations"].as_array().cloned().unwrap_or_default();
            output::table(
                cx.format,
                &items,
                &[
                    ("NAME", "name"),
                    ("TYPE", "/metadata/operationType"),
                    ("DONE", "done"),
                    ("CREATED", "/metadata/createTime"),
                ],
            );
        }
        OperationsCommand::Wait { operation } => {
            let op = cx.client.get(&format!("/operations/{}", id(&operation))).await?;
            let done = wait_operation(cx, &op, format!("Waiting for operation [{}]", id(&operation)).as_str()).await?;
            output::resource(cx.format, &done);
        }
    }
    Ok(true)
}

/// Percent-encodes a query or path value.
fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}
