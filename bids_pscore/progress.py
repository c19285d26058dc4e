"""Progress a user can follow: one line per T1w and step, then a summary table."""

import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# the log level of a run's results (each T1w's scores, where the reports are): shown with -q too
RESULT = logging.INFO + 5
logging.addLevelName(RESULT, "RESULT")


def _fmt_seconds(seconds):
    return f"{seconds:6.1f}s" if seconds < 600 else f"{seconds / 60:6.1f}m"


@dataclass
class Outcome:
    label: str
    status: str = "not run"
    seconds: float = 0.0
    failed_step: str = ""
    message: str = ""
    log: str = ""
    steps: dict = field(default_factory=dict)
    reused: set = field(default_factory=set)  # the steps whose results came from the work folder's cache
    not_drawn: dict = field(default_factory=dict)  # {step: why it drew nothing}: a step that went through without its figures


def _not_drawn(node):
    """A finished step's ``not_drawn`` output (the figures node's: why it drew no figure), empty where it has none."""
    spec = getattr(getattr(node, "interface", None), "output_spec", None)
    if spec is None or "not_drawn" not in spec.class_trait_names():
        return ""
    try:
        return node.result.outputs.not_drawn or ""
    except Exception:  # noqa: BLE001 - its result cannot be read: the report draws the figures it misses anyway
        return ""


class Progress:
    """A nipype ``status_callback``: prints each finished step with the elapsed time.

    ``labels`` maps the identifier used in node names (``T1wInput.ident``) to the label
    shown to the user (``T1wInput.label``).
    """

    def __init__(self, labels, stream=None, quiet=False):
        self.start = time.monotonic()
        self.started_at = time.time()
        self.stream = stream or sys.stdout
        # -q: failures only
        self.quiet = quiet
        self.outcomes = {ident: Outcome(label) for ident, label in labels.items()}
        self._began = {}
        # set on Ctrl-C (app.stopped_by_ctrl_c): nipype swallows the interrupt inside a step
        self.interrupted = False
        # node full names look like '<top>.<ident>_wf.n4', '<top>.<ident>_sink' or '<top>.<ident>_scoring_wf.scoring'
        # (<top>: workflow_name())
        self._ident = re.compile(r"\.(" + "|".join(map(re.escape, sorted(labels, key=len, reverse=True))) + r")_(wf|sink|scoring_wf)\b")

    def _which(self, node):
        found = self._ident.search("." + node.fullname)
        return found.group(1) if found else None

    def __call__(self, node, status):
        if self.interrupted:
            raise KeyboardInterrupt
        now = time.monotonic()
        if status == "start":
            self._began[node.fullname] = now
            return
        ident = self._which(node)
        if node.fullname not in self._began and ident and self.outcomes[ident].status == "failed":
            # nipype's Linear plugin reports the steps it skips after a failure as ended, unstarted
            # (MultiProc ends cached steps and the sink unstarted too, but those did run)
            return
        took = now - self._began.pop(node.fullname, now)
        label = self.outcomes[ident].label if ident else "all T1w"
        step = "derivatives" if node.name.endswith("_sink") else node.name
        if status != "end":
            word = f"FAILED ({took:.1f} s)"
        elif self._reused(node):
            word = "reused from the work folder"
            if ident:
                self.outcomes[ident].reused.add(step)
        else:
            word = f"done ({took:.1f} s)"
        if status != "end" or not self.quiet:
            print(f"[{_fmt_seconds(now - self.start)}] {label:<28} {step:<12} {word}", file=self.stream, flush=True)
        if ident:
            outcome = self.outcomes[ident]
            outcome.steps[step] = took
            outcome.seconds += took
            if status == "end" and (reason := _not_drawn(node)):
                outcome.not_drawn[step] = reason
            if status != "end":
                outcome.status = "failed"
                outcome.failed_step = step
            elif step == "derivatives" and outcome.status != "failed":
                outcome.status = "ok"

    def _reused(self, node):
        """Whether nipype took the step's result from an earlier run: the run its result records began before
        this run (nipype rewrites the result only when the step runs). Where it cannot be read, its file's
        time says it, with a second's margin, as file times lag the clock by a tick."""
        from datetime import UTC, datetime

        try:
            began = datetime.fromisoformat(node.result.runtime.startTime)
            return (began if began.tzinfo else began.replace(tzinfo=UTC)).timestamp() < self.started_at
        except Exception:  # noqa: BLE001 - no result, or one nipype wrote otherwise: the file's time
            pass
        try:
            return (Path(node.output_dir()) / f"result_{node.name}.pklz").stat().st_mtime < self.started_at - 1
        except OSError:
            return False

    def refuse(self, ident, step, message):
        """A T1w that fails before the workflow starts (e.g. its file cannot be read)."""
        outcome = self.outcomes[ident]
        outcome.status, outcome.failed_step, outcome.message = "failed", step, message
        print(f"[{_fmt_seconds(time.monotonic() - self.start)}] {outcome.label:<28} {step:<12} FAILED: {message}",
              file=self.stream, flush=True)  # fmt: skip

    def attach_crash_logs(self, crash_dir):
        """Give each failed T1w the crash file nipype wrote and the error's own message."""
        for crash in sorted(Path(crash_dir).glob("crash-*.txt")):
            text = crash.read_text(errors="replace")
            node_line = next((line for line in text.splitlines() if line.startswith("Node: ")), "")
            found = self._ident.search("." + node_line[len("Node: ") :].strip())
            if not found:
                continue
            outcome = self.outcomes[found.group(1)]
            if outcome.status == "failed" and not outcome.log:
                outcome.log = str(crash)
                outcome.message = error_message(text)

    def summary(self):
        """The final table, as text."""
        rows = [("T1w", "status", "time", "failed step", "error / log")]
        for o in self.outcomes.values():
            detail = f"{o.message}  [log: {o.log}]" if o.log else o.message
            rows.append((o.label, o.status, f"{o.seconds:.1f} s", o.failed_step or "-", detail or "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
        n_ok = sum(o.status == "ok" for o in self.outcomes.values())
        lines.append(f"{n_ok} of {len(self.outcomes)} T1w done in {time.monotonic() - self.start:.1f} s")
        return "\n".join(lines)

    @property
    def failed(self):
        return [o for o in self.outcomes.values() if o.status != "ok"]


class _DebugCopy(logging.Handler):
    """Every message of the package, debug ones included, with its time and module; held until the
    log folder exists (``ConsoleCopy.keep_in``)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.held, self.file = [], None

    def emit(self, record):
        text = self.format(record) + "\n"
        if self.file is None:
            self.held.append(text)
        else:
            self.file.write(text)
            self.file.flush()


class ConsoleCopy:
    """What a run prints, also kept in its log folder (``logs/run-*/console.log``): a cluster job's
    output file is often lost, and the run's lines are its only account. Lines printed before the
    folder exists are held and written first. Beside it, ``debug.log`` has every message of the
    package at debug level whatever the run's verbosity, to read after a run that went wrong."""

    def __init__(self):
        self.console, self.held, self.file = sys.stdout, [], None
        self.debug = _DebugCopy()

    def write(self, text):
        self.console.write(text)
        if self.file is None:
            self.held.append(text)
        else:
            self.file.write(text)
        return len(text)

    def flush(self):
        self.console.flush()
        if self.file is not None:
            self.file.flush()

    def keep_in(self, path):
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open until the run ends (close)
        self.file.write("".join(self.held))
        self.held = []
        self.debug.file = open(Path(path).with_name("debug.log"), "a", encoding="utf-8")  # noqa: SIM115 - as above
        self.debug.file.write("".join(self.debug.held))
        self.debug.held = []

    def __getattr__(self, name):  # fileno, isatty, encoding: the console's
        return getattr(self.console, name)

    def __enter__(self):
        sys.stdout = self
        logging.getLogger(__package__).addHandler(self.debug)
        return self

    def __exit__(self, *exc):
        sys.stdout = self.console
        logging.getLogger(__package__).removeHandler(self.debug)
        for file in (self.file, self.debug.file):
            if file is not None:
                file.close()


def error_message(crash_text):
    """The last 'SomeError: message' line of a traceback, without the exception's module path."""
    for line in reversed(crash_text.splitlines()):
        found = re.match(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$", line)
        if found:
            return f"{found.group(1)}: {found.group(2).strip()}"
    return "see the log"
