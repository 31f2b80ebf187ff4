"""The tiny real-format world (trainers/worlds/diffusers/make_tiny.py, tiny_tokenizer.py).

Run: .venv/bin/python -m pytest tests/test_make_tiny.py -q
The world is built once per session (``tiny_real_world`` in conftest.py); every test reads it back with the
libraries' own loaders, which is what proves the formats are the real ones.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, BatchFeature, ProcessorMixin

from trainers.worlds.diffusers import make_tiny
from trainers.worlds.diffusers.tiny_tokenizer import SPECIAL_TOKENS, clip_tokenizer, qwen2_tokenizer
from trainers.yaml_dialect import load_yaml

FILES = [
    "world.yaml", "prompts.parquet", "edits.parquet",
    "qwen-image/model_index.json", "qwen-image/transformer/config.json",
    "qwen-image/transformer/diffusion_pytorch_model.safetensors", "qwen-image/vae/config.json",
    "qwen-image/vae/diffusion_pytorch_model.safetensors", "qwen-image/text_encoder/config.json",
    "qwen-image/text_encoder/model.safetensors", "qwen-image/tokenizer/tokenizer.json",
    "qwen-image/tokenizer/tokenizer_config.json", "qwen-image/scheduler/scheduler_config.json",
    "qwen-image-edit/model_index.json", "qwen-image-edit/transformer/diffusion_pytorch_model.safetensors",
    "qwen-image-edit/processor/preprocessor_config.json", "qwen-image-edit/processor/tokenizer.json",
    "qwen-image-edit/processor/video_preprocessor_config.json",
    "qwen-image-edit/processor/chat_template.jinja",
    "text-teacher/transformer/config.json", "text-teacher/transformer/diffusion_pytorch_model.safetensors",
    "clip/config.json", "clip/model.safetensors", "clip/tokenizer.json", "clip/preprocessor_config.json",
    "judge-vlm/config.json", "judge-vlm/model.safetensors", "judge-vlm/tokenizer.json",
    "judge-vlm/preprocessor_config.json", "judge-vlm/chat_template.jinja",
]


@pytest.fixture(scope="module")
def world(tiny_real_world):
    return tiny_real_world.parent


class _Qwen2VLProcessorShim(ProcessorMixin):
    """What ``Qwen2VLProcessor.__call__`` does for images, built from the processor folder's tokenizer and
    (PIL) image processor: each ``<|image_pad|>`` becomes one token per merged vision patch.

    Needed because transformers 5 cannot instantiate Qwen2VLProcessor without torchvision (its required
    video processor is a torchvision class); ``test_processor_loads_with_torchvision`` checks the real one
    where torchvision exists.
    """

    def __init__(self, folder):  # no super().__init__: it would type-check a video processor
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.image_processor = AutoImageProcessor.from_pretrained(folder)

    def __call__(self, text, images=None, padding=True, return_tensors="pt"):
        pixels = self.image_processor(images=images, return_tensors=return_tensors)
        counts = iter((pixels["image_grid_thw"].prod(-1) // self.image_processor.merge_size**2).tolist())
        pad = "<|image_pad|>"
        text = [pad.join([t.split(pad)[0]] + [pad * (next(counts) - 1) + p for p in t.split(pad)[1:]])
                for t in text]
        tokens = self.tokenizer(text, padding=padding, return_tensors=return_tensors)
        return BatchFeature({**tokens, **pixels})


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_folder_has_every_file_and_world_yaml(world):
    missing = [f for f in FILES if not (world / f).is_file()]
    assert not missing
    spec = load_yaml((world / "world.yaml").read_text())
    assert spec == {
        "kind": "diffusers", "pipeline": "qwen-image", "edit_pipeline": "qwen-image-edit",
        "student": "pipeline",
        "specialists": {"text": "text-teacher/transformer"}, "resolution": 64, "prompts": "prompts.parquet",
        "edits": "edits.parquet", "edit_vision_area": 4096, "judge": {"clip": "clip", "vlm": "judge-vlm"},
    }
    assert (world / "world.yaml").read_text().startswith("#")
    size = sum(f.stat().st_size for f in world.rglob("*") if f.is_file())
    assert size < 10e6


def test_prompts_manifest(world):
    prompts = pd.read_parquet(world / "prompts.parquet")
    assert list(prompts.columns) == ["prompt", "category", "split"]
    assert set(prompts.split) == {"train", "heldout"}
    counts = prompts.groupby(["split", "category"]).size()
    assert counts.to_dict() == {(s, c): n for s, n in make_tiny.PROMPTS_PER_CATEGORY.items()
                                for c in make_tiny.CATEGORIES}
    assert prompts.prompt.is_unique
    for _, rows in prompts.groupby("split"):  # round-robin: the first rows of a split cover every category
        assert list(rows.category[:3]) == list(make_tiny.CATEGORIES)


def test_edits_manifest_and_sources(world):
    edits = pd.read_parquet(world / "edits.parquet")
    assert list(edits.columns) == ["source", "instruction", "edit_type", "split", "category"]
    for split, rows in edits.groupby("split"):
        assert len(rows) == 12
        assert list(rows.edit_type[:3]) == list(make_tiny.EDIT_TYPES)  # heldout is read round-robin too
        assert set(rows.category) == set(make_tiny.CATEGORIES), split
    assert (edits[edits.edit_type == "change_text"].category == "text").all()
    assert edits.source.is_unique
    for source in edits.source:
        image = Image.open(world / source)
        assert image.mode == "RGB" and image.size == (64, 64)


def test_qwen_image_pipeline_generates(world):
    from diffusers import QwenImagePipeline

    pipe = QwenImagePipeline.from_pretrained(world / "qwen-image")
    assert pipe.scheduler.config.use_dynamic_shifting and pipe.scheduler.config.shift_terminal == 0.02
    assert pipe.vae.config.z_dim == 16 and len(set(pipe.vae.config.latents_std)) > 1
    assert pipe.transformer.config.joint_attention_dim == pipe.text_encoder.config.text_config.hidden_size
    images = pipe(
        prompt=["a red sky over green hills", 'a sign that reads "OPEN"'], num_inference_steps=2,
        height=64, width=64, output_type="pt", generator=torch.Generator().manual_seed(0),
    ).images
    assert images.shape == (2, 3, 64, 64) and torch.isfinite(images).all()
    # The dropped template prefix is exactly the system prompt, as with the real tokenizer.
    prefix = pipe.prompt_template_encode.split("{}")[0]
    assert len(pipe.tokenizer(prefix)["input_ids"]) == pipe.prompt_template_encode_start_idx


def test_qwen_image_edit_pipeline_generates(world, monkeypatch):
    """Loads with diffusers' from_pretrained and edits a source image. The processor is the shim (no
    torchvision here, see _Qwen2VLProcessorShim); the pipeline's fixed 1024x1024 working size for the source
    is patched to the world's 64 so the test takes a second, not ten."""
    from diffusers import QwenImageEditPipeline
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit

    pipe = QwenImageEditPipeline.from_pretrained(
        world / "qwen-image-edit", processor=_Qwen2VLProcessorShim(world / "qwen-image-edit" / "processor")
    )
    prefix = pipe.prompt_template_encode.split("<|vision_start|>")[0]
    assert len(pipe.tokenizer(prefix)["input_ids"]) == pipe.prompt_template_encode_start_idx
    monkeypatch.setattr(pipeline_qwenimage_edit, "calculate_dimensions", lambda area, ratio: (64, 64, None))
    source = Image.open(world / "sources" / "000.png")
    images = pipe(image=source, prompt="make the sky blue", num_inference_steps=2, height=64, width=64,
                  output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 3, 64, 64) and torch.isfinite(images).all()


def test_transformers_differ_and_encoders_are_shared(world):
    weights = "transformer/diffusion_pytorch_model.safetensors"
    digests = {_digest(world / d / weights) for d in ("qwen-image", "qwen-image-edit", "text-teacher")}
    assert len(digests) == 3
    for part in ("text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        assert _digest(world / "qwen-image" / part) == _digest(world / "qwen-image-edit" / part)


def test_processor_folder_loads_without_torchvision(world):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    folder = world / "qwen-image-edit" / "processor"
    assert isinstance(AutoImageProcessor.from_pretrained(folder), Qwen2VLImageProcessorPil)
    assert AutoTokenizer.from_pretrained(folder).chat_template
    index = load_yaml((world / "qwen-image-edit" / "model_index.json").read_text())
    assert index["processor"] == ["transformers", "Qwen2VLProcessor"]


def test_processor_loads_with_torchvision(world):
    pytest.importorskip("torchvision")
    from transformers import Qwen2VLProcessor

    processor = Qwen2VLProcessor.from_pretrained(world / "qwen-image-edit" / "processor")
    assert processor.image_token == "<|image_pad|>"


def test_clip_judge_loads_and_scores(world):
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(world / "clip").eval()
    processor = CLIPProcessor.from_pretrained(world / "clip")
    inputs = processor(text=["a red sky", "a sign"], images=[Image.open(world / "sources" / "000.png")],
                       return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


def test_vlm_judge_loads_and_reads_digits(world):
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(world / "judge-vlm").eval()
    processor = _Qwen2VLProcessorShim(world / "judge-vlm")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Rate it 0 to 9."}]}]
    text = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.open(world / "sources" / "000.png")])
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    digits = processor.tokenizer.convert_tokens_to_ids([str(d) for d in range(10)])
    assert torch.isfinite(logits[digits]).all()


def test_qwen2_tokenizer_round_trips(tmp_path):
    from transformers import Qwen2TokenizerFast

    tokenizer = qwen2_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    text = '<|im_start|>user\na red sky over "OPEN" 42, héllo<|im_end|>\n'
    for loaded in (AutoTokenizer.from_pretrained(tmp_path), Qwen2TokenizerFast.from_pretrained(tmp_path)):
        assert isinstance(loaded, Qwen2TokenizerFast)
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert loaded.decode(loaded(text)["input_ids"]) == text
        assert set(SPECIAL_TOKENS) <= set(loaded.all_special_tokens)
        assert loaded.pad_token == "<|endoftext|>"
    for digit in "0123456789":  # alone and inside text: one token, the same one
        (token,) = tokenizer(digit)["input_ids"]
        assert token in tokenizer(f"score {digit}.")["input_ids"]
    assert qwen2_tokenizer().backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_manifest_words_are_single_tokens(world):
    """The tokenizer's corpus covers make_tiny's vocabulary: the texts are a few tokens per word, as with
    the real tokenizer, rather than a byte-level spelling."""
    backend = qwen2_tokenizer().backend_tokenizer
    texts = [*pd.read_parquet(world / "prompts.parquet").prompt]
    texts += [*pd.read_parquet(world / "edits.parquet").instruction]
    pieces = {piece for text in texts for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text)}
    assert [piece for piece in pieces if len(backend.model.tokenize(piece)) > 1] == []


def test_clip_tokenizer_round_trips(tmp_path):
    tokenizer = clip_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    ids = loaded("A red sky over green hills")["input_ids"]
    assert ids == tokenizer("A red sky over green hills")["input_ids"]
    assert ids[0] == loaded.bos_token_id and ids[-1] == loaded.eos_token_id
    assert loaded.decode(ids, skip_special_tokens=True) == "a red sky over green hills"


def test_same_seed_same_world(world, tmp_path):
    again = make_tiny.build(tmp_path / "again")
    # what the builder wrote (the shared world may also hold a text cache another test prepared)
    files = sorted(f.relative_to(world) for f in world.rglob("*") if f.is_file() and "text-cache" not in f.parts)
    assert files == sorted(f.relative_to(again.parent) for f in again.parent.rglob("*") if f.is_file())
    assert all(_digest(world / f) == _digest(again.parent / f) for f in files)


def test_cli_refuses_a_non_empty_dir(tmp_path, capsys):
    (tmp_path / "something").write_text("x")
    assert make_tiny.main([str(tmp_path)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not empty"):
        make_tiny.build(tmp_path)
    with pytest.raises(ValueError, match="multiple of 16"):
        make_tiny.build(tmp_path / "new", resolution=72)
