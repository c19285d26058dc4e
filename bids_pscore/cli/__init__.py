"""The command lines: each parses and checks its options into one configuration (``bids_pscore.config``),
configures the messages, hands over to the logic and turns its errors into documented exit codes."""

import logging
import sys

from ..errors import EXIT_INTERRUPTED, PscoreError
from ..progress import RESULT

# every module logs to a child of the package's logger (logging.getLogger(__name__)), configured here
LOGGER = "bids_pscore"


class _CurrentStdout(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a message comes (pytest swaps it per test)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


class _Format(logging.Formatter):
    def __init__(self, prog):
        super().__init__()
        self.prog = prog

    def format(self, record):
        level = "" if record.levelno in (logging.INFO, RESULT) else f"{record.levelname}: "
        return f"{self.prog}: {level}{record.getMessage()}"


def configure_logging(prog, verbosity):
    """The package's messages on stdout, prefixed by the command's name: warnings and results only
    with -q (verbosity -1), what the run does by default, its details with -v; -vv adds nipype's own."""
    log = logging.getLogger(LOGGER)
    log.handlers = [_CurrentStdout()]
    log.handlers[0].setFormatter(_Format(prog))
    log.handlers[0].setLevel({-1: RESULT, 0: logging.INFO}.get(verbosity, logging.DEBUG))
    # the logger passes everything: a run's debug.log (progress.ConsoleCopy) has every level whatever the console shows
    log.setLevel(logging.DEBUG)
    log.propagate = False


def run_command(prog, run, *args, interrupted="finished steps are kept in the work folder: run the same command again to go on from them"):
    """``run(*args)``'s exit code, or the exit code of the error it raised, told in one line."""
    try:
        return run(*args)
    except PscoreError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (Ctrl-C); {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
