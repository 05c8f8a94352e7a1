//! Serving what Cloud ML Engine serves besides TorchScript, through the real server: scikit-learn
//! pipelines, XGBoost boosters and pickled XGBoost models, custom prediction routines from an
//! sdist, and TensorFlow SavedModels. `fixtures/make_framework_models.py` builds each model with
//! the project's Python and writes the framework's own predictions, which the server's must equal.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TestServer;
use serde_json::{json, Value};

/// The models of one kind (`sklearn`, `xgboost`, `custom`, `tensorflow`), built once per test
/// binary, and what the framework predicted.
fn fixtures(kind: &str) -> (PathBuf, Value) {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = match built.iter().find(|(k, _)| k == kind) {
        Some((_, dir)) => dir.clone(),
        None => {
            let dir = std::env::temp_dir().join(format!("anneal-framework-models-{}/{kind}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_framework_models.py");
            let output = std::process::Command::new(common::python())
                .arg(script)
                .arg(&dir)
                .arg(kind)
                .env("TF_CPP_MIN_LOG_LEVEL", "2")
                .output()
                .expect("run make_framework_models.py (run `make test` to set up .venv)");
            assert!(
                output.status.success(),
                "make_framework_models.py {kind}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            built.push((kind.to_owned(), dir.clone()));
            dir
        }
    };
    let facts = std::fs::read_to_string(dir.join(format!("{kind}.json"))).expect("fixture facts");
    (dir, serde_json::from_str(&facts).expect("json"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Copies `from` (a model directory or a package file) into the server's data dir, where URIs
/// may point.
fn stage(server: &TestServer, from: &Path, name: &str) -> PathBuf {
    let to = server.data.path().join("uploads").join(name);
    if from.is_dir() {
        copy_dir(from, &to);
    } else {
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from, &to).expect("copy");
    }
    to
}

/// Creates version `version` of model `m` from `body` and waits for its operation.
async fn create_version(server: &TestServer, body: Value) -> Value {
    let (status, op) = server.post_json("/v1/projects/p/models/m/versions", &body).await;
    assert_eq!(status, 200, "{body}: {op}");
    server.wait_operation(op["name"].as_str().expect("operation name")).await
}

async fn predict(server: &TestServer, version: &str, instances: &Value) -> (u16, Value) {
    server
        .post_json(&format!("/v1/projects/p/models/m/versions/{version}:predict"), &json!({"instances": instances}))
        .await
}

/// Polls the version until it is in `state` (at most 60 s).
async fn wait_state(server: &TestServer, version: &str, state: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = server.get_json(&format!("/v1/projects/p/models/m/versions/{version}")).await;
        assert_eq!(status, 200, "{body}");
        if body["state"] == state {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "version {version} never {state}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn scikit_learn_models_are_detected_and_predict_as_scikit_learn_does() {
    let (dir, facts) = fixtures("sklearn");
    let server = TestServer::start().await;
    server.create_model("m").await;
    let instances = &facts["instances"];

    // A pipeline in model.joblib, framework left out: detected, served by two processes.
    let pipeline = stage(&server, &dir.join("pipeline"), "pipeline");
    let done = create_version(
        &server,
        json!({"name": "pipe", "deploymentUri": pipeline.display().to_string(), "runtimeVersion": "2.11",
               "pythonVersion": "3.11", "manualScaling": {"nodes": 2}}),
    )
    .await;
    assert_eq!(done["response"]["state"], "READY", "{done}");
    assert_eq!(done["response"]["framework"], "SCIKIT_LEARN", "auto-detected: {done}");
    assert_eq!(done["response"]["runtimeVersion"], "2.11", "{done}");
    assert_eq!(done["response"]["pythonVersion"], "3.11", "{done}");
    let (status, body) = predict(&server, "pipe", instances).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"], facts["expected"]["pipeline"], "scikit-learn's own predictions");

    // Concurrent requests share the workers' passes and each gets its own rows back.
    let mut requests = Vec::new();
    for i in 0..5 {
        let (client, url) = (server.client.clone(), server.url("/v1/projects/p/models/m/versions/pipe:predict"));
        let body = json!({"instances": [instances[i].clone()]});
        requests.push(tokio::spawn(async move {
            let response = client.post(url).json(&body).send().await.expect("POST");
            (i, response.status().as_u16(), response.json::<Value>().await.expect("JSON"))
        }));
    }
    for request in requests {
        let (i, status, body) = request.await.expect("request task");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["predictions"], json!([facts["expected"]["pipeline"][i]]), "row {i}");
    }

    // A random forest in model.pkl: floats as scikit-learn computes them.
    let regressor = stage(&server, &dir.join("regressor"), "regressor");
    let done = create_version(
        &server,
        json!({"name": "forest", "deploymentUri": regressor.display().to_string(), "framework": "SCIKIT_LEARN"}),
    )
    .await;
    assert_eq!(done["response"]["framework"], "SCIKIT_LEARN", "{done}");
    let (status, body) = predict(&server, "forest", instances).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"], facts["expected"]["regressor"]);

    // String labels, and instances sent as a body that is not plain numbers (a JSON object
    // field order aside, the same values).
    let labels = stage(&server, &dir.join("labels"), "labels");
    create_version(&server, json!({"name": "labels", "deploymentUri": labels.display().to_string()})).await;
    let (status, body) = server
        .post_json(
            "/v1/projects/p/models/m/versions/labels:predict",
            &json!({"signature_name": "", "instances": instances}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"], facts["expected"]["labels"]);

    // The model's errors, with ML Engine's text and codes.
    let (status, body) = predict(&server, "pipe", &json!([[1.0, 2.0]])).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().expect("error text");
    assert!(
        error.starts_with("Prediction failed: Failed to run the provided model: Exception during sklearn prediction:")
            && error.contains("features")
            && error.ends_with("(Error code: 2)"),
        "{error}"
    );
    let (status, body) = predict(&server, "pipe", &json!([[1.0, 2.0, 3.0, 4.0], [1.0]])).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().expect("error text");
    assert!(error.starts_with("Prediction failed: Invalid inputs: ") && error.ends_with("(Error code: 1)"), "{error}");
    // A bad request does not fail its neighbours, and the workers still serve.
    let (status, body) = predict(&server, "pipe", instances).await;
    assert_eq!((status, &body["predictions"]), (200, &facts["expected"]["pipeline"]), "{body}");

    // The default version (the first) answers through the model too.
    let (status, body) = server.post_json("/v1/projects/p/models/m:predict", &json!({"instances": instances})).await;
    assert_eq!((status, &body["predictions"]), (200, &facts["expected"]["pipeline"]), "{body}");
}

#[tokio::test]
async fn framework_detection_refuses_ambiguous_empty_and_mismatched_directories() {
    let (dir, _) = fixtures("sklearn");
    let server = TestServer::start().await;
    server.create_model("m").await;
    let both = stage(&server, &dir.join("both"), "both");
    let empty = stage(&server, &dir.join("empty"), "empty");
    let pipeline = stage(&server, &dir.join("pipeline"), "pipeline");
    let cases = [
        (json!({"name": "v", "deploymentUri": both.display().to_string()}), "version.deploymentUri", "Multiple model files are found in the model_path: model.joblib, model.pkl"),
        (json!({"name": "v", "deploymentUri": empty.display().to_string()}), "version.deploymentUri", "holds no model file; looked for saved_model.pb, saved_model.pbtxt, model.joblib, model.pkl, model.bst, model.pt"),
        (json!({"name": "v", "deploymentUri": pipeline.display().to_string(), "framework": "TENSORFLOW"}), "version.framework", "Framework TENSORFLOW needs saved_model.pb or saved_model.pbtxt in the deployment directory; it holds model.joblib (a SCIKIT_LEARN model)"),
        (json!({"name": "v", "deploymentUri": pipeline.display().to_string(), "framework": "CAFFE"}), "version.framework", "not supported"),
        (json!({"name": "v", "deploymentUri": pipeline.display().to_string(), "packageUris": ["/nope.tar.gz"]}), "version.packageUris", "set predictionClass too"),
        (json!({"name": "v", "deploymentUri": pipeline.display().to_string(), "predictionClass": "NoModule"}), "version.predictionClass", "module.Class"),
    ];
    for (body, field, text) in cases {
        let (status, error) = server.post_json("/v1/projects/p/models/m/versions", &body).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["details"][0]["fieldViolations"][0]["field"], field, "{body}: {error}");
        assert!(error["error"]["message"].as_str().expect("message").contains(text), "{body}: {error}");
    }

    // Both files and SCIKIT_LEARN named: the worker refuses, as ML Engine's does, and the
    // version ends FAILED with its text.
    let done = create_version(
        &server,
        json!({"name": "both", "deploymentUri": both.display().to_string(), "framework": "scikit-learn"}),
    )
    .await;
    assert_eq!(done["error"]["code"], 9, "FAILED_PRECONDITION: {done}");
    let message = done["error"]["message"].as_str().expect("message");
    assert_eq!(
        message,
        "Create Version failed. Bad model detected with error: \"Failed to load model: Multiple model files are found in the model_path: model.joblib, model.pkl (Error code: 0)\"",
    );
    let (_, version) = server.get_json("/v1/projects/p/models/m/versions/both").await;
    assert_eq!((&version["state"], &version["errorMessage"]), (&json!("FAILED"), &json!(message)), "{version}");

    // A model.pkl that is not a pickle: FAILED_TO_LOAD_MODEL.
    let corrupt = stage(&server, &dir.join("corrupt"), "corrupt");
    let done =
        create_version(&server, json!({"name": "corrupt", "deploymentUri": corrupt.display().to_string()})).await;
    let message = done["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("Failed to load model: Could not load the model: ") && message.ends_with("(Error code: 0)\""),
        "{message}"
    );
}

#[tokio::test]
async fn xgboost_boosters_and_pickled_xgboost_models_predict_as_xgboost_does() {
    let (dir, facts) = fixtures("xgboost");
    let server = TestServer::start().await;
    server.create_model("m").await;
    let instances = &facts["instances"];

    let booster = stage(&server, &dir.join("booster"), "booster");
    let done =
        create_version(&server, json!({"name": "booster", "deploymentUri": booster.display().to_string()})).await;
    assert_eq!(done["response"]["framework"], "XGBOOST", "model.bst: {done}");
    let (status, body) = predict(&server, "booster", instances).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"], facts["expected"]["booster"], "XGBoost's own probabilities");

    // A pickled XGBClassifier in model.pkl is XGBOOST, not SCIKIT_LEARN.
    let classifier = stage(&server, &dir.join("classifier"), "classifier");
    let done =
        create_version(&server, json!({"name": "classifier", "deploymentUri": classifier.display().to_string()})).await;
    assert_eq!(done["response"]["framework"], "XGBOOST", "the pickled object is an XGBoost model: {done}");
    let (status, body) = predict(&server, "classifier", instances).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"], facts["expected"]["classifier"]);

    let (status, body) = predict(&server, "booster", &json!([[1.0, 2.0, 3.0, 4.0], [1.0]])).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().expect("text").ends_with("(Error code: 1)"), "{body}");

    // Six columns for four features: the error names the cause in one line, without XGBoost's
    // backtrace or the server's paths.
    let six = json!([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]);
    for (version, cause) in [
        ("booster", "Number of columns does not match number of features in booster"),
        ("classifier", "Feature shape mismatch, expected: 4, got 6"),
    ] {
        let (status, body) = predict(&server, version, &six).await;
        assert_eq!(status, 400, "{body}");
        let error = body["error"].as_str().expect("text");
        assert!(
            error.starts_with(
                "Prediction failed: Failed to run the provided model: Exception during xgboost prediction: "
            ) && error.contains(cause)
                && error.ends_with("(Error code: 2)"),
            "{version}: {error}"
        );
        assert!(!error.contains('/') && !error.contains("[bt]") && !error.contains('\n'), "{version}: {error}");
    }
}

#[tokio::test]
async fn custom_prediction_routines_run_user_code_with_ml_engine_error_codes() {
    let (dir, facts) = fixtures("custom");
    let server = TestServer::start().await;
    server.create_model("m").await;
    let model_dir = stage(&server, &dir.join("routine"), "routine");
    let package = stage(&server, Path::new(facts["package"].as_str().expect("package")), "pkgs/my_routine-0.1.tar.gz");
    let body = |name: &str, class: &str| {
        json!({"name": name, "deploymentUri": model_dir.display().to_string(), "predictionClass": class,
               "packageUris": [package.display().to_string()], "runtimeVersion": "2.11", "pythonVersion": "3.11"})
    };

    let done = create_version(&server, body("routine", "my_routine.predictor.Predictor")).await;
    assert_eq!(done["response"]["state"], "READY", "{done}");
    assert_eq!(done["response"]["predictionClass"], "my_routine.predictor.Predictor", "{done}");
    assert_eq!(done["response"]["packageUris"], json!([package.display().to_string()]), "{done}");
    assert_eq!(done["response"]["framework"], "SCIKIT_LEARN", "recorded from its model.pkl: {done}");
    let (status, answer) = predict(&server, "routine", &facts["instances"]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["predictions"], facts["expected"]["routine"], "the predictor's pre-processing");
    // What user code prints goes to the server's log, not into the answers.
    let (status, answer) = predict(&server, "routine", &json!(["print"])).await;
    assert_eq!((status, &answer["predictions"]), (200, &json!(["printed"])), "{answer}");
    // The body's other top-level keys are predict's keyword arguments, as on ML Engine.
    let (status, answer) = server
        .post_json(
            "/v1/projects/p/models/m/versions/routine:predict",
            &json!({"instances": ["kwargs", "kwargs"], "top_k": 3, "labels": ["a", "b"]}),
        )
        .await;
    let kwargs = json!({"top_k": 3, "labels": ["a", "b"]});
    assert_eq!((status, &answer["predictions"]), (200, &json!([kwargs, kwargs])), "{answer}");
    let (status, answer) = predict(&server, "routine", &json!(["kwargs"])).await;
    assert_eq!((status, &answer["predictions"]), (200, &json!([{}])), "none: {answer}");

    let (status, answer) = predict(&server, "routine", &json!(["raise"])).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"],
        "Prediction failed: Failed to run the provided model: my_routine.predictor.Predictor.predict raised ValueError: asked to raise (Error code: 2)"
    );
    let (status, answer) = predict(&server, "routine", &json!(["short"])).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"],
        "Prediction failed: There was a problem processing the outputs: predict returned 0 predictions for 1 instances (Error code: 3)"
    );

    // Custom routines serve online predictions only, as on ML Engine.
    let (status, refused) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "routine_batch", "predictionInput": {"versionName": "projects/p/models/m/versions/routine",
                    "dataFormat": "JSON", "inputPaths": [server.data.path().join("in.json").display().to_string()],
                    "outputPath": server.data.path().join("out").display().to_string()}}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["error"]["details"][0]["fieldViolations"][0]["field"], "job.predictionInput.versionName",
        "{refused}"
    );
    assert!(refused["error"]["message"].as_str().expect("message").contains("online predictions only"), "{refused}");

    // Loading errors end the version FAILED with their code.
    let done = create_version(&server, body("badload", "my_routine.predictor.BadLoad")).await;
    assert_eq!(
        done["error"]["message"],
        "Create Version failed. Bad model detected with error: \"Failed to load model: my_routine.predictor.BadLoad.from_path raised RuntimeError: cannot read the weights (Error code: 0)\"",
        "{done}"
    );
    let done = create_version(&server, body("noclass", "my_routine.predictor.Nope")).await;
    assert_eq!(
        done["error"]["message"],
        "Create Version failed. Bad model detected with error: \"There was a problem processing the user code: Module my_routine.predictor has no class Nope (predictionClass) (Error code: 4)\"",
        "{done}"
    );

    // A predictor whose process dies: the request in flight gets an error at once (no hang),
    // the worker is started again and serves the next request.
    let (status, answer) = predict(&server, "routine", &json!(["crash"])).await;
    assert_eq!(status, 500, "{answer}");
    let error = answer["error"].as_str().expect("error text");
    assert!(error.contains("the worker process exited (exit status 3)") && error.contains("started again"), "{error}");
    let (status, answer) = predict(&server, "routine", &facts["instances"]).await;
    assert_eq!((status, &answer["predictions"]), (200, &facts["expected"]["routine"]), "served again: {answer}");

    // A routine that overflows: non-finite numbers are strings, as in protobuf's JSON mapping,
    // and however often a caller sends them the version stays READY and serves.
    for _ in 0..50 {
        let (status, answer) = predict(&server, "routine", &json!([[1e308], [-1e308, 1.0]])).await;
        assert_eq!((status, &answer["predictions"]), (200, &json!([["Infinity"], ["-Infinity", 3.5]])), "{answer}");
    }
    let version = wait_state(&server, "routine", "READY").await;
    assert_eq!(version["state"], "READY", "{version}");
    let (status, answer) = predict(&server, "routine", &facts["instances"]).await;
    assert_eq!((status, &answer["predictions"]), (200, &facts["expected"]["routine"]), "{answer}");

    // A routine that writes a length prefix of almost 4 GiB on its answers' pipe: the request
    // fails at once, nothing of that size is allocated, and the worker is started again.
    let (status, answer) = predict(&server, "routine", &json!(["huge"])).await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().expect("error text");
    assert!(
        error.starts_with("Prediction failed: There was a problem processing the outputs: the model's answer is 4294967280 bytes, over the limit of ")
            && error.contains("(predict_max_answer_bytes)")
            && error.ends_with("(Error code: 3)"),
        "{error}"
    );
    server.get("/healthz").await.error_for_status().expect("the server is up");
    let (status, answer) = predict(&server, "routine", &facts["instances"]).await;
    assert_eq!((status, &answer["predictions"]), (200, &facts["expected"]["routine"]), "served again: {answer}");

    // Crashing again and again: each request in flight fails, the version stays READY (what a
    // caller sends never fails it) and serves the next request.
    for _ in 0..3 {
        let (status, answer) = predict(&server, "routine", &json!(["crash"])).await;
        assert_eq!(status, 500, "{answer}");
    }
    let (status, answer) = predict(&server, "routine", &facts["instances"]).await;
    assert_eq!((status, &answer["predictions"]), (200, &facts["expected"]["routine"]), "{answer}");
    let (_, version) = server.get_json("/v1/projects/p/models/m/versions/routine").await;
    assert_eq!(version["state"], "READY", "{version}");

    // A model that can no longer be loaded: its worker cannot start again, and after three tries
    // the version goes FAILED with the last error and stops serving.
    let (status, answer) = predict(&server, "routine", &json!(["poison mark"])).await;
    assert_eq!(status, 200, "{answer}");
    let mark = PathBuf::from(answer["predictions"][0].as_str().expect("the mark's path"));
    let (status, answer) = predict(&server, "routine", &json!(["poison"])).await;
    assert_eq!(status, 500, "{answer}");
    for _ in 0..2 {
        let (status, answer) = predict(&server, "routine", &facts["instances"]).await;
        assert_eq!(status, 503, "the worker could not start again: {answer}");
    }
    let version = wait_state(&server, "routine", "FAILED").await;
    let _ = std::fs::remove_file(&mark);
    let message = version["errorMessage"].as_str().expect("errorMessage");
    assert!(
        message.contains("could not be started again 3 times") && message.contains("the model was poisoned"),
        "{message}"
    );
    let (status, answer) = predict(&server, "routine", &facts["instances"]).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().expect("message").contains("FAILED"), "{answer}");
}

#[tokio::test]
async fn tensorflow_saved_models_serve_their_signature() {
    let (dir, facts) = fixtures("tensorflow");
    let server = TestServer::start().await;
    server.create_model("m").await;

    let keras = stage(&server, &dir.join("keras"), "keras");
    let done = create_version(&server, json!({"name": "keras", "deploymentUri": keras.display().to_string()})).await;
    assert_eq!(done["response"]["framework"], "TENSORFLOW", "saved_model.pb: {done}");
    let (status, body) = predict(&server, "keras", &facts["instances"]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"], facts["expected"]["keras"], "Keras's own outputs");
    // Five columns for three inputs: TensorFlow's cause, not its graph's node, in one line.
    let (status, body) = predict(&server, "keras", &json!([[1.0, 2.0, 3.0, 4.0, 5.0]])).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().expect("text");
    assert!(
        error.starts_with("Prediction failed: Failed to run the provided model: Exception during running the graph: Matrix size-incompatible: ")
            && error.ends_with("(Error code: 2)"),
        "{error}"
    );
    assert!(
        !error.contains("{{node") && !error.contains("Op:") && !error.contains('/') && !error.contains('\n'),
        "{error}"
    );

    // Named inputs (one a string tensor, sent as text or {"b64": ...}); several outputs are
    // named per instance; bytes that are not UTF-8 come back as {"b64": ...}.
    let multi = stage(&server, &dir.join("multi"), "multi");
    let done = create_version(
        &server,
        json!({"name": "multi", "deploymentUri": multi.display().to_string(), "framework": "TENSORFLOW"}),
    )
    .await;
    assert_eq!(done["response"]["state"], "READY", "{done}");
    let (status, body) =
        predict(&server, "multi", &json!([{"a": [1, 2], "text": "hi"}, {"a": [3, 4.5], "text": {"b64": "/wA="}}]))
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["predictions"],
        json!([{"echo": "hi", "length": 2, "total": 3.0}, {"echo": {"b64": "/wA="}, "length": 2, "total": 7.5}])
    );
    let (status, body) = predict(&server, "multi", &json!([{"a": [1, 2]}])).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "Prediction failed: Invalid inputs: Input text was missing in at least one input instance (Error code: 1)"
    );

    // `signature_name` picks another signature; one the model lacks is named in the error.
    let signed = |name: &str, instances: Value| json!({"instances": instances, "signature_name": name});
    let url = "/v1/projects/p/models/m/versions/multi:predict";
    let (status, body) = server.post_json(url, &signed("double", json!([[1, 2], [0.5, -1]]))).await;
    assert_eq!((status, &body["predictions"]), (200, &json!([[2.0, 4.0], [1.0, -2.0]])), "{body}");
    let (status, body) = server.post_json(url, &signed("serving_default", json!([{"a": [1, 2], "text": "x"}]))).await;
    assert_eq!((status, &body["predictions"]), (200, &json!([{"echo": "x", "length": 1, "total": 3.0}])), "{body}");
    let (status, body) = server.post_json(url, &signed("nope", json!([[1, 2]]))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "Prediction failed: Invalid inputs: No signature found for signature key nope. (Error code: 1)"
    );

    // A model of one signature, not named serving_default, serves it without a signature_name.
    let named = stage(&server, &dir.join("named"), "named");
    let done = create_version(&server, json!({"name": "named", "deploymentUri": named.display().to_string()})).await;
    assert_eq!(done["response"]["state"], "READY", "{done}");
    let (status, body) = predict(&server, "named", &json!([1.5, -2])).await;
    assert_eq!((status, &body["predictions"]), (200, &json!([-1.5, 2.0])), "{body}");
    let (status, body) = server
        .post_json("/v1/projects/p/models/m/versions/named:predict", &signed("serving_default", json!([1])))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().expect("text").contains("No signature found for signature key serving_default."),
        "{body}"
    );
}

/// The lines of every `prediction.results-*` shard under `dir`, shard by shard.
fn result_lines(dir: &Path) -> Vec<Value> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("output dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("prediction.results-")))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .expect("shard")
                .lines()
                .map(|l| serde_json::from_str(l).expect("JSON"))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn batch_prediction_jobs_predict_python_models() {
    let (sklearn, facts) = fixtures("sklearn");
    let (xgboost, xgb_facts) = fixtures("xgboost");
    let server = TestServer::start().await;
    server.create_model("m").await;
    let pipeline = stage(&server, &sklearn.join("pipeline"), "pipeline");
    create_version(&server, json!({"name": "pipe", "deploymentUri": pipeline.display().to_string()})).await;

    // A version's scikit-learn pipeline over JSON lines, one of them bad.
    let input = server.data.path().join("batch/in.json");
    std::fs::create_dir_all(input.parent().expect("parent")).expect("mkdir");
    let mut lines: String =
        facts["instances"].as_array().expect("instances").iter().map(|i| format!("{i}\n")).collect();
    lines.push_str("[1.0, 2.0]\n");
    std::fs::write(&input, lines).expect("write");
    let output = server.data.path().join("batch/out");
    let (status, job) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "sk_batch", "predictionInput": {"versionName": "projects/p/models/m/versions/pipe",
                    "dataFormat": "JSON", "inputPaths": [input.display().to_string()],
                    "outputPath": output.display().to_string(), "maxWorkerCount": "1", "batchSize": "64"}}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let done = server.wait_job("sk_batch", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["predictionOutput"]["predictionCount"], "5", "{done}");
    assert_eq!(done["predictionOutput"]["errorCount"], "1", "the bad line, alone: {done}");
    assert_eq!(Value::from(result_lines(&output)), facts["expected"]["pipeline"]);

    // An XGBoost booster's directory over CSV, with two workers.
    let booster = stage(&server, &xgboost.join("booster"), "booster");
    let input = server.data.path().join("batch/rows.csv");
    let csv: String = xgb_facts["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i.as_array().expect("row").iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",") + "\n")
        .collect();
    std::fs::write(&input, csv).expect("write");
    let output = server.data.path().join("batch/xgb");
    let (status, job) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "xgb_batch", "predictionInput": {"uri": booster.display().to_string(),
                    "dataFormat": "CSV", "inputPaths": [input.display().to_string()],
                    "outputPath": output.display().to_string(), "maxWorkerCount": "1"}}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let done = server.wait_job("xgb_batch", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(Value::from(result_lines(&output)), xgb_facts["expected"]["booster"]);

    // A SavedModel's other signature, by the job's signatureName.
    let (tensorflow, _) = fixtures("tensorflow");
    let multi = stage(&server, &tensorflow.join("multi"), "multi");
    let input = server.data.path().join("batch/pairs.json");
    std::fs::write(&input, "[1, 2]\n[0.5, -1]\n").expect("write");
    let output = server.data.path().join("batch/doubled");
    let (status, job) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "tf_batch", "predictionInput": {"uri": multi.display().to_string(), "signatureName": "double",
                    "dataFormat": "JSON", "inputPaths": [input.display().to_string()],
                    "outputPath": output.display().to_string(), "maxWorkerCount": "1"}}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let done = server.wait_job("tf_batch", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(Value::from(result_lines(&output)), json!([[2.0, 4.0], [1.0, -2.0]]));

    // A model that cannot load fails the job with ML Engine's text.
    let corrupt = stage(&server, &sklearn.join("corrupt"), "corrupt");
    let (status, job) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "bad_batch", "predictionInput": {"uri": corrupt.display().to_string(),
                    "dataFormat": "CSV", "inputPaths": [input.display().to_string()],
                    "outputPath": server.data.path().join("batch/bad").display().to_string()}}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let done = server.wait_job("bad_batch", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert!(done["errorMessage"].as_str().expect("errorMessage").contains("Failed to load model"), "{done}");
}

#[tokio::test]
async fn local_predict_serves_every_framework() {
    let (sklearn, facts) = fixtures("sklearn");
    let (xgboost, xgb_facts) = fixtures("xgboost");
    let work = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, instances: &Value| {
        let path = work.path().join(name);
        let lines: String = instances.as_array().expect("instances").iter().map(|i| format!("{i}\n")).collect();
        std::fs::write(&path, lines).expect("write");
        path.display().to_string()
    };
    let sk_instances = write("sk.json", &facts["instances"]);
    let pipeline = sklearn.join("pipeline").display().to_string();
    let (code, stdout, stderr) =
        common::run_anneal(&["local", "predict", "--model-dir", &pipeline, "--json-instances", &sk_instances], &[])
            .await;
    assert_eq!(code, Some(0), "{stderr}");
    let predictions: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(Value::from(predictions), facts["expected"]["pipeline"], "detected as SCIKIT_LEARN");

    let xgb_instances = write("xgb.json", &xgb_facts["instances"]);
    let booster = xgboost.join("booster").display().to_string();
    let (code, stdout, stderr) = common::run_anneal(
        &["local", "predict", "--model-dir", &booster, "--json-instances", &xgb_instances, "--framework", "xgboost"],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let predictions: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(Value::from(predictions), xgb_facts["expected"]["booster"]);

    let (code, _, stderr) = common::run_anneal(
        &["local", "predict", "--model-dir", &pipeline, "--json-instances", &sk_instances, "--framework", "caffe"],
        &[],
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--framework CAFFE"), "{stderr}");
    // A SavedModel's other signature, by --signature-name.
    let (tensorflow, _) = fixtures("tensorflow");
    let pairs = write("pairs.json", &json!([[1, 2]]));
    let multi = tensorflow.join("multi").display().to_string();
    let (code, stdout, stderr) = common::run_anneal(
        &["local", "predict", "--model-dir", &multi, "--json-instances", &pairs, "--signature-name", "double"],
        &[],
    )
    .await;
    assert_eq!((code, stdout.trim()), (Some(0), "[2.0,4.0]"), "{stderr}");

    let bad = write("bad.json", &json!([[1.0, 2.0]]));
    let (code, _, stderr) =
        common::run_anneal(&["local", "predict", "--model-dir", &pipeline, "--json-instances", &bad], &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("Prediction failed: Failed to run the provided model") && stderr.contains("(Error code: 2)"),
        "{stderr}"
    );
}

/// Whether this test process runs as root (effective uid 0, from `/proc/self/status`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(2).map(|u| u == "0"))
        .unwrap_or(false)
}

/// The stored copy of version `version` of model `m` in `project`.
fn stored_dir(server: &TestServer, project: &str, version: &str) -> PathBuf {
    let models = server.data.path().join("storage/models").join(project).join("m");
    std::fs::read_dir(&models)
        .expect("stored models")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{version}-"))))
        .expect("the version's stored copy")
}

/// The effective uids of the processes whose environment has `ANNEAL_MODEL_DIR=<dir>`, each once.
fn worker_uids(dir: &Path) -> Vec<u32> {
    let wanted = format!("ANNEAL_MODEL_DIR={}", dir.display());
    let mut uids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        if !environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes()) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2)?.parse::<u32>().ok());
        uids.extend(uid);
    }
    // A worker and its sandbox launcher share the environment and the uid.
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// When the server runs as root, a version's Python workers and the pip install of its packages
/// run as its project's replica user, as its trainers do: a custom routine (user code, as any
/// pickle is) cannot write the server, its own stored model or installed packages, or another
/// project's, nor signal the server. Not root: prints `skipped: not root` (CI runs as root).
#[tokio::test]
async fn python_workers_run_as_the_projects_replica_user() {
    if !running_as_root() {
        println!("skipped: not root");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let (spy, facts) = fixtures("spy");
    let (sklearn, _) = fixtures("sklearn");
    let server = TestServer::start().await;
    let data = server.data.path().to_path_buf();
    for project in ["p", "other"] {
        let (status, body) = server.post_json(&format!("/v1/projects/{project}/models"), &json!({"name": "m"})).await;
        assert_eq!(status, 200, "{body}");
    }
    // Another project's scikit-learn version.
    let pipeline = stage(&server, &sklearn.join("pipeline"), "pipeline");
    let (status, op) = server
        .post_json(
            "/v1/projects/other/models/m/versions",
            &json!({"name": "pipe", "deploymentUri": pipeline.display().to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{op}");
    let done = server.wait_operation(op["name"].as_str().expect("operation")).await;
    assert_eq!(done["response"]["state"], "READY", "{done}");

    let model_dir = stage(&server, &spy.join("model"), "spy-model");
    let package = stage(&server, Path::new(facts["package"].as_str().expect("package")), "pkgs/spy_routine-0.1.tar.gz");
    let done = create_version(
        &server,
        json!({"name": "spy", "deploymentUri": model_dir.display().to_string(), "predictionClass": "spy_routine.spy.Spy",
               "packageUris": [package.display().to_string()]}),
    )
    .await;
    assert_eq!(done["response"]["state"], "READY", "{done}\n{}", server.stderr());
    let own = stored_dir(&server, "p", "spy");
    let packages = own.join(".anneal-packages");
    let meta = std::fs::metadata(&packages).expect("installed packages");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o755), "the installed packages are sealed: root's, read-only");
    let other = stored_dir(&server, "other", "pipe");

    let venv = common::python().parent().and_then(Path::parent).expect("venv").to_path_buf();
    let binary = Path::new(common::anneal_bin()).canonicalize().expect("binary");
    let targets = [
        ("its stored model", own.clone()),
        ("its model file", own.join("model.pkl")),
        ("its installed packages", packages.join("spy_routine")),
        ("another project's model", other.clone()),
        ("another project's model file", other.join("model.joblib")),
        ("the data dir", data.clone()),
        ("the database", data.join("anneal.db")),
        ("the storage", data.join("storage")),
        ("the uploads", model_dir.clone()),
        ("the venv", venv),
        ("the binary", binary),
    ];
    let mut instances: Vec<Value> = targets.iter().map(|(_, path)| json!(path.display().to_string())).collect();
    instances.extend([json!("whoami"), json!("home"), json!("signal the server")]);
    let (status, body) = predict(&server, "spy", &Value::from(instances)).await;
    assert_eq!(status, 200, "{body}");
    let answers = body["predictions"].as_array().expect("predictions");
    for ((label, path), answer) in targets.iter().zip(answers) {
        assert_eq!(answer, "denied", "{label} ({}) was not denied: {answer}", path.display());
    }
    let [whoami, home, signal] = &answers[targets.len()..] else { panic!("three more answers: {body}") };
    let uid = whoami["uid"].as_u64().expect("uid") as u32;
    assert!(uid != 0 && whoami["gid"] != 0, "{whoami}");
    assert_eq!(whoami["groups"], json!([]), "no supplementary groups: {whoami}");
    assert_eq!((home, signal), (&json!("written"), &json!("denied")), "{body}");

    // Every worker runs as its project's uid: another project's is another uid, never root.
    assert_eq!(worker_uids(&own), vec![uid], "the routine's worker");
    let others = worker_uids(&other);
    assert!(
        !others.is_empty() && others.iter().all(|u| *u != 0 && *u != uid),
        "the other project's workers: {others:?}"
    );
}

/// The Keras example (examples/keras): TF_CONFIG from a master and one worker drives
/// tf.distribute.MultiWorkerMirroredStrategy (two replicas in sync, the same weights on both at the
/// end), and the SavedModel the master exports deploys as TENSORFLOW and predicts digits.
#[tokio::test]
async fn the_keras_example_trains_on_two_replicas_and_its_export_serves() {
    let server = TestServer::start().await;
    let package = server.stage_example("keras");
    let job_dir = server.data.path().join("outputs/keras_1");
    let (status, job) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "keras_1", "trainingInput": {
                "scaleTier": "CUSTOM", "masterType": "n1-standard-4", "workerType": "n1-standard-4", "workerCount": "1",
                "packageUris": [package.display().to_string()], "pythonModule": "trainer.task",
                "jobDir": job_dir.display().to_string(), "args": ["--epochs", "8"], "region": "us-central1"}}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let done = server.wait_job("keras_1", &["SUCCEEDED", "FAILED", "CANCELLED"]).await;
    let lines = |replica: &'static str| {
        let server = &server;
        async move {
            let (_, logs) = server.get_json(&format!("/v1/projects/p/jobs/keras_1/logs?replica={replica}")).await;
            logs["lines"]
                .as_array()
                .expect("lines")
                .iter()
                .map(|l| l["text"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let (master, worker) = (lines("master-replica-0").await, lines("worker-replica-0").await);
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{}\n{}", master.join("\n"), worker.join("\n"));
    for (replica, text, name) in [("master", &master, "chief 0"), ("worker", &worker, "worker 0")] {
        assert!(text.iter().any(|l| l == &format!("{name}: 2 replicas in sync")), "{replica}:\n{}", text.join("\n"));
    }
    let checksum = |text: &[String]| {
        text.iter()
            .find(|l| l.contains("weights checksum"))
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
    };
    let ours = checksum(&master).expect("the master's checksum");
    assert_eq!(Some(ours), checksum(&worker), "the replicas trained in sync");

    // Its export serves digits.
    let output = std::process::Command::new(common::python())
        .args(["-c", "import json; from sklearn.datasets import load_digits; d = load_digits(); print(json.dumps({'x': (d.data[:40] / 16).tolist(), 'y': d.target[:40].tolist()}))"])
        .output()
        .expect("python");
    let digits: Value = serde_json::from_slice(&output.stdout).expect("digits");
    server.create_model("m").await;
    let done =
        create_version(&server, json!({"name": "keras", "deploymentUri": job_dir.join("model").display().to_string()}))
            .await;
    assert_eq!(done["response"]["framework"], "TENSORFLOW", "{done}");
    let (status, body) = predict(&server, "keras", &digits["x"]).await;
    assert_eq!(status, 200, "{body}");
    let predictions = body["predictions"].as_array().expect("predictions");
    let right = predictions
        .iter()
        .zip(digits["y"].as_array().expect("labels"))
        .filter(|(logits, label)| {
            let logits: Vec<f64> =
                logits.as_array().expect("logits").iter().map(|v| v.as_f64().expect("number")).collect();
            let best = (0..logits.len()).max_by(|a, b| logits[*a].total_cmp(&logits[*b])).expect("ten logits");
            Some(best as u64) == label.as_u64()
        })
        .count();
    assert!(right >= 32, "{right} of 40 digits right");
}
