"""FlowModel: shapes, the edit layout, masking, gradients, init, and save/load through diffusers.

Run: .venv/bin/python -m pytest tests/test_models.py -q   (micro models, ~2 s on 1 thread)
"""

from __future__ import annotations

import json

import pytest
import torch

from trainers.models import MODEL_SIZES, FlowModel, patchify, rope_axes, unpatchify

torch.set_num_threads(1)

B, L, D = 3, 8, 384


def _randomise_output(model: FlowModel, seed: int = 0) -> FlowModel:
    """Give the zero-initialised output layer random weights, so outputs depend on the inputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.transformer.proj_out.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


@pytest.fixture
def model() -> FlowModel:
    torch.manual_seed(0)
    return _randomise_output(FlowModel.build("micro"))


@pytest.fixture
def inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[0, 5:] = 0
    mask[1, 2:] = 0
    return {
        "z_t": torch.randn(B, 3, 16, 16, generator=gen),
        "t": torch.rand(B, generator=gen),
        "text": torch.randn(B, L, D, generator=gen),
        "text_mask": mask,
    }


def _source(seed: int = 2) -> torch.Tensor:
    return torch.rand(B, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_patchify_roundtrip_and_layout():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 6, 12)
    # Token 0 holds the top-left 2×2 patch, channel-major (the Qwen-Image pipelines' packing order).
    assert tokens[0, 0].tolist() == x[0, :, :2, :2].reshape(-1).tolist()
    assert torch.equal(unpatchify(tokens, 3, 4, 6, 2), x)


def test_sizes_and_rope_axes():
    assert 2.3e6 < sum(p.numel() for p in FlowModel.build("tiny").parameters()) < 2.7e6
    for size in MODEL_SIZES.values():
        assert sum(rope_axes(size.attention_head_dim)) == size.attention_head_dim
    assert rope_axes(32) == (8, 12, 12)
    with pytest.raises(ValueError, match="size must be one of"):
        FlowModel.build("huge")
    with pytest.raises(ValueError, match="attention_head_dim"):
        rope_axes(12)


def test_output_shape_t2i_and_edit(model, inputs):
    assert model(**inputs).shape == (B, 3, 16, 16)
    assert model(**inputs, source=_source()).shape == (B, 3, 16, 16)


def test_other_resolution():
    model = _randomise_output(FlowModel.build("micro", resolution=8))
    v = model(torch.randn(2, 3, 8, 8), torch.rand(2), torch.randn(2, 4, D), torch.ones(2, 4))
    assert v.shape == (2, 3, 8, 8)


def test_starts_at_zero_velocity(inputs):
    """The zero-initialised output layer: v = 0, the best constant guess for v = eps - x."""
    v = FlowModel.build("micro")(**inputs)
    assert torch.equal(v, torch.zeros_like(v))


def test_edit_depends_on_source_and_t2i_differs(model, inputs):
    with torch.no_grad():
        v_a = model(**inputs, source=_source(2))
        v_b = model(**inputs, source=_source(3))
        v_t2i = model(**inputs)
    assert (v_a - v_b).abs().max() > 1e-3
    assert (v_a - v_t2i).abs().max() > 1e-3


def test_depends_on_time_and_text(model, inputs):
    with torch.no_grad():
        v = model(**inputs)
        v_t = model(**{**inputs, "t": inputs["t"] * 0.5})
        v_text = model(**{**inputs, "text": inputs["text"].flip(0)})
    assert (v - v_t).abs().max() > 1e-3
    assert (v - v_text).abs().max() > 1e-3


def test_padded_text_tokens_are_ignored(model, inputs):
    noisy_pads = inputs["text"].clone()
    noisy_pads[inputs["text_mask"] == 0] = 100.0
    with torch.no_grad():
        v = model(**inputs)
        v_pads = model(**{**inputs, "text": noisy_pads})
    torch.testing.assert_close(v, v_pads, rtol=1e-5, atol=1e-5)


def test_batch_items_are_independent(model, inputs):
    with torch.no_grad():
        v = model(**inputs, source=_source())
        v0 = model(**{k: x[:1] for k, x in inputs.items()}, source=_source()[:1])
    torch.testing.assert_close(v[:1], v0, rtol=1e-5, atol=1e-5)


def test_gradient_flows(inputs):
    """From zero init, two SGD steps reach every parameter that can influence the image output."""
    model = FlowModel.build("micro")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    target = torch.randn(B, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    for _ in range(3):
        opt.zero_grad()
        loss = (model(**inputs, source=_source()) - target).square().mean()
        loss.backward()
        opt.step()
    # In the last block, text queries and everything after attention on the text stream feed nothing:
    # Qwen-Image discards the text output.
    last = f"transformer.transformer_blocks.{model.config.num_layers - 1}."
    dead = tuple(last + m for m in ("attn.add_q_proj", "attn.norm_added_q", "attn.to_add_out", "txt_mlp"))
    no_grad = [
        name
        for name, p in model.named_parameters()
        if (p.grad is None or not p.grad.any()) and not name.startswith(dead)
    ]
    assert no_grad == []


@pytest.mark.parametrize("edit", [False, True], ids=["t2i", "edit"])
def test_save_load_roundtrip(model, inputs, tmp_path, edit):
    source = _source() if edit else None
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "FlowModel" and config["num_layers"] == 2 and config["text_dim"] == D
    loaded = FlowModel.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(model(**inputs, source=source), loaded(**inputs, source=source))


def test_shape_errors_name_the_argument(model, inputs):
    with pytest.raises(ValueError, match="z_t must be"):
        model(**{**inputs, "z_t": torch.randn(B, 3, 8, 8)})
    with pytest.raises(ValueError, match="t must be"):
        model(**{**inputs, "t": torch.rand(B, 1)})
    with pytest.raises(ValueError, match="text must be"):
        model(**{**inputs, "text": torch.randn(B, L, 7)})
    with pytest.raises(ValueError, match="text_mask must be"):
        model(**{**inputs, "text_mask": torch.ones(B, L + 1)})
    with pytest.raises(ValueError, match="source must match"):
        model(**inputs, source=torch.randn(B, 3, 8, 8))
    with pytest.raises(ValueError, match="divisible"):
        FlowModel(resolution=15)
