"""One DMD generator cycle on a real-format Qwen-Image transformer: time, peak memory, model FLOPs utilisation.

    python -m benchmarks.real_world_step                       # CPU, tiny config (seconds): checks the path
    python -m benchmarks.real_world_step --size 1b --device cuda --dtype bfloat16 --peak-tflops 989

Random weights: the speed of a cycle does not depend on them. ``--size 1b`` is a Qwen-Image transformer
of ≈1.0B parameters (12 blocks, 12 heads × 128; the real one is 60 × 24 × 128 = 20B) at 512² pixels =
1024 latent tokens, with Qwen2.5-VL-7B-sized text embeddings (3584). Adapter mode by default (LoRA
student and fake score on one frozen base), as a real world trains. The batch is half T2I, half edits
(an edit carries its source's 1024 tokens as well).

FLOPs are counted by torch's FlopCounterMode on one cycle (matmuls and attention, forward and backward),
so MFU = counted FLOPs / cycle time / ``--peak-tflops`` (the device's dense peak for the dtype; H200
bf16: 989). Prints one JSON line; cycle times are the median over ``--cycles`` after a warm-up cycle.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
from diffusers import QwenImageTransformer2DModel
from torch.utils.flop_counter import FlopCounterMode

from trainers.cond import Cond
from trainers.dmd import DMDConfig, DMDState, dmd_cycle
from trainers.teachers import Teacher, TeacherSet, teacher_schedule
from trainers.worlds.diffusers.latent import QwenLatentModel

SIZES = {
    # name: transformer shape, image side in pixels, text tokens
    "tiny": (dict(num_layers=2, num_attention_heads=2, attention_head_dim=16, axes_dims_rope=(4, 6, 6),
                  joint_attention_dim=32), 64, 16),
    # ≈ 40M parameters: large enough that the models, not torch's libraries, set a CPU process's peak RSS
    "small": (dict(num_layers=4, num_attention_heads=8, attention_head_dim=64, axes_dims_rope=(16, 24, 24),
                   joint_attention_dim=256), 64, 16),
    "1b": (dict(num_layers=12, num_attention_heads=12, attention_head_dim=128, axes_dims_rope=(16, 56, 56),
                joint_attention_dim=3584), 512, 128),
}
Z_DIM = 16  # Qwen-Image's VAE latent channels; the transformer sees them packed 2×2 (64)


def build_base(size: str, dtype: torch.dtype, device: str) -> QwenLatentModel:
    shape, _, _ = SIZES[size]
    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=4 * Z_DIM, out_channels=Z_DIM, **shape)
    # nn.Module.to: the random-weight model has no fp32-only modules, so diffusers' cast warning does not apply
    return QwenLatentModel(torch.nn.Module.to(transformer, device, dtype)).requires_grad_(False).eval()


def make_draw(size: str, batch: int, device: str, dtype: torch.dtype):
    """Random conditions of a half-T2I, half-edit batch (fixed: the cost does not depend on the values)."""
    shape, side, text_len = SIZES[size]
    latent = side // 8
    gen = torch.Generator().manual_seed(1)
    text = torch.randn(batch, text_len, shape["joint_attention_dim"], generator=gen)
    mask = torch.ones(batch, text_len, dtype=torch.long)
    is_edit = torch.arange(batch) >= batch // 2
    source = torch.randn(batch, Z_DIM, latent, latent, generator=gen)
    cats = tuple("edit" if e else "landscape" for e in is_edit.tolist())
    cond = Cond(text.to(dtype), mask, text.to(dtype) * 0, mask, cats, source.to(dtype), is_edit).to(device)
    return lambda: cond, (Z_DIM, latent, latent)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(args: argparse.Namespace) -> dict:
    dtype = getattr(torch, args.dtype)
    base = build_base(args.size, dtype, args.device)
    teachers = TeacherSet.of(Teacher("base", base))
    draw, image_shape = make_draw(args.size, args.batch, args.device, dtype)
    config = DMDConfig(nfe=4, critic_updates=args.critic_updates, image_shape=image_shape, warmup_steps=1,
                       lora_rank=args.lora_rank, gradient_checkpointing=args.gradient_checkpointing)
    schedule = teacher_schedule(teachers, nfe=4, switch_step=4)
    if args.mode == "adapter":
        state = DMDState.from_adapters(teachers, schedule, config, seed=0)
    else:
        state = DMDState.from_base(teachers, schedule, config, seed=0)
    trainable = sum(p.numel() for m in (state.student, state.fake) for p in m.parameters() if p.requires_grad)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    autocast = torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    with autocast:
        dmd_cycle(state, draw)  # warm-up: allocations, kernel choice
        with FlopCounterMode(display=False) as counter:
            dmd_cycle(state, draw)
        times = []
        for _ in range(args.cycles):
            _sync(args.device)
            start = time.perf_counter()
            dmd_cycle(state, draw)
            _sync(args.device)
            times.append(time.perf_counter() - start)
    cycle_s = statistics.median(times)
    flops = counter.get_total_flops()
    peak_gib = (torch.cuda.max_memory_allocated() if args.device.startswith("cuda")
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
    return {
        "size": args.size, "mode": args.mode, "device": args.device, "dtype": args.dtype, "batch": args.batch,
        "critic_updates": args.critic_updates, "image_tokens": (image_shape[1] // 2) ** 2,
        "base_params": sum(p.numel() for p in base.parameters()), "trainable_params": trainable,
        "cycle_s": round(cycle_s, 4), "cycle_s_spread": round(max(times) - min(times), 4),
        "tflop_per_cycle": round(flops / 1e12, 4),
        "achieved_tflops": round(flops / cycle_s / 1e12, 3),
        "mfu": round(flops / cycle_s / (args.peak_tflops * 1e12), 4) if args.peak_tflops else None,
        "peak_memory_gib": round(peak_gib, 3),
        "peak_memory_kind": "cuda max_memory_allocated" if args.device.startswith("cuda") else "process max RSS",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.real_world_step", description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="transformer config (default tiny)")
    parser.add_argument("--mode", choices=["adapter", "full"], default="adapter", help="student/fake as LoRA or copies")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="base weights + autocast")
    parser.add_argument("--batch", type=int, default=4, help="items per update (half T2I, half edit)")
    parser.add_argument("--critic-updates", type=int, default=5, help="fake-score updates per generator update")
    parser.add_argument("--cycles", type=int, default=3, help="timed cycles (median reported)")
    parser.add_argument("--lora-rank", type=int, default=16, help="LoRA rank in adapter mode")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute blocks in backward")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device dense peak, for MFU (H200 bf16: 989)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
