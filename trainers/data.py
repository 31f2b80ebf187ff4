"""The data axes of a recipe: category mix and T2I:Edit ratio (DESIGN §1 axes 1 and 3, §6).

Pools are Arrow tables (prompt pool: ``prompt``, ``category``, …; edit pool: ``instruction``,
``edit_type``, ``category``, …). :class:`BatchSampler` draws batches from them:

- round(ratio · B) T2I items with *stochastic* rounding (floor, plus one with probability equal
  to the fractional part), so the expected T2I share is exactly the ratio even when ratio · B is
  not an integer (0.3 · 16 = 4.8: 4 items 20% of the time, 5 items 80%);
- each T2I item's category ~ ``category_mix``, then a prompt row uniformly within the category;
- the rest are edit rows, each drawn with probability ∝ ``category_mix`` of its source image's
  category (a text-heavy mix also weighs glyph edits up; a uniform mix draws rows uniformly, as
  does an edit pool whose categories are not prompt categories, e.g. a real world's "edit").

Its own seeded numpy Generator makes batches reproducible; :meth:`BatchSampler.state_dict` is
JSON-able, for resume. A run builds its sampler with :meth:`BatchSampler.from_recipe`: the recipe
fields it reads are named there, once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from trainers.recipe import Recipe


@dataclass(frozen=True)
class T2IPart:
    """The text-to-image items of a batch: prompt-pool rows, their prompts and categories."""

    rows: np.ndarray
    prompts: list[str]
    categories: list[str]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class EditPart:
    """The instruction-edit items of a batch: edit-pool rows, instructions, edit types, source categories."""

    rows: np.ndarray
    instructions: list[str]
    edit_types: list[str]
    categories: list[str]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class Batch:
    """One batch, split by kind because the model runs T2I and edit items as separate sub-batches."""

    t2i: T2IPart
    edit: EditPart

    def __len__(self) -> int:
        return len(self.t2i) + len(self.edit)


def normalise_mix(category_mix: Mapping[str, float]) -> dict[str, float]:
    """Weights → probabilities; negative weights or an all-zero mix are errors."""
    bad = {c: w for c, w in category_mix.items() if not (w >= 0 and math.isfinite(w))}
    if bad:
        raise ValueError(f"category_mix: weights must be finite and ≥ 0, got {bad}")
    total = sum(category_mix.values())
    if total <= 0:
        raise ValueError(f"category_mix: needs a positive weight, got {dict(category_mix)}")
    return {c: w / total for c, w in category_mix.items()}


def _column(table: pa.Table, name: str, pool: str) -> list:
    if name not in table.column_names:
        raise ValueError(f"{pool} has no column {name!r} (columns: {table.column_names})")
    return table.column(name).to_pylist()


class BatchSampler:
    """Seeded sampler of mixed T2I/edit batches with a realised-composition counter."""

    def __init__(
        self,
        prompt_pool: pa.Table,
        edit_pool: pa.Table | None,
        *,
        category_mix: Mapping[str, float],
        t2i_edit_ratio: float,
        batch_size: int,
        seed: int,
    ):
        if not 0.0 <= t2i_edit_ratio <= 1.0:
            raise ValueError(f"t2i_edit_ratio must be in [0, 1], got {t2i_edit_ratio}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.ratio, self.batch_size = t2i_edit_ratio, batch_size
        mix = normalise_mix(category_mix)
        self.mix_categories = list(mix)  # counted (so a weight-0 category shows as 0 in the composition)
        self.categories = [c for c, p in mix.items() if p > 0]  # drawn; weight 0 is never drawn
        self.probs = np.array([mix[c] for c in self.categories])
        self._prompts = _column(prompt_pool, "prompt", "prompt pool")
        self._rows_by_category = self._index(_column(prompt_pool, "category", "prompt pool"))
        self._edits = self._edit_columns(edit_pool)
        self._edit_probs = self._edit_weights(mix)
        self._rng = np.random.default_rng(seed)
        self.counts: dict[str, int] = self._zero_counts()
        self.batches = 0

    @classmethod
    def from_recipe(cls, prompt_pool: pa.Table, edit_pool: pa.Table | None, recipe: Recipe) -> BatchSampler:
        """The sampler of a run: the recipe's data axes (category mix, T2I:Edit ratio), batch size and seed."""
        return cls(prompt_pool, edit_pool, category_mix=recipe.category_weights,
                   t2i_edit_ratio=recipe.t2i_edit_ratio, batch_size=recipe.batch_size, seed=recipe.seed)

    def _index(self, pool_categories: list[str]) -> dict[str, np.ndarray]:
        """Row numbers of each drawable category; a category of the mix missing from the pool is an error."""
        rows = {c: np.flatnonzero(np.array(pool_categories, dtype=object) == c) for c in self.categories}
        missing = [c for c, r in rows.items() if len(r) == 0]
        if missing and self.ratio > 0:
            raise ValueError(
                f"category_mix: no prompts of category {missing} in the prompt pool "
                f"(has {sorted(set(pool_categories))})"
            )
        return rows

    def _edit_columns(self, edit_pool: pa.Table | None) -> dict[str, list] | None:
        if edit_pool is None or edit_pool.num_rows == 0:
            if self.ratio < 1:
                raise ValueError(f"t2i_edit_ratio={self.ratio} needs edit items, but the edit pool is empty")
            return None
        return {
            name: _column(edit_pool, name, "edit pool") for name in ("instruction", "edit_type", "category")
        }

    def _edit_weights(self, mix: dict[str, float]) -> np.ndarray | None:
        """Edit-row probabilities ∝ the mix weight of each row's source category; None = uniform."""
        if self._edits is None:
            return None
        weights = np.array([mix.get(c, 0.0) for c in self._edits["category"]])
        if weights.sum() <= 0 or np.all(weights == weights[0]):
            return None  # no row's category is in the mix, or all weigh the same: uniform
        return weights / weights.sum()

    def _zero_counts(self) -> dict[str, int]:
        return {c: 0 for c in self.mix_categories} | {"edit": 0}

    def n_t2i(self) -> int:
        """Stochastic rounding of ratio · B: E[n_t2i] = ratio · B exactly."""
        exact = self.ratio * self.batch_size
        low = math.floor(exact)
        return low + int(self._rng.random() < exact - low)

    def sample(self) -> Batch:
        """Draw the next batch and add it to the composition counts."""
        n_t2i = self.n_t2i()
        n_edit = self.batch_size - n_t2i
        cats = [self.categories[c] for c in self._rng.choice(len(self.categories), size=n_t2i, p=self.probs)]
        t2i_rows = np.array([self._prompt_row(c) for c in cats], dtype=np.int64)
        edit_rows = self._edit_rows(n_edit)
        batch = Batch(
            t2i=T2IPart(t2i_rows, [self._prompts[i] for i in t2i_rows], cats),
            edit=EditPart(
                edit_rows,
                [self._edits["instruction"][i] for i in edit_rows],
                [self._edits["edit_type"][i] for i in edit_rows],
                [self._edits["category"][i] for i in edit_rows],
            ),
        )
        self._count(batch)
        return batch

    __call__ = sample

    def _edit_rows(self, n: int) -> np.ndarray:
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        if self._edit_probs is None:
            return self._rng.integers(len(self._edits["instruction"]), size=n)
        return self._rng.choice(len(self._edit_probs), size=n, p=self._edit_probs)

    def _prompt_row(self, category: str) -> int:
        """A prompt-pool row drawn uniformly among the rows of ``category``."""
        rows = self._rows_by_category[category]
        return int(rows[self._rng.integers(len(rows))])

    def _count(self, batch: Batch) -> None:
        for c in batch.t2i.categories:
            self.counts[c] += 1
        self.counts["edit"] += len(batch.edit)
        self.batches += 1

    def composition(self) -> dict[str, float]:
        """Realised fractions so far: each category's share of the T2I items, and ``edit_share`` of all items."""
        n_t2i = sum(n for c, n in self.counts.items() if c != "edit")
        total = n_t2i + self.counts["edit"]
        shares = {c: (self.counts[c] / n_t2i if n_t2i else 0.0) for c in self.mix_categories}
        return shares | {"edit_share": self.counts["edit"] / total if total else 0.0}

    def state_dict(self) -> dict:
        """JSON-able sampler state (RNG state and counts) for resume."""
        return {"rng": self._rng.bit_generator.state, "counts": dict(self.counts), "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self._rng.bit_generator.state = state["rng"]
        self.counts = self._zero_counts() | {k: int(v) for k, v in state["counts"].items()}
        self.batches = int(state["batches"])
