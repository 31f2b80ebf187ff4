"""Write a complete random-weight diffusers world in the real formats.

    python -m trainers.worlds.diffusers.make_tiny DIR [--resolution 64] [--seed 0]

Every model is the real class (QwenImageTransformer2DModel, AutoencoderKLQwenImage, Qwen2.5-VL, CLIP) at a
toy size and saved with its own ``save_pretrained``, so the code that reads a user's world (diffusers'
``from_pretrained``, ``world.yaml``, the manifests) runs unchanged on it, on CPU, in seconds. Nothing is
downloaded: tokenizers are built in code (``tiny_tokenizer``). The layout is /work/notes/real_world_plan.md's.

    DIR/world.yaml, qwen-image/, qwen-image-edit/ (+ processor/), text-teacher/transformer/, clip/,
    judge-vlm/, prompts.parquet, edits.parquet, sources/*.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from trainers.worlds.diffusers.tiny_tokenizer import clip_tokenizer, qwen2_tokenizer

CATEGORIES = ("landscape", "portrait", "text")
EDIT_TYPES = ("recolour", "add_object", "change_text")
PROMPTS_PER_CATEGORY = {"train": 24, "heldout": 12}
EDITS_PER_TYPE = {"train": 4, "heldout": 4}

# Shapes. The transformer's joint_attention_dim is the text encoder's hidden size; its attention_head_dim is
# the sum of axes_dims_rope (frame, height, width rotary axes); in_channels = 4 * z_dim (2x2 latent packing).
TEXT_HIDDEN = 32
Z_DIM = 16
TRANSFORMER = dict(
    patch_size=2, in_channels=4 * Z_DIM, out_channels=Z_DIM, num_layers=2, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=TEXT_HIDDEN, axes_dims_rope=(4, 6, 6),
)
# Qwen-Image's VAE with base_dim 4 and one res block per level: still 8x spatial downsampling and the real
# per-channel latents_mean / latents_std (the class defaults are Qwen-Image's), so normalisation matters.
VAE = dict(
    base_dim=4, z_dim=Z_DIM, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True]
)
# Qwen/Qwen-Image scheduler/scheduler_config.json (resolution-dependent "exponential" shift with mu).
SCHEDULER = dict(
    num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
    base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential",
    invert_sigmas=False, stochastic_sampling=False, use_karras_sigmas=False, use_exponential_sigmas=False,
    use_beta_sigmas=False,
)
# Qwen2.5-VL's image processing as shipped (min/max pixels of Qwen-Image-Edit's processor).
QWEN_PIXELS = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 16384)
CLIP_SIZE = 32

COLOURS = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black", "grey", "brown", "golden"
)
RGB = {
    "red": (200, 40, 40), "orange": (230, 130, 30), "yellow": (230, 210, 40), "green": (50, 160, 60),
    "blue": (40, 80, 200), "purple": (120, 50, 160), "pink": (230, 130, 170), "white": (235, 235, 235),
    "black": (20, 20, 20), "grey": (128, 128, 128), "brown": (120, 80, 40), "golden": (210, 170, 50),
}
WORDS = (
    "OPEN", "CAFE", "HELLO", "SALE", "STOP", "BOOKS", "TAXI", "HOTEL", "MARKET", "PIZZA", "MUSIC", "EXIT"
)
OBJECTS = ("cat", "dog", "bird", "boat", "house", "moon", "star", "car", "flower", "lamp")
TEMPLATES = {
    "landscape": (
        "a {a} sky over {b} hills", "a {a} lake below {b} mountains", "a {a} forest near a {b} river",
        "a {a} desert under {b} clouds", "a {a} beach at sunset with {b} sea",
    ),
    "portrait": (
        "a portrait of an old man with {a} hair and a {b} hat", "a young woman with {a} eyes in a {b} coat",
        "a smiling child with {a} hair and a {b} scarf",
        "a portrait of a girl with {a} glasses on a {b} background",
    ),
    "text": (
        'a {a} sign that reads "{w}" on a {b} wall', 'a poster with the word "{w}" in {a} letters on {b}',
        'a neon shop sign saying "{w}" in {a} over a {b} door', 'a {a} banner with the title "{w}" on {b}',
    ),
}
PARTS = {"landscape": "sky", "portrait": "hair", "text": "sign"}

WORLD_YAML = """\
# A random-weight world in the real formats, written by `python -m trainers.worlds.diffusers.make_tiny`
# (seed {seed}). The models are untrained toys: it exercises formats and code paths, not image quality.
kind: diffusers
pipeline: qwen-image
edit_pipeline: qwen-image-edit
student: pipeline
specialists:
  text: text-teacher/transformer
resolution: {resolution}
prompts: prompts.parquet
edits: edits.parquet
edit_vision_area: 4096  # a 64-pixel world: ~4 image tokens per edit; real worlds keep the pipeline's 1024²
judge:
  clip: clip
  vlm: judge-vlm
"""


@contextlib.contextmanager
def _quiet():
    """Silence per-file progress bars and diffusers' "processor=None cannot be saved" warning (processor/
    is written by hand), so the CLI prints one line per component; the caller's settings come back."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    bars, level = transformers_logging.is_progress_bar_enabled(), diffusers_logging.get_verbosity()
    transformers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
        diffusers_logging.set_verbosity(level)


def _qwen_vl(tokenizer, seed: int):
    """A Qwen2.5-VL (text 2 layers x 32, vision 2 layers x 32) whose special-token ids are the tokenizer's."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32768,
            rope_parameters=dict(rope_type="default", rope_theta=1_000_000.0, mrope_section=[2, 3, 3]),
            bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=TEXT_HIDDEN,
            fullatt_block_indexes=[1], window_size=112, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, tokens_per_second=2,
        ),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Qwen2_5_VLForConditionalGeneration(config).eval()


def _transformer(seed: int):
    from diffusers import QwenImageTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return QwenImageTransformer2DModel(**TRANSFORMER).eval()


def _vae(seed: int):
    from diffusers import AutoencoderKLQwenImage

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKLQwenImage(**VAE).eval()


def _save_qwen_processor(folder: Path, tokenizer, processor_class: str) -> None:
    """The processor folder as Qwen ships it (transformers 4.x layout): tokenizer files, chat template,
    ``preprocessor_config.json`` and ``video_preprocessor_config.json``.

    Written file by file because ``Qwen2VLProcessor`` cannot be instantiated without torchvision (its video
    processor is a required attribute); the image half loads alone with ``AutoImageProcessor`` (the PIL
    ``Qwen2VLImageProcessor``) and the tokenizer with ``AutoTokenizer``.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    image = Qwen2VLImageProcessorPil(**QWEN_PIXELS)
    image.save_pretrained(folder)
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config.update(processor_class=processor_class, **QWEN_PIXELS)
    (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    video = {k: config[k] for k in ("do_convert_rgb", "do_normalize", "do_rescale", "do_resize", "image_mean",
                                    "image_std", "merge_size", "patch_size", "resample", "rescale_factor",
                                    "size", "temporal_patch_size", "min_pixels", "max_pixels")}
    video.update(do_sample_frames=False, min_frames=4, max_frames=768, processor_class=processor_class,
                 video_processor_type="Qwen2VLVideoProcessor")
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2, sort_keys=True) + "\n")


def _pipelines(out: Path, seed: int, say: Callable[[str], None]) -> None:
    """qwen-image/, qwen-image-edit/ and text-teacher/: one text encoder and VAE (as the real pair shares
    Qwen2.5-VL-7B and the VAE), three transformers with different random weights."""
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageEditPipeline, QwenImagePipeline

    base = 1000 * seed  # each component its own torch seed; worlds of other seeds share none
    tokenizer = qwen2_tokenizer()
    shared = dict(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=_vae(base + 1),
        text_encoder=_qwen_vl(tokenizer, base + 2), tokenizer=tokenizer,
    )
    QwenImagePipeline(transformer=_transformer(base + 3), **shared).save_pretrained(out / "qwen-image")
    say("qwen-image: QwenImagePipeline (transformer, vae, text_encoder, tokenizer, scheduler)")

    edit = out / "qwen-image-edit"
    QwenImageEditPipeline(transformer=_transformer(base + 4), processor=None, **shared).save_pretrained(edit)
    _save_qwen_processor(edit / "processor", tokenizer, "Qwen2VLProcessor")
    index = json.loads((edit / "model_index.json").read_text())
    index["processor"] = ["transformers", "Qwen2VLProcessor"]  # what Qwen/Qwen-Image-Edit's index says
    (edit / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    say("qwen-image-edit: QwenImageEditPipeline (+ processor/), its own transformer")

    _transformer(base + 5).save_pretrained(out / "text-teacher" / "transformer")
    say("text-teacher/transformer: QwenImageTransformer2DModel (the `text` specialist)")


def _judges(out: Path, seed: int, say: Callable[[str], None]) -> None:
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    base = 1000 * seed
    tokenizer = clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=CLIP_SIZE, patch_size=8,
        ),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(base + 6)
        CLIPModel(config).eval().save_pretrained(out / "clip")
    tokenizer.save_pretrained(out / "clip")
    CLIPImageProcessorPil(
        size={"shortest_edge": CLIP_SIZE}, crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE}
    ).save_pretrained(out / "clip")
    say("clip: CLIPModel + CLIPTokenizer + CLIPImageProcessor")

    qwen = qwen2_tokenizer()
    _qwen_vl(qwen, base + 7).save_pretrained(out / "judge-vlm")
    _save_qwen_processor(out / "judge-vlm", qwen, "Qwen2_5_VLProcessor")
    say("judge-vlm: Qwen2_5_VLForConditionalGeneration + tokenizer + Qwen2VLImageProcessor")


def _round_robin(groups: dict[str, list[dict]]) -> list[dict]:
    """Interleave the groups' rows (a, b, c, a, b, c, ...): any first rows cover every group."""
    rows, longest = [], max(len(g) for g in groups.values())
    for i in range(longest):
        rows += [g[i] for g in groups.values() if i < len(g)]
    return rows


def _prompts(rng: random.Random) -> pd.DataFrame:
    rows = {}
    for category in CATEGORIES:
        unique: list[str] = []
        while len(unique) < sum(PROMPTS_PER_CATEGORY.values()):
            a, b = rng.sample(COLOURS, 2)
            text = rng.choice(TEMPLATES[category]).format(a=a, b=b, w=rng.choice(WORDS))
            text = re.sub(r"\ba (?=[aeiou])", "an ", text)
            if text not in unique:
                unique.append(text)
        rows[category] = [{"prompt": p, "category": category} for p in unique]
    table, start = [], 0
    for split, n in PROMPTS_PER_CATEGORY.items():
        chunk = {c: [dict(r, split=split) for r in rs[start:start + n]] for c, rs in rows.items()}
        table += _round_robin(chunk)
        start += n
    return pd.DataFrame(table, columns=["prompt", "category", "split"])


def _draw(category: str, rng: random.Random, size: int) -> tuple[Image.Image, str, str]:
    """A procedural RGB picture of the category; returns it, the colour of its PARTS[category] and the
    sign's word ("" but for text)."""
    a, b = rng.sample(COLOURS, 2)
    image = Image.new("RGB", (size, size), RGB[a])
    draw = ImageDraw.Draw(image)
    s = size / 64
    if category == "landscape":
        phase, height = rng.uniform(0, 6.28), rng.uniform(0.45, 0.7) * size
        hills = [(x, height + 6 * s * np.sin(phase + x / (8 * s))) for x in range(0, size + 1, 2)]
        draw.polygon([(0, size)] + hills + [(size, size)], fill=RGB[b])
        cx, cy = rng.uniform(0.2, 0.8) * size, rng.uniform(0.1, 0.3) * size
        sun = RGB["white" if a == "yellow" else "yellow"]
        draw.ellipse([cx - 5 * s, cy - 5 * s, cx + 5 * s, cy + 5 * s], fill=sun)
        return image, a, ""
    if category == "portrait":
        cx = rng.uniform(0.4, 0.6) * size
        draw.ellipse([cx - 16 * s, 8 * s, cx + 16 * s, 36 * s], fill=RGB[b])  # hair
        draw.ellipse([cx - 13 * s, 14 * s, cx + 13 * s, 50 * s], fill=(225, 185, 150))  # face
        for ex in (-5, 5):
            draw.ellipse([cx + (ex - 2) * s, 26 * s, cx + (ex + 2) * s, 30 * s], fill=RGB["black"])
        draw.rectangle([cx - 20 * s, 52 * s, cx + 20 * s, size], fill=RGB[b])  # shoulders
        return image, b, ""
    word = rng.choice(WORDS)
    draw.rectangle([6 * s, 18 * s, size - 6 * s, size - 18 * s], fill=RGB[b], outline=RGB["black"])
    ink = RGB["white"] if sum(RGB[b]) < 380 else RGB["black"]
    draw.text((size / 2, size / 2), word, fill=ink, anchor="mm", font_size=max(8, int(10 * s)))
    return image, b, word


def _instruction(edit_type: str, category: str, colour: str, word: str, rng: random.Random) -> str:
    """An instruction that asks for a change: a new colour, an object, a different word."""
    if edit_type == "recolour":
        return f"make the {PARTS[category]} {rng.choice([c for c in COLOURS if c != colour])}"
    if edit_type == "add_object":
        return re.sub(r"^add a (?=[aeiou])", "add an ", f"add a {rng.choice(COLOURS)} {rng.choice(OBJECTS)}")
    return f'change the text to "{rng.choice([w for w in WORDS if w != word])}"'


def _edits(out: Path, rng: random.Random, resolution: int) -> pd.DataFrame:
    """One drawn source per edit: change_text edits a text picture, the other types cycle through the
    categories (each type from its own offset, so both splits see every category)."""
    (out / "sources").mkdir()
    table, index = [], 0
    for split, n in EDITS_PER_TYPE.items():
        groups = {}
        for t, edit_type in enumerate(EDIT_TYPES):
            groups[edit_type] = []
            for i in range(n):
                category = "text" if edit_type == "change_text" else CATEGORIES[(t + i) % len(CATEGORIES)]
                image, colour, word = _draw(category, rng, resolution)
                source = f"sources/{index:03d}.png"
                image.save(out / source)
                index += 1
                groups[edit_type].append(dict(
                    source=source, instruction=_instruction(edit_type, category, colour, word, rng),
                    edit_type=edit_type, split=split, category=category,
                ))
        table += _round_robin(groups)
    return pd.DataFrame(table, columns=["source", "instruction", "edit_type", "split", "category"])


def build(out: Path, *, resolution: int = 64, seed: int = 0,
          progress: Callable[[str], None] | None = None) -> Path:
    """Write the tiny world into ``out`` (created; must be absent or empty) and return its world.yaml path.

    Deterministic in ``seed``: weights, manifests and source images. ``progress`` gets one line per component.
    """
    out = Path(out)
    if resolution % 16 or resolution < 32:
        raise ValueError(f"resolution must be a multiple of 16 and at least 32, got {resolution}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} is not empty: make_tiny writes a fresh world folder")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def say(line: str) -> None:
        if progress is not None:
            progress(f"[{time.perf_counter() - start:5.1f}s] {line}")

    with _quiet():
        _pipelines(out, seed, say)
        _judges(out, seed, say)
    rng = random.Random(seed)
    _prompts(rng).to_parquet(out / "prompts.parquet", index=False)
    _edits(out, rng, resolution).to_parquet(out / "edits.parquet", index=False)
    say("prompts.parquet, edits.parquet, sources/")
    (out / "world.yaml").write_text(WORLD_YAML.format(seed=seed, resolution=resolution))
    say(f"world.yaml -> {out / 'world.yaml'}")
    return out / "world.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.worlds.diffusers.make_tiny",
        description="Write a random-weight Qwen-Image world (real diffusers/transformers formats) into DIR.",
    )
    parser.add_argument("dir", metavar="DIR", type=Path, help="world folder to create (absent or empty)")
    parser.add_argument("--resolution", type=int, default=64,
                        help="image side in pixels, a multiple of 16 (default 64: 16 latent tokens)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, manifests and sources")
    args = parser.parse_args(argv)
    if args.dir.exists() and (not args.dir.is_dir() or any(args.dir.iterdir())):
        print(f"make_tiny: {args.dir} exists and is not an empty folder; choose a new DIR", file=sys.stderr)
        return 2
    try:
        path = build(args.dir, resolution=args.resolution, seed=args.seed, progress=print)
    except ValueError as err:
        print(f"make_tiny: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
