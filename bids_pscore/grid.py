"""The reference grid of SPEC section 1: every preprocessed image lives on it."""

import numpy as np

GRID_SHAPE = (121, 145, 121)
GRID_VOXEL_MM = 1.5
GRID_TEXT = f"{' x '.join(map(str, GRID_SHAPE))}, {GRID_VOXEL_MM:g} mm"
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


# SPEC section 3: pad to 125 x 150 x 125 and cut 5 x 6 x 5 = 150 cubes of 25^3,
# numbered c = ix * 30 + iy * 5 + iz (the layout of the authors' public code)
CUBE_SIZE = 25
CUBE_PAD = ((2, 2), (2, 3), (2, 2))
CUBES_PER_AXIS = (5, 6, 5)
N_CUBES = 150
CUBES_TEXT = f"{N_CUBES} cubes of {CUBE_SIZE}^3"


def cut_cubes(volumes):
    """(..., 121, 145, 121) -> (..., 150, 25, 25, 25), cubes in SPEC order."""
    volumes = np.asarray(volumes)
    lead = volumes.shape[:-3]
    if volumes.shape[-3:] != GRID_SHAPE:
        raise ValueError(f"expected volumes on the {GRID_SHAPE} grid, got shape {volumes.shape}")
    padded = np.pad(volumes, [(0, 0)] * len(lead) + list(CUBE_PAD))
    nx, ny, nz = CUBES_PER_AXIS
    blocks = padded.reshape(*lead, nx, CUBE_SIZE, ny, CUBE_SIZE, nz, CUBE_SIZE)
    k = len(lead)
    order = list(range(k)) + [k, k + 2, k + 4, k + 1, k + 3, k + 5]
    return blocks.transpose(order).reshape(*lead, N_CUBES, CUBE_SIZE, CUBE_SIZE, CUBE_SIZE)


def paste_cubes(cubes):
    """(..., 150, 25, 25, 25) -> (..., 121, 145, 121): the inverse of ``cut_cubes``, padding dropped."""
    cubes = np.asarray(cubes)
    lead = cubes.shape[:-4]
    if cubes.shape[-4:] != (N_CUBES, CUBE_SIZE, CUBE_SIZE, CUBE_SIZE):
        raise ValueError(f"expected (..., {N_CUBES}, 25, 25, 25) cubes, got shape {cubes.shape}")
    nx, ny, nz = CUBES_PER_AXIS
    k = len(lead)
    blocks = cubes.reshape(*lead, nx, ny, nz, CUBE_SIZE, CUBE_SIZE, CUBE_SIZE)
    order = list(range(k)) + [k, k + 3, k + 1, k + 4, k + 2, k + 5]
    padded = blocks.transpose(order).reshape(*lead, nx * CUBE_SIZE, ny * CUBE_SIZE, nz * CUBE_SIZE)
    (x0, x1), (y0, y1), (z0, z1) = CUBE_PAD
    return padded[..., x0 : padded.shape[-3] - x1, y0 : padded.shape[-2] - y1, z0 : padded.shape[-1] - z1]


def mirror_cubes(cubes):
    """The cubes of the left-right mirrored brain: cube ix takes the x-mirrored content of cube
    4 - ix (SPEC 7). The padded grid is symmetric about x = 0, so this is ``cut_cubes`` of the
    mirrored volume; works on numpy arrays and torch tensors of shape (..., 150, 25, 25, 25)."""
    nx, ny, nz = CUBES_PER_AXIS
    lead = tuple(cubes.shape[:-4])
    blocks = cubes.reshape(*lead, nx, ny, nz, CUBE_SIZE, CUBE_SIZE, CUBE_SIZE)
    k = len(lead)
    flipped = np.flip(blocks, (k, k + 3)) if isinstance(blocks, np.ndarray) else blocks.flip((k, k + 3))
    return flipped.reshape(*lead, N_CUBES, CUBE_SIZE, CUBE_SIZE, CUBE_SIZE)


def cube_index_map():
    """For every grid voxel, the index of the cube that holds it (int16, on the grid)."""
    return _CUBE_MAP


def paint_cubes(values):
    """(..., 150) per-cube values -> (..., 121, 145, 121): each voxel gets its cube's value."""
    values = np.asarray(values)
    if values.shape[-1] != N_CUBES:
        raise ValueError(f"expected {N_CUBES} values per image, got shape {values.shape}")
    return values[..., _CUBE_MAP]


def cube_origins():
    """(150, 3): the grid voxel (i, j, k) of each cube's first voxel; negative where it lies in the padding."""
    ijk = np.stack(np.unravel_index(np.arange(N_CUBES), CUBES_PER_AXIS), axis=1)
    return ijk * CUBE_SIZE - [before for before, _ in CUBE_PAD]


def cube_bounds():
    """Per cube: its position (ix, iy, iz), the grid voxels it covers ([start, stop) per axis,
    padding excluded) and the MNI extent of those voxels' centres in mm (min, max per axis)."""
    rows = []
    for c, start in enumerate(cube_origins()):
        ijk = np.array(np.unravel_index(c, CUBES_PER_AXIS))
        stop = np.minimum(start + CUBE_SIZE, GRID_SHAPE)
        start = np.maximum(start, 0)
        corners = GRID_AFFINE @ np.array([[*start, 1], [*(stop - 1), 1]]).T
        lo, hi = corners[:3].min(axis=1), corners[:3].max(axis=1)
        rows.append({
            "cube": c, "ix": int(ijk[0]), "iy": int(ijk[1]), "iz": int(ijk[2]),
            "i_start": int(start[0]), "i_stop": int(stop[0]), "j_start": int(start[1]), "j_stop": int(stop[1]),
            "k_start": int(start[2]), "k_stop": int(stop[2]),
            **{f"{axis}_{end}_mm": float(v[n]) for n, axis in enumerate("xyz") for end, v in (("min", lo), ("max", hi))},
        })  # fmt: skip
    return rows


def _make_cube_map():
    index = np.zeros(GRID_SHAPE, np.int16)
    for row in cube_bounds():
        index[row["i_start"] : row["i_stop"], row["j_start"] : row["j_stop"], row["k_start"] : row["k_stop"]] = row["cube"]
    return index


_CUBE_MAP = _make_cube_map()
