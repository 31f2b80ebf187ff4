"""Pretrain the tiny world's teachers: ``python -m trainers.tinyworld.pretrain``.

``base`` is trained by flow matching on every category and every edit type, with 10 % condition
dropout so classifier-free guidance works; ``text`` is ``base`` fine-tuned on the text category
(the task specialist that step-wise multi-teacher guidance brings in from the switch step on).
The judge has its own trainer (``python -m trainers.tinyworld.judge --train``); this script trains
it too when its checkpoint is missing. Each checkpoint folder gets a model card (card.json) with
steps, seed, wall time and the teacher@50 scores; weights are stored in fp16 (safetensors) to keep
the repository small and load back as float32.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from trainers import flow
from trainers.checkpoint import load_model, save_card, save_model
from trainers.cond import Cond, velocity
from trainers.models import FlowModel

from .judge import JudgeConfig, save_judge, train_judge
from .world import CHECKPOINTS, TinyWorld, seeds_from


@dataclass(frozen=True)
class TeacherConfig:
    """How one teacher is trained (recorded in its model card)."""

    size: str = "tiny"  # trainers.models.MODEL_SIZES
    steps: int = 3000
    batch_size: int = 64
    lr: float = 5e-4  # AdamW; prototype value that trained this model size well (DESIGN §5)
    warmup_steps: int = 100
    edit_fraction: float = 0.4  # share of edit items per batch
    cond_dropout: float = 0.1  # prompts replaced by "" so the model also learns the unconditional v
    # The EMA is what ships. 0.99, not the usual 0.999: runs here are a few thousand steps, and a
    # 0.999 average lagged so far behind that, 2,000 steps in, it scored 0.16 at 50 NFE, while 250 more
    # steps from an earlier snapshot of it with a 0.99 average scored 0.40 (96 items; see the base card).
    ema_decay: float = 0.99
    categories: tuple[str, ...] | None = None  # None = all T2I categories; else only these
    seed: int = 0
    # "constant" after warm-up, or "cosine" down to 10 % of lr at the last step (a long run's end
    # averages less noise into its EMA when the steps shrink)
    lr_decay: str = "constant"


def _drop_text(cond: Cond, p: float, gen: torch.Generator) -> Cond:
    """Replace each item's prompt by the empty prompt with probability ``p`` (CFG training)."""
    drop = torch.rand(len(cond), generator=gen) < p
    text = torch.where(drop[:, None, None], cond.null_text, cond.text)
    mask = torch.where(drop[:, None], cond.null_mask, cond.text_mask)
    return replace(cond, text=text, text_mask=mask)


def _of_categories(pool, categories: tuple[str, ...] | None):
    """The rows of a pool whose ``category`` is one of ``categories`` (None: every row)."""
    if categories is None:
        return pool
    return pool.filter(np.isin(pool.column("category").to_numpy(zero_copy_only=False), categories))


class TeacherData:
    """Fresh training batches: data images of random pool rows, new render jitter every draw."""

    def __init__(self, world: TinyWorld, config: TeacherConfig):
        self.prompts = _of_categories(world.prompt_pool("train"), config.categories).to_pylist()
        # a specialist's edits are those of its categories' source images (what it will guide)
        edits = _of_categories(world.edit_pool("train"), config.categories)
        self.edits = edits.to_pylist() if config.edit_fraction > 0 else []
        self.world, self.config = world, config
        self.rng = np.random.default_rng(config.seed)
        # encode every prompt once up front (cached on disk): the loop then never waits on MiniLM
        world.encoder.encode(
            [r["prompt"] for r in self.prompts] + [r["instruction"] for r in self.edits] + [""]
        )

    def batch(self) -> tuple[torch.Tensor, Cond]:
        """Clean images x [B, 3, H, W] and their conditions (T2I items first, then edits)."""
        n_edit = round(self.config.batch_size * self.config.edit_fraction) if self.edits else 0
        n_t2i = self.config.batch_size - n_edit
        rows = [self.prompts[i] for i in self.rng.integers(len(self.prompts), size=n_t2i)]
        images = [self.world.real_t2i(rows, seed=int(self.rng.integers(2**62)))]
        conds = [self.world.t2i_cond(rows)]
        if n_edit:
            edits = [self.edits[i] for i in self.rng.integers(len(self.edits), size=n_edit)]
            seeds = seeds_from(self.rng, n_edit)
            images.append(self.world.render_edits(edits, "target", seeds))
            conds.append(self.world.edit_cond(edits, seeds))
        return torch.cat(images), Cond.concat(conds)


@torch.no_grad()
def _update_ema(ema: FlowModel, model: FlowModel, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1 - decay)


def train_teacher(
    world: TinyWorld,
    config: TeacherConfig,
    init: FlowModel | None = None,
    snapshot=None,
    snapshot_every: int = 500,
) -> tuple[FlowModel, dict]:
    """Flow-matching training of one teacher; returns its EMA weights and a training record.

    ``snapshot(ema, record)`` is called every ``snapshot_every`` steps, so a long run leaves usable
    intermediate weights (and can be judged while it goes on).
    """
    torch.manual_seed(config.seed)
    model = (
        init.train().requires_grad_(True)
        if init is not None
        else FlowModel.build(config.size, world.resolution)
    )
    ema = FlowModel.from_config(model.config)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    data = TeacherData(world, config)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(config, s))
    gen = torch.Generator().manual_seed(config.seed)
    start, losses = time.perf_counter(), []
    bar = tqdm(range(config.steps), desc="teacher", unit="step")
    for step in bar:
        x, cond = data.batch()
        cond = _drop_text(cond, config.cond_dropout, gen)
        eps = torch.randn(x.shape, generator=gen)
        t = flow.sample_train_t(len(x), generator=gen)
        loss = flow.flow_matching_loss(lambda z, tt, cond=cond: velocity(model, z, tt, cond), x, eps, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        # no EMA during warm-up: the early iterates are noise and would dominate a 0.999 average for long
        _update_ema(ema, model, config.ema_decay if step >= config.warmup_steps else 0.0)
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if snapshot is not None and (step + 1) % snapshot_every == 0 and step + 1 < config.steps:
            snapshot(ema, _record(config, step + 1, start, losses))
    return ema.eval(), _record(config, config.steps, start, losses)


def _lr_factor(config: TeacherConfig, step: int) -> float:
    """Linear warm-up, then constant or cosine decay to 0.1 (see TeacherConfig.lr_decay)."""
    warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
    if config.lr_decay == "constant" or step < config.warmup_steps:
        return warm
    if config.lr_decay != "cosine":
        raise ValueError(f"lr_decay={config.lr_decay!r}: expected 'constant' or 'cosine'")
    done = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))


def _record(config: TeacherConfig, steps_done: int, start: float, losses: list[float]) -> dict:
    return {
        "config": asdict(config),
        "steps_done": steps_done,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "final_loss": float(np.mean(losses[-100:])),
    }


def save_teacher(model: FlowModel, path: Path, card: dict) -> None:
    """diffusers folder in fp16 (half the bytes; the tiny world's scores do not move) + card.json."""
    save_model(model, path, dtype=torch.float16)
    save_card(path, card)


MICRO_WORLD = {"train_prompts": 96, "train_edits": 48, "heldout_prompts": 96, "heldout_edits": 96}
"""Pool sizes of the micro world used by tests: every code path runs, in seconds."""


def build_micro_checkpoints(out: Path, steps: int = 4, judge: Path = CHECKPOINTS / "judge") -> Path:
    """Micro teachers (the ``micro`` model size, a few steps) beside a copy of the shipped judge.

    For tests and smoke runs: ``TinyWorld(checkpoints=out, **MICRO_WORLD)`` then behaves like the real
    world in every respect but quality.
    """
    out = Path(out)
    world = TinyWorld(checkpoints=out, **MICRO_WORLD)
    config = TeacherConfig(size="micro", steps=steps, batch_size=8, warmup_steps=1)
    base, record = train_teacher(world, config)
    save_teacher(base, out / "base", {"name": "base", **record})
    text, record = train_teacher(world, replace(config, categories=("text",)), init=base)
    save_teacher(text, out / "text", {"name": "text", **record})
    shutil.copytree(judge, out / "judge", dirs_exist_ok=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.tinyworld.pretrain", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=CHECKPOINTS, help="checkpoint folder (judge/, base/, text/)"
    )
    parser.add_argument("--size", default="tiny", help="model size from trainers.models.MODEL_SIZES")
    parser.add_argument(
        "--base-steps", type=int, default=3000, help="flow-matching steps of the base teacher"
    )
    parser.add_argument(
        "--text-steps", type=int, default=400, help="fine-tuning steps of the text specialist"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="items per step (T2I + edits)")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak AdamW learning rate of the base teacher")
    parser.add_argument("--lr-decay", choices=("constant", "cosine"), default="constant",
                        help="learning rate after warm-up")
    parser.add_argument("--base-init", type=Path,
                        help="continue the base teacher from this checkpoint folder instead of from scratch")
    parser.add_argument("--train-prompts", type=int, default=24000, help="size of the training prompt pool")
    parser.add_argument("--train-edits", type=int, default=12000, help="size of the training edit pool")
    parser.add_argument("--only", choices=("judge", "base", "text"), action="append", help="train only these")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and data")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--no-eval", action="store_true", help="skip the teacher@50 scores in the model cards"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    todo = set(args.only or ("judge", "base", "text"))
    world = TinyWorld(checkpoints=args.out, train_prompts=args.train_prompts, train_edits=args.train_edits)
    if "judge" in todo and not (args.out / "judge" / "model.safetensors").exists():
        judge, card = train_judge(2000, 128, seed=args.seed, config=JudgeConfig(resolution=world.resolution))
        save_judge(judge, args.out / "judge", card)
    base_cfg = TeacherConfig(
        size=args.size, steps=args.base_steps, batch_size=args.batch_size, seed=args.seed,
        lr=args.lr, lr_decay=args.lr_decay, warmup_steps=20 if args.base_init else 100,
    )
    if "base" in todo:
        init = load_model(FlowModel, args.base_init) if args.base_init else None
        base, record = train_teacher(world, base_cfg, init=init, snapshot=_snapshot(args.out / "base"))
        if args.base_init:
            record["init"] = str(args.base_init)
        _finish(world, "base", base, record, args)
    if "text" in todo:
        text_cfg = replace(
            base_cfg,
            steps=args.text_steps,
            lr=1e-4,
            warmup_steps=20,
            categories=("text",),  # text prompts and the edits of text images (glyph edits among them)
            ema_decay=0.99,
        )
        text, record = train_teacher(world, text_cfg, init=world.load_teacher_model("base"))
        _finish(world, "text", text, record, args)


def _snapshot(path: Path):
    """Save intermediate EMA weights (card marked partial) so a long run can be judged early."""
    return lambda model, record: save_teacher(model, path, {"partial": True, **record})


def _finish(world: TinyWorld, name: str, model: FlowModel, record: dict, args) -> None:
    """Score the teacher (unless --no-eval), then save it with its card."""
    card = {"name": name, **record}
    save_teacher(model, args.out / name, card)
    if not args.no_eval:
        from trainers.evaluate import EvalConfig, evaluate_teacher

        card["scores@50"] = evaluate_teacher(world, model, nfe=50, config=EvalConfig(items=512))
        save_teacher(model, args.out / name, card)
    print(json.dumps({k: card[k] for k in ("name", "wall_time_s", "final_loss")}))


if __name__ == "__main__":
    main()
