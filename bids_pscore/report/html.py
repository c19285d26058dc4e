"""The reports' pages: Jinja2 templates in ``templates/`` (``base.html`` and one per report),
filled with plain values; every value is escaped."""

from functools import lru_cache

import jinja2


@lru_cache(maxsize=1)
def _environment():
    return jinja2.Environment(
        loader=jinja2.PackageLoader("bids_pscore.report", "templates"), autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )


def render(template, **values):
    """The page ``template`` (e.g. "subject.html") filled with ``values``."""
    return _environment().get_template(template).render(**values)


def frame_rows(frame, columns, top=None):
    """{"header", "rows"} of a data frame's ``columns`` (its first ``top`` rows), floats to 3 digits."""
    shown = frame[list(columns)] if top is None else frame[list(columns)].head(top)
    rows = [[f"{v:.3g}" if isinstance(v, float) else v for v in row] for row in shown.itertuples(index=False)]
    return {"header": list(columns), "rows": rows}
