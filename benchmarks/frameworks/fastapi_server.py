"""The reference Python server users write today: FastAPI + uvicorn (2 worker processes sharing
the port through SO_REUSEPORT) serving the same scikit-learn or TensorFlow model, with the same
request and response JSON as Anneal's :predict.

Usage: python fastapi_server.py sklearn|tensorflow MODEL_DIR PORT
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from fastapi import FastAPI, Request

KIND = os.environ.get("BENCH_KIND", "sklearn")
MODEL_DIR = os.environ.get("BENCH_MODEL_DIR", "")
app = FastAPI()

if MODEL_DIR and KIND == "sklearn":
    import joblib

    model = joblib.load(os.path.join(MODEL_DIR, "model.joblib"))

    def run(instances):
        return model.predict(np.asarray(instances)).tolist()

elif MODEL_DIR:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    signature = tf.saved_model.load(MODEL_DIR).signatures["serving_default"]
    (input_name,) = signature.structured_input_signature[1].keys()
    (output_name,) = signature.structured_outputs.keys()

    def run(instances):
        outputs = signature(**{input_name: tf.constant(np.asarray(instances, dtype=np.float32))})
        return outputs[output_name].numpy().tolist()


@app.post("/predict")
async def predict(request: Request):
    body = await request.json()
    return {"predictions": run(body["instances"])}


def serve_one(port):
    """One uvicorn worker on its own SO_REUSEPORT socket with TCP_NODELAY: uvicorn's own
    `workers=2` hands its workers a socket without TCP_NODELAY, which costs every answer a 40 ms
    delayed-ACK stall (p50 44 ms at c=1 here), an artifact a fair peer should not carry."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    import subprocess

    if len(sys.argv) == 5 and sys.argv[4] == "--worker":
        serve_one(int(sys.argv[3]))
    else:
        import signal

        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so the workers are stopped too
        env = dict(os.environ, BENCH_KIND=sys.argv[1], BENCH_MODEL_DIR=sys.argv[2])
        workers = [
            subprocess.Popen([sys.executable, os.path.abspath(__file__), *sys.argv[1:4], "--worker"], env=env)
            for _ in range(2)
        ]
        try:
            for worker in workers:
                worker.wait()
        finally:
            for worker in workers:
                worker.terminate()
