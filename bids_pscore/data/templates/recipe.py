"""How the template maps in this folder were made; rerun it from the repository root:

    python bids_pscore/data/templates/recipe.py

Each map is nilearn's MNI152 2009a (1 mm) resampled onto bids_pscore's grid
(``steps.resample_template_map``), saved as a float32 .npy in C order and compressed with xz: the T1w, brain
mask and grey and white matter probabilities at 1.5 mm, and the T1w and mask at the registration's
linear-stage 2 mm. Reading them takes about 0.6 s a run, resampling them about 4 s (and nilearn's
import); tests/test_steps.py checks that they hold the same bytes as resampling makes now.
About 20 s on 2 CPUs (xz at its highest preset).
"""

import lzma

import numpy as np

from bids_pscore.fileio import atomic_path
from bids_pscore.model.preprocessing import PreprocParams
from bids_pscore.preprocess.steps import SHIPPED_TEMPLATE_MAPS, resample_template_map, shipped_map_path

if __name__ == "__main__":
    template = PreprocParams().template
    for voxel_mm, names in SHIPPED_TEMPLATE_MAPS:
        for name in names:
            path = shipped_map_path(template, voxel_mm, name)
            with atomic_path(path) as tmp, lzma.open(tmp, "wb", preset=9) as stream:
                # C order: xz packs it a fifth smaller than nilearn's Fortran order (template_map puts that back)
                np.save(stream, np.ascontiguousarray(resample_template_map(template, voxel_mm, name)))
            print(f"{path}: {path.stat().st_size / 1e6:.2f} MB")
