"""FlowModel: a velocity model v = f(z_t, t, text, source image) over a diffusers Qwen-Image transformer.

The tiny world works in pixel space: an image [B, 3, H, W] is cut into 2×2 patches, each a 12-dim token
(the same packing the Qwen-Image pipelines apply to VAE latents), and the MMDiT sees those tokens directly.
Instruction edits follow Qwen-Image-Edit: the clean source image's tokens are appended after the noisy
tokens, ``img_shapes`` gets a second entry (RoPE gives it frame index 1, which tells the two apart), and the
output is sliced back to the noisy tokens. A batch is either all text-to-image or all edit.

Saved and loaded as a diffusers folder (config.json + safetensors) through ``trainers.checkpoint``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin, QwenImageTransformer2DModel
from diffusers.configuration_utils import register_to_config


@dataclass(frozen=True)
class ModelSize:
    """Transformer shape of one registry entry."""

    num_layers: int
    num_attention_heads: int
    attention_head_dim: int


MODEL_SIZES: dict[str, ModelSize] = {
    # The prototype that trained well on the tiny world (DESIGN §5): ≈2.5M parameters at text_dim 384.
    "tiny": ModelSize(num_layers=4, num_attention_heads=4, attention_head_dim=32),
    # For tests and smoke runs: a few milliseconds per forward.
    "micro": ModelSize(num_layers=2, num_attention_heads=2, attention_head_dim=16),
}


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Split a head's dims over the (frame, height, width) RoPE axes: even parts summing to ``head_dim``.

    Qwen-Image uses (16, 56, 56) for 128: a small frame share (it only separates image 0 from image 1)
    and equal spatial shares. We keep that shape: frame = head_dim / 4, the rest split evenly.
    """
    if head_dim % 8:
        raise ValueError(f"attention_head_dim must be a multiple of 8 for the 3-axis RoPE, got {head_dim}")
    frame = head_dim // 4
    spatial = (head_dim - frame) // 2
    spatial -= spatial % 2
    return frame, spatial, head_dim - frame - spatial


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)(W/p), C·p·p] tokens, in the Qwen-Image pipelines' packing order."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: torch.Tensor, c: int, h: int, w: int, p: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: [B, (H/p)(W/p), C·p·p] -> [B, C, H, W]."""
    b = tokens.shape[0]
    x = tokens.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


class FlowModel(ModelMixin, ConfigMixin):
    """Pixel-space flow-matching velocity model (images in [-1, 1]) over ``QwenImageTransformer2DModel``."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        num_layers: int = 4,
        num_attention_heads: int = 4,
        attention_head_dim: int = 32,
        resolution: int = 16,
        patch_size: int = 2,
        channels: int = 3,
        text_dim: int = 384,
    ):
        super().__init__()
        if resolution % patch_size:
            raise ValueError(f"resolution ({resolution}) must be divisible by patch_size ({patch_size})")
        token_dim = channels * patch_size * patch_size
        # The transformer's own patch_size only sizes proj_out (p·p·out_channels); we patchify ourselves,
        # so it sees 12-dim tokens in and out: patch_size=1, in = out = C·p·p.
        self.transformer = QwenImageTransformer2DModel(
            patch_size=1,
            in_channels=token_dim,
            out_channels=token_dim,
            num_layers=num_layers,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            joint_attention_dim=text_dim,
            axes_dims_rope=rope_axes(attention_head_dim),
        )
        self._init_output()

    @classmethod
    def build(cls, size: str = "tiny", resolution: int = 16, text_dim: int = 384) -> FlowModel:
        """A freshly initialised model of a registry size (``MODEL_SIZES``)."""
        if size not in MODEL_SIZES:
            raise ValueError(f"size must be one of {sorted(MODEL_SIZES)}, got {size!r}")
        s = MODEL_SIZES[size]
        return cls(
            num_layers=s.num_layers,
            num_attention_heads=s.num_attention_heads,
            attention_head_dim=s.attention_head_dim,
            resolution=resolution,
            text_dim=text_dim,
        )

    def _init_output(self) -> None:
        """Zero the output projection so the model starts at v = 0 (DiT's zero-initialised final layer).

        diffusers leaves PyTorch's default init everywhere; a random output layer starts the velocity at
        an arbitrary field of std ≈ 0.5, while v = eps - x has mean 0, so 0 is the loss-minimising constant.
        """
        torch.nn.init.zeros_(self.transformer.proj_out.weight)
        torch.nn.init.zeros_(self.transformer.proj_out.bias)

    def forward(
        self,
        z_t: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity v [B, C, H, W] at (z_t, t) for text tokens [B, L, D] (mask [B, L], 1 = token).

        ``source`` None is text-to-image; a [B, C, H, W] tensor is the clean image of an instruction edit.
        ``t`` [B] in [0, 1] (t = 1 is noise); the Qwen-Image pipelines pass ``timestep / 1000`` = sigma,
        and the transformer's sinusoidal embedding scales it by 1000 itself, so t goes in unchanged.
        """
        self._check(z_t, t, text, text_mask, source)
        b, c, h, w = z_t.shape
        p = self.config.patch_size
        grid = (1, h // p, w // p)
        tokens = patchify(z_t, p)
        n_noisy = tokens.shape[1]
        shapes = [grid]
        if source is not None:
            tokens = torch.cat([tokens, patchify(source.to(tokens.dtype), p)], dim=1)
            shapes = [grid, grid]
        out = self.transformer(
            hidden_states=tokens,
            encoder_hidden_states=text.to(tokens.dtype),
            encoder_hidden_states_mask=text_mask,
            timestep=t.to(tokens.dtype),
            img_shapes=[shapes] * b,
            return_dict=False,
        )[0]
        return unpatchify(out[:, :n_noisy], c, h, w, p)

    def _check(self, z_t, t, text, text_mask, source) -> None:
        """Concise errors for the shape mistakes a caller can make (diffusers' own are far from the cause)."""
        cfg = self.config
        expected = (cfg.channels, cfg.resolution, cfg.resolution)
        if z_t.dim() != 4 or tuple(z_t.shape[1:]) != expected:
            raise ValueError(f"z_t must be [B, {', '.join(map(str, expected))}], got {list(z_t.shape)}")
        b = z_t.shape[0]
        if t.shape != (b,):
            raise ValueError(f"t must be [B] = [{b}], got {list(t.shape)}")
        if text.dim() != 3 or text.shape[0] != b or text.shape[2] != cfg.text_dim:
            raise ValueError(f"text must be [{b}, L, {cfg.text_dim}], got {list(text.shape)}")
        if tuple(text_mask.shape) != tuple(text.shape[:2]):
            raise ValueError(f"text_mask must be {list(text.shape[:2])}, got {list(text_mask.shape)}")
        if source is not None and source.shape != z_t.shape:
            raise ValueError(f"source must match z_t {list(z_t.shape)}, got {list(source.shape)}")
