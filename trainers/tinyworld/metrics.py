"""Metrics of the tiny world (DESIGN §7): adherence, preservation, purity, diversity, fd, scores.

Conventions:

- Images are float tensors [N, 3, H, W] in [-1, 1]. Pool rows are dicts as produced by
  ``pyarrow.Table.to_pylist()`` on the prompt / edit pools (a Table is accepted too).
- T2I evaluation generates K = ``samples_per_prompt`` images per prompt row; sample j of row i is
  image ``i * K + j``.
- Per-category (per-edit-type) values are means over items; the overall value is the mean over
  categories (edit types), so every category weighs the same whatever its count.

Definitions (per image, then averaged):

- **adherence** (T2I): judge accuracy over the prompt's category and the attributes it mentions
  (the prompt always names its category). ``adherence_all``: all of them correct.
- **adherence** (edits, ``edit_adherence``): accuracy on the edited attributes of the target;
  **preservation**: accuracy on the category and the untouched attributes of the target.
- **purity**: fraction of pixels within ``PURITY_TOLERANCE`` (max over channels) of a palette
  colour or skin tone. Real renders score 1.0 (their shade jitter is ≤ 0.04).
- **diversity**: for each prompt and each attribute it leaves open, the plug-in entropy of the
  judge's predictions over the K samples, divided by the *expected* plug-in entropy of K draws from
  the data's conditional distribution of that attribute (uniform over its allowed values, see
  ``render.sample_attributes``). Pooled per category as Σ observed / Σ expected. Dividing by the
  expected K-sample entropy (not log of the number of values) makes real renders score ≈ 1.0 for
  any K; mode collapse scores < 1. Needs K ≥ 2 (NaN otherwise).
- **fd**: Fréchet distance between judge features of the samples and of real renders of the same
  prompts (by default :func:`prompts.sample_images`), per category. Raw (unnormalised) features
  with few samples per category: the estimate has a finite-sample floor (≈ 500 for two real sets
  of 240 renders, vs ≈ 2,400 for mode-collapsed or blurred samples and ≈ 25,000 for noise), so
  compare fd only at equal sample counts.

Aggregates: ``t2i_score`` = mean over categories of adherence × purity; ``edit_score`` = mean over
edit types of edit_adherence × preservation × edit_purity; ``score`` = mean of the two.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from functools import cache

import numpy as np
import pyarrow as pa
import torch

from .edits import EDIT_TYPES
from .judge import IGNORE, Judge, encode_labels
from .prompts import sample_images
from .render import ATTRIBUTE_NAMES, ATTRIBUTES, CATEGORIES, PALETTE, SKIN_TONES, allowed_values
from .uncertainty import score_se

PURITY_TOLERANCE = 0.1  # [-1, 1] units per channel: renders jitter by ≤ 0.04; a 50:50 blend of two palette colours is ≥ 0.5 off

Rows = pa.Table | Sequence[Mapping]


def _rows(rows: Rows) -> list[Mapping]:
    return rows.to_pylist() if isinstance(rows, pa.Table) else list(rows)


def _own(category: str, struct: Mapping) -> dict[str, str]:
    """A category's attributes out of a pool struct (other categories' fields are null)."""
    return {a: struct[a] for a in ATTRIBUTES[category]}


# --- per-image measures -------------------------------------------------------------------------


def palette_colours() -> torch.Tensor:
    """All colours a render may contain, [K, 3] in [-1, 1]."""
    rgb = list(PALETTE.values()) + list(SKIN_TONES.values())
    return torch.tensor(rgb, dtype=torch.float32) / 127.5 - 1.0


def purity(images: torch.Tensor, tolerance: float = PURITY_TOLERANCE) -> torch.Tensor:
    """Per image, the fraction of pixels within ``tolerance`` (L∞) of a palette colour or skin tone."""
    pixels = images.float().permute(0, 2, 3, 1).unsqueeze(-2)  # [N, H, W, 1, 3]
    distance = (pixels - palette_colours()).abs().amax(-1).amin(-1)  # [N, H, W]
    return (distance <= tolerance).float().mean((1, 2))


def correctness(
    predictions: Mapping[str, torch.Tensor], categories: Sequence[str], attrs_list
) -> torch.Tensor:
    """[N, 1 + A] booleans: column 0 the category, then one per ``ATTRIBUTE_NAMES`` (False where n/a)."""
    labels = encode_labels(categories, attrs_list)
    n = len(categories)
    table = torch.zeros(n, 1 + len(ATTRIBUTE_NAMES), dtype=torch.bool)
    table[:, 0] = predictions["category"] == labels["category"]
    for c, attrs in ATTRIBUTES.items():
        for a in attrs:
            head = f"{c}.{a}"
            applies = labels[head] != IGNORE
            table[applies, 1 + ATTRIBUTE_NAMES.index(a)] = predictions[head][applies] == labels[head][applies]
    return table


def _mask(names_per_item: Sequence[Sequence[str]], with_category: bool) -> torch.Tensor:
    """[N, 1 + A] float mask selecting the named attributes (and the category column if asked)."""
    mask = torch.zeros(len(names_per_item), 1 + len(ATTRIBUTE_NAMES))
    mask[:, 0] = float(with_category)
    for i, names in enumerate(names_per_item):
        for a in names:
            mask[i, 1 + ATTRIBUTE_NAMES.index(a)] = 1.0
    return mask


def masked_accuracy(correct: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item: (mean correctness over the mask, all-correct over the mask)."""
    hits = (correct.float() * mask).sum(1)
    count = mask.sum(1)
    if (count == 0).any():
        raise ValueError("masked_accuracy: an item has no attribute to check")
    return hits / count, hits == count


# --- diversity ----------------------------------------------------------------------------------


def _partitions(k: int, max_parts: int, largest: int | None = None) -> Iterator[tuple[int, ...]]:
    """Partitions of ``k`` into at most ``max_parts`` positive parts, non-increasing."""
    largest = k if largest is None else largest
    if k == 0:
        yield ()
        return
    if max_parts == 0:
        return
    for first in range(min(k, largest), 0, -1):
        for rest in _partitions(k - first, max_parts - 1, first):
            yield (first, *rest)


@cache
def expected_entropy(m: int, k: int) -> float:
    """Expected plug-in entropy (nats) of the empirical distribution of ``k`` uniform draws over ``m`` values.

    Exact: sums over the partitions of k (the multiset of counts), each weighted by its
    multinomial probability k!/Π c! · m!/((m-p)! Π mult!) / m^k.
    """
    total = 0.0
    for counts in _partitions(k, m):
        arrangements = math.factorial(k) // math.prod(math.factorial(c) for c in counts)
        multiplicity = math.prod(math.factorial(counts.count(c)) for c in set(counts))
        assignments = math.perm(m, len(counts)) // multiplicity
        probability = arrangements * assignments / m**k
        total += probability * -sum(c / k * math.log(c / k) for c in counts)
    return total


def plugin_entropy(values: torch.Tensor, classes: int) -> torch.Tensor:
    """Entropy (nats) of each row's empirical distribution; ``values`` is [P, K] class indices."""
    p = torch.nn.functional.one_hot(values, classes).float().mean(1)
    return -(p * p.clamp_min(1e-12).log()).sum(1)


def diversity(
    predictions: Mapping[str, torch.Tensor], rows: Sequence[Mapping], samples_per_prompt: int
) -> dict[str, float]:
    """Per category, Σ observed / Σ expected entropy over (prompt, open attribute) pairs (see module doc)."""
    k = samples_per_prompt
    observed = dict.fromkeys(CATEGORIES, 0.0)
    expected = dict.fromkeys(CATEGORIES, 0.0)
    for c, attrs in ATTRIBUTES.items():
        index = [i for i, r in enumerate(rows) if r["category"] == c]
        if not index or k < 2:
            continue
        for a, values in attrs.items():
            open_rows = [i for i in index if a not in rows[i]["mentioned"]]
            if not open_rows:
                continue
            samples = predictions[f"{c}.{a}"].view(len(rows), k)[open_rows]
            observed[c] += float(plugin_entropy(samples, len(values)).sum())
            for i in open_rows:
                fixed = {m: rows[i]["attributes"][m] for m in rows[i]["mentioned"]}
                expected[c] += expected_entropy(len(allowed_values(c, a, fixed)), k)
    return {c: observed[c] / expected[c] if expected[c] > 0 else math.nan for c in CATEGORIES}


# --- Fréchet distance ---------------------------------------------------------------------------


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖μa − μb‖² + tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½) between two feature sets [N, D] (float64 eigh)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    eigval, eigvec = torch.linalg.eigh(cov_a)
    root_a = eigvec @ torch.diag(eigval.clamp_min(0).sqrt()) @ eigvec.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


# --- evaluations --------------------------------------------------------------------------------


def evaluate_t2i(
    images: torch.Tensor,
    rows: Rows,
    judge: Judge,
    samples_per_prompt: int,
    reference: torch.Tensor | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """T2I metrics of ``images`` ([len(rows) * K, 3, H, W]) generated for the prompt ``rows``.

    ``reference``: real images laid out like ``images`` for the fd; by default rendered with
    :func:`prompts.sample_images` (seeded by ``seed``). Keys: ``t2i_score``, ``adherence``,
    ``adherence_all``, ``purity``, ``diversity``, ``fd``, each also ``/<category>``.
    """
    rows, k = _rows(rows), samples_per_prompt
    if len(images) != len(rows) * k:
        raise ValueError(
            f"images: expected len(rows) * samples_per_prompt = {len(rows) * k}, got {len(images)}"
        )
    categories = [r["category"] for r in rows for _ in range(k)]
    truth = [_own(r["category"], r["attributes"]) for r in rows for _ in range(k)]
    predictions = judge.predict(images)
    correct = correctness(predictions, categories, truth)
    mean, exact = masked_accuracy(correct, _mask([r["mentioned"] for r in rows for _ in range(k)], True))
    pure = purity(images)
    if reference is None:
        reference, _ = sample_images(rows, k, seed, images.shape[-1])
    features, reference_features = judge.features(images).detach(), judge.features(reference).detach()
    spread = diversity(predictions, rows, k)
    prompt_of = torch.arange(len(rows)).repeat_interleave(k)
    out: dict[str, float] = {}
    groups = {}
    for c in CATEGORIES:
        sel = torch.tensor([cat == c for cat in categories])
        if not sel.any():
            continue
        groups[c] = ((mean[sel], pure[sel]), prompt_of[sel])
        out[f"adherence/{c}"] = float(mean[sel].mean())
        out[f"adherence_all/{c}"] = float(exact[sel].float().mean())
        out[f"purity/{c}"] = float(pure[sel].mean())
        out[f"t2i_score/{c}"] = out[f"adherence/{c}"] * out[f"purity/{c}"]
        out[f"diversity/{c}"] = spread[c]
        out[f"fd/{c}"] = (
            frechet_distance(features[sel], reference_features[sel]) if sel.sum() > 1 else math.nan
        )
    for name in ("t2i_score", "adherence", "adherence_all", "purity", "diversity", "fd"):
        values = [out[f"{name}/{c}"] for c in CATEGORIES if f"{name}/{c}" in out]
        out[name] = float(np.nanmean(values)) if not all(math.isnan(v) for v in values) else math.nan
    return {**out, **score_se("t2i_score", groups)}


def evaluate_edits(images: torch.Tensor, rows: Rows, judge: Judge) -> dict[str, float]:
    """Edit metrics of ``images`` (one edited image per edit row, same order) against the targets.

    Keys: ``edit_score``, ``edit_adherence``, ``preservation``, ``edit_purity``, each also
    ``/<edit_type>``.
    """
    rows = _rows(rows)
    if len(images) != len(rows):
        raise ValueError(f"images: expected one per edit row ({len(rows)}), got {len(images)}")
    categories = [r["category"] for r in rows]
    targets = [_own(r["category"], r["target"]) for r in rows]
    correct = correctness(judge.predict(images), categories, targets)
    adherence, _ = masked_accuracy(correct, _mask([r["edited"] for r in rows], False))
    untouched = [[a for a in ATTRIBUTES[r["category"]] if a not in r["edited"]] for r in rows]
    preservation, _ = masked_accuracy(correct, _mask(untouched, True))
    pure = purity(images)
    out: dict[str, float] = {}
    groups = {}
    for t in EDIT_TYPES:
        sel = torch.tensor([r["edit_type"] == t for r in rows])
        if not sel.any():
            continue
        groups[t] = ((adherence[sel], preservation[sel], pure[sel]), torch.arange(len(rows))[sel])
        out[f"edit_adherence/{t}"] = float(adherence[sel].mean())
        out[f"preservation/{t}"] = float(preservation[sel].mean())
        out[f"edit_purity/{t}"] = float(pure[sel].mean())
        out[f"edit_score/{t}"] = (
            out[f"edit_adherence/{t}"] * out[f"preservation/{t}"] * out[f"edit_purity/{t}"]
        )
    for name in ("edit_score", "edit_adherence", "preservation", "edit_purity"):
        out[name] = float(np.mean([out[f"{name}/{t}"] for t in EDIT_TYPES if f"{name}/{t}" in out]))
    return {**out, **score_se("edit_score", groups)}


def combine(t2i: Mapping[str, float], edit: Mapping[str, float]) -> dict[str, float]:
    """Merge both evaluations and add ``score`` = mean of ``t2i_score`` and ``edit_score`` (ASHA's scalar)."""
    return {**t2i, **edit, "score": (t2i["t2i_score"] + edit["edit_score"]) / 2}
