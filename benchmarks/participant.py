"""Full participant level (raw T1w to every derivative and the report) on synthetic sessions.

Usage: python benchmarks/participant.py [--sessions 10] [--model FOLDER]
Prints wall time and peak memory (summed over the whole process tree, sampled every 0.2 s) of one
session with each plugin, then the throughput of ``--sessions`` sessions with MultiProc.
Targets on a 2-core machine: one session <= 20 s (Linear), >= 300 sessions an hour (MultiProc), peak <= 3 GB.
"""

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _tree_rss_bytes(root_pid):
    """Resident memory of a process and all its descendants, from /proc."""
    children, rss = {}, {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        pid = int(status.parent.name)
        children.setdefault(int(fields["PPid"]), []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def measure(cmd):
    """Run a command; returns (wall s, peak GB of its process tree, exit code, output)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss_bytes(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    output = proc.communicate()[0]
    sampler.join()
    return time.perf_counter() - start, peak[0] / 1024**3, proc.returncode, output


def run(bids_dir, plugin, model=None):
    """bids_pscore participant in a child process; returns (wall s, peak GB of the tree, exit code)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "bids_pscore.cli",
            str(bids_dir),
            f"{tmp}/out",
            "participant",
            "-w",
            f"{tmp}/work",
            "--nipype-plugin",
            plugin,
        ] + (["--model", str(model)] if model else [])
        wall, peak, code, output = measure(cmd)
    if code:
        print(output)
    return wall, peak, code


def main():
    from bids_pscore.synth.templateheads import write_dataset

    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--model", type=Path)
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    one = write_dataset(tmp / "one", n_subjects=1, n_sessions=1, seed=7)
    many = write_dataset(tmp / "many", n_subjects=opts.sessions // 2, n_sessions=2, seed=8)
    print(f"{'bids_pscore participant':<34}{'wall s':>8}{'peak GB':>9}{'sessions/h':>12}")
    for plugin in ("Linear", "MultiProc"):
        wall, peak, code = run(one, plugin, opts.model)
        print(f"{'1 session, ' + plugin:<34}{wall:8.1f}{peak:9.2f}{3600 / wall:12.0f}" + (f"  exit {code}" if code else ""))
    n = 2 * (opts.sessions // 2)
    wall, peak, code = run(many, "MultiProc", opts.model)
    print(f"{f'{n} sessions, MultiProc':<34}{wall:8.1f}{peak:9.2f}{3600 * n / wall:12.0f}" + (f"  exit {code}" if code else ""))


if __name__ == "__main__":
    main()
