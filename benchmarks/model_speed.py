"""FlowModel speed on CPU: forward and forward+backward milliseconds per batch, text-to-image and edit.

    python -m benchmarks.model_speed [--batch 16] [--resolution 16] [--repeats 7] [--threads 1]

Prints one JSON line. Medians over repeats, because this machine kind has transient slowdowns (DESIGN §10).
Reference (DESIGN §10, 2 threads): tiny, B=16, 16×16: 26 ms forward / 77 ms forward+backward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from trainers.models import FlowModel

TEXT_LEN = 24  # TextEncoder's default max_length


def _median_ms(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(times), 2)


def measure(size: str, batch: int, resolution: int, edit: bool, repeats: int) -> dict[str, float]:
    """Forward (no grad) and forward+backward ms of one FlowModel size on random inputs."""
    gen = torch.Generator().manual_seed(0)
    model = FlowModel.build(size, resolution=resolution)
    z = torch.randn(batch, 3, resolution, resolution, generator=gen)
    t = torch.rand(batch, generator=gen)
    text = torch.randn(batch, TEXT_LEN, model.config.text_dim, generator=gen)
    mask = torch.ones(batch, TEXT_LEN, dtype=torch.long)
    mask[:, TEXT_LEN // 2 :] = 0  # prompts are shorter than max_length: padding is the usual case
    source = torch.randn_like(z) if edit else None

    def forward():
        with torch.no_grad():
            model(z, t, text, mask, source)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(z, t, text, mask, source).square().mean().backward()

    return {"fwd_ms": _median_ms(forward, repeats), "fwd_bwd_ms": _median_ms(forward_backward, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="images per batch")
    parser.add_argument("--resolution", type=int, default=16, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (one per trial in a sweep)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, object] = {"batch": args.batch, "resolution": args.resolution, "threads": args.threads}
    for size in ("tiny", "micro"):
        for task, edit in (("t2i", False), ("edit", True)):
            for key, ms in measure(size, args.batch, args.resolution, edit, args.repeats).items():
                result[f"{size}_{task}_{key}"] = ms
    print(json.dumps(result))


if __name__ == "__main__":
    main()
