"""Wall time, CPU time and peak memory of each preprocessing step, in this process.

Usage: python benchmarks/preprocess.py [T1w.nii.gz ...] [--model FOLDER ...]
Default heads: ../shared/data/t1w/chris_t1.nii.gz (1 mm) and one IXI head (2 mm), else a generated
head. Each head is preprocessed with the package's default parameters and with those of each
--model bundle (e.g. the demo model, trained before the faster defaults), one after the other,
single-threaded ITK as in the app and deepbet on 2 threads. Peak memory is the process's resident
memory sampled every 20 ms during the step. The whole command line (nipype, scoring, reports) is
measured by benchmarks/participant.py.
"""

import argparse
import tempfile
import threading
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_HEADS = (SHARED / "t1w" / "chris_t1.nii.gz", SHARED / "ixi_hh" / "sub-IXI012" / "anat" / "sub-IXI012_T1w.nii.gz")


def _rss_gb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    return 0.0


def timed(rows, name, fn, *args):
    """Run fn(*args), appending (name, wall s, CPU s, peak GB) to rows."""
    peak, done = [_rss_gb()], threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], _rss_gb())

    sampler = threading.Thread(target=sample)
    sampler.start()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done.set()
    sampler.join()
    rows.append((name, wall, cpu, max(peak[0], _rss_gb())))
    return out


def steps_table(t1w, params, threads=2):
    """Each step on one T1w, one after the other: [(step, wall s, CPU s, peak GB)]."""
    import numpy as np

    from bids_pscore.preprocess import steps

    p, rows, tmp = params, [], Path(tempfile.mkdtemp())
    template, _ = steps.template_on_grid(p.template)
    coarse, _ = steps.template_on_grid(p.template, p.registration_mm)
    img = timed(rows, "load", steps.load_t1w, t1w)
    n4 = timed(rows, "n4", steps.n4_correct, img, p.n4_shrink_mm, p.n4_iterations, p.n4_mask_fraction)
    mask, _ = timed(rows, "skullstrip", steps.brain_mask, n4, p.stripped_max_volume_ml, p.skullstrip_network_size, threads)
    brain = steps.as_image(np.where(np.asarray(mask.dataobj) > 0, n4.dataobj, 0), n4.affine)
    iterations = (p.rigid_iterations, p.affine_iterations, p.syn_iterations)
    warp, affine = timed(rows, "register", steps.register, brain, coarse, template, iterations, p.registration_seed, tmp / "r_")

    def resample():
        grid = steps.apply_to_grid(brain, template, [warp, affine], p.interpolation)
        inside = np.asarray(steps.apply_to_grid(mask, template, [warp, affine], "linear").dataobj) >= 0.5
        return np.where(inside, np.clip(grid.dataobj, 0, None), 0), inside

    grid, inside = timed(rows, "resample", resample)
    smooth = timed(rows, "smooth", steps.smooth_in_mask, grid, inside, p.fwhm_mm)
    timed(rows, "normalise", steps.normalise, smooth, inside, p.norm_percentile)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("heads", nargs="*", type=Path)
    parser.add_argument("--model", type=Path, nargs="*", default=[], help="also with these bundles' preprocessing parameters")
    opts = parser.parse_args()

    from bids_pscore.model.bundle import load_bundle
    from bids_pscore.model.preprocessing import PreprocParams
    from bids_pscore.preprocess import steps

    heads = opts.heads or [h for h in DEFAULT_HEADS if h.is_file()]
    if not heads:
        import numpy as np

        from bids_pscore.synth import make_head

        head, _ = make_head(np.random.default_rng(0))
        heads = [Path(tempfile.mkdtemp()) / "generated_T1w.nii.gz"]
        head.to_filename(heads[0])
    settings = {"defaults": PreprocParams()}
    settings.update({f"model {m.name}": PreprocParams.from_dict(load_bundle(m).metadata["preprocessing"]) for m in opts.model})
    for p in settings.values():  # the templates are read once per process: not a step's cost
        steps.template_on_grid(p.template), steps.template_on_grid(p.template, p.registration_mm)
    for t1w in heads:
        for label, params in settings.items():
            rows = steps_table(t1w, params)
            print(f"\n{t1w.name}, {label}")
            print(f"{'step':<14}{'wall s':>8}{'CPU s':>8}{'peak GB':>9}")
            for name, wall, cpu, peak in rows:
                print(f"{name:<14}{wall:8.1f}{cpu:8.1f}{peak:9.2f}")
            print(f"{'total':<14}{sum(r[1] for r in rows):8.1f}{sum(r[2] for r in rows):8.1f}{max(r[3] for r in rows):9.2f}")


if __name__ == "__main__":
    main()
