"""Time and memory of bids_pscore-synth --base: a base head's preparation and one session on it.

Usage: python benchmarks/synth_realheads.py [--base ../shared/data/ixi_hh] [--subject IXI538] [--sessions 3]

Prints the time of the preparation (N4, deepbet, registration, the atlas through the inverse
transform, ventricles: done once per base head and cached) and of each session (disease and
ageing on the 1 mm grid, the scan, the files), and the peak resident memory. Target: a session
in at most 15 s beside the preparation.
"""

import argparse
import resource
import tempfile
import time
from pathlib import Path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ixi_hh")
    parser.add_argument("--subject", default="IXI538", help="an old subject (81.9 years): ageing acts on every region")
    parser.add_argument("--sessions", type=int, default=3)
    opts = parser.parse_args()

    from bids_pscore.synth import realheads

    t1w = opts.base / f"sub-{opts.subject}" / "anat" / f"sub-{opts.subject}_T1w.nii.gz"
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        realheads.cached_base(t1w, tmp)
        prepare = time.perf_counter() - start
        start = time.perf_counter()
        realheads.write_cohort(Path(tmp) / "cohort", opts.base, n_sessions=opts.sessions, seed=1, ad_fraction=1.0,
                               participant_labels=[opts.subject], cache_dir=tmp)  # fmt: skip
        sessions = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"\n{'step':<46}{'seconds':>10}")
    print(f"{'base head preparation (once per head)':<46}{prepare:>10.1f}")
    print(f"{f'one session (mean of {opts.sessions}, AD, all files)':<46}{sessions / opts.sessions:>10.1f}")
    print(f"{'peak resident memory (GB)':<46}{peak_gb:>10.2f}")


if __name__ == "__main__":
    main()
