"""What the input dataset's tables say of its T1w: labels (participants.tsv or sessions.tsv), ages and
sexes, and acquisition times (sessions.tsv, scans.tsv)."""

import logging
from collections import Counter
from pathlib import Path

from .bids import source_entities
from .errors import UsageError

log = logging.getLogger(__name__)


def read_label_table(path):
    """participants.tsv or a sessions.tsv that labels training images: read strictly, since a row
    longer than the header would shift its values under the wrong columns (pandas takes the first as
    an index) and a file that is no table would end training in a traceback."""
    import warnings

    import pandas as pd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read as a TSV table ({str(exc).splitlines()[0]}); write it as BIDS describes: UTF-8 text, "
                         "a header row, one tab-separated value per column in every row") from None  # fmt: skip


def read_labels(bids_dir, column, positive, negative):
    """Labels 1 (``positive``) or 0 (``negative``) from participants.tsv, else from sessions.tsv.

    Returns ({(subject, session or None): label}, a count of the other values, which are left
    out, and the file the labels came from).
    """
    root = Path(bids_dir)
    participants = root / "participants.tsv"
    tables = []
    if participants.is_file():
        table = read_label_table(participants)
        if column in table and "participant_id" in table:
            tables = [(table["participant_id"], None, table[column])]
            source = "participants.tsv"
    if not tables:
        for path in sorted(root.glob("sub-*/sub-*_sessions.tsv")):
            table = read_label_table(path)
            if column in table and "session_id" in table:
                tables.append(([path.name.split("_")[0]] * len(table), table["session_id"], table[column]))
        source = "sessions.tsv"
    if not tables:
        raise UsageError(
            f"{participants}: no column {column!r} there nor in any sub-*/sub-*_sessions.tsv; give --label-column a column that holds the labels"
        )
    labels, left_out = {}, Counter()
    for participants_col, sessions_col, values in tables:
        sessions = sessions_col if sessions_col is not None else [None] * len(values)
        for participant, session, value in zip(participants_col, sessions, values.str.strip()):
            key = (participant.removeprefix("sub-"), session.removeprefix("ses-") if session else None)
            if value in (positive, negative):
                labels[key] = int(value == positive)
            else:
                left_out[value or "n/a"] += 1
    return labels, dict(left_out), source


def ages_and_sexes(bids_dir, t1w_inputs):
    """Age in years (NaN when unknown) and sex (as written, 'n/a' when unknown) of each T1w.

    The age is the session's (``age`` of sub-*/sub-*_sessions.tsv), else the subject's
    (participants.tsv); the sex is the subject's (``sex``, else ``gender``). A file that cannot be
    read gives nothing.
    """
    import pandas as pd

    def read(path):
        try:
            return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False) if path.is_file() else pd.DataFrame()
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            log.warning("%s: cannot be read as a TSV table; its ages and sexes are not used", path)
            return pd.DataFrame()

    def number(text):
        try:
            return float(text)
        except (TypeError, ValueError):
            return float("nan")

    root = Path(bids_dir)
    participants = read(root / "participants.tsv")
    # BIDS names the column "sex"; datasets that call it "gender" (e.g. OpenNeuro's ds002748) are read, and told so
    sex_column = "sex" if "sex" in participants or "gender" not in participants else "gender"
    if sex_column == "gender":
        log.warning("%s: no 'sex' column, so the sex is read from its 'gender' column (BIDS calls it 'sex')", root / "participants.tsv")
    by_subject = {}
    if "participant_id" in participants:
        for _, row in participants.iterrows():
            by_subject[row["participant_id"].removeprefix("sub-")] = (number(row.get("age")), row.get(sex_column) or "n/a")
    ages, sexes, session_ages = [], [], {}
    for t in t1w_inputs:
        sub, ses = t.entities["sub"], t.entities.get("ses")
        if ses is not None and sub not in session_ages:
            table = read(root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv")
            session_ages[sub] = dict(zip(table["session_id"], map(number, table["age"]))) if {"session_id", "age"} <= set(table) else {}
        age, sex = by_subject.get(sub, (float("nan"), "n/a"))
        at_session = session_ages.get(sub, {}).get(f"ses-{ses}", float("nan")) if ses is not None else float("nan")
        ages.append(at_session if at_session == at_session else age)  # NaN != NaN: the subject's age then
        sexes.append(sex)
    return ages, sexes


def utc_timestamp(when):
    """An acq_time as a time-zone-free timestamp in UTC, so that times with and without a zone compare.

    BIDS allows both ``...T10:00:00Z`` and ``...T10:00:00`` (the scanner's local time, zone unknown).
    A time without a zone is taken as UTC: the error is at most a day, under 0.003 years, and
    trajectories are over years.
    """
    import pandas as pd

    stamp = pd.Timestamp(when)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp


def acquisition_times(bids_dir):
    """When each session was acquired: {(sub, ses or None): (timestamp, source file name)}.

    ``acq_time`` of sub-*/sub-*_sessions.tsv first, else of the T1w's row in a scans.tsv; BIDS
    allows both. Sessions with neither are absent.
    """
    import pandas as pd

    def read(path):
        try:
            return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            log.warning("%s: cannot be read as a TSV table (%s); its acq_time is ignored", path, str(exc).splitlines()[0])
            return pd.DataFrame()

    root, times = Path(bids_dir), {}
    for path in sorted(root.glob("sub-*/sub-*_scans.tsv")) + sorted(root.glob("sub-*/ses-*/sub-*_scans.tsv")):
        table = read(path)
        if {"filename", "acq_time"} <= set(table.columns):
            for name, when in zip(table["filename"], table["acq_time"]):
                entities = source_entities(name)
                if name.endswith(("_T1w.nii.gz", "_T1w.nii")) and when not in ("", "n/a"):
                    times.setdefault((entities.get("sub", path.name.split("_")[0][4:]), entities.get("ses")), (when, path))
    for path in sorted(root.glob("sub-*/sub-*_sessions.tsv")):
        table = read(path)
        if {"session_id", "acq_time"} <= set(table.columns):
            for session, when in zip(table["session_id"], table["acq_time"]):
                if when not in ("", "n/a"):
                    times[(path.name.split("_")[0][4:], session.removeprefix("ses-"))] = (when, path)
    parsed = {}
    for key, (when, path) in times.items():
        try:
            parsed[key] = (utc_timestamp(when), "sessions.tsv" if path.name.endswith("_sessions.tsv") else "scans.tsv")
        except ValueError:
            log.warning("%s: acq_time %r is not a date and time (BIDS: YYYY-MM-DDThh:mm:ss); that session is ordered by its label", path, when)
    return parsed
