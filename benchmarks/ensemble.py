"""Speed of the 150 base classifiers: batched module against a loop of 150 separate models.

Usage: python benchmarks/ensemble.py [--device cuda]. Prints one training step (forward +
backward + Adam, batch 8) for each form, their ratio, the achieved GFLOP/s, the time of one
epoch over 100 images, and inference for one session (150 base classifiers + meta).
Targets (2-core CPU): epoch over 100 images <= 25 s; one session's inference <= 0.25 s.
"""

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bids_pscore.model.networks import CHANNELS, N_CLASSES, BaseClassifiers, Ensemble

N_CUBES, BATCH = 150, 8


def macs_per_cube():
    """Multiply-accumulates of one base classifier's forward pass on one cube."""
    c1, c2, c3, c4 = CHANNELS
    return 23**3 * c1 * 27 + 9**3 * c2 * c1 * 27 + 2**3 * c3 * c2 * 27 + c4 * c3 * 8 + N_CLASSES * c4


class Loop(nn.Module):
    """The reference: 150 separate single-cube models called one after the other."""

    def __init__(self):
        super().__init__()
        self.models = nn.ModuleList(BaseClassifiers(1) for _ in range(N_CUBES))

    def forward(self, cubes):
        outs = [m(cubes[:, c : c + 1]) for c, m in enumerate(self.models)]
        return torch.cat([o[0] for o in outs], 1), torch.cat([o[1] for o in outs], 1)


def step_seconds(model, device, repeats=4):
    cubes = torch.rand(BATCH, N_CUBES, 25, 25, 25, device=device)
    labels = torch.randint(0, 2, (BATCH,), device=device).repeat_interleave(N_CUBES)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        _, logits = model(cubes)
        loss = F.cross_entropy(logits.reshape(-1, 2), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    device = torch.device(parser.parse_args().device)
    torch.manual_seed(0)
    batched = step_seconds(BaseClassifiers().to(device), device)
    loop = step_seconds(Loop().to(device), device)
    # forward + backward is about three times the forward's work
    gflop = 3 * 2 * macs_per_cube() * N_CUBES * BATCH / 1e9
    ensemble = Ensemble(np.arange(35)).to(device).eval()
    session = torch.rand(1, N_CUBES, 25, 25, 25, device=device)
    with torch.no_grad():
        ensemble(session)
        start = time.perf_counter()
        for _ in range(5):
            ensemble(session)
        inference = (time.perf_counter() - start) / 5
    print(f"device: {device}, torch threads: {torch.get_num_threads()}")
    print(f"{'training step, batch 8':<44}{'seconds':>9}{'GFLOP/s':>9}")
    print(f"{'batched module':<44}{batched:9.3f}{gflop / batched:9.1f}")
    print(f"{'loop of 150 separate models':<44}{loop:9.3f}{gflop / loop:9.1f}")
    print(f"{'speed-up of the batched module':<44}{loop / batched:9.2f}x")
    print(f"{'one epoch over 100 images (batched)':<44}{batched * 100 / BATCH:9.1f}   (target 25 s)")
    print(f"{'inference, one session (base + meta)':<44}{inference:9.3f}   (target 0.25 s)")


if __name__ == "__main__":
    main()
