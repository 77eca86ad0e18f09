"""The look shared by every figure of the project (ablation and theory reports).

One theme (:func:`theme`: seaborn's ``whitegrid`` style and ``paper`` context with a few
project settings), one headless figure factory (:func:`new_figure`: a
:class:`matplotlib.figure.Figure` on the Agg canvas, never ``pyplot``, so nothing global is
registered or left open) and stable colours: a variant id always gets the same colour, in
every figure, whatever other variants are drawn with it (:func:`variant_color`); a verdict
always gets the same colour (:func:`verdict_color`).

Drawing functions run under the theme with :func:`themed`::

    @themed
    def plot_x(table, ...) -> Figure:
        fig, axes = new_figure(1, 1, 5, 3.5)
        ...

seaborn and matplotlib are imported inside the functions (DESIGN.md principle 12).
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from collections.abc import Callable, Iterable
from typing import TypeVar

__all__ = ["theme", "themed", "new_figure", "variant_color", "variant_colors", "level_colors",
           "verdict_color", "VERDICT_COLORS", "BASELINE_COLOR", "REFERENCE_COLOR"]

F = TypeVar("F", bound=Callable)

#: Project settings laid over seaborn's whitegrid/paper theme.
_OVERRIDES: dict = {
    "axes.edgecolor": ".35",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10.5,
    "axes.titlelocation": "center",
    "figure.titlesize": 12,
    "grid.color": ".9",
    "legend.frameon": False,
    "xtick.bottom": True,
    "ytick.left": True,
    "figure.dpi": 100,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.bbox": "tight",
}

#: AdamW, the reference of every comparison: dark grey in every figure.
BASELINE_COLOR = "#3b3b3b"
#: Thin reference lines (targets, zero lines, the paired-seed joins).
REFERENCE_COLOR = "#8c8c8c"

#: Colour of each verdict family in forest plots (matched by prefix of the verdict text).
VERDICT_COLORS: dict[str, str] = {
    "better": "#1a9850",
    "worse": "#d73027",
    "equivalent": "#4575b4",
    "higher": "#762a83",
    "lower": "#762a83",
    "no detectable difference": "#7f7f7f",
}

# Perturbation families (DESIGN.md's variant ids) and their hue; colourblind-safe base
# (seaborn "colorblind") plus darker picks where that palette is too light for thin lines.
_FAMILY_COLORS = {
    "sin": "#0173b2", "cos": "#de8f05", "taylor": "#029e73", "circuit": "#d55e00",
    "gauss": "#cc78bc", "unif": "#a0652e", "anneal": "#56b4e9", "anti": "#b8a000",
    "sinnorm": "#6a51a3", "moment": "#c51b7d",
}
_HASH_COLORS = tuple(_FAMILY_COLORS.values())
_VARIANT_ID = re.compile(r"^(?P<family>[a-z]+)(?:-l(?P<lam>\d+(?:\.\d+)?(?:e-?\d+)?))?"
                         r"(?P<suffix>-.+)?$")


def theme() -> dict:
    """rcParams of the project theme: seaborn ``whitegrid`` + ``paper`` context (font scale
    1.15) with :data:`_OVERRIDES`. Apply locally, ``with matplotlib.rc_context(theme()):``,
    or through :func:`themed`; never globally."""
    import seaborn as sns

    rc = dict(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("paper", font_scale=1.15))
    rc.update(_OVERRIDES)
    return rc


def themed(fn: F) -> F:
    """Decorator: run a drawing function under :func:`theme` (rcParams are read when artists
    are created, so the figure keeps the theme after the context ends)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib as mpl

        with mpl.rc_context(theme()):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(nrows: int, ncols: int, width: float, height: float, **subplot_kw):
    """A constrained-layout :class:`~matplotlib.figure.Figure` on the Agg canvas and its
    axes as a 2-D array (``squeeze=False``).

    Args:
        nrows, ncols: the grid of axes.
        width, height: figure size in inches.
        **subplot_kw: passed to :meth:`Figure.subplots` (sharex, sharey, gridspec_kw, ...).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def _mix(color: str, other: str, amount: float) -> str:
    from matplotlib.colors import to_hex, to_rgb

    a, b = to_rgb(color), to_rgb(other)
    return to_hex(tuple((1 - amount) * x + amount * y for x, y in zip(a, b, strict=True)))


def variant_color(variant: str) -> str:
    """The colour of one variant id, a function of the id alone.

    The family (``sin`` of ``sin-l0.5``) picks the hue (unknown families: a fixed hash of the
    name into the same palette); the weight λ picks the shade: λ = 0.5 is the family's colour,
    smaller λ lighter (up to 55 % white at λ ≤ 0.016), larger λ darker (up to 35 % black at
    λ ≥ 5); a suffix (``-first4``) darkens by a further 35 %. ``adamw`` is
    :data:`BASELINE_COLOR`.
    """
    v = str(variant)
    if v == "adamw":
        return BASELINE_COLOR
    m = _VARIANT_ID.match(v)
    family = m.group("family") if m else v
    color = _FAMILY_COLORS.get(family)
    if color is None:
        color = _HASH_COLORS[zlib.crc32(family.encode()) % len(_HASH_COLORS)]
    lam = m.group("lam") if m else None
    if lam is not None and float(lam) > 0:
        s = math.log10(float(lam) / 0.5)
        color = (_mix(color, "#ffffff", min(0.55, -0.37 * s)) if s < 0
                 else _mix(color, "#000000", min(0.35, 0.35 * s)))
    if m and m.group("suffix"):
        color = _mix(color, "#000000", 0.35)
    return color


def variant_colors(variants: Iterable[str]) -> dict[str, str]:
    """``{variant id: colour}`` by :func:`variant_color` (stable across figures)."""
    return {str(v): variant_color(str(v)) for v in variants}


def level_colors(levels: Iterable) -> dict[str, str]:
    """Colours for the levels of a non-variant factor (attention, perturbation family),
    from seaborn's ``colorblind`` palette in sorted order of the levels."""
    import seaborn as sns

    names = sorted({str(v) for v in levels})
    pal = sns.color_palette("colorblind", max(len(names), 1)).as_hex()
    return {n: pal[i % len(pal)] for i, n in enumerate(names)}


def verdict_color(verdict: str) -> str:
    """The colour of a verdict text, by prefix ("equivalent within ±0.01" → equivalent);
    unknown verdicts get the "no detectable difference" grey."""
    v = str(verdict)
    for key, color in VERDICT_COLORS.items():
        if v.startswith(key):
            return color
    return VERDICT_COLORS["no detectable difference"]
