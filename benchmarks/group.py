"""Group level over 1,000 generated sessions: wall time and peak memory.

Usage: python benchmarks/group.py [--subjects 250] [--sessions 4] [--folder DIR]
The participant outputs are generated once into --folder (tests/scored.py's write_scored_cohort,
about 2 minutes) and reused. Target on a 2-core machine: <= 30 s and <= 2 GB.
"""

import argparse
import sys
from pathlib import Path

from participant import measure


def main():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fixtures live with the tests
    from tests.scored import write_scored_cohort

    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=250)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--folder", type=Path, default=Path("group_benchmark"))
    opts = parser.parse_args()
    bids_dir, out_dir = opts.folder / "bids", opts.folder / "out"
    if not (bids_dir / "participants.tsv").is_file():
        write_scored_cohort(out_dir, bids_dir, opts.subjects, opts.sessions)
    n = opts.subjects * opts.sessions
    print(f"{'bids_pscore group':<40}{'wall s':>8}{'peak GB':>9}")
    for extra in ([], ["--label-column", "group", "--positive", "AD", "--negative", "CN"]):
        cmd = [sys.executable, "-m", "bids_pscore.cli", str(bids_dir), str(out_dir), "group", *extra]
        wall, peak, code, output = measure(cmd)
        name = f"{n} sessions" + (", with labels" if extra else "")
        print(f"{name:<40}{wall:8.1f}{peak:9.2f}" + (f"  exit {code}\n{output}" if code else ""))


if __name__ == "__main__":
    main()
