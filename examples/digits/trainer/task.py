"""Trains an MLP on scikit-learn's bundled 8x8 handwritten digits (no download) and exports a
TorchScript model that an Anneal version can serve.

Runs the way ML Engine and torchrun packages run: `python -m trainer.task --job-dir DIR [args]`.
With several replicas (WORLD_SIZE > 1) it trains data-parallel with DDP over gloo, rendezvousing
through MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE. Every epoch it reports accuracy and loss in the
cloudml-hypertune file format ($CLOUD_ML_HP_METRIC_FILE) and the master writes a checkpoint to
DIR/checkpoints/. At the end the master exports DIR/model/model.pt and DIR/model/signature.json.

DIR may be an `s3://bucket/prefix` URI, as Anneal passes it for a job dir in a bucket: the files
are then written to a local folder first and uploaded with boto3, which reaches the store through
the AWS_* variables Anneal gives the replicas (AWS_ENDPOINT_URL, credentials, region).
"""

import argparse
import json
import os
import tempfile
import time

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch import nn


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--job-dir", required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    return parser.parse_args()


def report(metrics, step):
    """Appends one report per metric, as cloudml-hypertune writes them."""
    path = os.environ.get("CLOUD_ML_HP_METRIC_FILE")
    if not path:
        return
    with open(path, "a") as out:
        for tag, value in metrics.items():
            line = {"global_step": str(step), tag: str(value), "timestamp": time.time(),
                    "trial": os.environ.get("CLOUD_ML_TRIAL_ID", "0"), "checkpoint_path": ""}
            out.write(json.dumps(line, sort_keys=True) + "\n")


class JobDir:
    """The job dir: a local folder as it is, or an s3:// URI written through a local folder."""

    def __init__(self, uri):
        self.uri = uri
        self.remote = uri.startswith("s3://")
        self.local = tempfile.mkdtemp(prefix="job-dir-") if self.remote else uri
        self.client = None

    def path(self, *parts):
        path = os.path.join(self.local, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def sync(self, *parts):
        """Uploads the file or folder at `parts` to the bucket (nothing for a local job dir)."""
        if not self.remote:
            return
        if self.client is None:
            import boto3  # only needed for a job dir in a bucket

            self.client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
        bucket, _, prefix = self.uri[len("s3://"):].partition("/")
        top = os.path.join(self.local, *parts)
        files = [top] if os.path.isfile(top) else [os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs]
        for path in files:
            key = "/".join(p for p in [prefix.strip("/"), os.path.relpath(path, self.local)] if p)
            self.client.upload_file(path, bucket, key)


def main():
    args = parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world > 1
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    torch.manual_seed(0)

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(42))
    split = int(0.8 * len(x))
    train_x, train_y = x[order[:split]], y[order[:split]]
    test_x, test_y = x[order[split:]], y[order[split:]]
    # Each replica trains on its own shard.
    train_x, train_y = train_x[rank::world], train_y[rank::world]

    model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    trained = nn.parallel.DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.SGD(trained.parameters(), lr=args.learning_rate, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    job_dir = JobDir(args.job_dir)

    for epoch in range(1, args.epochs + 1):
        trained.train()
        permutation = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(epoch))
        total = 0.0
        for start in range(0, len(train_x), args.batch_size):
            batch = permutation[start:start + args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(trained(train_x[batch]), train_y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            accuracy = (model(test_x).argmax(dim=1) == test_y).float().mean().item()
        train_loss = total / len(train_x)
        report({"accuracy": round(accuracy, 4), "loss": round(train_loss, 4)}, epoch)
        print(f"epoch {epoch} loss {train_loss:.4f} accuracy {accuracy:.4f}", flush=True)
        if rank == 0:
            checkpoint = f"epoch-{epoch}.pt"
            torch.save(model.state_dict(), job_dir.path("checkpoints", checkpoint))
            job_dir.sync("checkpoints", checkpoint)

    if rank == 0:
        torch.jit.script(model.eval()).save(job_dir.path("model", "model.pt"))
        signature = {"inputs": [{"name": "pixels", "dtype": "float32", "shape": [64]}], "outputs": [{"name": "logits"}]}
        with open(job_dir.path("model", "signature.json"), "w") as out:
            json.dump(signature, out)
        job_dir.sync("model")
        print(f"exported {args.job_dir.rstrip('/')}/model", flush=True)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
