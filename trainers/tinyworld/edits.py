"""Instruction-guided edits of the tiny world with ground truth.

An edit item is (source attributes, instruction, target attributes). The source image is
``render(category, source, image_seed)`` and the target is ``render(category, target, image_seed)``:
the renderer's random draws do not depend on attribute values, so everything the instruction does
not touch is preserved exactly. ``edited`` lists the attributes that change (never empty).

Edit types and where they apply (only where the result is again a representable image):

- ``recolour_background``: portrait / text background;
- ``recolour_part``: landscape sky, portrait hair, text glyph colour;
- ``change_glyph``: text;
- ``mirror``: landscapes with a sun (left <-> right; the render is an exact horizontal flip);
- ``invert``: landscape and text (palette colours invert onto the palette; skin tones do not);
- ``add_remove_sun``: landscape (add a sun where there is none, remove it where there is one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import pyarrow as pa

from .prompts import COLOUR_WORDS, SPLITS, attributes_type, full_struct, value_words
from .render import ATTRIBUTES, allowed_values, complement, sample_attributes, validate_attributes

Split = Literal["train", "heldout"]
EDIT_TYPES: tuple[str, ...] = (
    "recolour_background",
    "recolour_part",
    "change_glyph",
    "mirror",
    "invert",
    "add_remove_sun",
)
EDIT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "recolour_background": ("portrait", "text"),
    "recolour_part": ("landscape", "portrait", "text"),
    "change_glyph": ("text",),
    "mirror": ("landscape",),
    "invert": ("landscape", "text"),
    "add_remove_sun": ("landscape",),
}
PART: dict[str, str] = {"landscape": "sky", "portrait": "hair", "text": "glyph_colour"}
PART_WORDS: dict[str, tuple[str, ...]] = {
    "sky": ("sky",),
    "hair": ("hair",),
    "glyph_colour": ("symbol", "character"),
}

# Instruction phrasings per edit type and split ({part}, {v} = value word). Disjoint across splits.
PHRASINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "recolour_background": {
        "train": ("make the background {v}", "change the background to {v}", "set a {v} background"),
        "heldout": ("paint the backdrop {v}", "recolour the background in {v}"),
    },
    "recolour_part": {
        "train": ("make the {part} {v}", "change the {part} to {v}", "turn the {part} {v}"),
        "heldout": ("paint the {part} {v}", "recolour the {part} in {v}"),
    },
    "change_glyph": {
        "train": ("replace the character with {v}", "change it to {v}", "write {v} instead"),
        "heldout": ("swap the symbol for {v}", "show {v} in its place"),
    },
    "mirror": {
        "train": ("mirror the image", "flip it horizontally", "flip left to right"),
        "heldout": ("reflect the picture horizontally", "make a mirror image"),
    },
    "invert": {
        "train": ("invert the colours", "make a colour negative", "invert all colours"),
        "heldout": ("show the photographic negative", "swap every colour for its opposite"),
    },
    "add_remove_sun": {
        "train": ("add {v}", "put {v} in the sky", "remove the sun", "take the sun away"),
        "heldout": ("place {v} up there", "let the sun disappear"),
    },
}


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[rng.integers(len(options))]


def _recolour(attribute: str) -> Callable[[str, dict, np.random.Generator], dict[str, str]]:
    def edit(category: str, source: dict, rng: np.random.Generator) -> dict[str, str]:
        others = {k: v for k, v in source.items() if k != attribute}
        choices = [v for v in allowed_values(category, attribute, others) if v != source[attribute]]
        return {**source, attribute: _pick(rng, tuple(choices))}

    return edit


def _target(
    edit_type: str, category: str, source: dict[str, str], rng: np.random.Generator
) -> dict[str, str]:
    """Target attributes of ``edit_type`` applied to ``source``."""
    if edit_type == "recolour_background":
        return _recolour("background")(category, source, rng)
    if edit_type == "recolour_part":
        return _recolour(PART[category])(category, source, rng)
    if edit_type == "change_glyph":
        return _recolour("glyph")(category, source, rng)
    if edit_type == "mirror":
        return {**source, "sun": {"left": "right", "right": "left"}[source["sun"]]}
    if edit_type == "invert":
        return {
            k: complement(v) if k in ("sky", "ground", "glyph_colour", "background") else v
            for k, v in source.items()
        }
    if edit_type == "add_remove_sun":
        sun = _pick(rng, ("left", "right")) if source["sun"] == "none" else "none"
        return {**source, "sun": sun}
    raise ValueError(f"edit_type: expected one of {EDIT_TYPES}, got {edit_type!r}")


def _source(edit_type: str, category: str, rng: np.random.Generator) -> dict[str, str]:
    """Source attributes on which ``edit_type`` is a real change (a mirror needs a sun)."""
    fixed = None
    if edit_type == "mirror":
        fixed = {"sun": _pick(rng, ("left", "right"))}
    elif edit_type == "add_remove_sun":  # half additions, half removals
        fixed = {"sun": _pick(rng, ("none", "none", "left", "right"))}
    return sample_attributes(category, rng, fixed)


def instruction(
    edit_type: str, category: str, target: dict[str, str], split: Split, rng: np.random.Generator
) -> tuple[str, str]:
    """(instruction text, template id) for an edit whose result is ``target``."""
    options = PHRASINGS[edit_type][split]
    if edit_type == "add_remove_sun":
        # Adding names the position; removing must not.
        options = tuple(o for o in options if ("{v}" in o) == (target["sun"] != "none"))
    index = int(rng.integers(len(options)))
    phrasing = options[index]
    part = PART.get(category, "")
    if edit_type in ("recolour_background", "recolour_part"):
        attribute = "background" if edit_type == "recolour_background" else part
        value = _pick(rng, COLOUR_WORDS[target[attribute]])
    elif edit_type == "change_glyph":
        value = _pick(rng, value_words("glyph", target["glyph"]))
    elif edit_type == "add_remove_sun" and target["sun"] != "none":
        value = f"a sun on the {target['sun']}"
    else:
        value = ""
    text = phrasing.format(v=value, part=_pick(rng, PART_WORDS[part]) if part else "")
    template = f"{edit_type}/{split}/{PHRASINGS[edit_type][split].index(phrasing)}"
    return text, template


def make_edit(edit_type: str, category: str, split: Split, rng: np.random.Generator) -> dict:
    """One edit item as a dict row of :func:`build_edit_pool` (without image_seed)."""
    if category not in EDIT_CATEGORIES[edit_type]:
        raise ValueError(f"category: {edit_type} applies to {EDIT_CATEGORIES[edit_type]}, got {category!r}")
    source = _source(edit_type, category, rng)
    target = _target(edit_type, category, source, rng)
    validate_attributes(category, target)
    text, template = instruction(edit_type, category, target, split, rng)
    return {
        "instruction": text,
        "edit_type": edit_type,
        "category": category,
        "source": full_struct(source),
        "target": full_struct(target),
        "edited": [a for a in ATTRIBUTES[category] if source[a] != target[a]],
        "split": split,
        "template": template,
    }


def build_edit_pool(n: int, seed: int, split: Split) -> pa.Table:
    """``n`` edit items, edit types round-robin (equal counts), category uniform among applicable ones.

    Columns: instruction, edit_type, category, source (struct), target (struct), edited (list of
    attribute names that change), split, template (id ``<edit_type>/<split>/<k>``), image_seed.
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng([seed, SPLITS.index(split), 1])
    rows = []
    for i in range(n):
        edit_type = EDIT_TYPES[i % len(EDIT_TYPES)]
        category = _pick(rng, EDIT_CATEGORIES[edit_type])
        rows.append({**make_edit(edit_type, category, split, rng), "image_seed": int(rng.integers(2**62))})
    return pa.Table.from_pylist(rows, schema=edit_schema())


def edit_schema() -> pa.Schema:
    """Schema of :func:`build_edit_pool` tables."""
    return pa.schema(
        [
            ("instruction", pa.string()),
            ("edit_type", pa.string()),
            ("category", pa.string()),
            ("source", attributes_type()),
            ("target", attributes_type()),
            ("edited", pa.list_(pa.string())),
            ("split", pa.string()),
            ("template", pa.string()),
            ("image_seed", pa.int64()),
        ]
    )
