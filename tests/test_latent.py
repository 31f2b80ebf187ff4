"""QwenLatentModel / LatentCodec / scheduler_shift / norm_rescaled_cfg against real diffusers pipelines.

Run: .venv/bin/python -m pytest tests/test_latent.py -q   (tiny random-weight components, seconds)

The references are the pipelines themselves: a real ``QwenImagePipeline`` / ``QwenImageEditPipeline`` run
(prompt embeddings passed in, so no text encoder is needed) with a forward hook on the transformer; our
wrapper must send the transformer the same inputs and get the same velocity back.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImageEditPipeline,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
)
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit
from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift
from PIL import Image

from trainers.sampling import timesteps
from trainers.worlds.diffusers.latent import (
    LatentCodec,
    QwenLatentModel,
    norm_rescaled_cfg,
    pack,
    scheduler_shift,
    unpack,
)

torch.set_num_threads(1)

B, L, D, C = 2, 7, 32, 16
RES = 64  # pixels; latents 16 × 8 × 8, packed to 16 tokens of 64
H = W = RES // 8
# Qwen/Qwen-Image's scheduler/scheduler_config.json
QWEN_SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
    "invert_sigmas": False, "max_image_seq_len": 8192, "max_shift": 0.9, "num_train_timesteps": 1000,
    "shift": 1.0, "shift_terminal": 0.02, "stochastic_sampling": False, "time_shift_type": "exponential",
    "use_beta_sigmas": False, "use_dynamic_shifting": True, "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}


def tiny_transformer(seed: int = 0, **overrides) -> QwenImageTransformer2DModel:
    torch.manual_seed(seed)
    cfg = dict(num_layers=2, attention_head_dim=16, num_attention_heads=2, axes_dims_rope=(4, 6, 6),
               in_channels=64, out_channels=16, joint_attention_dim=D) | overrides
    return QwenImageTransformer2DModel(**cfg).eval()


def tiny_vae(seed: int = 0) -> AutoencoderKLQwenImage:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    return AutoencoderKLQwenImage(
        base_dim=4, z_dim=C, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=(torch.randn(C, generator=gen) * 0.5).tolist(),
        latents_std=(torch.rand(C, generator=gen) * 2 + 0.5).tolist(),
    ).eval()


def scheduler(**overrides) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler.from_config(QWEN_SCHEDULER | overrides)


def text(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 4:] = 0  # one padded prompt: the pipelines then pass the mask on (an all-ones mask is dropped)
    return torch.randn(B, L, D, generator=gen), mask


def latents(seed: int) -> torch.Tensor:
    return torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(seed))


class Recorder:
    """A forward hook on a transformer: every call's kwargs and output, cloned."""

    def __init__(self, module: torch.nn.Module):
        self.calls: list[tuple[dict, torch.Tensor]] = []
        self.handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        kw = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        self.calls.append((kw, output[0].clone()))

    def remove(self) -> list[tuple[dict, torch.Tensor]]:
        self.handle.remove()
        return self.calls


def assert_same_call(ours: dict, theirs: dict) -> None:
    """The transformer got identical inputs from our wrapper and from the pipeline."""
    assert set(ours) >= {"hidden_states", "timestep", "encoder_hidden_states", "img_shapes"}
    for key in ("hidden_states", "timestep", "encoder_hidden_states", "encoder_hidden_states_mask", "guidance"):
        a, b = ours.get(key), theirs.get(key)
        assert (a is None) == (b is None), key
        if a is not None:
            assert a.dtype == b.dtype and torch.equal(a, b), key
    assert ours["img_shapes"] == theirs["img_shapes"]


def replay(model: QwenLatentModel, kwargs: dict, out: torch.Tensor, n_noisy: int) -> None:
    """Call ``model`` on the unpacked inputs of one pipeline call; compare the call and the velocity."""
    tokens = kwargs["hidden_states"]
    z = unpack(tokens[:, :n_noisy], H, W)
    source = unpack(tokens[:, n_noisy:], H, W) if tokens.shape[1] > n_noisy else None
    mask = kwargs["encoder_hidden_states_mask"]
    mask = torch.ones(kwargs["encoder_hidden_states"].shape[:2]) if mask is None else mask
    rec = Recorder(model.transformer)
    with torch.no_grad():
        v = model(z, kwargs["timestep"], kwargs["encoder_hidden_states"], mask, source)
    [(ours, _)] = rec.remove()
    assert_same_call(ours, kwargs)
    assert v.shape == z.shape
    torch.testing.assert_close(v, unpack(out[:, :n_noisy], H, W), rtol=0, atol=0)


# --- packing -------------------------------------------------------------------------------------


def test_pack_and_unpack_are_the_pipelines():
    x = latents(0)
    theirs = QwenImagePipeline._pack_latents(x[:, :, None], B, C, H, W)  # the pipelines pack [B, 1, C, h, w]
    assert torch.equal(pack(x), theirs)
    back = QwenImagePipeline._unpack_latents(theirs, RES, RES, vae_scale_factor=8)  # [B, C, 1, h, w]
    assert torch.equal(unpack(theirs, H, W), back[:, :, 0])
    assert torch.equal(unpack(pack(x), H, W), x)
    # the edit pipeline has its own copies: the same
    assert torch.equal(QwenImageEditPipeline._pack_latents(x[:, :, None], B, C, H, W), theirs)


# --- the velocity equals the pipelines' transformer call ----------------------------------------


def t2i_pipeline(transformer, vae=None) -> QwenImagePipeline:
    return QwenImagePipeline(scheduler=scheduler(shift_terminal=None), vae=vae or tiny_vae(),
                             text_encoder=None, tokenizer=None, transformer=transformer)


def test_t2i_velocity_equals_the_pipelines_call():
    pipe = t2i_pipeline(tiny_transformer())
    embeds, mask = text()
    rec = Recorder(pipe.transformer)
    with torch.no_grad():
        pipe(prompt_embeds=embeds, prompt_embeds_mask=mask, height=RES, width=RES, num_inference_steps=3,
             true_cfg_scale=1.0, generator=torch.Generator().manual_seed(0), output_type="latent")
    calls = rec.remove()
    assert len(calls) == 3
    model = QwenLatentModel(pipe.transformer)
    for kwargs, out in calls:
        replay(model, kwargs, out, n_noisy=H * W // 4)


@pytest.mark.parametrize("zero_cond_t", [False, True])
def test_edit_velocity_equals_the_pipelines_call(monkeypatch, zero_cond_t):
    # The edit pipeline resizes every source to a ~1024² area; shrink that target to our resolution.
    monkeypatch.setattr(pipeline_qwenimage_edit, "calculate_dimensions", lambda area, ratio: (RES, RES, None))
    vae = tiny_vae()
    pipe = QwenImageEditPipeline(scheduler=scheduler(shift_terminal=None), vae=vae, text_encoder=None,
                                 tokenizer=None, processor=None,
                                 transformer=tiny_transformer(zero_cond_t=zero_cond_t))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (RES, RES, 3), dtype=np.uint8))
    embeds, mask = text()
    rec = Recorder(pipe.transformer)
    with torch.no_grad():
        pipe(image=[image] * B, prompt_embeds=embeds, prompt_embeds_mask=mask, height=RES, width=RES,
             num_inference_steps=2, true_cfg_scale=1.0, generator=torch.Generator().manual_seed(0),
             output_type="latent")
    calls = rec.remove()
    n = H * W // 4
    model = QwenLatentModel(pipe.transformer)
    for kwargs, out in calls:
        assert kwargs["hidden_states"].shape[1] == 2 * n  # the source's tokens were there
        replay(model, kwargs, out, n_noisy=n)
    # the source tokens are our codec's encoding of the preprocessed image
    pixels = pipe.image_processor.preprocess(image, RES, RES)
    source = unpack(calls[0][0]["hidden_states"][:, n:], H, W)
    torch.testing.assert_close(source, LatentCodec(vae).encode(pixels).expand(B, -1, -1, -1))


def test_edit_source_matters_and_output_is_sliced():
    model = QwenLatentModel(tiny_transformer())
    embeds, mask = text()
    z, t = latents(0), torch.tensor([0.7, 0.3])
    with torch.no_grad():
        v1 = model(z, t, embeds, mask, latents(1))
        v2 = model(z, t, embeds, mask, latents(2))
        v0 = model(z, t, embeds, mask)
    assert v1.shape == z.shape
    assert not torch.allclose(v1, v2) and not torch.allclose(v1, v0)


def test_zero_cond_t_is_honoured_through_img_shapes():
    """zero_cond_t gives the source tokens t = 0 modulation: edits change, T2I does not (it adds no weights)."""
    plain, zero = QwenLatentModel(tiny_transformer()), QwenLatentModel(tiny_transformer(zero_cond_t=True))
    embeds, mask = text()
    z, t, source = latents(0), torch.tensor([0.7, 0.3]), latents(1)
    with torch.no_grad():
        # T2I: every token is image 0, so only the (float-rounding) route through torch.where differs
        torch.testing.assert_close(plain(z, t, embeds, mask), zero(z, t, embeds, mask))
        assert not torch.allclose(plain(z, t, embeds, mask, source), zero(z, t, embeds, mask, source))


def test_all_ones_mask_is_dropped_as_the_pipelines_do():
    model = QwenLatentModel(tiny_transformer())
    embeds = text()[0]
    rec = Recorder(model.transformer)
    with torch.no_grad():
        v = model(latents(0), torch.tensor([0.5, 0.5]), embeds, torch.ones(B, L, dtype=torch.long))
    [(kwargs, _)] = rec.remove()
    assert kwargs["encoder_hidden_states_mask"] is None
    with torch.no_grad():  # and attending with the mask is the same up to float rounding
        masked = model.transformer(hidden_states=pack(latents(0)), timestep=torch.tensor([0.5, 0.5]),
                                   encoder_hidden_states=embeds, encoder_hidden_states_mask=torch.ones(B, L),
                                   img_shapes=[[(1, H // 2, W // 2)]] * B, return_dict=False)[0]
    torch.testing.assert_close(v, unpack(masked, H, W))


def test_dtype_inputs_cast_output_in_the_transformers_dtype():
    model = QwenLatentModel(tiny_transformer().to(torch.bfloat16))
    embeds, mask = text()
    with torch.no_grad():
        v = model(latents(0), torch.tensor([0.5, 0.25]), embeds, mask, latents(1))
    assert v.dtype == torch.bfloat16 and v.shape == (B, C, H, W)


def test_gradient_checkpointing_passes_through():
    model = QwenLatentModel(tiny_transformer())
    embeds, mask = text()
    z, t = latents(0), torch.tensor([0.5, 0.25])
    model.train()
    v = model(z, t, embeds, mask)
    model.enable_gradient_checkpointing()
    assert model.transformer.gradient_checkpointing
    v_ckpt = model(z, t, embeds, mask)
    torch.testing.assert_close(v_ckpt, v)
    v_ckpt.square().mean().backward()
    assert model.transformer.proj_out.weight.grad is not None


def test_configs_the_contract_cannot_serve_are_refused():
    with pytest.raises(ValueError, match="guidance_embeds"):
        QwenLatentModel(tiny_transformer(guidance_embeds=True))
    with pytest.raises(ValueError, match="use_additional_t_cond"):
        QwenLatentModel(tiny_transformer(use_additional_t_cond=True))
    with pytest.raises(ValueError, match="in_channels"):
        QwenLatentModel(tiny_transformer(out_channels=8))


def test_shape_errors_are_concise():
    model = QwenLatentModel(tiny_transformer())
    embeds, mask = text()
    t = torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match="z_t must be"):
        model(torch.zeros(B, 4, H, W), t, embeds, mask)
    with pytest.raises(ValueError, match="t must be"):
        model(latents(0), torch.tensor([0.5]), embeds, mask)
    with pytest.raises(ValueError, match="text must be"):
        model(latents(0), t, torch.zeros(B, L, 8), mask)
    with pytest.raises(ValueError, match="source must match"):
        model(latents(0), t, embeds, mask, torch.zeros(B, C, 4, 4))


def test_config_passes_through():
    transformer = tiny_transformer(zero_cond_t=True)
    model = QwenLatentModel(transformer)
    assert model.config is transformer.config and model.config.zero_cond_t
    assert model.channels == C and model.dtype == torch.float32


# --- save / load ---------------------------------------------------------------------------------


def test_save_pretrained_is_a_plain_transformer_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = QwenLatentModel(tiny_transformer(seed=3))
    folder = model.save_pretrained(tmp_path / "student")
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    plain = QwenImageTransformer2DModel.from_pretrained(folder, local_files_only=True)
    embeds, mask = text()
    args = (latents(0), torch.tensor([0.9, 0.1]), embeds, mask, latents(1))
    with torch.no_grad():
        v = model(*args)
        assert torch.equal(QwenLatentModel(plain)(*args), v)
        assert torch.equal(QwenLatentModel.from_pretrained(folder)(*args), v)
        # a pipeline folder works too: its transformer/ subfolder
        model.save_pretrained(tmp_path / "pipe" / "transformer")
        assert torch.equal(QwenLatentModel.from_pretrained(tmp_path / "pipe")(*args), v)
    half = QwenLatentModel.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="config.json"):
        QwenLatentModel.from_pretrained(tmp_path / "nowhere")


# --- the codec -----------------------------------------------------------------------------------


def pixels(seed: int = 0, n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, RES, RES, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_encode_is_the_normalised_mode():
    vae = tiny_vae()
    codec = LatentCodec(vae, batch_size=2)  # 3 images: two VAE batches
    x = pixels()
    z = codec.encode(x)
    assert z.shape == (3, C, H, W)
    with torch.no_grad():
        mode = vae.encode(x[:, :, None]).latent_dist.mode()[:, :, 0]
    mean = torch.tensor(vae.config.latents_mean).view(1, C, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, C, 1, 1)
    torch.testing.assert_close(z, (mode - mean) / std)


def test_decode_of_encode_is_the_vaes_reconstruction():
    vae = tiny_vae()
    codec = LatentCodec(vae)
    x = pixels(1, n=2)
    with torch.no_grad():
        recon = vae.decode(vae.encode(x[:, :, None]).latent_dist.mode()).sample[:, :, 0]
    out = codec.decode(codec.encode(x))
    assert out.shape == x.shape and out.abs().max() <= 1
    torch.testing.assert_close(out, recon)


def test_normalise_and_denormalise_are_inverses():
    codec = LatentCodec(tiny_vae())
    z = latents(5)
    torch.testing.assert_close(codec.normalise(codec.denormalise(z)), z, rtol=0, atol=1e-6)
    torch.testing.assert_close(codec.denormalise(codec.normalise(z)), z, rtol=0, atol=1e-6)


def test_decode_is_the_pipelines_decode():
    pipe = t2i_pipeline(tiny_transformer())
    embeds, mask = text()
    final = {}

    def keep(pipeline, i, t, kwargs):
        final["latents"] = kwargs["latents"].clone()
        return kwargs

    with torch.no_grad():
        image = pipe(prompt_embeds=embeds, prompt_embeds_mask=mask, height=RES, width=RES,
                     num_inference_steps=2, true_cfg_scale=1.0, generator=torch.Generator().manual_seed(0),
                     output_type="pt", callback_on_step_end=keep).images
    ours = LatentCodec(pipe.vae).decode(unpack(final["latents"], H, W))
    # output_type="pt" maps [-1, 1] to [0, 1]; denormalising as the pipeline writes it makes this bit-exact
    torch.testing.assert_close(ours * 0.5 + 0.5, image, rtol=0, atol=0)


def test_codec_from_pretrained(tmp_path):
    vae = tiny_vae()
    vae.save_pretrained(tmp_path / "pipe" / "vae")
    x = pixels(2, n=1)
    for folder in (tmp_path / "pipe", tmp_path / "pipe" / "vae"):
        codec = LatentCodec.from_pretrained(folder)
        assert codec.z_dim == C and codec.scale == 8
        torch.testing.assert_close(codec.encode(x), LatentCodec(vae).encode(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="pixels must be"):
        codec.encode(torch.zeros(1, 16, 8, 8))


# --- the schedule --------------------------------------------------------------------------------


def pipeline_sigmas(config: dict, n: int, image_seq_len: int) -> list[float]:
    """The sigmas QwenImagePipeline.__call__ steps through (its step 5), without the final 0."""
    sched = FlowMatchEulerDiscreteScheduler.from_config(config)
    mu = calculate_shift(image_seq_len, sched.config.get("base_image_seq_len", 256),
                         sched.config.get("max_image_seq_len", 4096), sched.config.get("base_shift", 0.5),
                         sched.config.get("max_shift", 1.15))
    sched.set_timesteps(n, sigmas=np.linspace(1.0, 1 / n, n), mu=mu)
    return sched.sigmas[:-1].tolist()


CONFIGS = {
    "qwen-image": QWEN_SCHEDULER | {"shift_terminal": None},
    "linear": QWEN_SCHEDULER | {"shift_terminal": None, "time_shift_type": "linear"},
    "static": {"shift": 3.0},
    "defaults": {},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("n", [1, 4, 28])
@pytest.mark.parametrize("seq", [16, 1024, 4096])
def test_scheduler_shift_gives_the_pipelines_sigmas(name, n, seq):
    s = scheduler_shift(CONFIGS[name], seq)
    np.testing.assert_allclose(timesteps(n, s), pipeline_sigmas(CONFIGS[name], n, seq), rtol=0, atol=1e-6)


def test_scheduler_shift_matches_a_real_pipeline_run():
    pipe = t2i_pipeline(tiny_transformer())
    embeds, mask = text()
    with torch.no_grad():
        pipe(prompt_embeds=embeds, prompt_embeds_mask=mask, height=RES, width=RES, num_inference_steps=4,
             true_cfg_scale=1.0, generator=torch.Generator().manual_seed(0), output_type="latent")
    s = scheduler_shift(dict(pipe.scheduler.config), H * W // 4)
    np.testing.assert_allclose(timesteps(4, s), pipe.scheduler.sigmas[:-1].tolist(), rtol=0, atol=1e-6)


def test_shift_terminal_is_an_affine_stretch_of_our_schedule():
    """The documented difference: with shift_terminal the scheduler stretches 1 - sigma to end on it."""
    n, seq = 8, 4096
    ours = np.array(timesteps(n, scheduler_shift(QWEN_SCHEDULER, seq)))
    theirs = np.array(pipeline_sigmas(QWEN_SCHEDULER, n, seq))
    stretched = 1 - (1 - ours) / ((1 - ours[-1]) / (1 - QWEN_SCHEDULER["shift_terminal"]))
    np.testing.assert_allclose(theirs, stretched, rtol=0, atol=1e-6)
    assert theirs[-1] == pytest.approx(0.02) and theirs[0] == 1.0


def test_scheduler_shift_refuses_what_is_no_shift():
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        scheduler_shift({"use_karras_sigmas": True}, 16)
    with pytest.raises(ValueError, match="_class_name"):
        scheduler_shift({"_class_name": "DDIMScheduler"}, 16)


# --- true CFG ------------------------------------------------------------------------------------


PIPELINE_CFG_LINES = (
    "comb_pred = neg_noise_pred + true_cfg_scale * (noise_pred - neg_noise_pred)",
    "cond_norm = torch.norm(noise_pred, dim=-1, keepdim=True)",
    "noise_norm = torch.norm(comb_pred, dim=-1, keepdim=True)",
    "noise_pred = comb_pred * (cond_norm / noise_norm)",
)


def test_norm_rescaled_cfg_is_the_pipelines_formula():
    for pipeline in (QwenImagePipeline, QwenImageEditPipeline):  # the formula we copy below is still theirs
        source = inspect.getsource(pipeline.__call__)
        assert all(line in source for line in PIPELINE_CFG_LINES), pipeline.__name__
    v_cond, v_uncond, scale = latents(0), latents(1), 4.0
    noise_pred, neg_noise_pred, true_cfg_scale = pack(v_cond), pack(v_uncond), scale  # the packed [B, N, 64]
    comb_pred = neg_noise_pred + true_cfg_scale * (noise_pred - neg_noise_pred)
    cond_norm = torch.norm(noise_pred, dim=-1, keepdim=True)
    noise_norm = torch.norm(comb_pred, dim=-1, keepdim=True)
    noise_pred = comb_pred * (cond_norm / noise_norm)
    torch.testing.assert_close(norm_rescaled_cfg(v_cond, v_uncond, scale), unpack(noise_pred, H, W),
                               rtol=0, atol=0)
    # the norm is per packed token (4 positions × C channels), not per pixel over C
    per_pixel = v_uncond + scale * (v_cond - v_uncond)
    per_pixel = per_pixel * v_cond.norm(dim=1, keepdim=True) / per_pixel.norm(dim=1, keepdim=True)
    assert not torch.allclose(per_pixel, norm_rescaled_cfg(v_cond, v_uncond, scale))


def test_norm_rescaled_cfg_matches_a_real_pipeline_run(monkeypatch):
    pipe = t2i_pipeline(tiny_transformer())
    embeds, mask = text()
    neg, neg_mask = text(seed=2)
    stepped = []
    step = pipe.scheduler.step

    def spy(model_output, *args, **kwargs):
        stepped.append(model_output.clone())
        return step(model_output, *args, **kwargs)

    monkeypatch.setattr(pipe.scheduler, "step", spy)
    rec = Recorder(pipe.transformer)
    with torch.no_grad():
        pipe(prompt_embeds=embeds, prompt_embeds_mask=mask, negative_prompt_embeds=neg,
             negative_prompt_embeds_mask=neg_mask, height=RES, width=RES, num_inference_steps=2,
             true_cfg_scale=4.0, generator=torch.Generator().manual_seed(0), output_type="latent")
    calls = rec.remove()
    assert len(calls) == 4 and len(stepped) == 2  # cond, uncond per step
    for i, guided in enumerate(stepped):
        cond, uncond = calls[2 * i][1], calls[2 * i + 1][1]
        ours = norm_rescaled_cfg(unpack(cond, H, W), unpack(uncond, H, W), 4.0)
        torch.testing.assert_close(ours, unpack(guided, H, W), rtol=0, atol=0)
