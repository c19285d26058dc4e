"""The reports' pages: Jinja2 templates in ``templates/`` (``base.html`` and one per report),
filled with plain values; every value is escaped."""

from dataclasses import dataclass
from functools import lru_cache

import jinja2

from ..atlas import region_name


@lru_cache(maxsize=1)
def _environment():
    return jinja2.Environment(
        loader=jinja2.PackageLoader("bids_pscore.report", "templates"), autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )


def render(template, **values):
    """The page ``template`` (e.g. "subject.html") filled with ``values``."""
    return _environment().get_template(template).render(**values)


def named_regions(labels):
    """Regions listed by code and full name, or "none"."""
    return ", ".join(region_name(label) for label in labels) or "none"


@dataclass(frozen=True)
class Folded:
    """A table cell that shows ``summary`` and opens to ``details`` (a list that would bury the table)."""

    summary: str
    details: str


def frame_rows(frame, columns, top=None):
    """{"header", "rows"} of a data frame's ``columns`` (its first ``top`` rows), floats to 3 digits,
    a region's code with its full name (the TSV keeps the code alone)."""
    shown = frame[list(columns)] if top is None else frame[list(columns)].head(top)
    shown = shown.assign(label=shown["label"].map(region_name)) if "label" in shown else shown
    rows = [[f"{v:.3g}" if isinstance(v, float) else v for v in row] for row in shown.itertuples(index=False)]
    return {"header": list(columns), "rows": rows}


TRUTH_COLUMNS = ("truth", "called (AD probability)", "right", "flags checked", "flagged and truly atrophied (true loss)",
                 "truly atrophied, not flagged (missed)", "flagged, not truly atrophied (false flags)")  # fmt: skip


# how many missed regions a truth table lists by name
MISSES_LISTED = 8


def truth_cells(session_truth, predicted_class, ad_probability, check, kind):
    """A session's truth beside its result, as TRUTH_COLUMNS (synth.truth.check_flags made ``check``)."""
    from ..synth.truth import called_right

    def listed(regions, at_most=None):
        shown = regions[:at_most]  # largest loss first (synth.truth.check_flags)
        text = ", ".join(f"{region_name(label)}: lost {loss:.0%}" for label, loss in shown) or "none"
        more = len(regions) - len(shown)
        # the misses run to 80 regions or more: the largest, then a count (the truth's regions.tsv has them all)
        return text if not more else f"{len(regions)} regions; the {len(shown)} largest losses: {text}; and {more} more (derivatives/groundtruth)"

    return (session_truth.describe(), f"{predicted_class} ({ad_probability:.2f})", "yes" if called_right(predicted_class, session_truth) else "NO",
            kind, listed(check.hits), listed(check.misses, MISSES_LISTED), listed(check.false_flags))  # fmt: skip


def truth_note():
    from ..synth.truth import ATROPHIED_FROM

    return (f"This dataset was made by bids_pscore-synth: its ground truth (derivatives/groundtruth) says what each session truly is. "
            f"A region counts as truly atrophied when it lost {ATROPHIED_FROM:.0%} or more of its volume (disease, ageing and the "
            "widening of the ventricles together); the flags checked are the normative ones when the model has a normative reference.")  # fmt: skip
