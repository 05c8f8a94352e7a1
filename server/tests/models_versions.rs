//! Models, versions, operations and online prediction over the REST API, as an `ml` v1 client
//! sees them.

mod common;

use common::TestServer;
use serde_json::{json, Value};

#[tokio::test]
async fn model_lifecycle_create_get_list_delete() {
    let server = TestServer::start().await;
    let (status, model) = server
        .post_json("/v1/projects/p/models?alt=json", &json!({"name": "m1", "description": "digits", "labels": {"team": "a"}, "regions": ["us-central1"], "onlinePredictionLogging": true}))
        .await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["name"], "projects/p/models/m1", "full resource name in the response");
    assert_eq!(model["description"], "digits");
    assert_eq!(model["labels"]["team"], "a");
    assert!(model["etag"].as_str().is_some_and(|e| !e.is_empty()));

    let (status, again) = server.post_json("/v1/projects/p/models", &json!({"name": "m1"})).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["status"], "ALREADY_EXISTS");
    assert_eq!(again["error"]["details"][0]["fieldViolations"][0]["field"], "model.name");

    let (status, got) = server.get_json("/v1/projects/p/models/m1").await;
    assert_eq!((status, &got["name"]), (200, &json!("projects/p/models/m1")));

    let (status, empty) = server.get_json("/v1/projects/empty/models").await;
    assert_eq!((status, empty), (200, json!({})), "an empty list is {{}}");

    let (status, op) = server.delete_json("/v1/projects/p/models/m1").await;
    assert_eq!(status, 200, "{op}");
    assert_eq!(op["metadata"]["operationType"], "DELETE_MODEL");
    let done = server.wait_operation(op["name"].as_str().expect("name")).await;
    assert_eq!(done["response"]["@type"], "type.googleapis.com/google.protobuf.Empty");
    let (status, gone) = server.get_json("/v1/projects/p/models/m1").await;
    assert_eq!(status, 404, "{gone}");
    assert_eq!(gone["error"]["status"], "NOT_FOUND");
}

#[tokio::test]
async fn bad_model_requests_are_invalid_argument_naming_the_field() {
    let server = TestServer::start().await;
    for (body, field) in [
        (json!({"name": "1bad"}), "model.name"),
        (json!({"name": ""}), "model.name"),
        (json!({"name": "ok", "unknownField": 1}), "body"),
        (json!({"name": "ok", "regions": ["a", "b"]}), "model.regions"),
        (json!({"name": 5}), "body"),
    ] {
        let (status, error) = server.post_json("/v1/projects/p/models", &body).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["status"], "INVALID_ARGUMENT", "{body}: {error}");
        assert_eq!(error["error"]["details"][0]["fieldViolations"][0]["field"], field, "{body}: {error}");
    }
    let response = server
        .client
        .post(server.url("/v1/projects/p/models"))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("envelope");
    assert!(body["error"]["message"].as_str().expect("message").contains("Invalid JSON payload"), "{body}");
    let (status, error) = server.get_json("/v1/projects/p/models?pageSize=-3").await;
    assert_eq!(
        (status, &error["error"]["details"][0]["fieldViolations"][0]["field"]),
        (400, &json!("pageSize")),
        "{error}"
    );
    let (status, error) = server.get_json("/v1/projects/p/models?pageSize=abc").await;
    assert_eq!((status, &error["error"]["status"]), (400, &json!("INVALID_ARGUMENT")), "{error}");
}

#[tokio::test]
async fn lists_page_with_tokens() {
    let server = TestServer::start().await;
    for i in 0..5 {
        server.create_model(&format!("m{i}")).await;
    }
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let (status, page) =
            server.get_json(&format!("/v1/projects/p/models?pageSize=2&alt=json&pageToken={token}")).await;
        assert_eq!(status, 200, "{page}");
        names.extend(
            page["models"].as_array().expect("models").iter().map(|m| m["name"].as_str().expect("name").to_owned()),
        );
        match page["nextPageToken"].as_str() {
            Some(next) => token = next.to_owned(),
            None => break,
        }
    }
    let expected: Vec<String> = (0..5).map(|i| format!("projects/p/models/m{i}")).collect();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn deploy_predict_set_default_and_delete_a_version() {
    let server = TestServer::start().await;
    server.create_model("mnist").await;
    let op = server.deploy("mnist", "v1", "mlp").await;
    assert_eq!(op["error"], Value::Null, "{op}");
    assert_eq!(op["response"]["@type"], "type.googleapis.com/google.cloud.ml.v1.Version");
    assert_eq!(op["response"]["state"], "READY");
    assert_eq!(op["response"]["framework"], "PYTORCH", "auto-detected");
    assert_eq!(op["response"]["isDefault"], true, "the first version becomes the default");
    assert_eq!(op["metadata"]["operationType"], "CREATE_VERSION");
    assert_eq!(op["metadata"]["modelName"], "projects/p/models/mnist");

    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture_models().join("expected.json")).expect("read"))
            .expect("json");
    let instances = &expected["mlp"]["instances"];
    for path in ["/v1/projects/p/models/mnist:predict", "/v1/projects/p/models/mnist/versions/v1:predict?alt=json"] {
        let (status, body) = server.post_json(path, &json!({"instances": instances})).await;
        assert_eq!(status, 200, "{path}: {body}");
        let got = body["predictions"].as_array().expect("predictions");
        let want = expected["mlp"]["predictions"].as_array().expect("expected");
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            for (a, b) in g.as_array().expect("row").iter().zip(w.as_array().expect("row")) {
                assert!((a.as_f64().expect("num") - b.as_f64().expect("num")).abs() < 1e-5, "{g} vs {w}");
            }
        }
    }

    let (status, model) = server.get_json("/v1/projects/p/models/mnist").await;
    assert_eq!(status, 200);
    assert_eq!(model["defaultVersion"]["name"], "projects/p/models/mnist/versions/v1");

    let second = server.deploy("mnist", "v2", "mlp_unsigned").await;
    assert_eq!(second["response"]["isDefault"], Value::Null, "not default: {second}");
    let (status, error) = server.delete_json("/v1/projects/p/models/mnist/versions/v1").await;
    assert_eq!((status, &error["error"]["status"]), (400, &json!("FAILED_PRECONDITION")), "{error}");
    let (status, error) = server.delete_json("/v1/projects/p/models/mnist").await;
    assert_eq!(
        (status, &error["error"]["status"]),
        (400, &json!("FAILED_PRECONDITION")),
        "model with versions: {error}"
    );

    let (status, v2) = server.post_json("/v1/projects/p/models/mnist/versions/v2:setDefault", &json!({})).await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["isDefault"], true);

    let (status, op) = server.delete_json("/v1/projects/p/models/mnist/versions/v1").await;
    assert_eq!(status, 200, "{op}");
    assert_eq!(op["metadata"]["version"]["state"], "DELETING");
    let done = server.wait_operation(op["name"].as_str().expect("name")).await;
    assert_eq!(done["response"]["@type"], "type.googleapis.com/google.protobuf.Empty", "{done}");
    let (status, _) = server.get_json("/v1/projects/p/models/mnist/versions/v1").await;
    assert_eq!(status, 404);
    let (status, body) = server
        .post_json("/v1/projects/p/models/mnist/versions/v1:predict", &json!({"instances": [[0, 0, 0, 0]]}))
        .await;
    assert_eq!(status, 404, "{body}");

    let metrics = server.get("/metrics").await.text().await.expect("metrics");
    let v1 = "version=\"projects/p/models/mnist/versions/v1\"";
    assert!(
        metrics.lines().any(|l| l.starts_with("anneal_predict_requests_total{")
            && l.contains(v1)
            && l.contains("outcome=\"ok\"")
            && l.ends_with(" 2")),
        "{metrics}"
    );
    for name in
        ["anneal_predict_duration_seconds_bucket{", "anneal_predict_batch_rows_bucket{", "anneal_predict_queue_depth{"]
    {
        assert!(metrics.lines().any(|l| l.starts_with(name) && l.contains(v1)), "{name} for v1 missing:\n{metrics}");
    }

    let (status, list) = server.get_json("/v1/projects/p/models/mnist/versions").await;
    assert_eq!(status, 200);
    assert_eq!(list["versions"].as_array().expect("versions").len(), 1);

    let (status, ops) = server.get_json("/v1/projects/p/operations?alt=json").await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = ops["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .map(|o| o["metadata"]["operationType"].as_str().expect("type"))
        .collect();
    assert_eq!(kinds, ["DELETE_VERSION", "CREATE_VERSION", "CREATE_VERSION"], "newest first");
}

#[tokio::test]
async fn bad_instances_answer_400_with_a_string_error() {
    let server = TestServer::start().await;
    server.create_model("m").await;
    server.deploy("m", "v", "mlp").await;
    let path = "/v1/projects/p/models/m/versions/v:predict";
    let (status, body) = server.post_json(path, &json!({"instances": [[0, 0, 0, 0], [1, 2]]})).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().expect("a string, not a Status");
    assert!(message.starts_with("Failed to process element: 1 of 'instances' list. Error:"), "{message}");
    for bad in [json!({}), json!({"instances": 3}), json!({"instances": []}), json!([1, 2])] {
        let (status, body) = server.post_json(path, &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    // About 2.2 MB, over the default 1.5 MB limit.
    let big = vec![json!([0.0, 0.0, 0.0, 0.0]); 100_000];
    let (status, body) = server.post_json(path, &json!({"instances": big})).await;
    assert_eq!(status, 413, "an oversized request is refused");
    assert!(body["error"].as_str().expect("string").contains("size exceeds"), "{body}");
}

#[tokio::test]
async fn version_create_rejects_bad_uris_frameworks_and_files() {
    let server = TestServer::start().await;
    server.create_model("m").await;
    let outside = tempfile::tempdir().expect("tempdir");
    let staged = server.stage_fixture("mlp");
    let cases = [
        (
            json!({"name": "v", "deploymentUri": outside.path().display().to_string()}),
            "version.deploymentUri",
            "outside the storage roots",
        ),
        (
            json!({"name": "v", "deploymentUri": format!("{}/../../..", staged.display())}),
            "version.deploymentUri",
            "outside the storage roots",
        ),
        (
            json!({"name": "v", "deploymentUri": "gs://bucket/model"}),
            "version.deploymentUri",
            "scheme is not supported",
        ),
        (json!({"name": "v"}), "version.deploymentUri", "required"),
        (
            json!({"name": "v", "deploymentUri": staged.display().to_string(), "framework": "TENSORFLOW"}),
            "version.framework",
            "PYTORCH",
        ),
        (
            json!({"name": "bad-name", "deploymentUri": staged.display().to_string()}),
            "version.name",
            "not a valid version name",
        ),
    ];
    for (body, field, text) in cases {
        let (status, error) = server.post_json("/v1/projects/p/models/m/versions", &body).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["details"][0]["fieldViolations"][0]["field"], field, "{body}: {error}");
        assert!(error["error"]["message"].as_str().expect("message").contains(text), "{body}: {error}");
    }
    let (status, error) = server
        .post_json(
            "/v1/projects/p/models/nope/versions",
            &json!({"name": "v", "deploymentUri": staged.display().to_string()}),
        )
        .await;
    assert_eq!((status, &error["error"]["status"]), (404, &json!("NOT_FOUND")), "{error}");

    // A directory that is not TorchScript: the operation fails and the version is FAILED.
    let op = server.deploy("m", "broken", "not_torchscript").await;
    assert_eq!(op["error"]["code"], 9, "{op}");
    assert!(op["error"]["message"].as_str().expect("message").contains("not a loadable TorchScript model"), "{op}");
    let (_, version) = server.get_json("/v1/projects/p/models/m/versions/broken").await;
    assert_eq!(version["state"], "FAILED");
    assert!(version["errorMessage"].as_str().expect("errorMessage").contains("TorchScript"), "{version}");
    let (status, body) =
        server.post_json("/v1/projects/p/models/m/versions/broken:predict", &json!({"instances": [1]})).await;
    assert_eq!((status, &body["error"]["status"]), (400, &json!("FAILED_PRECONDITION")), "{body}");
}

#[tokio::test]
async fn deployed_versions_survive_a_restart_and_a_changed_source() {
    let server = TestServer::start().await;
    server.create_model("m").await;
    server.deploy("m", "v", "mlp").await;
    // Later changes to the source directory do not change the deployed version.
    let staged = server.data.path().join("uploads/mlp");
    std::fs::write(staged.join("model.pt"), b"overwritten").expect("overwrite source");
    let data = server.stop_keeping_data().await;
    let server = TestServer::start_in(data, &[], &[]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) =
            server.post_json("/v1/projects/p/models/m:predict", &json!({"instances": [[0.1, 0.2, 0.3, 0.4]]})).await;
        if status == 200 {
            assert_eq!(body["predictions"].as_array().expect("predictions").len(), 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not serving after restart: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn lists_filter_by_field_label_and_prefix() {
    let server = TestServer::start().await;
    for (name, team) in [("vision_a", "vision"), ("vision_b", "vision"), ("text_a", "text")] {
        let (status, body) =
            server.post_json("/v1/projects/p/models", &json!({"name": name, "labels": {"team": team}})).await;
        assert_eq!(status, 200, "{body}");
    }
    let names = |page: &Value| -> Vec<String> {
        page["models"]
            .as_array()
            .map(|m| m.iter().map(|m| m["name"].as_str().expect("name").to_owned()).collect())
            .unwrap_or_default()
    };
    // `+` is a space in a query string, as the official client sends it.
    let (status, page) =
        server.get_json("/v1/projects/p/models?filter=labels.team%3Avision+AND+name%3Avision_b&alt=json").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(names(&page), ["projects/p/models/vision_b"]);
    let (_, page) = server.get_json("/v1/projects/p/models?filter=name%3Avision*&pageSize=1").await;
    assert_eq!(names(&page), ["projects/p/models/vision_a"]);
    let token = page["nextPageToken"].as_str().expect("a second filtered page");
    let (_, page) =
        server.get_json(&format!("/v1/projects/p/models?filter=name%3Avision*&pageSize=1&pageToken={token}")).await;
    assert_eq!(names(&page), ["projects/p/models/vision_b"]);
    assert!(page.get("nextPageToken").is_none(), "text_a does not match, so no more pages: {page}");
    let (_, page) = server.get_json("/v1/projects/p/models?filter=labels.team%3Anobody").await;
    assert_eq!(page, json!({}));
    let (status, error) = server.get_json("/v1/projects/p/models?filter=nonsense").await;
    assert_eq!(
        (status, &error["error"]["details"][0]["fieldViolations"][0]["field"]),
        (400, &json!("filter")),
        "{error}"
    );
}

async fn patch_json(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let response = server.client.patch(server.url(path)).json(body).send().await.expect("PATCH");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn patch_models_and_versions_with_update_masks_and_etags() {
    let server = TestServer::start().await;
    server.create_model("m").await;
    server.deploy("m", "v1", "mlp").await;
    server.deploy("m", "v2", "mlp").await;
    let (_, model) = server.get_json("/v1/projects/p/models/m").await;
    let etag = model["etag"].as_str().expect("etag").to_owned();

    let (status, op) = patch_json(
        &server,
        "/v1/projects/p/models/m?updateMask=description%2CdefaultVersion.name&alt=json",
        &json!({"description": "now v2", "defaultVersion": {"name": "projects/p/models/m/versions/v2"}, "etag": etag}),
    )
    .await;
    assert_eq!(status, 200, "{op}");
    assert_eq!(op["done"], true);
    assert_eq!(op["metadata"]["operationType"], "UPDATE_MODEL");
    assert_eq!(op["response"]["@type"], "type.googleapis.com/google.cloud.ml.v1.Model");
    assert_eq!(op["response"]["description"], "now v2");
    let (_, v2) = server.get_json("/v1/projects/p/models/m/versions/v2").await;
    assert_eq!(v2["isDefault"], true);

    let (status, stale) = patch_json(
        &server,
        "/v1/projects/p/models/m?updateMask=description",
        &json!({"description": "x", "etag": etag}),
    )
    .await;
    assert_eq!((status, &stale["error"]["status"]), (409, &json!("ABORTED")), "a stale etag: {stale}");
    let (status, bad) =
        patch_json(&server, "/v1/projects/p/models/m?updateMask=regions", &json!({"regions": ["x"]})).await;
    assert_eq!(
        (status, &bad["error"]["details"][0]["fieldViolations"][0]["field"]),
        (400, &json!("updateMask")),
        "{bad}"
    );
    let (status, bad) = patch_json(&server, "/v1/projects/p/models/m", &json!({"description": "no mask"})).await;
    assert_eq!(status, 400, "{bad}");

    let (status, op) = patch_json(
        &server,
        "/v1/projects/p/models/m/versions/v1?updateMask=labels,autoScaling.minNodes",
        &json!({"labels": {"stage": "canary"}, "autoScaling": {"minNodes": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{op}");
    assert_eq!(op["metadata"]["operationType"], "UPDATE_VERSION");
    assert_eq!(op["response"]["labels"]["stage"], "canary");
    let (status, bad) =
        patch_json(&server, "/v1/projects/p/models/m/versions/v1?updateMask=labels", &json!({"bogus": 1})).await;
    assert_eq!((status, &bad["error"]["status"]), (400, &json!("INVALID_ARGUMENT")), "unknown field: {bad}");

    // Cancelling a finished operation changes nothing.
    let op_name = op["name"].as_str().expect("name").to_owned();
    let (status, empty) = server.post_json(&format!("/v1/{op_name}:cancel"), &json!({})).await;
    assert_eq!((status, empty), (200, json!({})));
    let (_, again) = server.get_json(&format!("/v1/{op_name}")).await;
    assert_eq!(again["response"]["labels"]["stage"], "canary", "{again}");
    let (status, missing) = server.post_json("/v1/projects/p/operations/nope:cancel", &json!({})).await;
    assert_eq!(status, 404, "{missing}");
}

#[tokio::test]
async fn versions_choose_their_workers_threads_and_accelerator() {
    let server = TestServer::start().await;
    server.create_model("m").await;
    let dir = server.stage_fixture("mlp");
    let (status, op) = server
        .post_json(
            "/v1/projects/p/models/m/versions",
            &json!({"name": "v", "deploymentUri": dir.display().to_string(), "machineType": "mls1-c2-m2",
                    "manualScaling": {"nodes": 2}, "acceleratorConfig": {"count": "1", "type": "NVIDIA_TESLA_T4"}}),
        )
        .await;
    assert_eq!(status, 200, "{op}");
    let done = server.wait_operation(op["name"].as_str().expect("name")).await;
    let version = &done["response"];
    assert_eq!(version["state"], "READY", "{done}");
    assert_eq!(version["machineType"], "mls1-c2-m2");
    assert_eq!(version["manualScaling"]["nodes"], 2);
    assert_eq!(version["acceleratorConfig"]["count"], "1", "int64 as a string");
    let (status, body) =
        server.post_json("/v1/projects/p/models/m:predict", &json!({"instances": [[0, 0, 0, 0], [1, 1, 1, 1]]})).await;
    assert_eq!(status, 200, "served without a GPU too: {body}");
    for (extra, field) in [
        (json!({"machineType": "huge"}), "version.machineType"),
        (json!({"manualScaling": {"nodes": 0}}), "version.manualScaling.nodes"),
        (json!({"manualScaling": {"nodes": 99}}), "version.manualScaling.nodes"),
    ] {
        let mut body = json!({"name": "bad", "deploymentUri": dir.display().to_string()});
        body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        let (status, error) = server.post_json("/v1/projects/p/models/m/versions", &body).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["details"][0]["fieldViolations"][0]["field"], field, "{error}");
    }
}

#[tokio::test]
async fn a_deployment_folder_with_a_symlink_loop_is_refused_and_leaves_nothing_behind() {
    let server = TestServer::start().await;
    server.create_model("m").await;
    let dir = server.stage_fixture("mlp");
    let link = dir.join("loop");
    std::os::unix::fs::symlink(".", &link).expect("symlink");
    let op = server.deploy_uri("m", "v", &dir.display().to_string()).await;
    assert_eq!(op["error"]["code"], 9, "FAILED_PRECONDITION: {op}");
    let message = op["error"]["message"].as_str().expect("message");
    assert!(message.contains("loops back into the folder being copied"), "{message}");
    let named = dir.canonicalize().expect("canonical").join("loop");
    assert!(message.contains(&named.display().to_string()), "names the link: {message}");
    let (_, version) = server.get_json("/v1/projects/p/models/m/versions/v").await;
    assert_eq!(version["state"], "FAILED", "{version}");

    // Nothing of the copy is left in storage, not even a staging folder.
    let copies = server.data.path().join("storage/models/p/m");
    let left: Vec<_> = std::fs::read_dir(&copies)
        .map(|list| list.map(|e| e.expect("entry").file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind in {}: {left:?}", copies.display());

    // The server still answers, and the folder deploys once the link is gone.
    let (status, _) = server.get_json("/v1/projects/p/models/m").await;
    assert_eq!(status, 200);
    std::fs::remove_file(&link).expect("unlink");
    let op = server.deploy_uri("m", "v2", &dir.display().to_string()).await;
    assert_eq!(op["response"]["state"], "READY", "{op}");
}
