"""The tiny world's judge: a small CNN that reads the category and every attribute of an image.

It plays the role of the VLM judge of a real benchmark: adherence and preservation are its
accuracies against ground truth, and its penultimate features serve for a Fréchet distance.
One classification head per (category, attribute), keyed ``"<category>.<attribute>"``, plus a
``"category"`` head. It is trained on fresh renders with noise and blur augmentation (so that
imperfect generated samples are still read), and shipped as safetensors + JSON (never pickle).

Train and ship it with ``python -m trainers.tinyworld.judge --train``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from trainers import checkpoint
from trainers.checkpoint import load_tensors, save_card, save_tensors

from .render import ATTRIBUTES, CATEGORIES, render_batch, sample_attributes

DEFAULT_PATH = Path(__file__).parent / "checkpoints" / "judge"
IGNORE = -100  # label of heads that do not apply to an image's category


def head_sizes() -> dict[str, int]:
    """Head name -> number of classes: ``category`` then ``<category>.<attribute>``."""
    heads = {"category": len(CATEGORIES)}
    heads |= {f"{c}.{a}": len(values) for c, attrs in ATTRIBUTES.items() for a, values in attrs.items()}
    return heads


@dataclass(frozen=True)
class JudgeConfig:
    """Shape of the judge; saved as config.json beside the weights."""

    resolution: int = 16  # image side it was trained on
    width: int = 32  # channels of the first conv block (the second has 2x)
    features: int = 128  # penultimate width (the Fréchet features)


class Judge(nn.Module):
    """Conv(3->w)x2, pool, conv(w->2w)x2, adaptive pool 4x4, linear -> features -> one head per attribute."""

    def __init__(self, config: JudgeConfig = JudgeConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),  # keeps coarse position: the sun's side is an attribute
            nn.Flatten(),
            nn.Linear(2 * w * 16, config.features), nn.ReLU(),
        )  # fmt: skip
        self.heads = nn.ModuleDict(
            {name.replace(".", "__"): nn.Linear(config.features, n) for name, n in head_sizes().items()}
        )

    def _check(self, images: torch.Tensor) -> None:
        r = self.config.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, r, r):
            raise ValueError(f"images: expected [N, 3, {r}, {r}] for this judge, got {list(images.shape)}")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate activations [N, features] (for the Fréchet distance)."""
        self._check(images)
        return self.body(images.float())

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head name."""
        h = self.features(images)
        return {name.replace("__", "."): head(h) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> dict[str, torch.Tensor]:
        """Predicted class index per head (LongTensor [N]); value names are ``ATTRIBUTES[c][a][i]``."""
        was_training = self.training
        self.eval()
        chunks = [self(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        self.train(was_training)
        return {name: torch.cat([c[name] for c in chunks]).argmax(-1) for name in head_sizes()}


def encode_labels(
    categories: Sequence[str], attrs_list: Sequence[Mapping[str, str]]
) -> dict[str, torch.Tensor]:
    """Ground truth as class indices per head; ``IGNORE`` where a head does not apply."""
    labels = {name: torch.full((len(categories),), IGNORE, dtype=torch.long) for name in head_sizes()}
    for i, (category, attrs) in enumerate(zip(categories, attrs_list, strict=True)):
        labels["category"][i] = CATEGORIES.index(category)
        for a, values in ATTRIBUTES[category].items():
            labels[f"{category}.{a}"][i] = values.index(attrs[a])
    return labels


def random_batch(n: int, rng: np.random.Generator, resolution: int = 16):
    """``n`` fresh renders (categories balanced in expectation) and their labels."""
    categories = [CATEGORIES[i] for i in rng.integers(len(CATEGORIES), size=n)]
    attrs = [sample_attributes(c, rng) for c in categories]
    seeds = rng.integers(2**62, size=n)
    return render_batch(categories, attrs, seeds, resolution), encode_labels(categories, attrs)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur (half the images), colour shift and Gaussian noise of random strength, clipped to [-1, 1].

    Generated samples are blurrier and noisier than renders; the judge must still read them.
    """
    n = len(images)
    kernel = torch.tensor([1.0, 2.0, 1.0]) / 4
    kernel = (kernel[:, None] * kernel[None]).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    blur = torch.rand(n, 1, 1, 1, generator=generator) < 0.5
    images = torch.where(blur, blurred, images)
    images = images + 0.1 * (2 * torch.rand(n, 3, 1, 1, generator=generator) - 1)
    sigma = 0.2 * torch.rand(n, 1, 1, 1, generator=generator)
    return (images + sigma * torch.randn(images.shape, generator=generator)).clamp(-1, 1)


def loss_fn(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over heads of the cross-entropy on the images the head applies to."""
    total = logits["category"].new_zeros(())
    for name, target in labels.items():
        if (target != IGNORE).any():
            total = total + F.cross_entropy(logits[name], target, ignore_index=IGNORE)
    return total


def accuracy_table(judge: Judge, images: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy per head over the images the head applies to."""
    predictions = judge.predict(images)
    table = {}
    for name, target in labels.items():
        applies = target != IGNORE
        table[name] = float((predictions[name][applies] == target[applies]).float().mean())
    return table


def noise_accuracy(judge: Judge, n: int, seed: int) -> dict[str, float]:
    """Accuracy on uniform noise images against random labels (chance = 1 / classes)."""
    generator = torch.Generator().manual_seed(seed)
    r = judge.config.resolution
    images = torch.rand(n, 3, r, r, generator=generator) * 2 - 1
    predictions = judge.predict(images)
    return {
        name: float((predictions[name] == torch.randint(k, (n,), generator=generator)).float().mean())
        for name, k in head_sizes().items()
    }


def train_judge(
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    config: JudgeConfig = JudgeConfig(),
    n_eval: int = 3000,
    progress: bool = True,
) -> tuple[Judge, dict]:
    """Train a judge on fresh renders; return it and its model card (accuracies on held-out renders)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 0])
    generator = torch.Generator().manual_seed(seed)
    judge = Judge(config)
    optimiser = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="judge", disable=not progress)
    for _ in bar:
        images, labels = random_batch(batch_size, rng, config.resolution)
        loss = loss_fn(judge(augment(images, generator)), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    wall = time.perf_counter() - start
    # Held-out renders: a different RNG stream, so new attribute draws and new render seeds.
    images, labels = random_batch(n_eval, np.random.default_rng([seed, 1]), config.resolution)
    card = {
        "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "wall_time_s": round(wall, 1),
        "parameters": sum(p.numel() for p in judge.parameters()), "n_eval": n_eval,
        "heldout_accuracy": _rounded(accuracy_table(judge, images, labels)),
        "noise_accuracy": _rounded(noise_accuracy(judge, n_eval, seed)),
        "chance": _rounded({name: 1 / k for name, k in head_sizes().items()}),
    }  # fmt: skip
    return judge, card


def _rounded(table: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in table.items()}


def save_judge(judge: Judge, path: str | Path = DEFAULT_PATH, card: dict | None = None) -> Path:
    """Write model.safetensors, config.json (shape + heads) and card.json into the folder ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_tensors(judge.state_dict(), path / "model.safetensors")
    config = {**asdict(judge.config), "heads": head_sizes()}
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if card is not None:
        save_card(path, card)
    return path


def load_judge(path: str | Path = DEFAULT_PATH) -> Judge:
    """Load a judge saved by :func:`save_judge` (safetensors, no pickle), in eval mode."""
    path = Path(path)
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"judge: no model.safetensors in {path}; train one with `python -m trainers.tinyworld.judge --train`"
        )
    config = json.loads((path / "config.json").read_text())
    heads = config.pop("heads")
    if heads != head_sizes():
        raise ValueError(
            f"judge {path}: its heads {heads} do not match this world's attributes {head_sizes()}; retrain it"
        )
    judge = Judge(JudgeConfig(**config))
    judge.load_state_dict(load_tensors(path / "model.safetensors"))
    return judge.eval()


def load_card(path: str | Path = DEFAULT_PATH) -> dict:
    """The model card (training record and accuracy table) of a saved judge."""
    return checkpoint.load_card(path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.tinyworld.judge", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--train", action="store_true", help="train a judge and save it with its model card")
    parser.add_argument("--steps", type=int, default=1500, help="optimiser steps (fresh renders each step)")
    parser.add_argument("--batch-size", type=int, default=128, help="renders per step")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, renders and augmentation")
    parser.add_argument("--resolution", type=int, default=16, choices=(16, 32), help="image side")
    parser.add_argument(
        "--n-eval", type=int, default=3000, help="held-out renders (and noise images) for the card"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH, help="output folder")
    args = parser.parse_args(argv)
    if not args.train:
        parser.error("nothing to do: pass --train")
    torch.set_num_threads(args.threads)
    config = JudgeConfig(resolution=args.resolution)
    judge, card = train_judge(args.steps, args.batch_size, seed=args.seed, config=config, n_eval=args.n_eval)
    card["command"] = " ".join(
        ["python -m trainers.tinyworld.judge", *(sys.argv[1:] if argv is None else argv)]
    )
    save_judge(judge, args.out, card)
    worst = min(card["heldout_accuracy"], key=card["heldout_accuracy"].get)
    print(
        f"saved {args.out} ({card['wall_time_s']} s); worst held-out head {worst}: {card['heldout_accuracy'][worst]:.4f}"
    )


if __name__ == "__main__":
    main()
