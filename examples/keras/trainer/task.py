"""Trains a Keras MLP on scikit-learn's bundled 8x8 handwritten digits (no download) and exports a
TensorFlow SavedModel that an Anneal version serves as TENSORFLOW.

Runs as ML Engine TensorFlow packages run: `python -m trainer.task --job-dir DIR [args]`, on every
replica. TF_CONFIG says who is who: with workers in its cluster the replicas train together under
tf.distribute.MultiWorkerMirroredStrategy (synchronous all-reduce over gRPC, on CPU); alone, the
same code trains on one replica. ML Engine names the first replica `master`, which TF2's strategy
refuses, so it is renamed `chief` first (what ML Engine's own TF2 samples do; custom containers
there get `chief` directly with useChiefInTfConfig).

Every epoch it prints its loss and accuracy and reports accuracy in the cloudml-hypertune format
($CLOUD_ML_HP_METRIC_FILE). At the end each replica prints a checksum of its weights (equal on
every replica when they trained in sync), and the chief exports DIR/model/ (saved_model.pb).
"""

import argparse
import json
import os
import time


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--job-dir", required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size, over all replicas")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    return parser.parse_args()


def tf_config():
    """TF_CONFIG with ML Engine's `master` renamed `chief`, set back into the environment (the
    strategy reads it from there); the task's (type, index)."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster = config.get("cluster") or {}
    task = config.get("task") or {}
    if "master" in cluster:
        cluster["chief"] = cluster.pop("master")
    if task.get("type") == "master":
        task["type"] = "chief"
    config["cluster"], config["task"] = cluster, task
    os.environ["TF_CONFIG"] = json.dumps(config)
    return cluster, task.get("type", "chief"), int(task.get("index", 0))


def report(accuracy, epoch):
    path = os.environ.get("CLOUD_ML_HP_METRIC_FILE")
    if path:
        line = {"global_step": str(epoch), "accuracy": str(accuracy), "timestamp": time.time(),
                "trial": os.environ.get("CLOUD_ML_TRIAL_ID", "0"), "checkpoint_path": ""}
        with open(path, "a") as out:
            out.write(json.dumps(line) + "\n")


def build(hidden, tf):
    return tf.keras.Sequential([
        tf.keras.Input(shape=(64,), name="pixels"),
        tf.keras.layers.Dense(hidden, activation="relu"),
        tf.keras.layers.Dense(10),
    ])


def main():
    args = parse_args()
    cluster, task_type, task_index = tf_config()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits

    tf.keras.utils.set_random_seed(0)
    distributed = len(cluster.get("worker", [])) > 0
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if distributed else tf.distribute.get_strategy()
    print(f"{task_type} {task_index}: {strategy.num_replicas_in_sync} replicas in sync", flush=True)

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int64")
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(args.batch_size)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = data.with_options(options)

    with strategy.scope():
        model = build(args.hidden, tf)
        optimizer = tf.keras.optimizers.SGD(args.learning_rate, momentum=0.9)
    loss_of = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    batches = strategy.experimental_distribute_dataset(data)

    # Keras 3's fit does not take a multi-worker strategy, so the loop is written out: each
    # replica computes its shard's gradients, the optimizer all-reduces them across replicas.
    @tf.function
    def step(features, labels):
        def on_replica(features, labels):
            with tf.GradientTape() as tape:
                logits = model(features, training=True)
                loss = tf.nn.compute_average_loss(loss_of(labels, logits), global_batch_size=args.batch_size)
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1), labels), tf.float32))
            return loss, correct

        loss, correct = strategy.run(on_replica, args=(features, labels))
        total = lambda value: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
        return total(loss), total(correct)

    for epoch in range(1, args.epochs + 1):
        losses, correct, count = 0.0, 0.0, 0
        for features, labels in batches:
            loss, right = step(features, labels)
            losses, correct, count = losses + float(loss), correct + float(right), count + 1
        accuracy = correct / len(x)
        print(f"epoch {epoch} loss {losses / count:.4f} accuracy {accuracy:.4f}", flush=True)
        report(accuracy, epoch)

    weights = model.get_weights()
    print(f"{task_type} {task_index}: weights checksum {sum(float(np.abs(w).sum()) for w in weights):.6f}", flush=True)

    if task_type == "chief":
        # A plain copy of the trained model, outside the strategy, is what gets exported.
        plain = build(args.hidden, tf)
        plain.set_weights(weights)
        export = os.path.join(args.job_dir, "model")
        plain.export(export, verbose=False)
        print(f"exported {export}", flush=True)


if __name__ == "__main__":
    main()
