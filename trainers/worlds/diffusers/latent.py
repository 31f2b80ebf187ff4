"""Qwen-Image on normalised VAE latents, with the tiny world's FlowModel call contract.

:class:`QwenLatentModel` is ``model(z_t, t, text, text_mask, source=None) -> v`` over a real
``QwenImageTransformer2DModel``, calling it exactly as ``QwenImagePipeline`` (T2I) and
``QwenImageEditPipeline`` (edit) do: latents packed 2×2 into 64-dim tokens, ``timestep / 1000`` = sigma,
the source's tokens appended after the noisy ones with a second ``img_shapes`` entry, the output sliced
back to the noisy tokens. :class:`LatentCodec` is the pipelines' VAE with their latent normalisation.
:func:`scheduler_shift` turns a checkpoint's scheduler config into the SD3 shift of ``trainers.sampling``;
:func:`norm_rescaled_cfg` is the pipelines' "true CFG". ``tests/test_latent.py`` checks each against a
real pipeline run.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

from trainers.models import patchify, unpatchify

PATCH = 2  # the pipelines pack latents 2×2 (_pack_latents), whatever the transformer's patch_size says


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, (h/2)(w/2), 4C]: ``QwenImagePipeline._pack_latents`` (frame axis dropped)."""
    return patchify(latents, PATCH)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B, (h/2)(w/2), 4C] -> [B, C, h, w]: ``QwenImagePipeline._unpack_latents`` without its frame axis."""
    return unpatchify(tokens, tokens.shape[-1] // (PATCH * PATCH), h, w, PATCH)


def _component_folder(folder: str | Path, subfolder: str) -> Path:
    """``folder`` itself when it holds the component's config.json, else its ``subfolder`` (a pipeline folder)."""
    path = Path(folder)
    if (path / "config.json").is_file():
        return path
    if (path / subfolder / "config.json").is_file():
        return path / subfolder
    raise ValueError(f"{path}: neither {path / 'config.json'} nor {path / subfolder / 'config.json'} exists")


class QwenLatentModel(torch.nn.Module):
    """Velocity v = eps - x on normalised latents [B, C, h, w] from a ``QwenImageTransformer2DModel``.

    ``t`` [B] is sigma in [0, 1]; the transformer's timestep embedding scales it by 1000 itself, which is
    why the pipelines pass ``timestep / 1000``. Inputs are cast to the transformer's dtype and v comes back
    in it. ``zero_cond_t`` (Qwen-Image-Edit-2511) needs nothing from the caller beyond ``img_shapes``: the
    transformer itself gives the tokens after the first image (the source) the t = 0 modulation.
    """

    def __init__(self, transformer: QwenImageTransformer2DModel):
        super().__init__()
        cfg = transformer.config
        # Configs whose pipelines need inputs the FlowModel contract has no place for: refuse them by name
        # rather than run them wrong.
        if cfg.guidance_embeds:
            raise ValueError(
                "transformer config guidance_embeds=True: diffusers' QwenImageTransformer2DModel builds no "
                "guidance embedder (its pipelines fail on such a model), so it is not supported")
        if cfg.use_additional_t_cond or cfg.use_layer3d_rope:
            raise ValueError("transformer config use_additional_t_cond / use_layer3d_rope (Qwen-Image-Layered) "
                             "is not supported: it needs per-layer conditioning the FlowModel contract lacks")
        out = cfg.patch_size * cfg.patch_size * (cfg.out_channels or cfg.in_channels)
        if cfg.in_channels % (PATCH * PATCH) or out != cfg.in_channels:
            raise ValueError(
                f"transformer config: in_channels ({cfg.in_channels}) must be 4 × the latent channels and equal "
                f"patch_size² × out_channels ({out}), so v has the latents' shape")
        self.transformer = transformer

    @property
    def config(self):
        """The transformer's config (in_channels, zero_cond_t, ...)."""
        return self.transformer.config

    @property
    def channels(self) -> int:
        """Latent channels C = in_channels / 4, as the pipelines' ``num_channels_latents``."""
        return self.transformer.config.in_channels // (PATCH * PATCH)

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @classmethod
    def from_pretrained(cls, folder: str | Path, torch_dtype: torch.dtype = torch.float32) -> QwenLatentModel:
        """Load a transformer folder, or a pipeline folder's ``transformer/``; local files only."""
        path = _component_folder(folder, "transformer")
        transformer = QwenImageTransformer2DModel.from_pretrained(path, torch_dtype=torch_dtype,
                                                                  local_files_only=True)
        return cls(transformer)

    def save_pretrained(self, folder: str | Path, **kwargs) -> Path:
        """Write the inner transformer as a plain diffusers folder (QwenImageTransformer2DModel loads it);
        ``kwargs`` go to diffusers' save_pretrained (safetensors always)."""
        self.transformer.save_pretrained(folder, **(kwargs | {"safe_serialization": True}))
        return Path(folder)

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()

    def forward(
        self,
        z_t: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """v [B, C, h, w] at (z_t, t) for text [B, L, D] (mask [B, L], 1 = token); ``source`` = edit."""
        self._check(z_t, t, text, text_mask, source)
        b, c, h, w = z_t.shape
        dtype = self.dtype
        tokens = pack(z_t.to(dtype))
        n_noisy = tokens.shape[1]
        grid = (1, h // PATCH, w // PATCH)
        shapes = [grid]
        if source is not None:  # QwenImageEditPipeline: cat([latents, image_latents], dim=1)
            tokens = torch.cat([tokens, pack(source.to(dtype))], dim=1)
            shapes = [grid, grid]
        # encode_prompt drops an all-ones mask, so the pipelines attend without one (and take SDPA's
        # unmasked path); do the same to stay their bit-for-bit equal
        mask = None if bool(text_mask.all()) else text_mask
        out = self.transformer(
            hidden_states=tokens,
            timestep=t.to(dtype),
            guidance=None,
            encoder_hidden_states_mask=mask,
            encoder_hidden_states=text.to(dtype),
            img_shapes=[shapes] * b,
            return_dict=False,
        )[0]
        return unpack(out[:, :n_noisy], h, w)

    def _check(self, z_t, t, text, text_mask, source) -> None:
        """Concise errors for the shape mistakes a caller can make (diffusers' own are far from the cause)."""
        c, dim = self.channels, self.transformer.config.joint_attention_dim
        if z_t.dim() != 4 or z_t.shape[1] != c or z_t.shape[2] % PATCH or z_t.shape[3] % PATCH:
            raise ValueError(f"z_t must be [B, {c}, h, w] with h, w even, got {list(z_t.shape)}")
        b = z_t.shape[0]
        if t.shape != (b,):
            raise ValueError(f"t must be [B] = [{b}], got {list(t.shape)}")
        if text.dim() != 3 or text.shape[0] != b or text.shape[2] != dim:
            raise ValueError(f"text must be [{b}, L, {dim}], got {list(text.shape)}")
        if tuple(text_mask.shape) != tuple(text.shape[:2]):
            raise ValueError(f"text_mask must be {list(text.shape[:2])}, got {list(text_mask.shape)}")
        if source is not None and source.shape != z_t.shape:
            raise ValueError(f"source must match z_t {list(z_t.shape)}, got {list(source.shape)}")


class LatentCodec:
    """``AutoencoderKLQwenImage`` with the pipelines' latent normalisation: pixels [-1, 1] <-> latents.

    Latents are ``(mode - latents_mean) / latents_std`` per channel (the edit pipeline's
    ``_encode_vae_image``: the distribution's mode, ``sample_mode="argmax"``); decoding undoes it the way
    ``QwenImagePipeline`` writes it. The VAE is a video VAE: images travel as one-frame videos [B, C, 1, H, W].
    """

    def __init__(self, vae: AutoencoderKLQwenImage, batch_size: int = 8):
        self.vae = vae.eval().requires_grad_(False)
        self.batch_size = batch_size  # bounds the VAE's activation memory; results do not depend on it

    @classmethod
    def from_pretrained(cls, folder: str | Path, torch_dtype: torch.dtype = torch.float32,
                        batch_size: int = 8) -> LatentCodec:
        """Load a VAE folder, or a pipeline folder's ``vae/``; local files only."""
        path = _component_folder(folder, "vae")
        vae = AutoencoderKLQwenImage.from_pretrained(path, torch_dtype=torch_dtype, local_files_only=True)
        return cls(vae, batch_size)

    @property
    def z_dim(self) -> int:
        return self.vae.config.z_dim

    @property
    def scale(self) -> int:
        """Spatial downsampling, as the pipelines' ``vae_scale_factor``: 2 ** len(temperal_downsample)."""
        return 2 ** len(self.vae.temperal_downsample)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.z_dim, 1, 1)
        cfg = self.vae.config
        return (torch.tensor(cfg.latents_mean).view(shape).to(like.device, like.dtype),
                torch.tensor(cfg.latents_std).view(shape).to(like.device, like.dtype))

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """VAE latents [B, z, h, w] -> normalised: (raw - mean) / std (``_encode_vae_image``)."""
        mean, std = self._stats(raw)
        return (raw - mean) / std

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised -> VAE latents: ``latents / (1 / std) + mean``, as QwenImagePipeline writes it."""
        mean, std = self._stats(latents)
        return latents / (1.0 / std) + mean

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, H, W] in [-1, 1] -> normalised latents [B, z_dim, H/8, W/8] (the VAE's dtype)."""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be [B, 3, H, W], got {list(pixels.shape)}")
        p = self.vae.dtype
        raw = [self.vae.encode(x.to(p)[:, :, None]).latent_dist.mode()[:, :, 0]
               for x in pixels.split(self.batch_size)]
        return self.normalise(torch.cat(raw))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, z_dim, h, w] -> pixels [B, 3, 8h, 8w] in [-1, 1] (the VAE clamps)."""
        if latents.dim() != 4 or latents.shape[1] != self.z_dim:
            raise ValueError(f"latents must be [B, {self.z_dim}, h, w], got {list(latents.shape)}")
        raw = self.denormalise(latents.to(self.vae.dtype))
        return torch.cat([self.vae.decode(z[:, :, None], return_dict=False)[0][:, :, 0]
                          for z in raw.split(self.batch_size)])


def scheduler_shift(scheduler_config: dict, image_seq_len: int) -> float:
    """The SD3 shift s of ``trainers.flow.shift_time`` that a checkpoint's scheduler applies at this size.

    ``image_seq_len`` is the packed token count (h/2)(w/2), the pipelines' ``latents.shape[1]``. With
    ``use_dynamic_shifting`` the pipelines compute mu with ``calculate_shift`` from the scheduler config;
    the exponential time shift exp(mu) / (exp(mu) + (1/t - 1)) is shift_time(t, exp(mu)), the linear one
    mu / (mu + (1/t - 1)) is shift_time(t, mu). Otherwise the config's ``shift``.

    Not included: ``shift_terminal`` (Qwen-Image ships 0.02), which then stretches the n shifted sigmas
    affinely in 1 - sigma so the last one lands on it (the first stays 1). It depends on n, so it is no
    shift; ``trainers.sampling.timesteps(n, s)`` equals the scheduler's sigmas without it.
    """
    from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift

    name = scheduler_config.get("_class_name", FlowMatchEulerDiscreteScheduler.__name__)
    if name != FlowMatchEulerDiscreteScheduler.__name__:
        raise ValueError(f"scheduler config: _class_name must be FlowMatchEulerDiscreteScheduler, got {name!r}")
    # the scheduler's own defaults fill what the file leaves out, as they do for the pipeline
    cfg = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config).config
    bad = [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas")
           if cfg.get(k)]
    if bad:
        raise ValueError(f"scheduler config: {', '.join(bad)} give sigmas that are no SD3 shift; not supported")
    if not cfg.use_dynamic_shifting:
        return float(cfg.shift)
    mu = calculate_shift(
        image_seq_len,
        cfg.get("base_image_seq_len", 256),
        cfg.get("max_image_seq_len", 4096),
        cfg.get("base_shift", 0.5),
        cfg.get("max_shift", 1.15),
    )
    return math.exp(mu) if cfg.time_shift_type == "exponential" else float(mu)


def norm_rescaled_cfg(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Qwen-Image's "true CFG": uncond + scale (cond - uncond), rescaled to the norm of cond per token.

    The pipelines take the norms over the last dim of the packed [B, N, 4C] predictions, i.e. per 2×2
    patch over channels and the 4 positions together, so this packs [B, C, h, w] first and unpacks after.
    """
    h, w = v_cond.shape[-2:]
    cond, uncond = pack(v_cond), pack(v_uncond)
    comb = uncond + scale * (cond - uncond)
    cond_norm = torch.norm(cond, dim=-1, keepdim=True)
    noise_norm = torch.norm(comb, dim=-1, keepdim=True)
    return unpack(comb * (cond_norm / noise_norm), h, w)
