"""How the demo heads in this folder were chosen and made; rerun it from the repository root:

    python bids_pscore/data/demo_heads/recipe.py [base dataset]

The base is the 145 real healthy IXI heads (2 mm, CC BY-SA 3.0; ../shared/data/ixi_hh in the
project's workspace). The rule, fixed before any result was seen (bids_pscore.synth.demo): among the
subjects the demo model's recipe kept out (every fourth in label order), those the validation
benchmark does not use (the second half), the first two aged 60 or more: the first becomes sub-01,
given simulated AD, the second sub-02, healthy. Each head's T1w is copied unchanged, and what
prepare_base finds on it with the current default preprocessing (brain mask, Brainnetome atlas
through the inverse registration, ventricles) is saved beside it, so that bids_pscore-synth makes
the demo in seconds. About 1.5 minutes on 2 CPUs.
"""

import os
import shutil
import sys
from pathlib import Path

# one ITK thread: the registration then depends on its seed alone (steps.register)
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"

import pandas as pd  # noqa: E402

from bids_pscore.fileio import write_tsv  # noqa: E402
from bids_pscore.model.preprocessing import PreprocParams  # noqa: E402
from bids_pscore.synth.demo import DEMO_HEADS, demo_labels  # noqa: E402
from bids_pscore.synth.realheads import prepare_base, save_prepared  # noqa: E402


def main(base_dir):
    base_dir = Path(base_dir)
    participants = pd.read_csv(base_dir / "participants.tsv", sep="\t").set_index("participant_id")
    rows = []
    for number, (label, group) in enumerate(zip(demo_labels(base_dir), ("AD", "CN")), start=1):
        t1w, prepared = f"{label}_T1w.nii.gz", f"{label}_prepared.npz"
        shutil.copyfile(base_dir / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz", DEMO_HEADS / t1w)
        save_prepared(DEMO_HEADS / prepared, prepare_base(DEMO_HEADS / t1w, PreprocParams().registration_seed))
        source = participants.loc[f"sub-{label}"]
        rows.append({"participant_id": f"sub-{number:02d}", "source": f"sub-{label}", "ixi_id": source["ixi_id"], "age": source["age"],
                     "sex": source["sex"], "group": group, "t1w": t1w, "prepared": prepared})  # fmt: skip
        print(f"sub-{number:02d} ({group}): {label}, aged {source['age']:g}, {source['sex']}", flush=True)
    write_tsv(DEMO_HEADS / "heads.tsv", pd.DataFrame(rows), "%.6g")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/ixi_hh")
