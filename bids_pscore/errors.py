"""Errors a user can cause, each with the exit code the command line documents.

The message of every error is one line that names the file and says what to do.
"""

EXIT_OK = 0
EXIT_SESSION_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_BIDS = 16
EXIT_UNKNOWN_LEVEL = 17
EXIT_NOTHING_SELECTED = 18
EXIT_MODEL = 65
EXIT_NO_T1W = 66
EXIT_OUTPUT_NOT_WRITABLE = 73
# the shell's code for a process ended by SIGINT (128 + 2)
EXIT_INTERRUPTED = 130


def in_one_line(exc):
    """'TypeName: first line of the message' (at most 200 characters of it), for a one-line error."""
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


class PscoreError(Exception):
    """A problem with the user's input; ``exit_code`` is what the command line returns."""

    exit_code = EXIT_USAGE


class UsageError(PscoreError):
    exit_code = EXIT_USAGE


class NotBIDSError(PscoreError):
    exit_code = EXIT_NOT_BIDS


class UnknownLevelError(PscoreError):
    exit_code = EXIT_UNKNOWN_LEVEL


class NothingSelectedError(PscoreError):
    exit_code = EXIT_NOTHING_SELECTED


class NoT1wError(PscoreError):
    exit_code = EXIT_NO_T1W


class OutputNotWritableError(PscoreError):
    exit_code = EXIT_OUTPUT_NOT_WRITABLE


class ModelError(PscoreError):
    """The model bundle given with --model cannot be used."""

    exit_code = EXIT_MODEL


class InputImageError(PscoreError):
    """One T1w image cannot be used; only its session fails (exit code 1 overall)."""

    exit_code = EXIT_SESSION_FAILED


class TrainingError(PscoreError):
    """Training ran but its result cannot make a model (e.g. it never recognised an AD image)."""

    exit_code = EXIT_SESSION_FAILED
