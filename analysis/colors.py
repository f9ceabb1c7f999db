"""Colours and markers of the report's figures: one per configuration, each visible on white.

A line, a marker or a dot is a graphical object, so its colour must reach WCAG 2.1's
non-text contrast of 3:1 against the white page (SC 1.4.11; contrast ratio from the sRGB
relative luminance, WCAG 2's definition). seaborn's ``colorblind`` palette is the base; its
colours below 3:1 (orange, tan, pink, yellow, sky blue) are darkened in their own hue and
saturation until they reach it (``visible``), so yellow becomes olive rather than
disappearing. The configurations of one family along an ordered axis (K, width, depth) get a
ramp of the family's hue evenly spaced in perceived lightness (CIE L*) from the lightest
visible shade to a dark one, so that neighbours stay apart and none fades into the page.
"""

from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np

from analysis.load import natural_key

__all__ = ["MIN_CONTRAST", "COLORBLIND", "MARKERS", "contrast_on_white", "visible", "palette",
           "method_colors", "config_colors", "config_markers"]

#: WCAG 2.1 non-text contrast (SC 1.4.11): lines, markers and dots against the white page.
MIN_CONTRAST = 3.0
#: seaborn's "colorblind" palette, in its order (before ``visible``).
COLORBLIND = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4",
              "#949494", "#ece133", "#56b4e9")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
# perceived lightness (CIE L*) of a family's ramp: lightest (just visible) and darkest
_RAMP_DARK_L = 25.0


def _rgb(color) -> tuple[float, float, float]:
    if isinstance(color, str):
        color = color.lstrip("#")
        return tuple(int(color[i:i + 2], 16) / 255 for i in (0, 2, 4))
    return tuple(float(v) for v in color[:3])


def relative_luminance(color) -> float:
    """WCAG 2's relative luminance of an sRGB colour (0 black, 1 white)."""
    c = np.asarray(_rgb(color))
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(lin @ np.array([0.2126, 0.7152, 0.0722]))


def contrast_on_white(color) -> float:
    """WCAG 2's contrast ratio of ``color`` against white: 1 (white) to 21 (black)."""
    return 1.05 / (relative_luminance(color) + 0.05)


def _lightness_star(color) -> float:
    y = relative_luminance(color)
    return 116 * y ** (1 / 3) - 16 if y > (6 / 29) ** 3 else y * (29 / 3) ** 3


def _at(color, hls_light: float) -> tuple:
    h, _, s = colorsys.rgb_to_hls(*_rgb(color))
    return tuple(float(v) for v in np.clip(colorsys.hls_to_rgb(h, hls_light, s), 0, 1))


def _darkest_with(color, ok) -> tuple:
    """``color``'s hue and saturation at the highest HLS lightness for which ``ok(rgb)``
    holds (luminance grows with HLS lightness at a fixed hue and saturation)."""
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(_at(color, mid)) else (lo, mid)
    return _at(color, lo)


def visible(color, minimum: float = MIN_CONTRAST) -> tuple:
    """``color`` as it is when its contrast on white reaches ``minimum``, else its own hue
    and saturation darkened just enough to reach it."""
    rgb = _rgb(color)
    if contrast_on_white(rgb) >= minimum:
        return rgb
    return _darkest_with(rgb, lambda c: contrast_on_white(c) >= minimum + 1e-3)


def palette(n: int) -> list[tuple]:
    """``n`` qualitative colours, all visible on white: ``COLORBLIND`` for up to 10, else
    ``n`` evenly spaced hues."""
    if n <= len(COLORBLIND):
        return [visible(c) for c in COLORBLIND[:n]]
    return [visible(colorsys.hls_to_rgb(i / n, 0.45, 0.75)) for i in range(n)]


def _ramp(base, n: int) -> list[tuple]:
    """``n`` shades of ``base``'s hue, light to dark, evenly spaced in CIE L* from the
    lightest visible on white to L* 25."""
    top = _lightness_star(_darkest_with(base, lambda c: contrast_on_white(c) >= MIN_CONTRAST + 1e-3))
    return [_darkest_with(base, lambda c, t=t: _lightness_star(c) <= t)
            for t in np.linspace(top, _RAMP_DARK_L, n)]


def method_colors(methods: Sequence[str]) -> dict[str, tuple]:
    """A stable colour per method (``palette``)."""
    methods = list(dict.fromkeys(methods))
    return dict(zip(methods, palette(len(methods))))


def config_colors(configs: Sequence[tuple[str, str]]) -> dict[str, tuple]:
    """One colour per configuration label, fixed for a whole report.

    Args:
        configs: ``(label, family)`` pairs (duplicates allowed), e.g. ``("floq (K=4)",
            "fql:floq")``; family-level labels (no ``(...)``, e.g. ``"floq"`` as a line on a
            K axis) get the family's base colour (``palette``), the others of a family a
            sequential ramp of its hue ordered by ``natural_key``, light (first) to dark
            (last), evenly spaced in CIE L* (a single one gets the base colour, or a darker
            shade beside a family-level label).
    Returns:
        ``{label: rgb}``, every colour at least ``MIN_CONTRAST``:1 on white; labels in
        several families keep their first family's colour.
    """
    fam_of: dict[str, str] = {}
    for label, fam in configs:
        fam_of.setdefault(str(label), str(fam))
    families = sorted(dict.fromkeys(fam_of.values()), key=natural_key)
    out: dict[str, tuple] = {}
    for fam, base in zip(families, palette(len(families))):
        labels = sorted((lab for lab, f in fam_of.items() if f == fam), key=natural_key)
        plain = [lab for lab in labels if "(" not in lab]
        ordered = [lab for lab in labels if "(" in lab]
        for lab in plain:
            out[lab] = base
        if len(ordered) == 1:
            out[ordered[0]] = base if not plain else tuple(float(v) * 0.615 for v in base)
        elif ordered:
            out.update(zip(ordered, _ramp(base, len(ordered))))
    return out


def config_markers(labels: Sequence[str]) -> dict[str, str]:
    """One marker per label: family-level labels (no ``(...)``) a circle; the
    configurations of a family (labels sharing the text before ``(``) cycle through
    ``MARKERS`` in natural order, so neighbouring K values differ in shape as well as
    shade."""
    out: dict[str, str] = {}
    labels = sorted(dict.fromkeys(map(str, labels)), key=natural_key)
    by_family: dict[str, list[str]] = {}
    for lab in labels:
        if "(" not in lab:
            out[lab] = "o"
        else:
            by_family.setdefault(lab.split("(", 1)[0].strip(), []).append(lab)
    for fam_labels in by_family.values():
        for i, lab in enumerate(fam_labels):
            out[lab] = MARKERS[i % len(MARKERS)]
    return out
