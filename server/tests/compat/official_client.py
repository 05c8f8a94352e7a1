"""Drives a running Anneal with Google's official `ml` v1 client (google-api-python-client, built
from the discovery document its wheel ships), the way ML Engine users' scripts do.

Usage: python official_client.py   (ANNEAL_URL, ANNEAL_TOKEN, ANNEAL_VIEWER_TOKEN and MODEL_DIR in
the environment). The client authenticates as its users' scripts do: OAuth2 credentials carrying a
token, sent as `Authorization: Bearer`.
Exits non-zero with a message on the first difference.
"""

import os
import time

import google.oauth2.credentials
import httplib2
import googleapiclient.discovery
import torch
from googleapiclient.errors import HttpError

URL = os.environ["ANNEAL_URL"]
MODEL_DIR = os.environ["MODEL_DIR"]
PACKAGE_DIR = os.environ["PACKAGE_DIR"]
# With S3_ENDPOINT and S3_BUCKET, every URI the client sends is s3:// (the model, the package,
# the job dir, batch inputs and outputs), uploaded and read back with boto3 as a user would.
S3_ENDPOINT = os.environ.get("S3_ENDPOINT")
if S3_ENDPOINT:
    import boto3

    BUCKET = os.environ["S3_BUCKET"]
    s3 = boto3.client("s3", endpoint_url=S3_ENDPOINT, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")

    def upload_tree(local, prefix):
        for root, _, files in os.walk(local):
            for name in files:
                path = os.path.join(root, name)
                s3.upload_file(path, BUCKET, prefix + "/" + os.path.relpath(path, local))
        return f"s3://{BUCKET}/{prefix}"

    MODEL_URI = upload_tree(MODEL_DIR, "models/mlp")
    PACKAGE_URI = upload_tree(PACKAGE_DIR, "packages/compat")
else:
    MODEL_URI = f"file://{MODEL_DIR}"
    PACKAGE_URI = PACKAGE_DIR
PROJECT = "projects/compat"



def client(credentials=None):
    return googleapiclient.discovery.build(
        "ml",
        "v1",
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": URL},
        # No credentials: a plain HTTP client that sends no Authorization header (anonymous
        # credentials would try to refresh themselves on a 401).
        **({"credentials": credentials} if credentials else {"http": httplib2.Http()}),
    )


ml = client(google.oauth2.credentials.Credentials(os.environ["ANNEAL_TOKEN"]))
anonymous = client()
viewer = client(google.oauth2.credentials.Credentials(os.environ["ANNEAL_VIEWER_TOKEN"]))


def expect_http_error(status, call, contains=""):
    try:
        call.execute()
    except HttpError as error:
        assert error.resp.status == status, f"expected HTTP {status}, got {error.resp.status}: {error.content!r}"
        assert contains in error.content.decode(), f"{contains!r} not in {error.content!r}"
        return error
    raise AssertionError(f"expected HTTP {status}, the call succeeded")


def np_close(have, want):
    """Whether a prediction equals the framework's own, within float32 rounding."""
    if isinstance(want, list):
        return isinstance(have, list) and len(have) == len(want) and all(np_close(h, w) for h, w in zip(have, want))
    if isinstance(want, float):
        return abs(have - want) <= 1e-5 * max(1.0, abs(want))
    return have == want


def wait(operation):
    for _ in range(600):
        if operation.get("done"):
            return operation
        time.sleep(0.05)
        operation = ml.projects().operations().get(name=operation["name"]).execute()
    raise AssertionError(f"operation never finished: {operation}")


# Without a token: 401 UNAUTHENTICATED; a viewer may read but not write: 403 PERMISSION_DENIED.
expect_http_error(401, anonymous.projects().models().list(parent=PROJECT), "UNAUTHENTICATED")
viewer.projects().models().list(parent=PROJECT).execute()
expect_http_error(403, viewer.projects().models().create(parent=PROJECT, body={"name": "nope"}), "PERMISSION_DENIED")

config = ml.projects().getConfig(name=PROJECT).execute()
assert config["serviceAccountProject"].isdigit(), config

model = ml.projects().models().create(
    parent=PROJECT, body={"name": "m1", "regions": ["us-central1"], "onlinePredictionLogging": True, "labels": {"team": "compat"}}
).execute()
assert model["name"] == f"{PROJECT}/models/m1", model
error = expect_http_error(409, ml.projects().models().create(parent=PROJECT, body={"name": "m1"}), "ALREADY_EXISTS")
assert error.error_details[0]["fieldViolations"][0]["field"] == "model.name", error.error_details
expect_http_error(404, ml.projects().models().get(name=f"{PROJECT}/models/missing"), "NOT_FOUND")
policy = ml.projects().models().getIamPolicy(resource=f"{PROJECT}/models/m1").execute()
assert any(b["role"] == "roles/ml.admin" for b in policy.get("bindings", [])), policy
held = viewer.projects().models().testIamPermissions(
    resource=f"{PROJECT}/models/m1", body={"permissions": ["ml.models.get", "ml.models.delete"]}
).execute()
assert held.get("permissions") == ["ml.models.get"], held
stored = ml.projects().models().setIamPolicy(
    resource=f"{PROJECT}/models/m1",
    body={"policy": {"bindings": [{"role": "roles/ml.viewer", "members": ["user:a@example.com"]}], "etag": policy["etag"]}},
).execute()
assert stored["bindings"][0]["role"] == "roles/ml.viewer", stored
expect_http_error(400, ml.projects().models().create(parent=PROJECT, body={"name": "9lives"}), "INVALID_ARGUMENT")

operation = ml.projects().models().versions().create(
    parent=f"{PROJECT}/models/m1",
    body={"name": "v1", "deploymentUri": MODEL_URI, "runtimeVersion": "2.13", "framework": "PYTORCH", "pythonVersion": "3.11"},
).execute()
assert operation["metadata"]["operationType"] == "CREATE_VERSION", operation
operation = wait(operation)
assert "error" not in operation, operation
version = operation["response"]
assert version["state"] == "READY" and version["isDefault"] is True, version

instances = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]
with torch.no_grad():
    expected = torch.jit.load(os.path.join(MODEL_DIR, "model.pt"))(torch.tensor(instances)).tolist()
for name in (f"{PROJECT}/models/m1", f"{PROJECT}/models/m1/versions/v1"):
    response = ml.projects().predict(name=name, body={"instances": instances}).execute()
    got = response["predictions"]
    assert len(got) == len(expected), response
    for row, want in zip(got, expected):
        assert all(abs(a - b) < 1e-5 for a, b in zip(row, want)), (row, want)
expect_http_error(400, ml.projects().predict(name=f"{PROJECT}/models/m1", body={"instances": [[1, 2]]}), "Prediction failed")
expect_http_error(400, ml.projects().predict(name=f"{PROJECT}/models/m1", body={"instances": [[1, 2], [1, "x"]]}), "Failed to process element: 1")

second = wait(
    ml.projects().models().versions().create(parent=f"{PROJECT}/models/m1", body={"name": "v2", "deploymentUri": MODEL_URI if S3_ENDPOINT else MODEL_DIR}).execute()
)
assert second["response"]["state"] == "READY", second
expect_http_error(400, ml.projects().models().versions().delete(name=f"{PROJECT}/models/m1/versions/v1"), "FAILED_PRECONDITION")
default = ml.projects().models().versions().setDefault(name=f"{PROJECT}/models/m1/versions/v2", body={}).execute()
assert default["isDefault"] is True, default

versions = ml.projects().models().versions().list(parent=f"{PROJECT}/models/m1", filter="state:READY", pageSize=1)
seen = []
while versions is not None:
    page = versions.execute()
    seen += [v["name"].rsplit("/", 1)[1] for v in page.get("versions", [])]
    versions = ml.projects().models().versions().list_next(versions, page)
assert seen == ["v1", "v2"], seen

models = ml.projects().models().list(parent=PROJECT, filter="labels.team:compat").execute()
assert [m["name"] for m in models["models"]] == [f"{PROJECT}/models/m1"], models
assert models["models"][0]["defaultVersion"]["name"].endswith("/versions/v2"), models

expect_http_error(400, ml.projects().models().delete(name=f"{PROJECT}/models/m1"), "FAILED_PRECONDITION")
for v in ("v1", "v2"):
    done = wait(ml.projects().models().versions().delete(name=f"{PROJECT}/models/m1/versions/{v}").execute())
    assert "error" not in done, done
wait(ml.projects().models().delete(name=f"{PROJECT}/models/m1").execute())
assert ml.projects().models().list(parent=PROJECT).execute() == {}

operations = ml.projects().operations().list(name=PROJECT).execute()["operations"]
kinds = [o["metadata"]["operationType"] for o in operations]
assert kinds[0] == "DELETE_MODEL" and kinds.count("CREATE_VERSION") == 2, kinds

# The frameworks ML Engine serves, one small model of each built here: a Keras SavedModel, a
# scikit-learn pipeline, an XGBoost booster and a custom prediction routine (an sdist), deployed
# with their framework detected and predicted as the framework itself predicts.


def framework_models(root):
    import pickle
    import tarfile

    import joblib
    import numpy as np
    import tensorflow as tf
    import xgboost as xgb
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 4))
    y = (x[:, 0] - x[:, 1] > 0).astype(int)
    rows = rng.normal(size=(3, 4)).round(4)
    built = {}
    keras = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(2)])
    keras.export(os.path.join(root, "tensorflow"))
    built["tensorflow"] = ("TENSORFLOW", {}, keras(rows.astype("float32")).numpy().tolist())
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    os.makedirs(os.path.join(root, "sklearn"))
    joblib.dump(pipeline, os.path.join(root, "sklearn", "model.joblib"))
    built["sklearn"] = ("SCIKIT_LEARN", {}, pipeline.predict(rows).tolist())
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, xgb.DMatrix(x, label=y), 5)
    os.makedirs(os.path.join(root, "xgboost"))
    booster.save_model(os.path.join(root, "xgboost", "model.bst"))
    built["xgboost"] = ("XGBOOST", {}, booster.predict(xgb.DMatrix(rows)).tolist())
    src = os.path.join(root, "routine-src")
    os.makedirs(os.path.join(src, "compat_routine"))
    open(os.path.join(src, "compat_routine", "__init__.py"), "w").close()
    with open(os.path.join(src, "compat_routine", "predictor.py"), "w") as f:
        f.write(
            "import os, pickle\n"
            "class Predictor:\n"
            "    def __init__(self, scale):\n        self.scale = scale\n"
            "    @classmethod\n    def from_path(cls, model_dir):\n"
            "        return cls(pickle.load(open(os.path.join(model_dir, 'scale.pkl'), 'rb')))\n"
            "    def predict(self, instances, **kwargs):\n"
            "        return [sum(v * self.scale for v in row) for row in instances]\n"
        )
    with open(os.path.join(src, "setup.py"), "w") as f:
        f.write("from setuptools import setup\nsetup(name='compat_routine', version='0.1', packages=['compat_routine'])\n")
    sdist = os.path.join(root, "compat_routine-0.1.tar.gz")
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(src, arcname="compat_routine-0.1")
    os.makedirs(os.path.join(root, "routine"))
    with open(os.path.join(root, "routine", "scale.pkl"), "wb") as f:
        pickle.dump(2.0, f)
    routine = {"predictionClass": "compat_routine.predictor.Predictor", "packageUris": [sdist]}
    built["routine"] = (None, routine, [sum(v * 2.0 for v in row) for row in rows.tolist()])
    return rows.tolist(), built


frameworks_dir = os.path.join(os.path.dirname(MODEL_DIR), "frameworks")
rows, built = framework_models(frameworks_dir)
ml.projects().models().create(parent=PROJECT, body={"name": "frameworks"}).execute()
for name, (framework, extra, expected) in built.items():
    local = os.path.join(frameworks_dir, name)
    uri = upload_tree(local, f"frameworks/{name}") if S3_ENDPOINT else local
    body = {"name": name, "deploymentUri": uri, "runtimeVersion": "2.11", "pythonVersion": "3.11", **extra}
    done = wait(ml.projects().models().versions().create(parent=f"{PROJECT}/models/frameworks", body=body).execute())
    assert "error" not in done, done
    if framework:
        assert done["response"]["framework"] == framework, done
    got = ml.projects().predict(name=f"{PROJECT}/models/frameworks/versions/{name}", body={"instances": rows}).execute()
    got = got["predictions"]
    assert len(got) == len(expected), (name, got)
    for have, want in zip(got, expected):
        assert np_close(have, want), (name, have, want)
expect_http_error(400, ml.projects().predict(name=f"{PROJECT}/models/frameworks/versions/sklearn", body={"instances": [[1, 2]]}), "(Error code: 2)")
# The default version (the first) goes last: it cannot be deleted while others remain.
for name in reversed(list(built)):
    assert "error" not in wait(ml.projects().models().versions().delete(name=f"{PROJECT}/models/frameworks/versions/{name}").execute())
wait(ml.projects().models().delete(name=f"{PROJECT}/models/frameworks").execute())

# Training jobs.


def wait_job(job_id, states):
    for _ in range(1200):
        job = ml.projects().jobs().get(name=f"{PROJECT}/jobs/{job_id}").execute()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


job = ml.projects().jobs().create(
    parent=PROJECT,
    body={"jobId": "train_1", "labels": {"team": "compat"},
          "trainingInput": {"scaleTier": "BASIC", "packageUris": [PACKAGE_URI], "pythonModule": "compat_trainer.task",
                            "args": ["--sleep", "0"], "region": "us-central1", "runtimeVersion": "2.13",
                            **({"jobDir": f"s3://{BUCKET}/jobs/train_1"} if S3_ENDPOINT else {})}},
).execute()
assert job["jobId"] == "train_1" and job["state"] in ("QUEUED", "PREPARING", "RUNNING"), job
done = wait_job("train_1", ("SUCCEEDED", "FAILED"))
assert done["state"] == "SUCCEEDED", done
expect_http_error(409, ml.projects().jobs().create(parent=PROJECT, body={"jobId": "train_1", "trainingInput": done["trainingInput"]}), "ALREADY_EXISTS")
expect_http_error(400, ml.projects().jobs().create(parent=PROJECT, body={"jobId": "train_2", "trainingInput": {"pythonModule": "x"}}), "packageUris")

ml.projects().jobs().create(
    parent=PROJECT,
    body={"jobId": "train_long", "trainingInput": {"packageUris": [PACKAGE_URI], "pythonModule": "compat_trainer.task", "args": ["--sleep", "600"], "region": "us-central1"}},
).execute()
wait_job("train_long", ("RUNNING",))
assert ml.projects().jobs().cancel(name=f"{PROJECT}/jobs/train_long", body={}).execute() == {}
cancelled = wait_job("train_long", ("CANCELLED",))
assert "endTime" in cancelled, cancelled
expect_http_error(400, ml.projects().jobs().cancel(name=f"{PROJECT}/jobs/train_long", body={}), "FAILED_PRECONDITION")

jobs = ml.projects().jobs().list(parent=PROJECT, filter="state:SUCCEEDED AND labels.team:compat").execute()
assert [j["jobId"] for j in jobs["jobs"]] == ["train_1"], jobs

# A batch prediction job, as `gcloud ml-engine jobs submit prediction --model-dir` sends it.
batch_dir = os.path.join(os.path.dirname(MODEL_DIR), "batch")
os.makedirs(batch_dir, exist_ok=True)
with open(os.path.join(batch_dir, "instances.json"), "w") as f:
    f.write("[1.0, 2.0, 3.0, 4.0]\n[0.5, 0.5, 0.5, 0.5]\nnot an instance\n")
if S3_ENDPOINT:
    batch_uri = upload_tree(batch_dir, "batch")
    batch_model = MODEL_URI
else:
    batch_uri = batch_dir
    batch_model = MODEL_DIR
ml.projects().jobs().create(
    parent=PROJECT,
    body={"jobId": "batch_1",
          "predictionInput": {"dataFormat": "JSON", "inputPaths": [batch_uri + "/*.json"],
                              "outputPath": batch_uri + "/out", "region": "us-central1",
                              "uri": batch_model, "maxWorkerCount": "2", "batchSize": "64"}},
).execute()
batch = wait_job("batch_1", ("SUCCEEDED", "FAILED"))
assert batch["state"] == "SUCCEEDED", batch
out = batch["predictionOutput"]
assert (out["predictionCount"], out["errorCount"]) == ("2", "1"), batch
assert "trainingInput" not in batch and batch["predictionInput"]["uri"] == batch_model, batch
if S3_ENDPOINT:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="batch/out/").get("Contents", [])
    names = [o["Key"].rsplit("/", 1)[1] for o in listed]
else:
    names = os.listdir(os.path.join(batch_dir, "out"))
results = sorted(n for n in names if n.startswith("prediction.results-"))
if os.environ.get("ON_RAY"):
    # On Ray a job's input files are spread over its workers: one file, one worker.
    assert results == ["prediction.results-00000-of-00001"], results
else:
    assert results == ["prediction.results-00000-of-00002", "prediction.results-00001-of-00002"], results

print("official client: all checks passed")
