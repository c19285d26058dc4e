"""Bad inputs for the tests: meaningless "T1w" images made from a real head, for the image quality
gate (each keeps the head's header, voxel size and orientation, so that only its content is wrong),
and files damaged as a full disk or a killed copy leaves them."""

import nibabel as nib
import numpy as np
from scipy import ndimage


def _like(img, data, dtype=np.float32):
    out = nib.Nifti1Image(np.asarray(data, dtype), img.affine)
    out.set_qform(img.affine, 1)
    out.set_sform(img.affine, 1)
    return out


def head_region(data):
    """The head: everything above a tenth of the range, holes filled."""
    return ndimage.binary_fill_holes(ndimage.binary_closing(data > 0.1 * data.max(), iterations=2))


def meaningless_images(img, seed=0):
    """name -> image, each a way a T1w can be no T1w at all (or no longer a whole head)."""
    rng = np.random.default_rng(seed)
    data = np.asarray(img.dataobj, np.float32)
    head = head_region(data)
    block = np.zeros(data.shape, np.float32)
    block[tuple(slice(s // 2, s // 2 + k) for s, k in zip(data.shape, (3, 2, 2)))] = 100.0  # 12 voxels
    half = data.copy()
    half[data.shape[0] // 2 :] = 0  # one hemisphere (and half the skull) cut off
    # T2-like: dark white matter, bright fluid; the head's grey levels inverted inside the head
    t2_like = np.where(head, data.max() - data, 0)
    return {
        "noise": _like(img, rng.normal(100, 30, data.shape).clip(0)),
        "t2like": _like(img, t2_like),
        "binarymask": _like(img, head * 1.0, np.uint8),
        "halfhead": _like(img, half),
        "block": _like(img, block),
        "rotated": _like(img, data[::-1, :, ::-1]),  # 180 degrees about the anterior axis, header unchanged
    }


def cut_short(path, keep_bytes=400):
    """Cut the file at ``path`` to its first bytes, as a full disk or a killed copy leaves it (a .nii.gz
    then ends before its end-of-stream marker)."""
    path.write_bytes(path.read_bytes()[:keep_bytes])
