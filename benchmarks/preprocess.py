"""Wall time of each preprocessing step for one T1w, in this process.

Usage: python benchmarks/preprocess.py [T1w.nii.gz]   (default: ../shared/data/t1w/chris_t1.nii.gz,
else a synthetic head). The whole command line is measured by benchmarks/participant.py.
"""

import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "t1w" / "chris_t1.nii.gz"


def steps_table(t1w, threads=2):
    """Each step in this process, one after the other."""
    import numpy as np

    from bids_pscore.grid import GRID_VOXEL_MM
    from bids_pscore.preprocess import PreprocParams, steps

    p = PreprocParams()
    rows, tmp = [], Path(tempfile.mkdtemp())

    def timed(name, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        rows.append((name, time.perf_counter() - start))
        return out

    template, _ = timed("template", steps.template_on_grid, p.template)
    coarse, _ = timed("template (reg.)", steps.template_on_grid, p.template, p.registration_mm)
    img = timed("load", steps.load_t1w, t1w)
    n4 = timed("n4", steps.n4_correct, img, p.n4_shrink_mm, p.n4_iterations, p.n4_mask_fraction)
    mask, _ = timed("skullstrip", steps.brain_mask, n4, p.stripped_max_volume_ml, threads)
    brain = steps.as_image(np.where(np.asarray(mask.dataobj) > 0, n4.dataobj, 0), n4.affine)
    iterations = (p.rigid_iterations, p.affine_iterations, p.syn_iterations)
    warp, affine = timed("register", steps.register, brain, coarse, template, iterations, 1, tmp / "r_")
    grid = timed("resample", steps.apply_to_grid, brain, template, [warp, affine], p.interpolation)
    gmask = steps.apply_to_grid(mask, template, [warp, affine], "linear").get_fdata() >= 0.5
    smooth = timed("smooth", steps.smooth_in_mask, grid.get_fdata(), gmask, p.fwhm_mm, GRID_VOXEL_MM)
    timed("normalise", steps.normalise, smooth, gmask, p.norm_percentile)
    return rows


def main():
    t1w = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    tmp = Path(tempfile.mkdtemp())
    if not t1w.is_file():
        import numpy as np

        from bids_pscore.synth import make_head

        head, _ = make_head(np.random.default_rng(0))
        t1w = tmp / "synthetic_T1w.nii.gz"
        head.to_filename(t1w)
    print(f"T1w: {t1w}")
    rows = steps_table(t1w)
    print(f"\n{'step (in process)':<20}{'wall s':>8}")
    for name, seconds in rows:
        print(f"{name:<20}{seconds:8.1f}")
    print(f"{'total':<20}{sum(s for _, s in rows):8.1f}")
    print(f"peak memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB")


if __name__ == "__main__":
    main()
