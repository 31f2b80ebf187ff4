"""Under-specified text prompts for the tiny world, as an Arrow table with ground truth.

A prompt names its category and a random subset of the attributes (each with probability
``MENTION_P``); the unmentioned ones are drawn at random for the data image, so the conditional
distribution of images given a prompt is multimodal. Few-step samplers average those modes into
off-palette colours and DMD tends to collapse them: both are what the world must make measurable.

Each template fixes a sentence frame and a phrase style (``"a red sky"`` vs ``"sky in red"``);
words come from synonym lists and the mentioned attributes appear in random order. Training and
held-out templates are disjoint, so evaluation on held-out templates tests the text encoder's
generalisation rather than memorised strings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import torch

from .render import ATTRIBUTE_NAMES, ATTRIBUTES, CATEGORIES, render_batch, sample_attributes

Split = Literal["train", "heldout"]
SPLITS: tuple[str, ...] = ("train", "heldout")
MENTION_P = 0.6

COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "black": ("black", "jet black", "ebony"),
    "white": ("white", "snow white", "ivory"),
    "red": ("red", "crimson", "scarlet"),
    "green": ("green", "emerald", "lime"),
    "blue": ("blue", "azure", "cobalt"),
    "yellow": ("yellow", "golden", "lemon"),
    "cyan": ("cyan", "turquoise", "aqua"),
    "magenta": ("magenta", "pink", "fuchsia"),
}
SKIN_WORDS: dict[str, tuple[str, ...]] = {
    "light": ("light", "fair", "pale"),
    "medium": ("medium", "olive", "tan"),
    "dark": ("dark", "deep", "umber"),
}
CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    "landscape": ("landscape", "scenery", "countryside view"),
    "portrait": ("portrait", "face", "headshot"),
    "text": ("glyph", "character", "typographic tile"),
}

# Phrase styles: attribute -> format with {v} = the value's word. Sun and glyph phrases are per value.
_SUN = {
    "adj": {"none": "no sun", "left": "a sun on the left", "right": "a sun on the right"},
    "in": {"none": "without a sun", "left": "sun at left", "right": "sun at right"},
    "kv": {"none": "sun none", "left": "sun left", "right": "sun right"},
}
PHRASES: dict[str, dict[str, str]] = {
    "adj": {
        "sky": "a {v} sky",
        "ground": "{v} ground",
        "background": "a {v} background",
        "hair": "{v} hair",
        "skin": "{v} skin",
        "eyes": "{v} eyes",
        "glyph": "{v}",
        "glyph_colour": "{v} ink",
    },
    "in": {
        "sky": "sky in {v}",
        "ground": "ground in {v}",
        "background": "background in {v}",
        "hair": "hair in {v}",
        "skin": "skin tone {v}",
        "eyes": "eyes in {v}",
        "glyph": "{v}",
        "glyph_colour": "drawn in {v}",
    },
    "kv": {
        "sky": "sky {v}",
        "ground": "ground {v}",
        "background": "background {v}",
        "hair": "hair {v}",
        "skin": "skin {v}",
        "eyes": "eyes {v}",
        "glyph": "{v}",
        "glyph_colour": "colour {v}",
    },
}


@dataclass(frozen=True)
class Template:
    """A sentence frame ({head} = category phrase, {attrs} = joined attribute phrases) and a phrase style."""

    id: str
    split: Split
    frame: str
    style: str
    bare: str  # the prompt when no attribute is mentioned
    joiner: str = ", "  # between attribute phrases ("and" is added before the last one when ", ")


TEMPLATES: tuple[Template, ...] = (
    Template("t_with", "train", "a {head} with {attrs}", "adj", "a {head}"),
    Template("t_list", "train", "{attrs}, {head}", "adj", "{head}"),
    Template("t_colon", "train", "{head}: {attrs}", "in", "{head}:", "; "),
    Template("t_photo", "train", "picture of a {head}, {attrs}", "in", "picture of a {head}"),
    Template("t_kv", "train", "{head} | {attrs}", "kv", "a {head} image", " | "),
    Template("h_showing", "heldout", "an image of a {head} showing {attrs}", "adj", "an image of a {head}"),
    Template("h_dash", "heldout", "{attrs} - {head}", "in", "simply a {head}", " / "),
    Template("h_plain", "heldout", "{head}. {attrs}", "kv", "{head}.", ". "),
)


def templates(split: Split) -> tuple[Template, ...]:
    """The templates of ``split`` (train and held-out templates are disjoint)."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    return tuple(t for t in TEMPLATES if t.split == split)


def value_words(attribute: str, value: str) -> tuple[str, ...]:
    """The words a prompt may use for ``value`` of ``attribute`` (synonyms)."""
    if attribute == "sun":
        return tuple(style[value] for style in _SUN.values())
    if attribute == "skin":
        return SKIN_WORDS[value]
    if attribute == "glyph":
        kind = "digit" if value.isdigit() else "letter"
        return (f"the {kind} {value}", f'"{value}"')
    return COLOUR_WORDS[value]


def attribute_phrase(attribute: str, value: str, style: str, rng: np.random.Generator) -> str:
    """One phrase mentioning ``attribute`` = ``value`` in ``style``, with a random synonym."""
    if attribute == "sun":
        return _SUN[style][value]
    words = value_words(attribute, value)
    return PHRASES[style][attribute].format(v=words[rng.integers(len(words))])


def make_prompt(
    category: str, attrs: dict[str, str], mentioned: list[str], template: Template, rng: np.random.Generator
) -> str:
    """Render one prompt naming ``category`` and the ``mentioned`` attributes in random order."""
    order = [mentioned[i] for i in rng.permutation(len(mentioned))]
    phrases = [attribute_phrase(a, attrs[a], template.style, rng) for a in order]
    if template.joiner == ", " and len(phrases) > 1:
        joined = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    else:
        joined = template.joiner.join(phrases)
    head = CATEGORY_WORDS[category][rng.integers(len(CATEGORY_WORDS[category]))]
    frame = template.frame if phrases else template.bare
    return _articles(frame.format(head=head, attrs=joined))


def _articles(text: str) -> str:
    """'a azure sky' -> 'an azure sky'."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def attributes_type() -> pa.StructType:
    """Arrow struct with one nullable string field per attribute name of any category."""
    return pa.struct([pa.field(name, pa.string()) for name in ATTRIBUTE_NAMES])


def full_struct(attrs: dict[str, str]) -> dict[str, str | None]:
    """Attributes of one category as a struct row (None for the other categories' fields)."""
    return {name: attrs.get(name) for name in ATTRIBUTE_NAMES}


def build_prompt_pool(n: int, seed: int, split: Split) -> pa.Table:
    """``n`` prompts (equal counts per category, round-robin) with their ground truth.

    Columns: prompt, category, attributes (struct; null fields outside the category), mentioned
    (list of attribute names the prompt states), split, template (id), image_seed (render seed of
    the data image ``render(category, attributes, image_seed)``).
    """
    if n % len(CATEGORIES):
        raise ValueError(f"n: must be a multiple of {len(CATEGORIES)} for equal category counts, got {n}")
    pool = templates(split)
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    rows = []
    for i in range(n):
        category = CATEGORIES[i % len(CATEGORIES)]
        attrs = sample_attributes(category, rng)
        mentioned = [a for a in ATTRIBUTES[category] if rng.random() < MENTION_P]
        template = pool[rng.integers(len(pool))]
        rows.append(
            {
                "prompt": make_prompt(category, attrs, mentioned, template, rng),
                "category": category,
                "attributes": full_struct(attrs),
                "mentioned": mentioned,
                "split": split,
                "template": template.id,
                "image_seed": int(rng.integers(2**62)),
            }
        )
    return pa.Table.from_pylist(rows, schema=pool_schema())


def pool_schema() -> pa.Schema:
    """Schema of :func:`build_prompt_pool` tables."""
    return pa.schema(
        [
            ("prompt", pa.string()),
            ("category", pa.string()),
            ("attributes", attributes_type()),
            ("mentioned", pa.list_(pa.string())),
            ("split", pa.string()),
            ("template", pa.string()),
            ("image_seed", pa.int64()),
        ]
    )


def prompt_attributes(row: Mapping) -> dict[str, str]:
    """The attributes of a pool row's own category (drops the other categories' null fields)."""
    return {a: row["attributes"][a] for a in ATTRIBUTES[row["category"]]}


def sample_images(
    rows: Sequence[Mapping], samples_per_prompt: int, seed: int, resolution: int = 16
) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """Real samples of the data distribution of each prompt row: [len(rows) * K, 3, H, W].

    The mentioned attributes are fixed, the open ones redrawn for every sample (the prompt's
    multimodal conditional); sample j of row i sits at index ``i * K + j``. Returns the images and
    their full attributes.
    """
    rng = np.random.default_rng([seed, 2])
    categories, attrs_list = [], []
    for row in rows:
        fixed = {a: row["attributes"][a] for a in row["mentioned"]}
        for _ in range(samples_per_prompt):
            categories.append(row["category"])
            attrs_list.append(sample_attributes(row["category"], rng, fixed))
    seeds = rng.integers(2**62, size=len(categories))
    return render_batch(categories, attrs_list, seeds, resolution), attrs_list
