"""Atomic writes: a killed run never leaves a half-written output file.

Every output is written to a temporary name in the destination folder, synced to disk, then
renamed, which is atomic on POSIX file systems.
"""

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputNotWritableError

# a full disk, a quota, a read-only mount or missing permissions: the user's to fix, not a bug
NOT_WRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def current_umask():
    """The process's umask; reading it means setting it, so it is put back at once (0o077 meanwhile:
    a file another thread creates in that instant is private rather than world-writable)."""
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def sync_data(path):
    """Flush a file's data to disk, so that a crash after its rename cannot leave it empty."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # keep the full suffix (.nii.gz) so that writers that infer the format from it work
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix="".join(path.suffixes))
        os.close(fd)
        yield Path(tmp)
        # mkstemp made it 0600: give it what a plain create would, so the user's umask decides who reads it
        os.chmod(tmp, 0o666 & ~current_umask())
        sync_data(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno not in NOT_WRITABLE:
            raise
        raise OutputNotWritableError(f"{path}: cannot be written ({exc.strerror}); free space there, or give a folder "
                                     "that can be written") from None  # fmt: skip
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_tsv(path, frame, float_format=None):
    """A data frame as a BIDS TSV table: tabs, no index, 'n/a' for missing values."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format=float_format)


def copy_file(src, dst):
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def write_nifti(path, img):
    with atomic_path(path) as tmp:
        img.to_filename(tmp)
