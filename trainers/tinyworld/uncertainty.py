"""Standard errors of the judge's aggregate scores: a bootstrap over the evaluation's prompts.

    se = score_se("t2i_score", {"landscape": ((adherence, purity), prompt_of), ...})
    # {"t2i_score_se/landscape": ..., ..., "t2i_score_se": ...}

A group's score is a product of means over its items (T2I: adherence × purity per category; edit:
edit adherence × preservation × purity per edit type) and the aggregate is the mean over groups,
so it has no simple analytic variance. The bootstrap resamples the prompts of each group with
replacement — a prompt's K samples together, since they share the prompt and are not independent
— recomputes every group's score and the aggregate, and reports the replicates' standard
deviation. It measures the benchmark's sampling noise (which items were drawn), not training-seed
noise. A private generator with a fixed seed keeps it reproducible and out of every random stream
the training or the evaluation uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

REPLICATES = 200  # the SE's own relative error is about 1/sqrt(2 * 200) = 5 %
SEED = 0

Group = tuple[Sequence[torch.Tensor], torch.Tensor]  # (per-item factors, the prompt id of each item)


def group_replicates(factors: Sequence[torch.Tensor], prompt_of: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """REPLICATES bootstrap values of prod_f mean(f) over one group's items, prompts resampled."""
    prompts, index = torch.unique(prompt_of, return_inverse=True)
    n = len(prompts)
    draw = torch.randint(n, (REPLICATES, n), generator=generator)  # row b: the prompts of replicate b
    items = torch.bincount(index, minlength=n).double()[draw].sum(1)  # items in each replicate
    value = torch.ones(REPLICATES, dtype=torch.float64)
    for factor in factors:
        per_prompt = torch.zeros(n, dtype=torch.float64).index_add_(0, index, factor.double())
        value = value * per_prompt[draw].sum(1) / items
    return value


def score_se(name: str, groups: Mapping[str, Group]) -> dict[str, float]:
    """``<name>_se/<group>`` for each group and ``<name>_se`` for their mean (the aggregate score)."""
    generator = torch.Generator().manual_seed(SEED)
    replicates = {g: group_replicates(factors, prompt_of, generator) for g, (factors, prompt_of) in groups.items()}
    out = {f"{name}_se/{g}": float(r.std()) for g, r in replicates.items()}
    if replicates:
        out[f"{name}_se"] = float(torch.stack(list(replicates.values())).mean(0).std())
    return out
