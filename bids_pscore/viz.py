"""Figures of the reports, drawn with matplotlib from arrays on the grid (PNG files).

Slices are shown in neurological convention (the subject's left on the left) and labelled so.
Plain matplotlib rather than nilearn's plotting, and every mosaic on one axes: a session's five
figures take well under a second this way, which matters when a session's whole budget is 45 s.
"""

import matplotlib

matplotlib.use("Agg")  # reports are drawn on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .fileio import atomic_path  # noqa: E402
from .grid import GRID_AFFINE  # noqa: E402

# where the mosaics cut: MNI mm (axial z, coronal y), through the temporal lobes and the cortex
AXIAL_MM = (-30, -18, -6, 6, 18, 30, 42, 54)
CORONAL_MM = (-60, -36, -20, -6, 8, 24, 40, 56)
DPI = 72


def _index(axis, mm):
    return int(round((mm - GRID_AFFINE[axis, 3]) / GRID_AFFINE[axis, axis]))


def grid_cuts():
    """The cuts of every mosaic on the grid: [(view, voxel index, label)], coronal then axial."""
    return [("coronal", _index(1, mm), f"y = {mm} mm") for mm in CORONAL_MM] + [("axial", _index(2, mm), f"z = {mm} mm") for mm in AXIAL_MM]


def cuts_through(mask, n=8):
    """``n`` coronal and ``n`` axial cuts spread over a RAS+ mask's extent (10% to 90%), for
    images off the grid."""
    where = np.nonzero(mask)
    cuts = []
    for view, axis in (("coronal", 1), ("axial", 2)):
        low, high = int(where[axis].min()), int(where[axis].max())
        for k in np.linspace(low + 0.1 * (high - low), low + 0.9 * (high - low), n).round().astype(int):
            cuts.append((view, int(k), f"{view} slice {k}"))
    return cuts


def _slice(volume, view, index, left_first):
    """A 2-D slice with rows bottom-to-top (inferior or posterior first), left hemisphere on the left.

    ``left_first``: the volume's first axis runs from left to right (RAS+); the grid's runs from
    right to left (negative voxel size), so its planes are reversed.
    """
    plane = volume[:, :, index] if view == "axial" else volume[:, index, :]
    return (plane if left_first else plane[::-1]).T


def _canvas(volume, cuts, left_first):
    """The cuts of ``volume`` on one 2-D canvas: coronal cuts on the bottom row, axial on top
    (rows run upwards), each panel followed by a one-voxel gap so that contours stay apart.
    Returns the canvas and each panel's (label, column start, row start, width, height)."""
    rows, panels, row_start = [], [], 0
    for view in ("coronal", "axial"):
        chosen = [(index, label) for v, index, label in cuts if v == view]
        cut = [_slice(volume, view, index, left_first) for index, _ in chosen]
        height = max(c.shape[0] for c in cut) + 1
        column = 0
        for (_, label), c in zip(chosen, cut):
            panels.append((label, column, row_start, c.shape[1], c.shape[0]))
            column += c.shape[1] + 1
        rows.append(np.concatenate([np.pad(c, ((0, height - c.shape[0]), (0, 1))) for c in cut], axis=1))
        row_start += height
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]))) for r in rows]), panels


def score_scale(values, limit):
    """How a score map is coloured up to ``limit``: (cmap, vmin, vmax, factor, unit, words).

    Diverging around 0 only when some value is negative, else from 0 (a diverging scale over an
    all-positive map shows half a scale that nothing uses). Values below 0.01 are shown multiplied
    by ``factor``, a power of ten in steps of three, and ``unit`` names it ("x 1e-6"), so the colour
    bar reads 0 to 37 rather than 0 to 0.000037.
    """
    exponent = int(np.floor(np.log10(limit) / 3) * 3) if limit < 0.01 else 0
    factor, unit = 10.0**-exponent, f" (x 1e{exponent})" if exponent else ""
    if np.min(values) < 0:
        return "coolwarm", -limit * factor, limit * factor, factor, unit, "blue negative, red positive"
    return "hot", 0.0, limit * factor, factor, unit, "all values are positive here, brighter is higher"


def mosaic(path, background, overlay=None, contour=None, outline=None, cmap="hot", vmin=None, vmax=None,
           title="", colorbar_label="", cuts=None, left_first=False, contour_colour="red"):  # fmt: skip
    """Axial and coronal slices of ``background`` with an optional overlay and contours; saved as PNG.

    ``overlay`` is drawn where it is non-zero; ``contour`` (bool volume) in ``contour_colour`` and ``outline``
    (a volume and a level) in cyan. All sixteen cuts share one axes (one image per layer): a grid
    of sixteen axes took five times as long to draw. ``cuts`` default to the grid's
    (``grid_cuts``); ``left_first`` says how the volume's first axis runs (see ``_slice``).
    """
    cuts = cuts or grid_cuts()
    canvas, panels = _canvas(background, cuts, left_first)
    inches = 2.0 * len(AXIAL_MM)
    fig, ax = plt.subplots(figsize=(inches, inches * 0.9 * canvas.shape[0] / canvas.shape[1] + 0.4), facecolor="black")
    fig.subplots_adjust(left=0.01, right=0.91 if overlay is not None else 0.99, bottom=0.01, top=0.88)
    ax.imshow(canvas, cmap="gray", origin="lower", vmin=0, vmax=np.percentile(background, 99.5) or 1.0)
    image = None
    if overlay is not None:
        layer = _canvas(overlay, cuts, left_first)[0]
        image = ax.imshow(np.ma.masked_where(layer == 0, layer), cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", alpha=0.85)
    if contour is not None and np.any(contour):
        ax.contour(_canvas(np.asarray(contour, float), cuts, left_first)[0], levels=[0.5], colors=contour_colour, linewidths=0.8)
    if outline is not None:
        volume, level = outline
        ax.contour(_canvas(volume, cuts, left_first)[0], levels=[level], colors="cyan", linewidths=0.6)
    for label, column, row, width, height in panels:
        ax.text(column + width / 2, row + height, label, color="white", fontsize=8, ha="center", va="bottom")
    top_row = max(p[2] for p in panels)
    ax.text(2, top_row + 2, "L", color="white", fontsize=9)
    ax.text(canvas.shape[1] - 8, top_row + 2, "R", color="white", fontsize=9)
    ax.set_axis_off()
    if image is not None:
        bar = fig.colorbar(image, ax=ax, fraction=0.015, pad=0.01)
        bar.set_label(colorbar_label, color="white")
        bar.ax.yaxis.set_tick_params(color="white", labelcolor="white")
    fig.suptitle(title, color="white", fontsize=10)
    _save(fig, path)


def ranked_bars(path, labels, values, xlabel, lambda_=None, top=25, title=""):
    """The ``top`` regions by value as bars; with ``lambda_``, a line there and the bars above it in red."""
    values = np.asarray(values, float)
    order = np.argsort(values, kind="stable")[::-1][:top][::-1]
    shown = np.asarray(labels)[order]
    # margins from the longest label (under 0.05 in a character at size 7) rather than tight_layout,
    # which measured every label's text and took a quarter of the figure's time
    label_inches = 0.05 * max((len(label) for label in shown), default=0) + 0.15
    width, height = 4.8 + label_inches, 0.22 * len(order) + 1.2
    fig, ax = plt.subplots(figsize=(width, height))
    fig.subplots_adjust(left=label_inches / width, right=1 - 0.2 / width, bottom=0.55 / height, top=1 - 0.35 / height)
    above = values[order] > (lambda_ if lambda_ is not None else np.inf)
    ax.barh(np.arange(len(order)), values[order], color=np.where(above, "#c0392b", "#7f8c8d"))
    if lambda_ is not None:
        ax.axvline(lambda_, color="black", linestyle="--", linewidth=1)
        ax.text(lambda_, len(order) - 0.3, f"lambda = {lambda_:.2f} ", fontsize=8, va="bottom", ha="right")  # left of the line: inside the axes
    ax.set_yticks(np.arange(len(order)), shown, fontsize=7)
    ax.set_xlim(0, max(1.05, (lambda_ or 0) + 0.15))  # keep lambda in view even above 1
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def _save(fig, path):
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=DPI, format="png", facecolor=fig.get_facecolor())
    finally:
        plt.close(fig)


def by_group(path, values, groups, ylabel, title=""):
    """One box with the points of each group (e.g. predicted class)."""
    names = sorted(set(groups))
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.6))
    data = [np.asarray(values)[np.asarray(groups) == n] for n in names]
    ax.boxplot(data, showfliers=False)
    rng = np.random.default_rng(0)  # jitter only, the same on every run
    for i, d in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=10, alpha=0.6)
    ax.set_xticks(range(1, len(names) + 1), [f"{n} ({len(d)})" for n, d in zip(names, data)])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def trajectories(path, panels, xlabel, flag_cutoff, ylabel="normalised region P-score"):
    """Small multiples: for each (title, [(x, y), ...]) one panel with a line per subject and the cut-off the flags cross (``flag_cutoff``)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), sharey=True, squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels):
        for x, y in lines:
            ax.plot(x, y, marker="o", markersize=2, linewidth=0.8, alpha=0.6)
        ax.axhline(flag_cutoff, color="black", linestyle="--", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel(ylabel)
    fig.tight_layout()
    _save(fig, path)


def onset_dots(path, labels, median, counts, unit, top=30):
    """Regions in their order of involvement: median onset, with the number of subjects behind it."""
    n = min(top, len(labels))
    fig, ax = plt.subplots(figsize=(7, 0.22 * n + 1.2))
    y = np.arange(n)[::-1]
    ax.scatter(np.asarray(median)[:n], y, color="#c0392b")
    for yi, x, c in zip(y, np.asarray(median)[:n], np.asarray(counts)[:n]):
        ax.text(x, yi, f"  n={c}", fontsize=7, va="center")
    ax.set_yticks(y, np.asarray(labels)[:n], fontsize=7)
    ax.set_xlabel(f"median onset ({unit}s after the subject's first session; 0 = already involved)")
    ax.set_title("order of involvement", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
