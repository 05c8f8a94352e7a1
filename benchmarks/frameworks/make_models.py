"""Writes the benchmark's models and request bodies: a scikit-learn pipeline (StandardScaler +
LogisticRegression over 16 features) as model.joblib, and a Keras MLP (16 -> 64 -> 64 -> 10)
exported as a TensorFlow SavedModel; each with a one-instance body of full-precision floats, as
a client's json.dumps writes them.

Usage: python make_models.py OUT_DIR
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
FEATURES = 16


def main():
    out = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, FEATURES))
    y = (x[:, :4].sum(axis=1) > 0).astype(int) + (x[:, 4] > 1).astype(int)

    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (out / "sklearn").mkdir(parents=True, exist_ok=True)
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y), out / "sklearn" / "model.joblib")

    import tensorflow as tf

    keras = tf.keras.Sequential([
        tf.keras.Input(shape=(FEATURES,)),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(10),
    ])
    keras.export(str(out / "tensorflow"))

    body = {"instances": [rng.normal(size=FEATURES).tolist()]}
    for name in ("sklearn", "tensorflow"):
        (out / f"{name}.body.json").write_text(json.dumps(body))


if __name__ == "__main__":
    main()
