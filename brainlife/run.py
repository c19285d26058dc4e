"""Brainlife wrapper, run inside the bids_pscore image in the task folder (see main).

config.json gives the T1w ("t1", with its subject and session in _inputs[0].meta as Brainlife
sets them) and the options; the T1w becomes a one-subject BIDS dataset in bids/, the
participant level writes output/, and product.json carries the scores and messages Brainlife
shows. The exit status is the app's (docs/usage.md, "Exit codes").
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path


def label(value, default):
    """A BIDS label from Brainlife's metadata: letters and digits only."""
    cleaned = re.sub(r"[^A-Za-z0-9]", "", str(value or ""))
    return cleaned or default


def make_dataset(config, root):
    meta = (config.get("_inputs") or [{}])[0].get("meta", {})
    subject, session = label(meta.get("subject"), "01"), label(meta.get("session"), "")
    entities = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    anat = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    anat.mkdir(parents=True)
    t1 = Path(config["t1"])
    shutil.copyfile(t1, anat / f"{entities}_T1w.nii.gz")
    if (t1.parent / "t1.json").exists():  # the sidecar Brainlife keeps beside the image, if any
        shutil.copyfile(t1.parent / "t1.json", anat / f"{entities}_T1w.json")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "Brainlife input", "BIDSVersion": "1.11.1", "DatasetType": "raw"}))
    return subject


def command(config, subject):
    args = ["bids_pscore", "bids", "output", "participant", "--participant-label", subject, "-w", "work", "--n-cpus", str(config.get("n_cpus", 4))]
    if config.get("model"):
        args += ["--model", config["model"]]
    if config.get("skip_bids_validation"):
        args.append("--skip-bids-validation")
    return args


def product(output):
    """Messages and scores for Brainlife's UI (a few kB at most, as Brainlife asks)."""
    summaries = sorted(output.glob("sub-*/**/*_desc-summary_pscore.json"))
    if not summaries:
        gates = [json.loads(p.read_text()) for p in sorted(output.glob("sub-*/**/*_qc.json"))]
        failures = [f for gate in gates for f in gate["Failures"]]
        why = f"the image failed the quality gate ({'; '.join(failures)})" if failures else "see the log and output/sub-*.html"
        return {"brainlife": [{"type": "error", "msg": f"no P-score was written: {why}"}]}
    summary = json.loads(summaries[0].read_text())
    regions = summary["DegenerativeRegions"]
    messages = [
        {
            "type": "info",
            "msg": f"whole-brain P-score {summary['WholeBrainPScore']:.1f} of {summary['WholeBrainPScoreRange'][1]}; "
            f"AD probability {summary['ADProbability']:.2f} ({summary['PredictedClass']})",
        },
        {
            "type": "info",
            "msg": f"{len(regions)} degenerative regions (lambda {summary['Lambda']:.2f})"
            + (f": {', '.join(regions[:10])}" + (" ..." if len(regions) > 10 else "") if regions else ""),
        },
    ]
    warning = summary.get("Model", {}).get("Warning")
    if warning:
        messages.append({"type": "warning", "msg": warning})
    keys = ("WholeBrainPScore", "ADProbability", "PredictedClass", "Lambda", "NumberOfDegenerativeRegions")
    return {"brainlife": messages, "pscore": {k: summary[k] for k in keys}}


def main():
    config = json.loads(Path("config.json").read_text())
    subject = make_dataset(config, Path("bids"))
    status = subprocess.run(command(config, subject)).returncode
    Path("product.json").write_text(json.dumps(product(Path("output")), indent=2))
    shutil.rmtree("work", ignore_errors=True)  # nipype's work folder: large, and of no use on Brainlife
    return status


if __name__ == "__main__":
    sys.exit(main())
