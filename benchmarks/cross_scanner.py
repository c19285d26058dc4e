"""Healthy heads of scanners the model never saw: how many are called AD, with or without the mark
that the class is not reliable, and how many regions the normative reference flags.

Usage: python benchmarks/cross_scanner.py NAME=OUTPUT_DIR [NAME=OUTPUT_DIR ...] [--per-head]

Each OUTPUT_DIR holds the participant level's outputs of a dataset of healthy heads, e.g. for
OpenNeuro ds002748 (38 heads of another site, already skull-stripped) with the shipped model and
with a site bundle (bids_pscore-normative --calibrate-class):

    bids_pscore ../shared/data/ds002748 out/ds002748 participant -w work
    bids_pscore ../shared/data/ds002748 out/ds002748_site participant -w work --model site_bundle
    python benchmarks/cross_scanner.py shipped=out/ds002748 site=out/ds002748_site

Prints one row per folder: heads scored, called AD, median AD probability, class marked not
reliable, called AD without that mark (the target: none), normative flags per head and the share
of heads beyond the reference's distance. Every head in the folders is taken as healthy.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bids_pscore.pscore import AD_THRESHOLD  # noqa: E402


def head_rows(name, output_dir):
    """One row per session summary in ``output_dir``."""
    rows = []
    for path in sorted(Path(output_dir).glob("sub-*/**/*_desc-summary_pscore.json")):
        summary = json.loads(path.read_text())
        normative = summary.get("Normative") or {}
        rows.append({
            "folder": name, "session": path.name.removesuffix("_desc-summary_pscore.json"),
            "ad_probability": summary["ADProbability"], "called_ad": summary["ADProbability"] >= AD_THRESHOLD,
            "class_reliable": summary.get("ClassReliable"), "flags": normative.get("NumberOfAtrophicRegions", np.nan),
            "beyond_distance": normative.get("Reliable") is False,
        })  # fmt: skip
    if not rows:
        raise SystemExit(f"{output_dir}: holds no *_desc-summary_pscore.json; run the participant level into it first")
    return rows


def folder_table(heads):
    """Per folder: the counts that matter across scanners."""
    unmarked = heads["class_reliable"].map(lambda value: value is not False)
    grouped = heads.assign(called_ad_unmarked=heads["called_ad"] & unmarked, marked=~unmarked).groupby("folder", sort=False)
    return pd.DataFrame({
        "heads": grouped.size(), "called AD": grouped["called_ad"].sum(), "median AD probability": grouped["ad_probability"].median(),
        "class not reliable": grouped["marked"].sum(), "called AD, unmarked": grouped["called_ad_unmarked"].sum(),
        "flags per head": grouped["flags"].mean(), "beyond distance": grouped["beyond_distance"].mean(),
    }).round(3)  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", metavar="NAME=OUTPUT_DIR")
    parser.add_argument("--per-head", action="store_true", help="print every head's row too")
    args = parser.parse_args()
    rows = []
    for item in args.folders:
        name, _, folder = item.rpartition("=")
        rows += head_rows(name or folder, folder)
    heads = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    if args.per_head:
        print(heads.to_string(index=False))
        print()
    print(folder_table(heads).to_string())


if __name__ == "__main__":
    sys.exit(main())
