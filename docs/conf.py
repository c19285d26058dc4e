"""Sphinx configuration of the documentation site: MyST Markdown, the built-in theme, nothing fetched.

The site must build offline and without importing bids_pscore (or torch): no autodoc, no intersphinx.
"""

project = "bids_pscore"
author = "bids_pscore developers"
copyright = "bids_pscore developers"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# in-page links such as (#quality-gate) and cross-page ones such as (usage.md#exit-codes) need
# anchors on headings; three levels cover every heading the pages link to
myst_heading_anchors = 3
# a broken reference is a warning, and the build (-W) fails on it
nitpicky = True

html_theme = "alabaster"
html_title = "bids_pscore"
