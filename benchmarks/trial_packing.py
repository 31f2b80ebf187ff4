"""Trials sharing a device: the time per trial when N trials share one GPU (`gpu: 1/N`) against one alone.

    python -m benchmarks.trial_packing SPEC [--share 4] [--device gpu|cpu] [--steps 60]

Runs the spec's base recipe twice, in fresh run folders (FIFO; the trials differ only in their
training seed, so every one costs the same):
once as one trial alone, then as N concurrent trials with `resources.gpu = 1/N` (`--device cpu`:
the machine's CPUs split N ways instead, for a dry run of the script). Prints one JSON line:
- `alone_s`: the lone trial's own running time (Ray's time_total_s, `wall_s` in trials.parquet);
- `shared_s`: the mean running time of the N packed trials;
- `slowdown` = shared_s / alone_s (1.0 = sharing costs a trial nothing; N = no gain at all);
- `throughput_gain` = N · (lone sweep's wall time) / (packed sweep's wall time): trials per hour, packed / alone.
Size `gpu:` from this and the trial's peak memory: four trials fit a GPU when each needs under a
quarter of its memory, and they are worth packing while `slowdown` stays well below N.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import yaml

from orchestrator.spec import load_spec
from orchestrator.sweep.engine import run_sweep


def _run(spec_path: Path, share: int, device: str, steps: int, folder: Path) -> tuple[list[float], float]:
    """Per-trial running times and the sweep's wall time, for `share` trials packed on one device."""
    cpus = os.cpu_count() or 1
    resources = {"cpu": 1.0, "gpu": 1.0 / share} if device == "gpu" else {"cpu": max(1.0, cpus / share), "gpu": 0.0}
    data = yaml.safe_load(spec_path.read_text())
    data.update({
        "name": f"{data['name']}_x{share}",
        "base": data.get("base", {}) | {"steps": steps, "report_every": steps},
        "search": {"seed": {"grid": list(range(share))}},
        "sampler": {"name": "grid", "seed": 0},
        "scheduler": None, "confirm": None,
        "budget": {"trials": share, "concurrent": share},
        "resources": resources,
        "tracking": {"uri": f"sqlite:///{folder / 'mlflow.db'}"},
    })
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    outcome = run_sweep(load_spec(folder / "spec.yaml"), runs_dir=folder / "runs")
    return outcome.tables.trials["wall_s"].to_list(), outcome.wall_s


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.trial_packing", description=__doc__.split("\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--share", type=int, default=4, help="trials per device (gpu: 1/share)")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--steps", type=int, default=60, help="generator steps per trial")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trial-packing-") as tmp:
        alone, alone_wall = _run(args.spec, 1, args.device, args.steps, Path(tmp) / "alone")
        shared, shared_wall = _run(args.spec, args.share, args.device, args.steps, Path(tmp) / "shared")
    alone_s, shared_s = alone[0], sum(shared) / len(shared)
    print(json.dumps({
        "benchmark": "trial_packing", "device": args.device, "share": args.share, "steps": args.steps,
        "alone_s": round(alone_s, 2), "shared_s": round(shared_s, 2),
        "shared_s_each": [round(s, 2) for s in shared], "slowdown": round(shared_s / alone_s, 3),
        "throughput_gain": round(args.share * alone_wall / shared_wall, 3),
    }))


if __name__ == "__main__":
    main()
