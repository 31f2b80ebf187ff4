"""Qwen-Image text conditions and their cache (trainers/worlds/diffusers/text.py).

Run: ``.venv/bin/python -m pytest tests/test_real_text.py -q``. A tiny random Qwen2.5-VL, the offline Qwen2
tokenizer of ``tiny_tokenizer.py`` and a small Qwen2-VL image processor are saved into pipeline-like
folders once per module; the references are diffusers' own pipelines built around the same components
(the edit one with transformers' real Qwen2VLProcessor, whose torchvision-only class check is bypassed).
"""

from __future__ import annotations

import hashlib
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from tokenizers import AddedToken
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
)
from transformers.processing_utils import ProcessorMixin

from trainers.worlds.diffusers import text as text_mod
from trainers.worlds.diffusers.text import (
    EDIT,
    T2I,
    CachedConditions,
    CacheKey,
    MissingTextError,
    PipelineTexts,
    PromptTemplate,
    QwenPromptEncoder,
    TextCache,
    main,
    prepare,
)
from trainers.worlds.diffusers.tiny_tokenizer import qwen2_tokenizer

PROMPTS = ["a red boat on a lake", "portrait of an old man with a hat", "a sign that reads open"]
INSTRUCTIONS = ["make the sky red", "add a cat"]
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def _byte_tokenizer() -> Qwen2Tokenizer:
    """A Qwen2 tokenizer with no merges: every byte is a token, so the template prefixes are long."""
    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_tokens(
        [AddedToken(t, special=True) for t in ("<|im_start|>", "<|im_end|>", *VISION_TOKENS)]
    )
    return tokenizer


def _tiny_model(tokenizer) -> Qwen2_5_VLForConditionalGeneration:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=4096,
            bos_token_id=pad,
            eos_token_id=pad,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        ),
        # out_hidden_size = the text hidden size: image tokens are spliced into the text sequence
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=32,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _save_pipeline(folder, class_name, model, tokenizer, image_processor=None):
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    model.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    if image_processor is not None:  # what Qwen2VLProcessor.save_pretrained writes, without its video half
        image_processor.save_pretrained(folder / "processor")
        tokenizer.save_pretrained(folder / "processor")
    return folder


def _image(path, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny components in memory and saved as a Qwen-Image and a Qwen-Image-Edit folder, with two sources."""
    root = tmp_path_factory.mktemp("text_world")
    tokenizer = qwen2_tokenizer()
    model = _tiny_model(tokenizer)
    # 1 MP prompt image -> at most 112x112 pixels -> an 8x8 patch grid -> 16 image tokens per source
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)
    (root / "sources").mkdir()
    return {
        "root": root,
        "tokenizer": tokenizer,
        "model": model,
        "image_processor": image_processor,
        "pipeline": _save_pipeline(root / "qwen-image", "QwenImagePipeline", model, tokenizer),
        "edit_pipeline": _save_pipeline(
            root / "qwen-image-edit", "QwenImageEditPipeline", model, tokenizer, image_processor
        ),
        "sources": [_image(root / "sources" / f"{i}.png", i) for i in range(2)],
    }


def _real_processor(image_processor, tokenizer, monkeypatch) -> Qwen2VLProcessor:
    """transformers' own Qwen2VLProcessor; its class check of the (absent) video processor needs torchvision."""
    monkeypatch.setattr(ProcessorMixin, "check_argument_for_proper_class", lambda self, name, arg: None)
    processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=None)
    monkeypatch.undo()
    return processor


def _pipeline_prompt_image(pipe, path):
    """The source as QwenImageEditPipeline.__call__ resizes it before encode_prompt."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions

    image = Image.open(path)
    width, height, _ = calculate_dimensions(1024 * 1024, image.size[0] / image.size[1])
    return pipe.image_processor.resize(image, height, width)


# -- identity with diffusers --------------------------------------------------------------------------


def test_t2i_embeddings_equal_the_pipelines_encode_prompt(world):
    from diffusers import QwenImagePipeline

    pipe = QwenImagePipeline(
        scheduler=None, vae=None, text_encoder=world["model"], tokenizer=world["tokenizer"], transformer=None
    )
    ref, ref_mask = pipe.encode_prompt(PROMPTS + [""], device="cpu")
    encoder = QwenPromptEncoder.from_pipeline_folder(world["pipeline"])
    text, mask = encoder.encode(PROMPTS + [""])
    assert ref_mask is not None  # rows of different lengths: the mask is part of the output
    assert torch.equal(text, ref) and torch.equal(mask, ref_mask)
    assert text.dtype == torch.float32 and mask.dtype == torch.long


def test_edit_embeddings_equal_the_edit_pipelines_own(world, monkeypatch):
    from diffusers import QwenImageEditPipeline

    processor = _real_processor(world["image_processor"], world["tokenizer"], monkeypatch)
    pipe = QwenImageEditPipeline(
        scheduler=None,
        vae=None,
        text_encoder=world["model"],
        tokenizer=world["tokenizer"],
        processor=processor,
        transformer=None,
    )
    instructions = INSTRUCTIONS + [""]
    paths = [world["sources"][0], world["sources"][1], world["sources"][0]]
    ref, ref_mask = pipe._get_qwen_prompt_embeds(
        instructions, image=[_pipeline_prompt_image(pipe, p) for p in paths], device="cpu"
    )
    encoder = QwenPromptEncoder.from_pipeline_folder(world["edit_pipeline"])
    text, mask = encoder.encode(instructions, [Image.open(p) for p in paths])
    assert torch.equal(text, ref) and torch.equal(mask, ref_mask)


def test_drop_idx_is_the_template_prefix_token_count(world):
    """The tiny tokenizer cuts where the real one does (34 / 64); a byte tokenizer shows it is counted."""
    for tokenizer, hard_coded in ((world["tokenizer"], True), (_byte_tokenizer(), False)):
        for kind, marker in ((T2I, "{}"), (EDIT, "<|vision_start|>")):
            template = PromptTemplate.of_pipeline(kind, tokenizer)
            prefix = template.template[: template.template.index(marker)]
            assert template.drop_idx == len(tokenizer(prefix)["input_ids"])
            assert (template.drop_idx == template.diffusers_drop_idx) == hard_coded
            kept = tokenizer.decode(
                tokenizer(template.template.format("a cat"))["input_ids"][template.drop_idx :]
            )
            tail = "<|im_end|>\n<|im_start|>assistant\n"
            expected = (
                "a cat" + tail if kind == T2I else "<|vision_start|><|image_pad|><|vision_end|>a cat" + tail
            )
            assert kept == expected
    assert PromptTemplate.of_pipeline(T2I, world["tokenizer"]).drop_idx == 34
    assert PromptTemplate.of_pipeline(EDIT, world["tokenizer"]).drop_idx == 64


def test_edit_conditions_depend_on_the_image_and_the_null_includes_it(world):
    encoder = QwenPromptEncoder.from_pipeline_folder(world["edit_pipeline"])
    a, b = (Image.open(p) for p in world["sources"])
    rows = encoder.encode_each(["make the sky red", "make the sky red", "", ""], [a, b, a, b])
    assert not torch.allclose(rows[0], rows[1])  # same instruction, other source
    assert not torch.allclose(rows[2], rows[3])  # the unconditional branch sees its source too
    image_tokens = 16  # 8x8 patches merged 2x2
    # <|vision_start|> + image tokens + <|vision_end|> + "<|im_end|>\n<|im_start|>assistant\n" (5 tokens)
    assert rows[2].shape == (1 + image_tokens + 1 + 5, 32)


def test_a_smaller_vision_area_gives_fewer_image_tokens_and_other_keys(world, tmp_path, capsys):
    """A world's edit_vision_area: 56² pixels -> a 4x4 patch grid -> 4 image tokens instead of 16."""
    small = 56 * 56
    source = world["sources"][0]
    encoder = QwenPromptEncoder.from_pipeline_folder(world["edit_pipeline"], vl_area=small)
    assert encoder.template.vl_area == small
    [row] = encoder.encode_each([""], [Image.open(source)])
    assert row.shape == (1 + 4 + 1 + 5, 32)  # the default area's row is 1 + 16 + 1 + 5 (test above)

    default = PipelineTexts(world["edit_pipeline"])
    smaller = PipelineTexts(world["edit_pipeline"], vl_area=small)
    assert default.template.vl_area == 1024 * 1024 and smaller.template.vl_area == small
    assert default.key("add a cat", source).digest != smaller.key("add a cat", source).digest
    t2i = PipelineTexts(world["pipeline"], vl_area=small)  # T2I templates have no vision area: same keys
    assert t2i.template.vl_area is None and t2i.key("a cat") == PipelineTexts(world["pipeline"]).key("a cat")

    pq.write_table(pa.table({"prompt": PROMPTS[:1]}), tmp_path / "prompts.parquet")
    edits = pa.table({"instruction": ["add a cat"], "source": ["sources/0.png"]})
    pq.write_table(edits, tmp_path / "edits.parquet")
    cache = tmp_path / "cache"
    args = ["--root", str(world["root"]), "--pipeline", "qwen-image", "--edit-pipeline", "qwen-image-edit",
            "--prompts", str(tmp_path / "prompts.parquet"), "--edits", str(tmp_path / "edits.parquet"),
            "--cache", str(cache), "--device", "cpu", "--no-progress", "--edit-vision-area", str(small)]
    assert main(args) == 0 and json.loads(capsys.readouterr().out) == {"encoded": 2 + 2, "cached": 0}
    text, mask = CachedConditions(cache, world["pipeline"], world["edit_pipeline"], vl_area=small).edit_null(
        [str(source)]
    )
    assert mask.shape == (1, 11)
    torch.testing.assert_close(text[0], row, rtol=1e-5, atol=1e-6)
    with pytest.raises(MissingTextError):  # entries of another area are other entries
        CachedConditions(cache, world["pipeline"], world["edit_pipeline"]).edit_null([str(source)])


# -- the cache ----------------------------------------------------------------------------------------


def _key(text, kind=T2I):
    return CacheKey(hashlib.sha256(f"{kind}:{text}".encode()).hexdigest(), kind, text)


def test_cache_round_trip_is_exact_and_keeps_the_dtype(tmp_path):
    torch.manual_seed(0)
    entries = [
        (_key("a"), torch.randn(3, 8)),
        (_key("bb"), torch.randn(7, 8).bfloat16()),
        (_key(""), torch.randn(1, 8)),
    ]
    cache = TextCache(tmp_path / "cache")
    assert cache.put(entries) is not None
    assert cache.put(entries[:1]) is None  # already there: no new shard
    fresh = TextCache(tmp_path / "cache")
    got = fresh.get([k for k, _ in entries])
    for (_, want), have in zip(entries, got, strict=True):
        assert have.dtype == want.dtype and torch.equal(have, want)
    assert {r["text"] for r in fresh.records().values()} == {"a", "bb", ""}
    with pytest.raises(MissingTextError, match="'never cached'"):
        fresh.get([_key("a"), _key("never cached")])


def test_a_failed_write_leaves_the_cache_readable(tmp_path, monkeypatch):
    cache = TextCache(tmp_path)
    cache.put([(_key("kept"), torch.ones(2, 4))])

    def crash(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half a shard")
        raise OSError("disk full")

    monkeypatch.setattr(text_mod, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.put([(_key("lost"), torch.zeros(2, 4))])
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in cache.shards()]  # no temp left
    reader = TextCache(tmp_path)
    assert torch.equal(reader.get([_key("kept")])[0], torch.ones(2, 4)) and _key("lost") not in reader


def test_keys_follow_file_contents_not_paths(world, tmp_path):
    import shutil

    texts = PipelineTexts(world["pipeline"])
    copy = shutil.copytree(world["pipeline"], tmp_path / "copy")  # new paths, new mtimes, same bytes
    assert PipelineTexts(copy).key("a cat") == PipelineTexts(world["pipeline"]).key("a cat")
    other = _tiny_model(world["tokenizer"])
    with torch.no_grad():
        other.lm_head.weight.add_(1.0)
    other.save_pretrained(copy / "text_encoder")
    assert PipelineTexts(copy).key("a cat").digest != texts.key("a cat").digest
    edit = PipelineTexts(world["edit_pipeline"])
    a, b = (edit.key("add a cat", s) for s in world["sources"])
    assert a.digest != b.digest and a.digest != texts.key("add a cat").digest
    with pytest.raises(ValueError, match="needs a source image"):
        edit.key("add a cat")
    with pytest.raises(ValueError, match="expected a QwenImagePipeline folder"):
        CachedConditions(tmp_path / "cache", world["edit_pipeline"])
    with pytest.raises(ValueError, match="model_index.json: not found"):
        PipelineTexts(tmp_path)


def test_big_files_are_hashed_once(world, tmp_path, monkeypatch):
    monkeypatch.setattr(text_mod, "_MEMO_MIN_BYTES", 0)
    calls = []
    real = text_mod._sha256_file
    monkeypatch.setattr(text_mod, "_sha256_file", lambda p: calls.append(p) or real(p))
    first = PipelineTexts(world["pipeline"], tmp_path / "memo.json").encoder_id
    assert calls
    calls.clear()
    assert PipelineTexts(world["pipeline"], tmp_path / "memo.json").encoder_id == first and not calls


# -- prepare and trials ---------------------------------------------------------------------------------


def _prepare(world, cache, prompts=PROMPTS, edits=None):
    edits = (
        list(zip(INSTRUCTIONS, ["sources/0.png", "sources/1.png"], strict=True)) if edits is None else edits
    )
    return prepare(world["root"], "qwen-image", "qwen-image-edit", prompts, edits, cache, progress=False)


def test_prepare_encodes_once_and_trials_never_load_the_encoder(world, tmp_path):
    cache = tmp_path / "text-cache"
    loads = QwenPromptEncoder.loads
    # "" + 3 prompts (one repeated), the 2 sources' empty instruction + 2 edits
    assert _prepare(world, cache, PROMPTS + PROMPTS[:1]) == {"encoded": 8, "cached": 0}
    assert QwenPromptEncoder.loads == loads + 2  # one text encoder per pipeline
    assert _prepare(world, cache) == {"encoded": 0, "cached": 8}
    assert QwenPromptEncoder.loads == loads + 2

    conditions = CachedConditions(cache, world["pipeline"], world["edit_pipeline"], allow_encode=False)
    text, mask = conditions.t2i(PROMPTS)
    null, null_mask = conditions.t2i_null(2)
    sources = [str(s) for s in world["sources"]]
    edit, edit_mask = conditions.edit(list(zip(INSTRUCTIONS, sources, strict=True)))
    edit_null, edit_null_mask = conditions.edit_null(sources)
    assert QwenPromptEncoder.loads == loads + 2  # a warm trial loads no text encoder

    t2i_encoder = QwenPromptEncoder.from_pipeline_folder(world["pipeline"])
    edit_encoder = QwenPromptEncoder.from_pipeline_folder(world["edit_pipeline"])
    images = [Image.open(s) for s in sources]
    # prepare batched them differently: equal up to float rounding of other padding lengths
    for got, want in (
        ((text, mask), t2i_encoder.encode(PROMPTS)),
        ((null, null_mask), t2i_encoder.encode(["", ""])),
        ((edit, edit_mask), edit_encoder.encode(INSTRUCTIONS, images)),
        ((edit_null, edit_null_mask), edit_encoder.encode(["", ""], images)),
    ):
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
        assert torch.equal(got[1], want[1])


def test_a_missing_text_is_an_error_unless_encoding_is_allowed(world, tmp_path):
    cache = tmp_path / "text-cache"
    _prepare(world, cache, prompts=PROMPTS[:1], edits=[])
    loads = QwenPromptEncoder.loads
    trial = CachedConditions(cache, world["pipeline"], allow_encode=False)
    with pytest.raises(MissingTextError, match="'a blue house'.*prepare") as err:
        trial.t2i([PROMPTS[0], "a blue house"])
    assert isinstance(err.value, KeyError) and QwenPromptEncoder.loads == loads
    with pytest.raises(ValueError, match="no edit pipeline"):
        trial.edit([("add a cat", world["sources"][0])])

    lazy = CachedConditions(cache, world["pipeline"], allow_encode=True)
    assert QwenPromptEncoder.loads == loads  # loaded on the first miss, not before
    text, _ = lazy.t2i([PROMPTS[0], "a blue house"])
    assert QwenPromptEncoder.loads == loads + 1 and text.shape[0] == 2
    again, again_mask = CachedConditions(cache, world["pipeline"]).t2i(["a blue house"])  # now cached
    n = int(again_mask.sum())
    assert torch.equal(again[0, :n], text[1, :n]) and QwenPromptEncoder.loads == loads + 1


def test_main_prepares_from_manifests(world, tmp_path, capsys):
    pq.write_table(pa.table({"prompt": PROMPTS}), tmp_path / "prompts.parquet")
    pq.write_table(
        pa.table({"instruction": INSTRUCTIONS, "source": ["sources/0.png", "sources/0.png"]}),
        tmp_path / "edits.parquet",
    )
    args = [
        "--root",
        str(world["root"]),
        "--pipeline",
        "qwen-image",
        "--edit-pipeline",
        "qwen-image-edit",
        "--prompts",
        str(tmp_path / "prompts.parquet"),
        "--edits",
        str(tmp_path / "edits.parquet"),
        "--cache",
        str(tmp_path / "cache"),
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == {"encoded": 1 + 3 + 1 + 2, "cached": 0}
    with pytest.raises(SystemExit):
        main(["--pipeline", "x", "--prompts", "p.txt", "--cache", "c", "--edits", "e.parquet"])
