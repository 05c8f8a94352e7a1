"""Exports the benchmark models as TorchScript with signatures, and a request body for each.

Usage: python make_models.py OUT_DIR
  OUT_DIR/small/  MLP 784 -> 256 -> 10      (the issue's small model)
  OUT_DIR/large/  MLP 2048 -> 4096 -> 4096 -> 1000 (about 29 M parameters; a heavier CPU model)
  OUT_DIR/<name>.body.json  {"instances": [one instance]}, full-precision floats
"""

import json
import sys
from pathlib import Path

import torch
from torch import nn


def mlp(sizes):
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def main():
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    for name, sizes in {"small": [784, 256, 10], "large": [2048, 4096, 4096, 1000]}.items():
        directory = out / name
        directory.mkdir(parents=True, exist_ok=True)
        torch.jit.script(mlp(sizes)).save(str(directory / "model.pt"))
        signature = {"inputs": [{"name": "x", "dtype": "float32", "shape": [sizes[0]]}], "outputs": [{"name": "y"}]}
        (directory / "signature.json").write_text(json.dumps(signature))
        # Full precision, as a client's json.dumps writes its floats (about 19 characters each).
        instance = torch.rand(sizes[0], dtype=torch.float64).tolist()
        (out / f"{name}.body.json").write_text(json.dumps({"instances": [instance]}))


if __name__ == "__main__":
    main()
