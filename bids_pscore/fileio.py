"""Atomic writes: a killed run never leaves a half-written output file.

Every output is written to a temporary name in the destination folder, synced to disk, then
renamed, which is atomic on POSIX file systems. A run killed by a signal it cannot catch (kill -9,
a node that fails) leaves its temporary file behind: the next run removes it
(``remove_stale_temporaries``).
"""

import errno
import filecmp
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputNotWritableError

log = logging.getLogger(__name__)

# a full disk, a quota, a read-only mount or missing permissions: the user's to fix, not a bug
NOT_WRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}

# A temporary file is named ".writing-<host>-<pid>-<random>.<name>" beside its destination: it ends
# with the name, so that writers that infer the format from the suffix (.nii.gz) work, and it names
# its writer, so that a later run can tell a file still being written (jobs on several hosts may
# share an output folder) from one that a killed run left.
HOST = re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname())
TEMPORARY_NAME = re.compile(r"\.writing-(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-[a-z0-9_]+\.(?P<name>.+)")
# a write takes seconds: a temporary file untouched this long is no write in progress, whichever
# host made it (another host's processes cannot be asked whether they still run)
STALE_AFTER_S = 3600


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
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success, and only if
    ``path`` does not already hold the same bytes."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".writing-{HOST}-{os.getpid()}-", suffix=f".{path.name}")
        os.close(fd)
        yield Path(tmp)
        # the same bytes again (a dataset or an output made again in place): the file and its time stay as they
        # were, so that what was computed from it (nipype hashes its inputs by time) is still valid
        if path.is_file() and filecmp.cmp(tmp, path, shallow=False):
            return
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


def process_runs(pid):
    """Whether a process of this host has the id ``pid`` (another user's included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_stale_temporaries(folder):
    """Remove the temporary files that killed runs left under ``folder``: those whose writer on this
    host no longer runs, and any untouched for STALE_AFTER_S. Another job's write in progress keeps
    its file. Hidden folders are not searched (nothing is written there). Returns how many went."""
    removed = 0
    for root, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            writer = TEMPORARY_NAME.fullmatch(name)
            if writer is None:
                continue
            path = Path(root) / name
            try:
                if (writer["host"] == HOST and not process_runs(int(writer["pid"]))) or time.time() - path.stat().st_mtime > STALE_AFTER_S:
                    path.unlink()
                    removed += 1
            except OSError:  # gone meanwhile (another job's sweep), or not ours to remove: the run goes on
                continue
    if removed:
        log.info("removed %d temporary file(s) that killed runs left in %s", removed, folder)
    return removed


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
