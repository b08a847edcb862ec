"""Run by the distributed tests under torchrun: train, then save this rank's weights."""

import os
import sys

import torch

from cnnlab.config import TrainConfig
from cnnlab.engine import train

dataset, out, steps, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
augment = sys.argv[5] if len(sys.argv) > 5 else None
cfg = TrainConfig(model="resnet", dataset=dataset, epochs=3, batch_size=batch, device="cpu", lr=0.05,
                  max_steps=steps, threads=1, eval_limit=64, augment=augment)
res = train(cfg, write=False, quiet=True, log=lambda m: None)
torch.save(res.model.state_dict(), os.path.join(out, f"rank{os.environ.get('RANK', '0')}.pt"))
sys.stdout.flush()
os._exit(0)  # as cnnlab.cli._exit_now: no interpreter shutdown while gloo's threads free their last work
