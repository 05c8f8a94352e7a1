"""The reference Python server users write today: FastAPI + uvicorn serving the same TorchScript
model with PyTorch, with the same request and response JSON as Anneal's :predict.

Usage: python fastapi_server.py MODEL_DIR PORT
"""

import sys

import torch
import uvicorn
from fastapi import FastAPI, Request

torch.set_num_threads(1)
model = torch.jit.load(f"{sys.argv[1]}/model.pt").eval()
app = FastAPI()


@app.post("/predict")
async def predict(request: Request):
    body = await request.json()
    with torch.no_grad():
        output = model(torch.tensor(body["instances"], dtype=torch.float32))
    return {"predictions": output.tolist()}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
