"""The Recipe: the typed, validated input of one distillation run.

A Recipe holds the three axes of the Qwen-Image-Flash study (data composition, step-wise
teacher guidance, T2I:Edit task mixture) plus the DMD2 training budget. It is validated once,
where it is built (from a sweep spec, a notebook or a test); the trainer trusts it afterwards.

The field names are the paper's words and are spelled the same everywhere: spec, MLflow
params, trials.parquet, notebook. `to_flat_dict` gives the dotted form used for logging
(`category_mix.text`), `from_params` accepts it back.

Validation is strict (no "3" -> 3 or 2.5 -> 2 coercion) because a silently coerced sweep
parameter would be logged as one value and trained as another. Recipe YAML is read in the
project's dialect (``trainers.yaml_dialect``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from trainers.yaml_dialect import load_yaml

# Teacher-weight schedules are float sums; this much rounding is tolerated per student step.
WEIGHT_SUM_TOL = 1e-6


class Recipe(BaseModel):
    """One DMD2 distillation run: what data, which teachers when, which task mix, what budget."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    # 1. Data composition: the categories of the T2I items, and of the edit items' source images.
    category_mix: dict[str, float] = Field(
        default_factory=lambda: {"landscape": 1.0, "portrait": 1.0, "text": 1.0},
        description=("Category name -> non-negative weight; normalised on use (see category_weights). "
                     "Edit rows are drawn with weight ∝ their source image's category weight."),
    )

    # 2. Task mixture.
    t2i_edit_ratio: float = Field(0.5, ge=0.0, le=1.0, description="Fraction of each batch that is T2I.")

    # Student sampler (declared before the teacher schedule, whose checks need nfe).
    nfe: int = Field(4, ge=1, le=8, description="Student steps (network function evaluations).")
    timestep_shift: float = Field(1.0, gt=0.0, description="Shift applied to the student's timestep list.")

    # 3. Step-wise multi-teacher guidance.
    teacher_switch_step: int | None = Field(
        None,
        ge=0,
        description="k*: base teacher for student steps k < k*, specialist for k >= k*; None = nfe.",
    )
    specialist: str = Field("text", min_length=1, description="Teacher brought in from k* on.")
    specialist_weight: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Specialist's weight from k* on (1 = hard switch, < 1 = blend with base).",
    )
    teacher_weights: dict[str, list[float]] | None = Field(
        None,
        description="General schedule: teacher -> weight per student step; instead of teacher_switch_step.",
    )

    # DMD2 optimisation budget.
    steps: int = Field(300, ge=1, description="Generator updates.")
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr_generator: float = Field(1e-4, gt=0.0)
    lr_fake: float = Field(1e-4, gt=0.0)
    warmup_steps: int = Field(10, ge=0, description=(
        "linear LR warm-up over this many iterations (F updates), as DMD2: G warms over "
        "warmup_steps / critic_updates of its own updates"))
    max_grad_norm: float = Field(10.0, gt=0.0)
    critic_updates: int = Field(5, ge=1, description="TTUR: fake-score updates per generator update.")
    guidance_scale: float = Field(3.0, ge=1.0, description="CFG scale applied to every real teacher.")
    cfg: Literal["plain", "norm_rescaled"] = Field(
        "plain", description="the real score's CFG: plain, or Qwen-Image's true CFG rescaled to the conditional norm")
    # DMD's gain comes in the first ~20 generator steps and the raw student wobbles after that
    # (DESIGN §7); a short EMA of it, evaluated at a fixed step, is steadier on the tiny world.
    ema_decay: float = Field(0.9, ge=0.0, lt=1.0, description="EMA of the generator (evaluated instead of it); 0 = off.")
    seed: int = Field(0, ge=0)

    # Reporting and evaluation.
    report_every: int = Field(50, ge=1, description="Generator steps between intermediate reports.")
    eval_items: int = Field(1024, ge=8, description="Items in the final evaluation.")
    eval_items_quick: int = Field(
        256, ge=8, validate_default=True, description="Items in each intermediate evaluation."
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"

    # How the run holds G and F (trainers/adapters.py). Real-size bases (~20B) only fit as adapters.
    model_mode: Literal["full", "adapter"] | None = Field(
        None,
        description="'full': G and F are trainable copies of the base; 'adapter': LoRA adapters on one "
        "frozen base; None: the world's default (World.default_model_mode).",
    )
    lora_rank: int = Field(16, ge=1, description="Rank of G's and F's LoRA adapters (alpha = rank); adapter mode only.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute G's and F's activations in backward: less memory, more time (GPU runs)."
    )

    @field_validator("category_mix")
    @classmethod
    def _check_mix(cls, mix: dict[str, float]) -> dict[str, float]:
        if not mix:
            raise ValueError("expected at least one category, found an empty mapping")
        for name, weight in mix.items():
            if not name.strip():
                raise ValueError(f"expected non-empty category names, found {name!r}")
            if weight < 0:
                raise ValueError(f"expected weights >= 0, found {name}: {weight}")
        if not any(w > 0 for w in mix.values()):
            raise ValueError(f"expected at least one weight > 0, found {mix}")
        return mix

    @field_validator("teacher_switch_step")
    @classmethod
    def _check_switch_step(cls, step: int | None, info: ValidationInfo) -> int | None:
        nfe = info.data.get("nfe")  # absent when nfe itself failed validation
        if step is not None and nfe is not None and step > nfe:
            raise ValueError(f"expected <= nfe ({nfe}), found {step}")
        return step

    @field_validator("teacher_weights")
    @classmethod
    def _check_teacher_weights(
        cls, weights: dict[str, list[float]] | None, info: ValidationInfo
    ) -> dict[str, list[float]] | None:
        """Each teacher has one weight in [0, 1] per student step; weights sum to 1 at every step.

        A schedule replaces the switch, so it is refused next to a teacher_switch_step (declared
        before it, so a field check here names teacher_weights, the key to remove or keep).
        """
        if weights is None:
            return None
        if info.data.get("teacher_switch_step") is not None:
            # The schedule would replace the switch while the logged switch step claims it acted.
            raise ValueError("expected either teacher_weights or teacher_switch_step, found both")
        if not weights:
            raise ValueError("expected at least one teacher, found an empty mapping")
        nfe = info.data.get("nfe")
        for name, schedule in weights.items():
            if not name.strip() or any(not 0.0 <= w <= 1.0 for w in schedule):
                raise ValueError(f"expected teacher names with weights in [0, 1], found {name!r}: {schedule}")
            if nfe is not None and len(schedule) != nfe:
                raise ValueError(
                    f"expected {nfe} weights per teacher (one per student step), found {name}: {schedule}"
                )
        if nfe is not None:
            for k in range(nfe):
                total = math.fsum(schedule[k] for schedule in weights.values())
                if abs(total - 1.0) > WEIGHT_SUM_TOL:
                    raise ValueError(
                        f"expected weights summing to 1 at every student step, found {total:.6g} at step {k}"
                    )
        return weights

    @field_validator("eval_items_quick")
    @classmethod
    def _check_quick_eval(cls, items: int, info: ValidationInfo) -> int:
        full = info.data.get("eval_items")
        if full is not None and items > full:
            raise ValueError(f"expected <= eval_items ({full}), found {items}")
        return items

    # -- derived views -------------------------------------------------------------------------

    @property
    def category_weights(self) -> dict[str, float]:
        """category_mix normalised to sum to 1 (what the data sampler draws from)."""
        total = math.fsum(self.category_mix.values())
        return {name: w / total for name, w in self.category_mix.items()}

    @property
    def switch_step(self) -> int:
        """The resolved teacher-switch step k* (nfe when unset: base teacher only)."""
        return self.nfe if self.teacher_switch_step is None else self.teacher_switch_step

    def to_flat_dict(self) -> dict[str, Any]:
        """Flat dict for logging: mapping fields become dotted keys (`category_mix.text`).

        teacher_weights lists stay lists under `teacher_weights.<teacher>` (MLflow stringifies them).
        """
        flat: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, dict):
                flat.update({f"{name}.{key}": item for key, item in value.items()})
            else:
                flat[name] = value
        return flat

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_params(cls, base: dict[str, Any], params: dict[str, Any]) -> Recipe:
        """Build a Recipe from a base dict overlaid with (sampled) params.

        Plain keys replace the base value. A dotted key `field.component` sets one component
        of a mapping field (`category_mix.text: 2.0`) and keeps the others.
        """
        merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
        for key, value in params.items():
            field, dot, component = key.partition(".")
            if not dot:
                merged[field] = value
                continue
            if field not in MIX_FIELDS:
                raise ValueError(
                    f"{key}: expected a dotted key on one of {sorted(MIX_FIELDS)}, found {field!r}"
                )
            mix = merged.get(field)
            if mix is None:
                mix = dict(cls.model_fields[field].get_default(call_default_factory=True))
            merged[field] = {**mix, component: value}
        return cls.model_validate(merged)

    def to_yaml(self) -> str:
        """The recipe as a YAML mapping (every field, defaults included)."""
        return yaml.safe_dump(self.model_dump(), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Recipe:
        """Load a recipe written by `to_yaml` (or by hand; unknown keys are errors)."""
        data = load_yaml(Path(path).read_text())
        return cls.model_validate(data if data is not None else {})


RECIPE_FIELDS: frozenset[str] = frozenset(Recipe.model_fields)

MIX_FIELDS: frozenset[str] = frozenset(
    name for name, info in Recipe.model_fields.items() if info.annotation == dict[str, float]
)
"""Recipe fields that are name -> weight mappings (today ``category_mix``), found from their type: the only
ones whose components can be set with a dotted key (`category_mix.text`) or searched over as a simplex."""
