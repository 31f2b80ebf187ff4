"""Tests of trainers/adapters.py: adapter mode of DMD2, student and fake score as LoRA adapters on one
frozen base, on the micro world (and a latent stand-in over a tiny QwenImageTransformer2DModel).

Run: .venv/bin/python -m pytest tests/test_adapters.py -q
"""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import QwenImageTransformer2DModel
from pydantic import ValidationError

from benchmarks.adapter_memory import run_bytes
from trainers.adapters import AdapterView, LoraHost, LoraSpec, merged_student
from trainers.checkpoint import ADAPTER_CONFIG, ADAPTER_WEIGHTS, load_checkpoint, load_model, save_model
from trainers.cond import velocity
from trainers.distill import distill, prepare
from trainers.dmd import dmd_cycle
from trainers.models import FlowModel, patchify, unpatchify
from trainers.recipe import Recipe

MICRO = dict(batch_size=4, critic_updates=2, warmup_steps=2, eval_items=24, eval_items_quick=12)
RANK = 4
# micro FlowModel (2 blocks, width 32, MLP 128): per block 8 attention projections 32→32 and 4 MLP linears
# 32↔128 carry an adapter, rank·(in + out) parameters each
LORA_PER_ADAPTER = 2 * (8 * RANK * (32 + 32) + 4 * RANK * (32 + 128))


def recipe(**fields) -> Recipe:
    return Recipe(**(MICRO | {"model_mode": "adapter", "lora_rank": RANK} | fields))


def ids(params) -> set[int]:
    return {id(p) for p in params}


def clones(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def probe(world, n: int = 4):
    """Fixed model inputs: noisy images, times and the conditions of n training prompts."""
    g = torch.Generator().manual_seed(1)
    cond = world.t2i_cond(world.prompt_pool("train").to_pylist()[:n])
    return torch.randn(n, *world.image_shape, generator=g), torch.rand(n, generator=g) * 0.9 + 0.05, cond


def test_the_trainable_parameters_are_the_two_adapters_and_the_base_is_shared(micro_world):
    state, _ = prepare(recipe(ema_decay=0.9), micro_world)
    host, base = state.student.host, state.teachers["base"].model
    assert isinstance(state.student, AdapterView) and state.fake.host is host and state.ema.host is host
    student, fake, ema = ids(state.student.parameters()), ids(state.fake.parameters()), ids(state.ema.parameters())
    assert sum(p.numel() for p in state.student.parameters()) == LORA_PER_ADAPTER
    assert sum(p.numel() for p in state.fake.parameters()) == LORA_PER_ADAPTER
    lora = ids(p for name, p in host.model.named_parameters() if "lora_" in name)
    assert lora == student | fake | ema and len(lora) == len(student) + len(fake) + len(ema)
    assert ids(p for p in host.model.parameters() if p.requires_grad) == student | fake
    assert ids(p for g in state.opt_student.param_groups for p in g["params"]) == student
    assert ids(p for g in state.opt_fake.param_groups for p in g["params"]) == fake
    # one base: every non-adapter tensor of the host is the base teacher's own tensor, none is copied
    assert ids(p for name, p in host.model.named_parameters() if "lora_" not in name) == ids(base.parameters())
    assert not any(p.requires_grad for p in base.parameters())
    assert not any("lora" in name for name, _ in base.named_modules())  # the teacher's module is untouched


def test_a_run_trains_both_adapters_and_leaves_base_and_teacher_bit_identical(micro_world):
    state, draw = prepare(recipe(ema_decay=0.0), micro_world)
    base = state.teachers["base"].model
    before = {k: v.clone() for k, v in base.state_dict().items()}
    student0, fake0 = clones(state.student), clones(state.fake)
    z, t, cond = probe(micro_world)
    with torch.no_grad():
        teacher_v = velocity(base, z, t, cond)
        assert torch.equal(velocity(state.student, z, t, cond), teacher_v)  # B = 0: G starts as the base
    for _ in range(3):
        dmd_cycle(state, draw)
    after = base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(a, b) for a, b in zip(student0, state.student.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(fake0, state.fake.parameters(), strict=True))
    assert all(p.requires_grad for p in (*state.student.parameters(), *state.fake.parameters()))
    with torch.no_grad():
        assert torch.equal(velocity(base, z, t, cond), teacher_v)
        off = state.student.host.view(None)  # the host with its adapters off is the teacher
        assert torch.allclose(velocity(off, z, t, cond), teacher_v, rtol=0, atol=1e-6)
        assert not torch.equal(velocity(state.student, z, t, cond), teacher_v)  # G has moved


def test_the_ema_adapter_moves_towards_the_student_by_the_decay(micro_world):
    state, draw = prepare(recipe(ema_decay=0.75), micro_world)
    ema0 = clones(state.ema)
    assert all(torch.equal(e, s) for e, s in zip(ema0, state.student.parameters(), strict=True))
    assert not any(p.requires_grad for p in state.ema.parameters())
    dmd_cycle(state, draw)
    moved = False
    for e0, e1, s1 in zip(ema0, state.ema.parameters(), state.student.parameters(), strict=True):
        assert torch.allclose(e1, 0.75 * e0 + 0.25 * s1, rtol=0, atol=1e-7)  # ema ← d·ema + (1 − d)·student
        moved |= not torch.equal(e1, e0)
    assert moved


def _no_clock(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics that do not depend on the clock (wall times, throughput)."""
    return {k: v for k, v in metrics.items() if not k.endswith("_s")}


def test_resume_from_an_adapter_checkpoint_is_bit_exact(micro_world, tmp_path):
    r = recipe(steps=5, report_every=2, ema_decay=0.9)
    straight = distill(r, micro_world)

    def checkpoint_and_stop(step, metrics, save):
        save(tmp_path / "ckpt")
        return True

    distill(r, micro_world, on_report=checkpoint_and_stop)
    ckpt = tmp_path / "ckpt"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "ema", "fake", "recipe.yaml", "state.json", "state.safetensors", "student"]
    for name in ("student", "fake", "ema"):  # adapters only: no copy of the base in the checkpoint
        assert sorted(p.name for p in (ckpt / name).iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    resumed = distill(r, micro_world, resume_from=ckpt)
    assert resumed.steps == straight.steps == 5
    for name in ("student", "fake", "ema"):
        a, b = straight.student.host.view(name), resumed.student.host.view(name)
        for (key, x), (_, y) in zip(a.named_parameters(), b.named_parameters(), strict=True):
            assert torch.equal(x, y), (name, key)
    assert _no_clock(resumed.metrics) == _no_clock(straight.metrics)
    with pytest.raises(ValueError, match="an adapter folder, but this run holds full models"):
        load_checkpoint(ckpt, {"student": FlowModel.build("micro")})
    with pytest.raises(ValueError, match=r"other values of \['lora_rank'\]"):
        distill(recipe(steps=5, report_every=2, ema_decay=0.9, lora_rank=2), micro_world, resume_from=ckpt)


def test_an_adapter_folder_of_another_rank_is_refused(micro_world, tmp_path):
    from trainers.checkpoint import load_adapter, save_adapter

    base = micro_world.load_teachers()["base"].model
    save_adapter(LoraHost(base, spec=LoraSpec(rank=2)).view("student"), tmp_path / "a")
    with pytest.raises(ValueError, match=r"\['r', 'lora_alpha'\] differ"):
        load_adapter(LoraHost(base, spec=LoraSpec(rank=4)).view("student"), tmp_path / "a")


def test_merged_student_is_a_plain_model_with_the_adapter_velocity(micro_world, tmp_path):
    state, draw = prepare(recipe(ema_decay=0.5), micro_world)
    for _ in range(2):
        dmd_cycle(state, draw)
    with torch.no_grad():  # make the adapters' effect large enough to see in the comparison
        for p in (*state.student.parameters(), *state.ema.parameters()):
            p.add_(0.2 * torch.randn_like(p))
    z, t, cond = probe(micro_world)
    base_before = {k: v.clone() for k, v in state.teachers["base"].model.state_dict().items()}
    merged = merged_student(state.student)
    assert type(merged) is FlowModel and not any("lora" in name for name, _ in merged.named_modules())
    assert not ids(merged.parameters()) & ids(state.teachers["base"].model.parameters())  # its own weights
    with torch.no_grad():
        v_adapter, v_merged = velocity(state.student, z, t, cond), velocity(merged, z, t, cond)
        effect = (v_adapter - velocity(state.teachers["base"].model, z, t, cond)).abs().max()
        assert (v_merged - v_adapter).abs().max() < 1e-3 * effect  # the same model, up to float rounding
    base_after = state.teachers["base"].model.state_dict()
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)  # merging used a copy
    save_model(merged, tmp_path / "merged")
    loaded = load_model(FlowModel, tmp_path / "merged")  # one from_pretrained call
    with torch.no_grad():
        assert torch.equal(velocity(loaded, z, t, cond), v_merged)
    # a state gives its EMA (the benchmark's model), and save_model merges a view itself (promotion)
    save_model(state.ema, tmp_path / "ema")
    with torch.no_grad():
        v_ema = velocity(state.ema, z, t, cond)
        assert not torch.allclose(v_ema, v_adapter)
        for model in (merged_student(state), load_model(FlowModel, tmp_path / "ema")):
            assert (velocity(model, z, t, cond) - v_ema).abs().max() < 1e-3 * effect


def test_gradient_checkpointing_changes_no_update(micro_world):
    """Checkpointing recomputes G's (or F's) forward during backward, after other adapters ran: the
    host must still have the right adapter active then, or G would train on F's activations."""
    runs = []
    for checkpointing in (False, True):
        state, draw = prepare(recipe(ema_decay=0.0, gradient_checkpointing=checkpointing), micro_world)
        assert state.student.host.model.transformer.gradient_checkpointing is checkpointing
        assert not state.teachers["base"].model.transformer.gradient_checkpointing  # the teacher's module is its own
        with torch.no_grad():  # B ≠ 0, so that every adapter weight gets a gradient
            g = torch.Generator().manual_seed(0)
            for p in (*state.student.parameters(), *state.fake.parameters()):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
        for _ in range(2):
            dmd_cycle(state, draw)
        runs.append((clones(state.student), clones(state.fake)))
    for plain, checkpointed in zip(runs[0], runs[1], strict=True):
        for a, b in zip(plain, checkpointed, strict=True):
            assert torch.allclose(a, b, rtol=0, atol=1e-6)
    full, draw = prepare(recipe(model_mode="full", gradient_checkpointing=True), micro_world)  # full copies too
    assert full.student.transformer.gradient_checkpointing and full.fake.transformer.gradient_checkpointing
    assert not full.teachers["base"].model.transformer.gradient_checkpointing
    dmd_cycle(full, draw)


class LatentStandIn(torch.nn.Module):
    """A latent model as a real world has one: a plain nn.Module (not a ModelMixin) over a diffusers
    QwenImageTransformer2DModel as ``.transformer``, on [B, 16, h, w] latents packed 2×2."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.transformer = QwenImageTransformer2DModel(
            patch_size=2, in_channels=64, out_channels=16, num_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=24, axes_dims_rope=(4, 6, 6))

    def forward(self, z_t, t, text, text_mask, source=None):
        b, c, h, w = z_t.shape
        out = self.transformer(hidden_states=patchify(z_t, 2), encoder_hidden_states=text,
                               encoder_hidden_states_mask=text_mask, timestep=t,
                               img_shapes=[[(1, h // 2, w // 2)]] * b, return_dict=False)[0]
        return unpatchify(out, c, h, w, 2)


def test_a_latent_model_over_a_qwen_image_transformer(tmp_path):
    base = LatentStandIn().requires_grad_(False).eval()
    host = LoraHost(base, spec=LoraSpec(rank=2), gradient_checkpointing=True)
    student = host.view("student")
    assert host.model.transformer.gradient_checkpointing and not base.transformer.gradient_checkpointing
    # 1 block, width 32, MLP 128: 8 projections and 4 MLP linears, rank 2
    assert sum(p.numel() for p in student.parameters()) == 8 * 2 * 64 + 4 * 2 * 160
    with torch.no_grad():
        for p in student.parameters():
            p.normal_(0, 0.1)
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(2, 16, 4, 4, generator=g), torch.rand(2, generator=g)
    text, mask = torch.randn(2, 3, 24, generator=g), torch.ones(2, 3, dtype=torch.long)
    v = student(z, t, text, mask)  # with gradients: checkpointed blocks, recomputed in backward
    v.square().mean().backward()
    grads = {name: p.grad for name, p in student.named_parameters()}
    # the last block's text queries and text outputs do not reach the image output: no gradient there alone
    zero = {name.split(".")[1].removeprefix("transformer/transformer_blocks/0/")
            for name, g in grads.items() if g is None or not g.any()}
    assert zero == {"attn/add_q_proj", "attn/to_add_out", "txt_mlp/net/0/proj", "txt_mlp/net/2"}, zero
    v = v.detach()
    merged = merged_student(student)
    assert type(merged) is LatentStandIn and type(merged.transformer) is QwenImageTransformer2DModel
    save_model(merged.transformer, tmp_path / "transformer")  # the promoted folder: a plain transformer
    loaded = copy.deepcopy(base)
    loaded.transformer = load_model(QwenImageTransformer2DModel, tmp_path / "transformer")
    with torch.no_grad():
        assert not torch.allclose(base(z, t, text, mask), v, atol=1e-4)
        assert torch.allclose(loaded(z, t, text, mask), v, rtol=1e-4, atol=1e-5)


def test_the_recipe_fields_of_adapter_mode_are_validated():
    assert (Recipe().model_mode, Recipe().lora_rank, Recipe().gradient_checkpointing) == (None, 16, False)
    for bad, field in (({"model_mode": "lora"}, "model_mode"), ({"lora_rank": 0}, "lora_rank"),
                       ({"lora_rank": 4.0}, "lora_rank"), ({"gradient_checkpointing": "yes"}, "gradient_checkpointing")):
        with pytest.raises(ValidationError, match=field):
            Recipe(**bad)
    r = Recipe(model_mode="adapter", lora_rank=8, gradient_checkpointing=True)
    assert Recipe.model_validate(r.model_dump()) == r and "model_mode: adapter" in r.to_yaml()


def test_adapter_mode_holds_a_fraction_of_full_mode_bytes(micro_world):
    """The figure of benchmarks/adapter_memory.py on the micro world: trainable + gradient + AdamW bytes."""
    full = run_bytes(recipe(model_mode="full", ema_decay=0.9), micro_world)
    adapter = run_bytes(recipe(ema_decay=0.9), micro_world)
    assert adapter["base_bytes"] == full["base_bytes"]  # the teachers, held once in both modes
    assert adapter["trainable_params"] == 2 * LORA_PER_ADAPTER
    assert adapter["training_bytes"] < full["training_bytes"] / 2
    assert adapter["total_bytes"] < full["total_bytes"]
