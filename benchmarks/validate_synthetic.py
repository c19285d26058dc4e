"""Does the P-score find what it should? Validation on a fresh synthetic cohort with known atrophy.

Usage: python benchmarks/validate_synthetic.py [--subjects 20] [--seed 2026] [--model FOLDER] [--work DIR]
                                             [--participant-label 01 02 ...]

Generates a cohort (a seed the demo model never saw: it was trained on seed 1000) and a re-scan
of the same brains (another acquisition seed: pose, voxel grid, bias field, noise), runs the
participant level on both, and prints:
- AUC, AD vs CN, of the meta-classifier's AD probability and of the whole-brain P-score;
- precision and recall of the degenerative-region flags against the regions whose true volume
  loss is at least --atrophied (pooled over sessions and regions);
- test-retest: ICC(3,1) of the whole-brain P-score and the median over regions of the
  correlation of the normalised region score between scan and re-scan.
Targets: AUC >= 0.95, precision and recall >= 0.8, ICC >= 0.95, median correlation >= 0.9.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def icc_3_1(test, retest):
    """ICC(3,1), two-way mixed, consistency, single measurement (Shrout and Fleiss 1979)."""
    data = np.column_stack([test, retest]).astype(float)
    n, k = data.shape
    grand = data.mean()
    ms_rows = k * ((data.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    residual = data - data.mean(axis=1, keepdims=True) - data.mean(axis=0, keepdims=True) + grand
    ms_error = (residual**2).sum() / ((n - 1) * (k - 1))
    return (ms_rows - ms_error) / (ms_rows + (k - 1) * ms_error)


def participant(bids_dir, out_dir, work_dir, model, labels):
    cmd = [sys.executable, "-m", "bids_pscore.cli", str(bids_dir), str(out_dir), "participant", "-w", str(work_dir)]
    cmd += ["--model", str(model)] if model else []
    cmd += ["--participant-label", *labels] if labels else []
    subprocess.run(cmd, check=False)


def collect(out_dir):
    """Per session: summary values and normalised region scores, from the participant outputs."""
    sessions, regions = [], {}
    for summary_path in sorted(Path(out_dir).glob("sub-*/ses-*/anat/*_desc-summary_pscore.json")):
        sub, ses = summary_path.parts[-4], summary_path.parts[-3]
        summary = json.loads(summary_path.read_text())
        table = pd.read_csv(next(summary_path.parent.glob("*_atlas-Brainnetome_desc-regions_pscore.tsv")), sep="\t")
        sessions.append({"participant_id": sub, "session_id": ses, "ad_probability": summary["ADProbability"],
                         "whole": summary["WholeBrainPScore"], "lambda": summary["Lambda"]})  # fmt: skip
        regions[(sub, ses)] = table.set_index("index")[["p_region_norm", "degenerative"]]
    return pd.DataFrame(sessions).set_index(["participant_id", "session_id"]), regions


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--atrophied", type=float, default=0.10, help="true volume loss from which a region counts as atrophied")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--participant-label", nargs="+", help="score only these subjects of the generated cohort")
    parser.add_argument("--work", type=Path, default=Path("validate_work"), help="datasets, outputs and caches (reused)")
    opts = parser.parse_args()

    from bids_pscore.model.training import auc
    from bids_pscore.synth import GROUNDTRUTH, write_dataset

    runs = {}
    for name, acquisition_seed in (("test", opts.seed), ("retest", opts.seed + 1)):
        bids_dir = opts.work / f"{name}_bids"
        if not (bids_dir / "participants.tsv").is_file():
            write_dataset(bids_dir, opts.subjects, opts.sessions, opts.seed, acquisition_seed)
        participant(bids_dir, opts.work / f"{name}_out", opts.work / f"{name}_work", opts.model, opts.participant_label)
        runs[name] = collect(opts.work / f"{name}_out")

    truth_dir = opts.work / "test_bids" / GROUNDTRUTH
    groups = pd.read_csv(opts.work / "test_bids" / "participants.tsv", sep="\t").set_index("participant_id")["group"]
    truth = pd.read_csv(truth_dir / "regions.tsv", sep="\t")
    sessions, regions = runs["test"]
    is_ad = groups.reindex(sessions.index.get_level_values(0)).to_numpy() == "AD"

    tp = fp = fn = 0
    for key, table in regions.items():
        loss = truth[(truth["participant_id"] == key[0]) & (truth["session_id"] == key[1])].set_index("index")["volume_loss"]
        atrophied = loss.reindex(table.index, fill_value=0.0).to_numpy() >= opts.atrophied
        flagged = table["degenerative"].to_numpy(bool)
        tp, fp, fn = tp + (flagged & atrophied).sum(), fp + (flagged & ~atrophied).sum(), fn + (~flagged & atrophied).sum()

    retest_sessions, retest_regions = runs["retest"]
    common = sessions.index.intersection(retest_sessions.index)
    scan = np.stack([regions[k]["p_region_norm"].to_numpy() for k in common])
    rescan = np.stack([retest_regions[k]["p_region_norm"].to_numpy() for k in common])
    varying = (scan.std(axis=0) > 0) & (rescan.std(axis=0) > 0)
    correlations = [np.corrcoef(scan[:, r], rescan[:, r])[0, 1] for r in np.flatnonzero(varying)]

    rows = [
        ("sessions (AD / CN)", f"{is_ad.sum()} / {(~is_ad).sum()}", ""),
        ("AUC of the AD probability", f"{auc(sessions['ad_probability'], is_ad)[0]:.3f}", ">= 0.95"),
        ("AUC of the whole-brain P-score", f"{auc(sessions['whole'], is_ad)[0]:.3f}", ">= 0.95"),
        (f"region flags: precision (loss >= {opts.atrophied:.0%})", f"{tp / max(tp + fp, 1):.3f}  ({tp} of {tp + fp} flags)", ">= 0.8"),
        (f"region flags: recall (loss >= {opts.atrophied:.0%})", f"{tp / max(tp + fn, 1):.3f}  ({tp} of {tp + fn} atrophied)", ">= 0.8"),
        ("test-retest ICC(3,1), whole-brain P-score", f"{icc_3_1(sessions.loc[common, 'whole'], retest_sessions.loc[common, 'whole']):.3f}", ">= 0.95"),
        ("test-retest median region correlation", f"{np.median(correlations):.3f}  ({len(correlations)} regions vary)", ">= 0.9"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows) + 2
    print(f"\n{'measure':<{width}}{'value':<34}target")
    for name, value, target in rows:
        print(f"{name:<{width}}{value:<34}{target}")


if __name__ == "__main__":
    main()
