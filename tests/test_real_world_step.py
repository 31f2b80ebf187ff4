"""benchmarks/real_world_step.py at its CPU tiny config: the real-size GPU check's code path, in seconds.

Run: .venv/bin/python -m pytest tests/test_real_world_step.py -q
"""

from __future__ import annotations

import json

from benchmarks import real_world_step


def run(capsys, *argv: str) -> dict:
    real_world_step.main(["--cycles", "1", "--critic-updates", "1", *argv])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_one_json_line_with_time_memory_and_flops(capsys):
    adapter = run(capsys)
    full = run(capsys, "--mode", "full")
    for row in (adapter, full):
        assert row["cycle_s"] > 0 and row["tflop_per_cycle"] > 0 and row["peak_memory_gib"] > 0
        assert row["image_tokens"] == 16 and row["mfu"] is None  # no --peak-tflops given
    # adapter mode trains the two LoRAs only; full mode trains two copies of the base
    assert full["trainable_params"] == 2 * full["base_params"]
    assert adapter["trainable_params"] < full["trainable_params"]
    assert run(capsys, "--peak-tflops", "1")["mfu"] > 0
