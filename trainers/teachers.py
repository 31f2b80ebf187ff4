"""Teachers and the step-wise multi-teacher guidance schedule (DESIGN §1 axis 2, §6).

The real score at student step k for an item of category c is a mix of frozen teachers,

    x0_real = Σ_m λ_{k,m}(c) · x0_m(z_t, t | CFG scale g_m),

with weights in [0, 1] summing to 1. The simplest schedule is a *teacher switch* at k*: the base
teacher for k < k*, the specialist for k ≥ k* on the categories it covers (Qwen-Image-Flash).
Mixing in x0 space is the same as mixing velocities, because x0 = z_t − t·v is affine in v.

Teachers see conditions as a :class:`trainers.cond.Cond` and are guided by
:func:`trainers.cond.guided_velocity`, the one CFG in the code base.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from trainers import flow
from trainers.cond import EDIT, Cond, guided_velocity


@dataclass
class Teacher:
    """A frozen flow model and the categories it is a teacher for (None = every category).

    A category covers T2I items of that category and edit items whose source image is of it (a
    glyph edit is a text item); the category ``"edit"`` covers every edit item.
    """

    name: str
    model: nn.Module
    categories: frozenset[str] | None = None
    guidance_scale: float | None = None  # None: the recipe's guidance_scale

    def __post_init__(self) -> None:
        if self.categories is not None:
            self.categories = frozenset(self.categories)
        self.model.requires_grad_(False).eval()

    def covers(self, category: str, is_edit: bool = False) -> bool:
        """Whether this teacher may guide an item of ``category`` (an edit item if ``is_edit``)."""
        if self.categories is None or category in self.categories:
            return True
        return is_edit and EDIT in self.categories

    @torch.no_grad()
    def x0(self, z_t: torch.Tensor, t: torch.Tensor, cond: Cond, guidance_scale: float,
           cfg: str = "plain") -> torch.Tensor:
        """The teacher's CFG x0 prediction (its own scale if set, else ``guidance_scale``)."""
        scale = self.guidance_scale if self.guidance_scale is not None else guidance_scale
        return flow.x0_from_v(z_t, t, guided_velocity(self.model, z_t, t, cond, scale, cfg))


@dataclass
class TeacherSet(Mapping[str, Teacher]):
    """Teachers by name; the order of ``names`` is the column order of weight matrices."""

    teachers: dict[str, Teacher] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "base" not in self.teachers:
            raise ValueError(f"a teacher set needs a 'base' teacher, got {sorted(self.teachers)}")
        if self.teachers["base"].categories is not None:
            raise ValueError("the 'base' teacher must cover every category (categories=None)")

    @classmethod
    def of(cls, *teachers: Teacher) -> TeacherSet:
        return cls({t.name: t for t in teachers})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.teachers)

    def __getitem__(self, name: str) -> Teacher:
        return self.teachers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.teachers)

    def __len__(self) -> int:
        return len(self.teachers)


@dataclass(frozen=True)
class TeacherSchedule:
    """λ_{k,m}(c): teacher weights per student step k and item category c.

    ``table[name][k]`` is teacher ``name``'s raw weight at step k. For an item of category c a
    teacher that does not cover c gets 0 and its weight goes to ``base``, so every item's weights
    sum to 1 (a text specialist never guides a landscape).
    """

    teachers: TeacherSet
    table: dict[str, tuple[float, ...]]
    nfe: int

    def __call__(self, k: int, category: str, is_edit: bool = False) -> dict[str, float]:
        """Weights of every teacher for student step ``k`` (0-based) and an item of ``category``."""
        assert 0 <= k < self.nfe, f"student step {k} outside [0, {self.nfe})"
        w = {name: 0.0 for name in self.teachers.names}
        for name, row in self.table.items():
            w[name if self.teachers[name].covers(category, is_edit) else "base"] += row[k]
        total = sum(w.values())
        return {name: x / total for name, x in w.items()}

    @classmethod
    def from_recipe(cls, recipe, teachers: TeacherSet) -> TeacherSchedule:
        """The schedule a Recipe asks for: its teacher_weights table, else the switch at its k*."""
        return teacher_schedule(
            teachers,
            nfe=recipe.nfe,
            switch_step=recipe.switch_step,  # teacher_switch_step resolved (None -> nfe)
            specialist=recipe.specialist,
            specialist_weight=recipe.specialist_weight,
            teacher_weights=recipe.teacher_weights,
        )

    def matrix(self, ks: torch.Tensor, categories: Sequence[str],
               is_edit: torch.Tensor | None = None) -> torch.Tensor:
        """Weights [B, M] for items at steps ``ks`` [B] with ``categories``; columns follow ``names``.

        ``is_edit`` [B] marks edit items (None: none are).
        """
        edits = [False] * len(categories) if is_edit is None else is_edit.tolist()
        rows = [
            list(self(int(k), c, e).values())
            for k, c, e in zip(ks.tolist(), categories, edits, strict=True)
        ]
        return torch.tensor(rows, dtype=torch.float32)


def teacher_schedule(
    teachers: TeacherSet,
    *,
    nfe: int,
    switch_step: int,
    specialist: str = "text",
    specialist_weight: float = 1.0,
    teacher_weights: Mapping[str, Sequence[float]] | None = None,
) -> TeacherSchedule:
    """Build λ from recipe fields: an explicit per-step table, or the teacher switch at k*.

    Switch: base for k < k*; for k ≥ k*, ``specialist_weight`` on the specialist and the rest on
    base (1.0 = a hard switch). k* = nfe is base only; k* = 0 is the specialist from the start.
    """
    if teacher_weights is not None:
        return TeacherSchedule(teachers, _checked_table(teachers, teacher_weights, nfe), nfe)
    if not 0 <= switch_step <= nfe:
        raise ValueError(f"teacher_switch_step must be in [0, nfe={nfe}], got {switch_step}")
    if not 0.0 <= specialist_weight <= 1.0:
        raise ValueError(f"specialist_weight must be in [0, 1], got {specialist_weight}")
    if switch_step == nfe or specialist_weight == 0.0:
        return TeacherSchedule(teachers, {"base": (1.0,) * nfe}, nfe)
    if specialist not in teachers:
        raise ValueError(f"specialist {specialist!r} is not a teacher of this world (have {list(teachers)})")
    spec = tuple(specialist_weight if k >= switch_step else 0.0 for k in range(nfe))
    return TeacherSchedule(teachers, {"base": tuple(1.0 - w for w in spec), specialist: spec}, nfe)


def _checked_table(teachers: TeacherSet, table: Mapping[str, Sequence[float]], nfe: int) -> dict:
    """Validate an explicit teacher_weights table: known names, nfe values each in [0, 1], no all-zero step."""
    out = {}
    for name, row in table.items():
        if name not in teachers:
            raise ValueError(f"teacher_weights: unknown teacher {name!r} (have {list(teachers)})")
        if len(row) != nfe or not all(0.0 <= w <= 1.0 for w in row):
            raise ValueError(f"teacher_weights[{name!r}]: need {nfe} weights in [0, 1], got {list(row)}")
        out[name] = tuple(float(w) for w in row)
    for k in range(nfe):
        if sum(row[k] for row in out.values()) <= 0:
            raise ValueError(f"teacher_weights: every teacher has weight 0 at student step {k}")
    return out


@torch.no_grad()
def real_x0(
    teachers: TeacherSet,
    weights: torch.Tensor,
    z_t: torch.Tensor,
    t: torch.Tensor,
    cond: Cond,
    guidance_scale: float,
    cfg: str = "plain",
) -> torch.Tensor:
    """x0_real = Σ_m λ_m · x0_m with CFG; teacher m runs only on the items where its weight > 0."""
    assert weights.shape == (len(cond), len(teachers)), (
        f"weights {tuple(weights.shape)} for {len(cond)} items"
    )
    weights = weights.to(z_t.device, z_t.dtype)
    out = torch.zeros_like(z_t)
    for m, name in enumerate(teachers.names):
        idx = (weights[:, m] > 0).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        x0 = teachers[name].x0(z_t[idx], t[idx], cond.select(idx), guidance_scale, cfg)
        w = weights[idx, m].reshape(-1, *([1] * (x0.dim() - 1)))
        out[idx] += w * x0
    return out
