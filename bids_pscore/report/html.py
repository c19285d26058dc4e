"""The HTML pieces both reports are made of; the page itself is ``templates/page.html``."""

import html
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from string import Template


@lru_cache(maxsize=1)
def _page_template():
    return Template((files("bids_pscore.report") / "templates" / "page.html").read_text())


def page(title, sections):
    """A whole page: ``title`` (plain text) over the ``sections`` (HTML)."""
    return _page_template().substitute(title=html.escape(title), body="\n".join(sections))


def table(rows, header):
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def figure(relpath, caption):
    return (f'<figure><img src="{html.escape(Path(relpath).as_posix())}" alt="{html.escape(caption)}">'
            f'<figcaption class="caption">{html.escape(caption)}</figcaption></figure>')  # fmt: skip


def warning(text):
    return f'<div class="warning">{html.escape(text)}</div>'
