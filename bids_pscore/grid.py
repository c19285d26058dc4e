"""The reference grid of SPEC section 1: every preprocessed image lives on it."""

import numpy as np

GRID_SHAPE = (121, 145, 121)
GRID_VOXEL_MM = 1.5
# SPM12's tpm/TPM.nii affine, so CAT12 output at vox=1.5 lands on this grid unchanged.
GRID_AFFINE = np.array(
    [
        [-1.5, 0.0, 0.0, 90.0],
        [0.0, 1.5, 0.0, -126.0],
        [0.0, 0.0, 1.5, -72.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def grid_at(voxel_mm):
    """(shape, affine) of a grid over the same bounding box at another voxel size."""
    extent = np.array([180.0, 216.0, 180.0])
    shape = tuple(int(n) for n in np.round(extent / voxel_mm) + 1)
    affine = GRID_AFFINE.copy()
    affine[:3, :3] = np.diag([-voxel_mm, voxel_mm, voxel_mm])
    return shape, affine


def is_on_grid(shape, affine, atol=1e-3):
    """True when an image of this shape and affine lies exactly on the reference grid."""
    return tuple(shape[:3]) == GRID_SHAPE and np.allclose(affine, GRID_AFFINE, atol=atol)
