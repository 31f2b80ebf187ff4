"""Procedural renderer of the tiny world: attributes -> a small RGB image with ground truth.

Three categories (the paper's T2I categories), each a few flat-coloured shapes:

- ``landscape``: sky colour above a horizon, ground colour below, an optional sun (left/right).
  The sun is drawn in the complement of the sky colour, so it is always visible and colour
  inversion of a landscape is again a landscape (sky and ground invert, the sun follows).
- ``portrait``: background, a hair ellipse framing a face of one of three skin tones, two eyes.
- ``text``: one glyph (A-Z, 0-9; DejaVu Sans Bold, shipped with matplotlib) on a background.

Colours are the 8 corners of the RGB cube (so inversion maps the palette onto itself) plus three
skin tones. Each render is a *distribution* given its attributes: shades jitter by up to 4 %
towards grey and shapes move by one logical pixel, all drawn from ``seed``. The random draws do
not depend on the attribute values, so two renders with the same seed differ only where their
attributes differ: an edit's target rendered with the source's seed preserves everything else.
Inside the image only palette colours occur (shapes are hard masks, no anti-aliasing), which is
what makes palette purity a ground-truth fidelity measure.

Images are float32 arrays (3, H, W) in [-1, 1]. Geometry is defined on a 16x16 logical grid and
sampled at ``resolution`` (16 or 32) pixels; the glyph is rasterised at the native resolution.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

CATEGORIES: tuple[str, ...] = ("landscape", "portrait", "text")
RESOLUTIONS: tuple[int, ...] = (16, 32)

# The RGB-cube corners: complement(c) = 255 - c is again a palette colour.
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}
SKIN_TONES: dict[str, tuple[int, int, int]] = {
    "light": (241, 194, 125),
    "medium": (198, 134, 66),
    "dark": (120, 72, 36),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
GLYPHS: tuple[str, ...] = tuple(string.ascii_uppercase + string.digits)
EYE_COLOURS: tuple[str, ...] = ("black", "blue", "green")

ATTRIBUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "landscape": {"sky": COLOURS, "ground": COLOURS, "sun": ("none", "left", "right")},
    "portrait": {"background": COLOURS, "hair": COLOURS, "skin": tuple(SKIN_TONES), "eyes": EYE_COLOURS},
    "text": {"glyph": GLYPHS, "glyph_colour": COLOURS, "background": COLOURS},
}
# Pairs of attributes that must differ, or one of them would be invisible.
CONSTRAINTS: dict[str, tuple[tuple[str, str], ...]] = {
    "landscape": (("sky", "ground"),),
    "portrait": (("hair", "background"),),
    "text": (("glyph_colour", "background"),),
}
# Every attribute name used by any category (the struct fields of the Arrow pools).
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(dict.fromkeys(a for attrs in ATTRIBUTES.values() for a in attrs))

SHADE_JITTER = 0.04  # max relative move of a shade towards grey


def complement(colour: str) -> str:
    """The palette colour opposite ``colour`` on the RGB cube (what colour inversion gives)."""
    rgb = tuple(255 - c for c in PALETTE[colour])
    return next(name for name, value in PALETTE.items() if value == rgb)


def _rgb(name: str) -> np.ndarray:
    """A palette colour or skin tone as floats in [-1, 1]."""
    value = PALETTE.get(name) or SKIN_TONES[name]
    return np.asarray(value, dtype=np.float32) / 127.5 - 1.0


def validate_attributes(category: str, attrs: Mapping[str, str]) -> None:
    """Raise ValueError naming the field if ``attrs`` is not a complete, valid set for ``category``."""
    if category not in ATTRIBUTES:
        raise ValueError(f"category: expected one of {CATEGORIES}, got {category!r}")
    spec = ATTRIBUTES[category]
    missing, extra = set(spec) - set(attrs), set(attrs) - set(spec)
    if missing or extra:
        raise ValueError(f"{category} attributes: missing {sorted(missing)}, unexpected {sorted(extra)}")
    for name, value in attrs.items():
        if value not in spec[name]:
            raise ValueError(f"{category}.{name}: expected one of {spec[name]}, got {value!r}")
    for a, b in CONSTRAINTS[category]:
        if attrs[a] == attrs[b]:
            raise ValueError(f"{category}: {a} and {b} must differ (both {attrs[a]!r})")


def allowed_values(category: str, attribute: str, fixed: Mapping[str, str]) -> tuple[str, ...]:
    """Values ``attribute`` may take given the ``fixed`` attributes (the constraints exclude some)."""
    taken = {fixed[b] for a, b in _partners(category, attribute) if b in fixed}
    return tuple(v for v in ATTRIBUTES[category][attribute] if v not in taken)


def _partners(category: str, attribute: str) -> list[tuple[str, str]]:
    pairs = CONSTRAINTS[category]
    return [(a, b) for a, b in pairs if a == attribute] + [(b, a) for a, b in pairs if b == attribute]


def sample_attributes(
    category: str, rng: np.random.Generator, fixed: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Draw every attribute of ``category`` uniformly subject to the constraints.

    ``fixed`` pins some attributes (e.g. the ones a prompt mentions); the others are drawn from the
    data's conditional distribution, which for each open attribute is uniform over
    :func:`allowed_values` (rejection sampling keeps the marginals of constrained pairs uniform).
    """
    fixed = dict(fixed or {})
    if category not in ATTRIBUTES:
        raise ValueError(f"category: expected one of {CATEGORIES}, got {category!r}")
    spec = ATTRIBUTES[category]
    for name, value in fixed.items():
        if name not in spec or value not in spec[name]:
            raise ValueError(f"fixed {category}.{name}: {value!r} is not a valid value")
    for a, b in CONSTRAINTS[category]:
        if a in fixed and fixed.get(a) == fixed.get(b):
            raise ValueError(f"fixed {category}: {a} and {b} must differ (both {fixed[a]!r})")
    while True:
        attrs = {name: fixed.get(name) or str(rng.choice(values)) for name, values in spec.items()}
        if all(attrs[a] != attrs[b] for a, b in CONSTRAINTS[category]):
            validate_attributes(category, attrs)
            return attrs


# --- drawing -----------------------------------------------------------------------------------


def _grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Logical (x, y) coordinates of pixel centres on the 16-unit canvas."""
    centres = (np.arange(resolution, dtype=np.float32) + 0.5) * 16.0 / resolution
    return np.meshgrid(centres, centres, indexing="xy")


def _paint(image: np.ndarray, mask: np.ndarray, colour: str, shade: np.ndarray) -> None:
    """Fill ``mask`` with ``colour`` moved towards grey by the jitter ``shade`` (per channel)."""
    image[:, mask] = (_rgb(colour) * (1.0 - shade))[:, None]


def _landscape(attrs, rng, resolution) -> np.ndarray:
    x, y = _grid(resolution)
    shades = rng.uniform(0, SHADE_JITTER, size=(3, 3)).astype(np.float32)
    horizon = 10 + rng.integers(-1, 2)
    sun_dx, sun_dy = rng.integers(-1, 2, size=2)
    image = np.empty((3, resolution, resolution), np.float32)
    _paint(image, y < horizon, attrs["sky"], shades[0])
    _paint(image, y >= horizon, attrs["ground"], shades[1])
    if attrs["sun"] != "none":
        # Left and right positions are mirror images, so `mirror` is an exact horizontal flip.
        cx = 3.5 + sun_dx if attrs["sun"] == "left" else 16 - (3.5 + sun_dx)
        disc = (x - cx) ** 2 + (y - (4 + sun_dy)) ** 2 <= 2.2**2
        _paint(image, disc, complement(attrs["sky"]), shades[2])
    return image


def _portrait(attrs, rng, resolution) -> np.ndarray:
    x, y = _grid(resolution)
    shades = rng.uniform(0, SHADE_JITTER, size=(4, 3)).astype(np.float32)
    dx, dy = rng.integers(-1, 2, size=2)
    cx, cy = 8 + dx, 8 + dy
    image = np.empty((3, resolution, resolution), np.float32)
    _paint(image, np.ones_like(x, bool), attrs["background"], shades[0])
    _paint(image, ((x - cx) / 5.2) ** 2 + ((y - cy + 1) / 5.0) ** 2 <= 1, attrs["hair"], shades[1])
    _paint(image, ((x - cx) / 3.6) ** 2 + ((y - cy - 0.5) / 4.2) ** 2 <= 1, attrs["skin"], shades[2])
    eye_row = (y >= cy) & (y < cy + 1)
    eyes = eye_row & (((x >= cx - 2) & (x < cx - 1)) | ((x >= cx + 1) & (x < cx + 2)))
    _paint(image, eyes, attrs["eyes"], shades[3])
    return image


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
    return ImageFont.truetype(str(path), size)


@cache
def glyph_mask(glyph: str, resolution: int) -> np.ndarray:
    """Binary mask of ``glyph``, tightly cropped (thresholded: anti-aliasing would leave the palette)."""
    canvas = 2 * resolution
    image = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(image).text(
        (canvas // 2, canvas // 2), glyph, font=_font(13 * resolution // 16), fill=255, anchor="mm"
    )
    mask = np.asarray(image) >= 128
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _text(attrs, rng, resolution) -> np.ndarray:
    shades = rng.uniform(0, SHADE_JITTER, size=(2, 3)).astype(np.float32)
    scale = resolution // 16
    dx, dy = rng.integers(-1, 2, size=2) * scale
    glyph = glyph_mask(attrs["glyph"], resolution)
    top = (resolution - glyph.shape[0]) // 2 + dy
    left = (resolution - glyph.shape[1]) // 2 + dx
    mask = np.zeros((resolution + 4 * scale, resolution + 4 * scale), bool)  # margin absorbs the shift
    pad = 2 * scale
    mask[pad + top : pad + top + glyph.shape[0], pad + left : pad + left + glyph.shape[1]] = glyph
    mask = mask[pad : pad + resolution, pad : pad + resolution]
    image = np.empty((3, resolution, resolution), np.float32)
    _paint(image, ~mask, attrs["background"], shades[1])
    _paint(image, mask, attrs["glyph_colour"], shades[0])
    return image


_DRAW = {"landscape": _landscape, "portrait": _portrait, "text": _text}


def render(category: str, attrs: Mapping[str, str], seed: int = 0, resolution: int = 16) -> np.ndarray:
    """Render one image (3, resolution, resolution), float32 in [-1, 1]; deterministic in (attrs, seed)."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution: expected one of {RESOLUTIONS}, got {resolution}")
    validate_attributes(category, attrs)
    return _DRAW[category](attrs, np.random.default_rng(seed), resolution)


def render_batch(
    categories: Sequence[str],
    attrs_list: Sequence[Mapping[str, str]],
    seeds: Sequence[int],
    resolution: int = 16,
) -> torch.Tensor:
    """Render a batch as a float32 tensor [N, 3, H, W]."""
    if not len(categories) == len(attrs_list) == len(seeds):
        raise ValueError(
            f"render_batch: categories ({len(categories)}), attrs_list ({len(attrs_list)}) "
            f"and seeds ({len(seeds)}) must have the same length"
        )
    images = [render(c, a, int(s), resolution) for c, a, s in zip(categories, attrs_list, seeds, strict=True)]
    return torch.from_numpy(np.stack(images)) if images else torch.empty(0, 3, resolution, resolution)
