"""Peak memory of training on 1,000 images from the memory-mapped float16 cube cache.

Usage: python benchmarks/training_memory.py [N_IMAGES]. Writes a cube cache of random images
(4.7 GB for 1,000) in a temporary folder, trains the base classifiers for one epoch with 100
validation images, and prints wall time and peak resident memory. Target: <= 8 GB.
"""

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bids_pscore.model.training import Rows, TrainConfig, train_base


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cubes = np.lib.format.open_memmap(Path(tmp) / "cubes.npy", mode="w+", dtype=np.float16, shape=(n, 150, 25, 25, 25))
        for i in range(n):
            cubes[i] = rng.random((150, 25, 25, 25), dtype=np.float32).astype(np.float16)
        cubes.flush()
        labels = np.arange(n) % 2
        written = time.perf_counter() - start
        train, val = np.arange(100, n), np.arange(100)
        start = time.perf_counter()
        train_base(Rows(cubes, train), labels[train], Rows(cubes, val), labels[val], TrainConfig(epochs=1))
        trained = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"{'images':<36}{n:>10}")
    print(f"{'cube cache written (s)':<36}{written:10.1f}")
    print(f"{f'one epoch, {n - 100} training images (s)':<36}{trained:10.1f}")
    print(f"{'peak resident memory (GB)':<36}{peak:10.2f}   (target 8 GB)")


if __name__ == "__main__":
    main()
