"""Does the image quality gate pass every real head and stop every meaningless image?

Usage: python benchmarks/quality_gate.py BIDS_DIR OUTPUT_DIR [--kind-column kind]

OUTPUT_DIR holds the participant level's outputs of BIDS_DIR (run with --qc-thresholds off, so
that every T1w that preprocessing gets through is measured). participants.tsv's --kind-column
says what each subject is: a kind starting with "bad" is meant to fail the gate, any other to
pass (e.g. ixi, head, stripped, generated, bad-noise). Prints each T1w's measures and verdict
under the default thresholds, then per kind the range of each measure, and the two counts
that matter: real heads passing, meaningless images stopped (those whose preprocessing failed
are stopped too, before the gate).

tests/badinputs.py makes the meaningless images from a real head (noise, a T2-like inversion, a
binary mask, half a head, a 12-voxel block, a head rotated 180 degrees).
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bids_pscore import bids, qc, scoring  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--kind-column", default="kind")
    args = parser.parse_args()
    kinds = pd.read_csv(args.bids_dir / "participants.tsv", sep="\t", dtype=str).set_index("participant_id")[args.kind_column]
    rows = []
    for t1w in bids.find_t1w(bids.load_layout(args.bids_dir, validate=False)):
        kind = kinds.get(f"sub-{t1w.entities['sub']}", "?")
        try:
            record = scoring.quality_gate(t1w, args.output_dir, "MNI152NLin2009aSym", qc.DEFAULT_BOUNDS)
        except FileNotFoundError:  # preprocessing failed: nothing to measure, nothing scored
            rows.append({"T1w": t1w.label, "kind": kind, "verdict": "stopped before the gate"})
            continue
        verdict = "pass" if record["Passed"] else "FAIL: " + "; ".join(record["Failures"])
        rows.append({"T1w": t1w.label, "kind": kind, **record["Measures"], "verdict": verdict})
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_colwidth", 90)
    print(table.sort_values(["kind", "T1w"]).to_string(index=False))
    print()
    measures = list(qc.DEFAULT_BOUNDS)
    print(table.groupby("kind")[measures].agg(["min", "max"]).round(3).to_string())
    print()
    print("thresholds:", {k: list(v) for k, v in qc.DEFAULT_BOUNDS.items()})
    meant_to_fail = table["kind"].str.startswith("bad")
    passed = table["verdict"] == "pass"
    print(
        f"real images passing: {int((passed & ~meant_to_fail).sum())} of {int((~meant_to_fail).sum())}; "
        f"meaningless images stopped: {int((~passed & meant_to_fail).sum())} of {int(meant_to_fail.sum())}"
    )


if __name__ == "__main__":
    main()
