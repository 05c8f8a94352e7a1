//! The serving engine on real TorchScript models exported by PyTorch: loading, predictions equal
//! to PyTorch's, named inputs and outputs, bad instances, batching under concurrency, overload.

mod common;

use std::path::Path;
use std::sync::Arc;

use anneal::serving::{ModelHost, PredictError, ServedModel, ServingOptions, TorchSpec, VersionSettings};
use serde_json::{json, Value};

fn models() -> &'static Path {
    common::fixture_models()
}

/// Serving options whose worker processes are the `anneal` binary under test (the test binary is
/// not one).
fn options() -> ServingOptions {
    ServingOptions { worker_program: common::anneal_bin().into(), ..ServingOptions::default() }
}

fn load(name: &str, options: &ServingOptions) -> Result<ServedModel, String> {
    ServedModel::load(name, TorchSpec::new(&models().join(name), options), options).map_err(|e| e.to_string())
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b)),
        (Value::Number(x), Value::Number(y)) => {
            (x.as_f64().unwrap_or(f64::NAN) - y.as_f64().unwrap_or(f64::NAN)).abs() < 1e-5
        }
        _ => a == b,
    }
}

#[tokio::test]
async fn predictions_equal_pytorch_own_output() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(models().join("expected.json")).expect("expected"))
            .expect("json");
    let instances = expected["mlp"]["instances"].as_array().expect("instances").clone();
    for name in ["mlp", "mlp_unsigned"] {
        let model = load(name, &options()).expect("loads");
        let predictions = model.predict(&instances).await.expect("predicts");
        let predictions = Value::Array(predictions);
        let from_pytorch = &expected["mlp"]["predictions"];
        assert!(close(&predictions, from_pytorch), "{name}: {predictions} vs {from_pytorch}");
    }
}

#[tokio::test]
async fn named_inputs_and_tuple_and_dict_outputs() {
    let two = load("two_inputs", &options()).expect("loads");
    let out = two.predict(&[json!({"a": [1.0, 2.0], "b": [3, 4]})]).await.expect("predicts");
    assert_eq!(out, vec![json!([5.0, 8.0])]);

    let tuple = load("tuple_out", &options()).expect("loads");
    let out = tuple.predict(&[json!([1.0, 5.0, 2.0]), json!([-1.0, -2.0, 0.5])]).await.expect("predicts");
    assert_eq!(out, vec![json!({"total": 8.0, "best": 1}), json!({"total": -2.5, "best": 2})]);

    let dict = load("dict_out", &options()).expect("loads");
    let out = dict.predict(&[json!([1.5, -1.0])]).await.expect("predicts");
    assert_eq!(out, vec![json!({"doubled": [3.0, -2.0], "positive": [true, false]})]);
}

#[tokio::test]
async fn bad_instances_and_model_errors_are_reported_not_crashed() {
    let model = load("mlp", &options()).expect("loads");
    match model.predict(&[json!([0.0, 0.0, 0.0, 0.0]), json!([1, 2])]).await {
        Err(PredictError::BadInstance(e)) => {
            assert_eq!(e.index, 1);
            assert!(e.message.contains("expects [4]"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Without a signature nothing checks shapes before the model does.
    let unsigned = load("mlp_unsigned", &options()).expect("loads");
    match unsigned.predict(&[json!([1.0, 2.0])]).await {
        Err(PredictError::Model(message)) => {
            assert!(message.contains("shape") || message.contains("size"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // The model keeps serving after a failure.
    assert_eq!(unsigned.predict(&[json!([0.0, 0.0, 0.0, 0.0])]).await.expect("still serving").len(), 1);
}

#[tokio::test]
async fn broken_models_fail_to_load_with_a_reason() {
    let err = load("not_torchscript", &options()).expect_err("not TorchScript");
    assert!(err.contains("not a loadable TorchScript model"), "{err}");
    let err = load("wrong_signature", &options()).expect_err("signature mismatch");
    assert!(err.contains("does not accept inputs of its declared signature"), "{err}");
    let err = ServedModel::load("missing", TorchSpec::new(&models().join("no_such_dir"), &options()), &options())
        .expect_err("missing")
        .to_string();
    assert!(err.contains("model.pt not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_are_batched_and_each_gets_its_own_answer() {
    let options = ServingOptions { max_queue_delay: std::time::Duration::from_millis(5), ..options() };
    let host = ModelHost::new(options);
    // Two workers share the queue; every request must still get its own answer.
    let settings = VersionSettings { workers: Some(2), ..VersionSettings::default() };
    host.load("projects/p/models/m/versions/v", &models().join("tuple_out"), settings).await.expect("loads");
    let model = host.get("projects/p/models/m/versions/v").expect("served");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let model = model.clone();
        tasks.push(tokio::spawn(async move {
            let x = i as f64;
            let out = model.predict(&[json!([x, 1.0, 0.0])]).await.expect("predicts");
            assert_eq!(out, vec![json!({"total": x + 1.0, "best": if i >= 1 { 0 } else { 1 }})], "request {i}");
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    host.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_answers_overloaded_at_once() {
    let options =
        ServingOptions { queue_capacity: 1, max_queue_delay: std::time::Duration::from_millis(200), ..options() };
    let model = Arc::new(load("mlp", &options).expect("loads"));
    let instance = [json!([0.0, 0.0, 0.0, 0.0])];
    let mut pending = Vec::new();
    for _ in 0..8 {
        let model = model.clone();
        let instance = instance.clone();
        pending.push(tokio::spawn(async move { model.predict(&instance).await }));
    }
    let mut overloaded = 0;
    for task in pending {
        if let Err(PredictError::Overloaded) = task.await.expect("task") {
            overloaded += 1;
        }
    }
    assert!(overloaded > 0, "some requests found the queue full");
}
