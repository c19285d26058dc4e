"""Speed of what follows preprocessing (issue 31): quality gate, P-scores, normative and relevance
outputs, derivatives, figures and the subject report of an already-preprocessed session, and the
wall time of a fully cached rerun of the demo (every step in the work folder already done).

Usage: python benchmarks/after_preprocessing.py [--sessions 4] [--demo FOLDER]
The sessions are the template on the grid standing in for a preprocessed T1w (no preprocessing is
run). ``--demo FOLDER`` reuses FOLDER/bids, FOLDER/out and FOLDER/work (made and run once if
missing: minutes); without it the demo is made in a temporary folder. CPU seconds (user + system,
all threads) are printed beside wall seconds: on a loaded machine they move less.
Targets on a 2-core machine: one session <= 3 s; a fully cached rerun of the demo <= 10 s.
"""

import argparse
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_pscore.cli.run import let_waiting_threads_sleep

let_waiting_threads_sleep(os.environ)  # as the participant level does, before torch loads
TEMPLATE = "MNI152NLin2009aSym"


def cpu_seconds(who=resource.RUSAGE_SELF):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def preprocessed_sessions(out, n):
    """``n`` sessions whose preprocessing outputs are the template on the grid and its mask."""
    from bids_pscore.bids import T1wInput
    from bids_pscore.derivatives import layout
    from bids_pscore.grid import GRID_AFFINE
    from bids_pscore.preprocess.steps import template_on_grid

    template, mask = (np.asarray(i.dataobj, np.float32) for i in template_on_grid(TEMPLATE))
    image = np.clip(template / np.percentile(template[mask > 0], 99), 0, 1).astype(np.float32)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), GRID_AFFINE), out / "raw.nii.gz")  # only its header is read
    items = []
    for ses in range(1, n + 1):
        item = T1wInput(out / "raw.nii.gz", f"sub-01/ses-{ses}/anat/sub-01_ses-{ses}_T1w.nii.gz", {"sub": "01", "ses": str(ses)})
        for key, rel in layout.session_outputs(item.entities, TEMPLATE, layout.PREPROCESSING).items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            if key == "t1w_grid":
                nib.save(nib.Nifti1Image(image, GRID_AFFINE), out / rel)
            elif key in ("mask_grid", "mask_native"):
                nib.save(nib.Nifti1Image(mask.astype(np.uint8), GRID_AFFINE), out / rel)
            else:
                (out / rel).write_bytes(b"")
        items.append(item)
    return items


def timed(function, *args):
    """(result, wall s, CPU s) of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = function(*args)
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def after_preprocessing(n):
    """[(what, wall s, CPU s, target)] of scoring and reporting ``n`` preprocessed sessions in one process."""
    from bids_pscore import cohort, participant, qc, scoring

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        items = preprocessed_sessions(out, n)
        bundle, wall, cpu = timed(cohort.load_model)
        rows.append(("load the demo model (once per run)", wall, cpu, None))
        # the first session pays what a run does once (the templates and atlas on the grid); the rest are the steady state
        (first, _), wall1, cpu1 = timed(scoring.score_sessions, items[:1], out, bundle, TEMPLATE, qc.DEFAULT_BOUNDS, out / "logs")
        (rest, stopped), wall, cpu = timed(scoring.score_sessions, items[1:], out, bundle, TEMPLATE, qc.DEFAULT_BOUNDS, out / "logs")
        if stopped:
            raise SystemExit(f"sessions not scored: {stopped}")
        rows.append(("first session: gate, scores, derivatives", wall1, cpu1, None))
        rows.append(("one more session: gate, scores, derivatives", wall / (n - 1), cpu / (n - 1), None))
        scoring = (wall / (n - 1), cpu / (n - 1))
        info = {"run": "benchmark"}
        _, wall, cpu = timed(participant.write_run_reports, out, items, items, first + rest, {}, bundle.metadata, TEMPLATE, info)
        rows.append((f"report of {n} sessions (figures and HTML)", wall, cpu, None))
        rows.append(("one session: scoring + derivatives + figures + report", scoring[0] + wall / n, scoring[1] + cpu / n, 3.0))
    return rows


def cached_demo_rerun(folder):
    """(wall s, CPU s of the child) of a participant run of the demo whose work folder holds every step."""
    command = [sys.executable, "-m", "bids_pscore.cli", str(folder / "bids"), str(folder / "out"), "participant", "-w", str(folder / "work")]
    if not (folder / "bids").is_dir():
        subprocess.run([sys.executable, "-m", "bids_pscore.cli.synth", str(folder / "bids")], check=True, capture_output=True)
    if not (folder / "work").is_dir():
        print("running the demo once to fill its work folder (minutes)", file=sys.stderr)
        subprocess.run(command, check=True, capture_output=True)
    cpu, wall = cpu_seconds(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - wall, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
    if done.returncode:
        raise SystemExit(f"the rerun failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return wall, cpu


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--demo", type=Path, help="folder of the demo's bids, out and work (kept between runs)")
    opts = parser.parse_args()
    logging.getLogger("bids_pscore").setLevel(logging.ERROR)
    rows = after_preprocessing(max(opts.sessions, 2))
    if opts.demo:
        opts.demo.mkdir(parents=True, exist_ok=True)
        rows.append(("fully cached rerun of the demo (4 T1w, 2 subjects)", *cached_demo_rerun(opts.demo.resolve()), 10.0))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(("fully cached rerun of the demo (4 T1w, 2 subjects)", *cached_demo_rerun(Path(tmp)), 10.0))
    print(f"{'what':<58}{'wall s':>8}{'CPU s':>8}{'target':>8}")
    for what, wall, cpu, target in rows:
        print(f"{what:<58}{wall:8.2f}{cpu:8.2f}{'' if target is None else f'{target:g}':>8}")


if __name__ == "__main__":
    main()
