"""Memory of adapter mode vs full mode: what one trial holds, measured, and projected to Qwen-Image.

    python -m benchmarks.adapter_memory [--micro] [--batch 4] [--rank 16] [--steps 1] [--threads 1]

Each mode runs in a fresh subprocess (so its peak RSS is its own): build the run with
``trainers.distill.prepare``, do ``--steps`` DMD cycles (gradients and AdamW state exist then), and
count the bytes of the distinct tensor storages it holds: the teachers (``base_bytes``, held once in
either mode), the trainable weights and the EMA that are not the teachers' (``model_bytes``), their
gradients and the AdamW state (``training_bytes`` = the three). ``maxrss_mb`` is the process's peak RSS
(on the tiny world it is mostly torch's libraries). ``qwen_image`` projects the same bookkeeping to the
real 20B transformer (diffusers' default QwenImageTransformer2DModel config, built on the meta device:
no memory), assuming a bf16 base and float32 trainable weights, gradients and AdamW moments.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

from benchmarks.dmd_step import add_world_args, open_world
from trainers.adapters import QWEN_IMAGE_TARGETS
from trainers.distill import prepare
from trainers.dmd import dmd_cycle
from trainers.recipe import Recipe
from trainers.world import World

ROOT = Path(__file__).resolve().parents[1]
MODES = ("full", "adapter")


def _storages(tensors: Iterable[torch.Tensor | None]) -> dict[int, int]:
    """Storage address -> bytes of the distinct storages behind ``tensors`` (shared weights count once)."""
    out = {}
    for t in tensors:
        if t is not None:
            out[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return out


def run_bytes(recipe: Recipe, world: World, steps: int = 1) -> dict[str, int]:
    """Bytes a run of ``recipe`` holds after ``steps`` DMD cycles, by kind (see the module docstring)."""
    state, draw = prepare(recipe, world)
    for _ in range(steps):
        dmd_cycle(state, draw)
    teachers = [m for t in state.teachers.values() for m in (*t.model.parameters(), *t.model.buffers())]
    base = _storages(teachers)
    models = [state.student, state.fake] + ([state.ema] if state.ema is not None else [])
    held = _storages(t for m in models for t in (*m.parameters(), *m.buffers()))
    model = {k: v for k, v in held.items() if k not in base}
    trainable = [p for m in (state.student, state.fake) for p in m.parameters() if p.requires_grad]
    grads = _storages(p.grad for p in trainable)
    moments = _storages(v for opt in (state.opt_student, state.opt_fake) for s in opt.state.values()
                        for v in s.values() if isinstance(v, torch.Tensor))
    training = sum(model.values()) + sum(grads.values()) + sum(moments.values())
    return {
        "trainable_params": sum(p.numel() for p in trainable),
        "base_bytes": sum(base.values()),
        "model_bytes": sum(model.values()),
        "grad_bytes": sum(grads.values()),
        "optimizer_bytes": sum(moments.values()),
        "training_bytes": training,
        "total_bytes": sum(base.values()) + training,
    }


def qwen_image_projection(rank: int) -> dict[str, float]:
    """GB a DMD run of the default Qwen-Image transformer holds in each mode (bf16 base; G, F trained in
    float32 with AdamW; an EMA of G): full = base + 2 · 16 B/param + 4 B/param (EMA), adapter = the same
    with the LoRA parameter count of ``QWEN_IMAGE_TARGETS`` at ``rank``."""
    from diffusers import QwenImageTransformer2DModel

    with torch.device("meta"):
        model = QwenImageTransformer2DModel()
    n = sum(p.numel() for p in model.parameters())
    lora = sum(rank * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and re.fullmatch(QWEN_IMAGE_TARGETS, name))
    gb = lambda params, per_param: params * per_param / 1e9  # noqa: E731
    base = gb(n, 2)
    return {
        "params_b": round(n / 1e9, 2),
        "lora_params_per_adapter_m": round(lora / 1e6, 1),
        "full_gb": round(base + gb(2 * n, 16) + gb(n, 4), 1),
        "adapter_gb": round(base + gb(2 * lora, 16) + gb(lora, 4), 1),
        "base_gb": round(base, 1),
    }


def _child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    recipe = Recipe(batch_size=args.batch, critic_updates=2, warmup_steps=0, model_mode=args.child,
                    lora_rank=args.rank, ema_decay=0.9)
    figures = run_bytes(recipe, open_world(args), args.steps)
    figures["maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(figures))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adapter_memory", description=__doc__.splitlines()[0])
    add_world_args(parser)
    parser.add_argument("--batch", type=int, default=4, help="recipe batch_size")
    parser.add_argument("--rank", type=int, default=16, help="lora_rank of adapter mode")
    parser.add_argument("--steps", type=int, default=1, help="DMD cycles before counting")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)  # one mode, in this process
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return
    passed = list(argv if argv is not None else sys.argv[1:])
    modes = {}
    for mode in MODES:
        done = subprocess.run([sys.executable, "-m", "benchmarks.adapter_memory", *passed, f"--child={mode}"],
                              cwd=ROOT, capture_output=True, text=True, check=True)
        modes[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    full, adapter = modes["full"], modes["adapter"]
    print(json.dumps({
        "micro": args.micro, "batch": args.batch, "rank": args.rank, "full": full, "adapter": adapter,
        "training_bytes_ratio": round(adapter["training_bytes"] / full["training_bytes"], 4),
        "total_bytes_ratio": round(adapter["total_bytes"] / full["total_bytes"], 4),
        "qwen_image": qwen_image_projection(args.rank),
    }))


if __name__ == "__main__":
    main()
