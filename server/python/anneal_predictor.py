"""Anneal's Python prediction worker: one long-lived process serving one model version.

The server (server/src/serving/python.rs) starts this file with the runtime Python, one process
per `manualScaling.nodes`, and talks to it over a pipe. The environment says what to load:

    ANNEAL_MODEL_DIR         the version's stored model directory
    ANNEAL_FRAMEWORK         SCIKIT_LEARN, XGBOOST or TENSORFLOW (empty with a prediction class)
    ANNEAL_PREDICTION_CLASS  `module.Class` of a custom prediction routine, or empty

Frames, both ways, are a 4-byte little-endian length and that many bytes. The worker answers
first with one JSON frame: `{"ready": {...}}` once the model is loaded, or `{"error": E}` (and
exits). Then each request is two frames, a JSON header and a payload:

    {"rows": N, "format": "dense", "shape": [...]}  payload: N * prod(shape) float64, little-endian
    {"rows": N, "format": "json"}                   payload: the JSON list of the N instances

with, optionally, "signature": the request's `signature_name` (TensorFlow), and "kwargs": the
request's other top-level keys, passed to a custom routine's `predict(instances, **kwargs)`.
Each answer is one JSON frame: `{"predictions": [...]}` (one per instance) or `{"error": E}`,
E = `{"code": C, "message": M, "detail": D}` with Cloud ML Engine's prediction error codes, which
the server shows as "M: D (Error code: C)". A detail is one line naming the cause (`_one_line`):
the framework's message without its backtrace or graph noise, and without filesystem paths. JSON
has no NaN or infinity: non-finite floats are the strings "NaN", "Infinity" and "-Infinity", as
protobuf's JSON mapping writes them. The server refuses an answer longer than its bound.

The protocol uses a copy of the process's original stdout; fd 1 is pointed at stderr, so what
user code prints goes to the server's log instead of corrupting the answers.
"""

import base64
import importlib
import json
import math
import os
import re
import struct
import sys
import traceback

# Cloud ML Engine's prediction error types (google.cloud.ml.prediction.prediction_utils).
FAILED_TO_LOAD_MODEL = (0, "Failed to load model")
INVALID_INPUTS = (1, "Invalid inputs")
FAILED_TO_RUN_MODEL = (2, "Failed to run the provided model")
INVALID_OUTPUTS = (3, "There was a problem processing the outputs")
INVALID_USER_CODE = (4, "There was a problem processing the user code")

SKLEARN_FILES = ("model.joblib", "model.pkl")
XGBOOST_FILES = ("model.bst", "model.joblib", "model.pkl")
TENSORFLOW_FILES = ("saved_model.pb", "saved_model.pbtxt")


class PredictionError(Exception):
    """A failure with one of the error types above and a detail for the user."""

    def __init__(self, kind, detail):
        super().__init__(kind, detail)
        self.code, self.message = kind
        self.detail = detail

    def __str__(self):
        return "%s: %s (Error code: %d)" % (self.message, self.detail, self.code)

    def frame(self):
        return {"error": {"code": self.code, "message": self.message, "detail": str(self.detail)}}


# What frameworks put around the line that names an error's cause.
_XGBOOST_PREFIX = re.compile(r"^\[\d\d:\d\d:\d\d\] [^\s:]+:\d+: ")  # "[21:30:00] src/learner.cc:1289: "
_TF_FUNCTION_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")
_TF_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\](\s*name:.*)?$")
_TF_NODE_LINE = re.compile(r"^\[\[\{\{node [^}]*\}\}\]\]")
_NOISE = re.compile(r"^(Graph execution error:|<stack traces unavailable>|\[bt\]|Node: |Op:)")
# An absolute path of two or more parts (not part of a URL or a longer word): shown as its last part.
_PATH = re.compile(r"(?<![\w.:/~@-])/(?:[^\s/'\"`<>|;,()\[\]{}]+/)+([^\s/'\"`<>|;,()\[\]{}]*)")


def _without_paths(text):
    """`text` with absolute filesystem paths (the server's Python, its model copies) cut to their
    last part."""
    return _PATH.sub(lambda m: m.group(1) or "", text)


def _one_line(error):
    """The one line of `error` that names its cause, without filesystem paths.

    XGBoost's errors end with a C++ backtrace (`Stack trace:` and `[bt]` lines) and start with a
    timestamp and source location; TensorFlow's wrap the cause in "Graph execution error", the
    node's definition and `[[{{node ...}}]]`. The cause is the first line left; in an error that
    carries a Python traceback, its last line (the exception)."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    lines = []
    traceback_seen = False
    in_definition = False  # TensorFlow's "Detected at node X defined at (most recent call last):"
    for raw in text.splitlines():
        line = raw.strip()
        if in_definition:
            if not line or raw[:1].isspace() or _NOISE.match(line):
                continue
            in_definition = False
        if line.startswith("Stack trace:"):
            break
        if line.startswith("Traceback (most recent call last)"):
            traceback_seen = True
            continue
        if line.startswith("Detected at node"):
            in_definition = True
            continue
        if not line or _NOISE.match(line) or _TF_NODE_LINE.match(line):
            continue
        if traceback_seen and (line.startswith("File \"") or raw[:1].isspace()):
            continue
        line = _TF_OP_SUFFIX.sub("", _TF_FUNCTION_NODE.sub("", _XGBOOST_PREFIX.sub("", line))).strip()
        if line:
            lines.append(line)
    if not lines:
        return type(error).__name__
    return _without_paths(lines[-1] if traceback_seen else lines[0])


# ---------------------------------------------------------------------------------------------
# Loading


def _model_file(model_dir, names, framework):
    found = [n for n in names if os.path.exists(os.path.join(model_dir, n))]
    if len(found) > 1:
        raise PredictionError(
            FAILED_TO_LOAD_MODEL,
            "Multiple model files are found in the model_path: %s" % ", ".join(found),
        )
    if not found:
        raise PredictionError(
            FAILED_TO_LOAD_MODEL,
            "Could not find %s in the model directory (a %s model)" % (" or ".join(names), framework),
        )
    return os.path.join(model_dir, found[0])


def _unpickle(path):
    """A model.joblib (joblib) or model.pkl (pickle; joblib reads both)."""
    if path.endswith(".joblib"):
        import joblib

        return joblib.load(path)
    import pickle

    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception:  # a joblib dump saved as .pkl
        import joblib

        return joblib.load(path)


def _is_xgboost(obj):
    return type(obj).__module__.split(".")[0] == "xgboost"


def _as_array(instances):
    import numpy as np

    if isinstance(instances, np.ndarray):
        return instances
    try:
        return np.asarray(instances)
    except Exception as e:
        raise PredictionError(INVALID_INPUTS, "Could not convert the instances to an array: %s" % _one_line(e))


def _to_list(outputs):
    if hasattr(outputs, "tolist"):
        return outputs.tolist()
    return list(outputs)


class SklearnModel:
    framework = "SCIKIT_LEARN"

    def __init__(self, model):
        self._model = model

    @classmethod
    def load(cls, model_dir):
        path = _model_file(model_dir, SKLEARN_FILES, "scikit-learn")
        try:
            model = _unpickle(path)
        except Exception as e:
            raise PredictionError(
                FAILED_TO_LOAD_MODEL, "Could not load the model: %s: %s" % (os.path.basename(path), _one_line(e))
            )
        if _is_xgboost(model):
            return XGBoostModel(model)
        if not hasattr(model, "predict"):
            raise PredictionError(
                FAILED_TO_LOAD_MODEL,
                "The object in %s (%s) has no predict method" % (os.path.basename(path), type(model).__name__),
            )
        return cls(model)

    def predict(self, instances, **kwargs):
        inputs = _as_array(instances)
        try:
            outputs = self._model.predict(inputs)
        except Exception as e:
            raise PredictionError(FAILED_TO_RUN_MODEL, "Exception during sklearn prediction: %s" % _one_line(e))
        return _to_list(outputs)

    def runtime(self):
        import sklearn

        return {"scikit-learn": sklearn.__version__}


class XGBoostModel:
    framework = "XGBOOST"

    def __init__(self, model):
        self._model = model

    @classmethod
    def load(cls, model_dir):
        path = _model_file(model_dir, XGBOOST_FILES, "XGBoost")
        try:
            if path.endswith(".bst"):
                import xgboost

                model = xgboost.Booster(model_file=path)
            else:
                model = _unpickle(path)
        except Exception as e:
            raise PredictionError(
                FAILED_TO_LOAD_MODEL, "Could not load the model: %s: %s" % (os.path.basename(path), _one_line(e))
            )
        if not _is_xgboost(model):
            raise PredictionError(
                FAILED_TO_LOAD_MODEL,
                "The object in %s is a %s.%s, not an XGBoost model"
                % (os.path.basename(path), type(model).__module__, type(model).__name__),
            )
        return cls(model)

    def predict(self, instances, **kwargs):
        import xgboost

        inputs = _as_array(instances)
        if isinstance(self._model, xgboost.Booster):
            try:
                inputs = xgboost.DMatrix(inputs)
            except Exception as e:
                raise PredictionError(INVALID_INPUTS, "Could not initialize DMatrix from inputs: %s" % _one_line(e))
        try:
            outputs = self._model.predict(inputs)
        except Exception as e:
            raise PredictionError(FAILED_TO_RUN_MODEL, "Exception during xgboost prediction: %s" % _one_line(e))
        return _to_list(outputs)

    def runtime(self):
        import xgboost

        return {"xgboost": xgboost.__version__}


class TensorFlowModel:
    """A SavedModel's signatures: named inputs, one tensor per input, outputs per instance.

    A request picks a signature by its `signature_name`; without one, a model of exactly one
    signature serves that one, any other its `serving_default` (ML Engine's rule)."""

    framework = "TENSORFLOW"

    def __init__(self, loaded):
        import tensorflow as tf

        self._tf = tf
        self._loaded = loaded  # the signatures' variables live as long as this object
        self._signatures = {name: _Signature(name, fn) for name, fn in loaded.signatures.items()}
        if len(self._signatures) == 1:
            self._default = next(iter(self._signatures))
        else:
            self._default = "serving_default"

    @classmethod
    def load(cls, model_dir):
        _model_file(model_dir, TENSORFLOW_FILES, "TensorFlow SavedModel")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import tensorflow as tf

            loaded = tf.saved_model.load(model_dir)
        except Exception as e:
            raise PredictionError(FAILED_TO_LOAD_MODEL, "Could not load the SavedModel: %s" % _one_line(e))
        if not loaded.signatures:
            raise PredictionError(
                FAILED_TO_LOAD_MODEL, "The SavedModel has no signatures; export it with a serving signature"
            )
        return cls(loaded)

    def _signature(self, name):
        name = name or self._default
        if name not in self._signatures:
            raise PredictionError(INVALID_INPUTS, "No signature found for signature key %s." % name)
        return self._signatures[name]

    def signature(self):
        """The default signature's inputs and outputs, and the names of all of them."""
        described = self._signatures[self._default].describe() if self._default in self._signatures else {}
        return dict(described, default=self._default, names=sorted(self._signatures))

    def predict(self, instances, signature_name=None, **kwargs):
        return self._signature(signature_name).predict(self._tf, instances)

    def runtime(self):
        return {"tensorflow": self._tf.__version__}


class _Signature:
    """One signature of a SavedModel."""

    def __init__(self, name, function):
        self._name = name
        self._function = function
        _, keywords = function.structured_input_signature
        self._inputs = dict(sorted(keywords.items()))
        self._outputs = sorted(function.structured_outputs.keys())

    def describe(self):
        tensor = lambda spec: {
            "dtype": spec.dtype.name,
            "shape": None if spec.shape.rank is None else [-1 if d is None else d for d in spec.shape.as_list()],
        }
        outputs = self._function.structured_outputs
        return {
            "name": self._name,
            "inputs": {k: tensor(v) for k, v in self._inputs.items()},
            "outputs": {k: tensor(outputs[k]) for k in self._outputs},
        }

    def _column(self, tf, name, spec, values):
        import numpy as np

        if spec.dtype == tf.string:
            values = [_bytes_of(v) for v in values]
            return tf.constant(np.array(values, dtype=object), dtype=tf.string)
        try:
            array = np.asarray(values, dtype=spec.dtype.as_numpy_dtype)
        except Exception as e:
            raise PredictionError(INVALID_INPUTS, "Input %s: %s" % (name, _one_line(e)))
        return tf.constant(array)

    def predict(self, tf, instances):
        import numpy as np

        names = list(self._inputs)
        columns = {n: [] for n in names}
        if isinstance(instances, np.ndarray):
            if len(names) != 1:
                raise PredictionError(
                    INVALID_INPUTS, "The signature has %d inputs (%s); send objects naming them" % (len(names), names)
                )
            columns[names[0]] = instances
        else:
            for index, instance in enumerate(instances):
                if len(names) == 1 and not (isinstance(instance, dict) and names[0] in instance and "b64" not in instance):
                    columns[names[0]].append(instance)
                    continue
                if not isinstance(instance, dict):
                    raise PredictionError(
                        INVALID_INPUTS,
                        "Instance %d: the signature has %d inputs (%s), so each instance must be an object naming them"
                        % (index, len(names), ", ".join(names)),
                    )
                unexpected = sorted(set(instance) - set(names))
                if unexpected:
                    raise PredictionError(INVALID_INPUTS, "Unexpected tensor name: %s" % unexpected[0])
                for n in names:
                    if n not in instance:
                        raise PredictionError(INVALID_INPUTS, "Input %s was missing in at least one input instance" % n)
                    columns[n].append(instance[n])
        feeds = {n: self._column(tf, n, self._inputs[n], columns[n]) for n in names}
        try:
            outputs = self._function(**feeds)
        except Exception as e:
            raise PredictionError(FAILED_TO_RUN_MODEL, "Exception during running the graph: %s" % _one_line(e))
        rows = len(instances)
        arrays = {}
        for name in self._outputs:
            array = outputs[name].numpy()
            if array.ndim == 0 or array.shape[0] != rows:
                raise PredictionError(
                    INVALID_OUTPUTS,
                    "Output %s has shape %s; its first dimension must be the %d instances" % (name, list(array.shape), rows),
                )
            arrays[name] = array
        if len(self._outputs) == 1:
            return [_tensor_value(v) for v in arrays[self._outputs[0]]]
        return [{name: _tensor_value(arrays[name][i]) for name in self._outputs} for i in range(rows)]


def _bytes_of(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"])
        except Exception as e:
            raise PredictionError(INVALID_INPUTS, "Could not decode b64: %s" % _one_line(e))
    if isinstance(value, list):
        return [_bytes_of(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    raise PredictionError(INVALID_INPUTS, "Expected a string or {\"b64\": ...}, got %r" % (value,))


def _tensor_value(value):
    """One instance's output as JSON: bytes that are not UTF-8 as {"b64": ...}."""
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [_tensor_value(v) for v in value]
        return value.tolist()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    return value


class CustomModel:
    """A custom prediction routine: `predictionClass` with from_path(model_dir) and predict."""

    framework = ""

    def __init__(self, predictor, name):
        self._predictor = predictor
        self._name = name

    @classmethod
    def load(cls, model_dir, prediction_class):
        module_name, _, class_name = prediction_class.rpartition(".")
        if not module_name or not class_name:
            raise PredictionError(
                INVALID_USER_CODE, "predictionClass %r is not of the form module.Class" % prediction_class
            )
        try:
            module = importlib.import_module(module_name)
        except Exception as e:
            raise PredictionError(
                INVALID_USER_CODE, "Could not import module %s of predictionClass: %s" % (module_name, _one_line(e))
            )
        predictor_class = getattr(module, class_name, None)
        if predictor_class is None:
            raise PredictionError(
                INVALID_USER_CODE, "Module %s has no class %s (predictionClass)" % (module_name, class_name)
            )
        if not callable(getattr(predictor_class, "from_path", None)):
            raise PredictionError(
                INVALID_USER_CODE, "%s has no from_path(model_dir) class method" % prediction_class
            )
        try:
            predictor = predictor_class.from_path(model_dir)
        except PredictionError:
            raise
        except Exception as e:
            raise PredictionError(
                FAILED_TO_LOAD_MODEL, "%s.from_path raised %s: %s" % (prediction_class, type(e).__name__, _one_line(e))
            )
        if not callable(getattr(predictor, "predict", None)):
            raise PredictionError(INVALID_USER_CODE, "%s has no predict(instances, **kwargs) method" % prediction_class)
        return cls(predictor, prediction_class)

    def predict(self, instances, **kwargs):
        try:
            outputs = self._predictor.predict(instances, **kwargs)
        except PredictionError:
            raise
        except Exception as e:
            raise PredictionError(
                FAILED_TO_RUN_MODEL, "%s.predict raised %s: %s" % (self._name, type(e).__name__, _one_line(e))
            )
        if hasattr(outputs, "tolist"):
            outputs = outputs.tolist()
        if not isinstance(outputs, (list, tuple)):
            raise PredictionError(
                INVALID_OUTPUTS, "predict must return a list, one prediction per instance; it returned a %s" % type(outputs).__name__
            )
        if len(outputs) != len(instances):
            raise PredictionError(
                INVALID_OUTPUTS,
                "predict returned %d predictions for %d instances" % (len(outputs), len(instances)),
            )
        return list(outputs)

    def runtime(self):
        return {}


def load(model_dir, framework, prediction_class):
    if prediction_class:
        return CustomModel.load(model_dir, prediction_class)
    if framework == "SCIKIT_LEARN":
        return SklearnModel.load(model_dir)
    if framework == "XGBOOST":
        return XGBoostModel.load(model_dir)
    if framework == "TENSORFLOW":
        return TensorFlowModel.load(model_dir)
    raise PredictionError(FAILED_TO_LOAD_MODEL, "Framework %r is not served by the Python worker" % framework)


# ---------------------------------------------------------------------------------------------
# The pipe


def _read_exact(stream, n):
    data = stream.read(n)
    if data is None or len(data) < n:
        return None
    return data


def read_frame(stream):
    head = _read_exact(stream, 4)
    if head is None:
        return None
    (length,) = struct.unpack("<I", head)
    return _read_exact(stream, length) if length else b""


def _json_default(value):
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    raise TypeError("%s is not JSON serializable" % type(value).__name__)


def _finite_json(value, _open=None):
    """`value` with every non-finite float (numpy's too, in arrays or alone) as the string
    protobuf's JSON mapping writes: "NaN", "Infinity", "-Infinity". Only for answers that have one."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if type(value).__module__ == "numpy":
        if hasattr(value, "tolist"):  # an array or a numpy scalar
            return _finite_json(value.tolist(), _open)
        return value
    if isinstance(value, (list, tuple, dict)):
        _open = _open if _open is not None else set()
        if id(value) in _open:
            raise ValueError("Circular reference detected")
        _open.add(id(value))
        try:
            if isinstance(value, dict):
                return {_finite_json(k, _open) if isinstance(k, float) else k: _finite_json(v, _open) for k, v in value.items()}
            return [_finite_json(v, _open) for v in value]
        finally:
            _open.discard(id(value))
    return value


def _dumps(obj):
    try:
        return json.dumps(obj, default=_json_default, allow_nan=False)
    except ValueError:
        # A NaN or an infinity: rare, so only then is the answer walked.
        return json.dumps(_finite_json(obj), default=_json_default, allow_nan=False)


def write_frame(stream, obj):
    try:
        data = _dumps(obj).encode("utf-8")
    except Exception as e:
        error = PredictionError(INVALID_OUTPUTS, "The predictions are not JSON: %s" % _one_line(e))
        data = json.dumps(error.frame()).encode("utf-8")
    stream.write(struct.pack("<I", len(data)) + data)
    stream.flush()


def instances_of(header, payload):
    if header.get("format") == "dense":
        import numpy as np

        rows = int(header["rows"])
        shape = [rows] + [int(d) for d in header.get("shape", [])]
        return np.frombuffer(payload, dtype="<f8").reshape(shape)
    return json.loads(payload)


def main():
    # The protocol keeps the real stdout; prints of user code go to stderr.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = os.fdopen(os.dup(0), "rb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)

    model_dir = os.environ["ANNEAL_MODEL_DIR"]
    framework = os.environ.get("ANNEAL_FRAMEWORK", "")
    prediction_class = os.environ.get("ANNEAL_PREDICTION_CLASS", "")
    try:
        model = load(model_dir, framework, prediction_class)
        ready = {
            "framework": model.framework,
            "python": "%d.%d" % sys.version_info[:2],
            "runtime": model.runtime(),
        }
        if hasattr(model, "signature"):
            ready["signature"] = model.signature()
    except PredictionError as e:
        write_frame(out, e.frame())
        return 1
    except BaseException as e:  # noqa: BLE001 - anything user code raises while loading
        traceback.print_exc()
        write_frame(out, PredictionError(FAILED_TO_LOAD_MODEL, "%s: %s" % (type(e).__name__, _one_line(e))).frame())
        return 1
    write_frame(out, {"ready": ready})

    while True:
        head = read_frame(inp)
        if head is None:
            return 0
        payload = read_frame(inp)
        if payload is None:
            return 0
        try:
            header = json.loads(head)
            instances = instances_of(header, payload)
            kwargs = dict(header.get("kwargs") or {})
            if header.get("signature"):
                kwargs["signature_name"] = header["signature"]
            predictions = model.predict(instances, **kwargs)
            answer = {"predictions": predictions}
        except PredictionError as e:
            answer = e.frame()
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            answer = PredictionError(FAILED_TO_RUN_MODEL, "%s: %s" % (type(e).__name__, _one_line(e))).frame()
        write_frame(out, answer)


if __name__ == "__main__":
    sys.exit(main())
