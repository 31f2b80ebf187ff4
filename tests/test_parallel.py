"""Tests of trainers/parallel.py: data parallelism is correct, not just running.

Two real processes (torch.multiprocessing, a gloo group on 127.0.0.1) each train on half of a
global batch; their first DMD cycle must equal one process's cycle on the whole batch: the same
averaged gradients (allclose) and the same weights afterwards, on every rank.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from trainers.distill import prepare
from trainers.dmd import dmd_cycle
from trainers.parallel import ONE_PROCESS, Shard
from trainers.recipe import Recipe
from trainers.sampling import gaussian, sharded_gaussian
from trainers.tinyworld.pretrain import MICRO_WORLD
from trainers.tinyworld.world import TinyWorld

# a global batch of 8 with T2I and edit rows, so the shards split a mixed batch
RECIPE = dict(batch_size=8, critic_updates=1, warmup_steps=1, nfe=4, t2i_edit_ratio=0.5, teacher_switch_step=2, seed=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_cycle(checkpoints: str, shard: Shard, out: Path) -> None:
    """Build the run's state as `distill` does, run one cycle, save the student's gradients and weights."""
    torch.set_num_threads(1)
    world = TinyWorld(checkpoints=checkpoints, **MICRO_WORLD)
    state, draw = prepare(Recipe(**RECIPE), world, "cpu", shard)
    dmd_cycle(state, draw)
    tensors = {f"grad.{k}": p.grad for k, p in state.student.named_parameters() if p.grad is not None}
    tensors |= {f"weight.{k}": p.detach() for k, p in state.student.named_parameters()}
    tensors |= {f"fake.{k}": p.detach() for k, p in state.fake.named_parameters()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"rank{shard.rank}-of-{shard.world}.safetensors"))


def _worker(rank: int, world_size: int, port: int, checkpoints: str, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        shard = Shard.current()
        assert shard == Shard(rank, world_size)
        _one_cycle(checkpoints, shard, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_make_the_one_process_update_on_the_same_global_batch(micro_checkpoints, tmp_path):
    _one_cycle(str(micro_checkpoints), ONE_PROCESS, tmp_path)
    mp.spawn(_worker, args=(2, _free_port(), str(micro_checkpoints), tmp_path), nprocs=2, join=True)
    alone = load_file(tmp_path / "rank0-of-1.safetensors")
    ranks = [load_file(tmp_path / f"rank{r}-of-2.safetensors") for r in range(2)]
    grads = [k for k in alone if k.startswith("grad.")]
    assert grads and set(ranks[0]) == set(alone)
    for key in alone:
        for r, tensors in enumerate(ranks):
            assert torch.allclose(tensors[key], alone[key], rtol=1e-4, atol=1e-6), f"rank {r}: {key}"
    # not vacuous: the update moved the student, and the gradients are not all zero
    assert any(alone[g].abs().max() > 0 for g in grads)


def test_one_process_shard_is_the_identity():
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(ONE_PROCESS.randn(5, (3,), gen()), torch.randn(5, 3, generator=gen()))
    assert torch.equal(ONE_PROCESS.rand(5, gen()), torch.rand(5, generator=gen()))
    assert ONE_PROCESS.rows(6) == slice(0, 6) and ONE_PROCESS.from_main({"a": 1}) == {"a": 1}


def test_shards_of_the_random_draws_make_the_global_draw():
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    whole = torch.randn(6, 2, generator=gen())
    halves = [Shard(r, 2).randn(3, (2,), gen()) for r in range(2)]
    assert torch.equal(torch.cat(halves), whole)


def test_sharded_step_noise_matches_the_one_process_stream():
    """The noise a process draws for its rows at each student step is the one-process stream's rows."""
    ks = torch.tensor([3, 0, 2, 1, 3, 0])
    eps = torch.zeros(6, 2)
    alone = gaussian(eps, torch.Generator().manual_seed(2))
    expected = {j: alone(j, (ks > j).nonzero().squeeze(1)) for j in range(3)}
    for rank in range(2):
        shard = Shard(rank, 2)
        local_ks = ks[shard.rows(6)]
        noise = sharded_gaussian(eps[shard.rows(6)], ks, shard, torch.Generator().manual_seed(2))
        for j in range(3):
            idx = (local_ks > j).nonzero().squeeze(1)
            global_positions = (ks > j).nonzero().squeeze(1).tolist()
            want = [expected[j][global_positions.index(int(i) + 3 * rank)] for i in idx]
            got = noise(j, idx)
            assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_a_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ValueError, match="does not split evenly over 3"):
        Shard(0, 3).rows(8)
