"""Judges of a real-model world: CLIP always, a Qwen2.5-VL judge (VIEScore-style) when the world gives one.

Every score is in [0, 1], higher is better, and deterministic: no sampling, eval mode, per-item results that
do not depend on how items are batched (up to float rounding, ~1e-6).

**CLIP** (``ClipJudge``, a ``CLIPModel`` folder)

* ``clip_score`` = (cos(E_img(image), E_txt(prompt)) + 1) / 2, the CLIP cosine similarity of an image and
  its prompt mapped affinely to [0, 1]. CLIPScore (Hessel et al., 2021) uses 2.5 · max(cos, 0) instead; the
  affine map keeps the ranking, never clips (a clipped score is flat, and with random weights cosines are
  often negative) and stays in [0, 1]. Limits: trained CLIPs give matching pairs cos ≈ 0.25-0.40, so the
  score lives in a narrow band (≈ 0.62-0.70) and differences between good models are small; alignment
  saturates (CLIP is a bag-of-concepts judge: counting, spatial relations and rendered text are weak), and
  CLIP rewards prompt words over image quality.
* ``clip_direction`` (the edit score when there is no VLM): InstructPix2Pix's CLIP directional similarity
  (Brooks et al., 2023; Gal et al., 2022), cos(E_img(edited) − E_img(source), E_txt(target) − E_txt(before)),
  mapped by (cos + 1) / 2. Our manifests have instructions, not before/after captions, so the text
  direction is built from the instruction: ``before`` = the source's caption when given, else "" (CLIP's
  empty text, its null prompt); ``target`` = "<caption>, <instruction>", else the instruction alone. With
  a caption the caption's content cancels in the difference, leaving what the instruction adds. Limits:
  0.5 means "no alignment" (an unchanged image gives a zero image direction: cos is taken as 0, so 0.5);
  it measures only whether the change points the right way, not how much of the source was preserved
  nor the image quality, and instructions are imperative sentences unlike CLIP's captions.

**VLM** (``VlmJudge``, a ``Qwen2_5_VLForConditionalGeneration`` folder), VIEScore (Ku et al., 2024)

* Each question asks for a rating "from 0 to S" and is answered by one forward pass: the next-token
  distribution at the answer position (after ``<|im_start|>assistant\\n``), restricted to the digit tokens
  "0".."S" and renormalised over them; the rating is its expected value / S. S = 10 when "10" is a single
  token of the tokenizer, else 9 (Qwen2's tokenizer splits numbers into digits, so S = 9 there and the
  question says "0 to 9": asking for 0-10 would read a "10" as a "1"). Reading probabilities instead of
  sampling makes the score deterministic and continuous (a model unsure between 7 and 8 gives 7.5).
* ``edit_sc`` (semantic consistency; the source, the edited image and the instruction) = min(instruction
  followed, not over-edited), and ``edit_pq`` (perceptual quality; the edited image alone) = min(natural,
  free of artifacts): VIEScore's sub-scores, combined with min as VIEScore does, each a single question.
  ``edit_score`` per item = sqrt(SC · PQ), VIEScore's overall score.
* T2I with a VLM: the VLM's prompt alignment (image + prompt) and the item's ``t2i_score`` = mean of the
  CLIP score and the VLM alignment (CLIP alone is too flat to rank good models, a VLM alone is a single
  judge's opinion). ``clip_score`` is still reported.
* Limits: VIEScore's prompts ask for JSON with reasoning and take the min over the sampled scores; here the
  answer is the first token, no reasoning, so a judge that would have reasoned its way to a score is not
  asked to. Scores of one VLM are not comparable with another's (calibration differs); the digit
  probabilities ignore the mass on non-digit tokens (a model answering "The" is renormalised over digits).

**Random weights** (make_tiny's world, the tests): every judge runs its real code path and gives finite,
deterministic, in-range scores that carry no information about quality (digits ≈ uniform: VLM scores ≈ 0.5).

**Aggregates** (``score_t2i``, ``score_edits``): a group's score is the mean over its items; ``t2i_score``
and ``edit_score`` are the mean over groups (categories, edit types), as in the tiny world, so every group
weighs the same. ``t2i_score_se`` is the standard error of that mean over prompts: a prompt's K samples are
averaged first (they share the prompt, they are not independent), then SE = sqrt(Σ_g s_g² / n_g) / G with
s_g the sample standard deviation (ddof 1) of group g's n_g prompt means (a group with one prompt adds 0).
``edit_score_se`` is the same with one unit per edit. It measures which items were drawn, not seed noise.

Images come in as [N, 3, H, W] in [-1, 1]; each judge resizes and normalises them itself in torch from its
image processor's config (torchvision is not needed: the processors are read only for their values). At the
processor's own size the pixels equal the processor's; resampling is torch's antialiased bicubic, close to
the processors' PIL bicubic but not bit-identical (and it skips their uint8 rounding).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

# -- shared helpers ---------------------------------------------------------------------------------------


def _folder(path: str | Path, what: str) -> Path:
    """A local model folder (no hub ids: worlds are folders; HF_HUB_OFFLINE=1 unless the user set it)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{what} judge: {folder} is not a model folder (no config.json)")
    return folder


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))


def _unit(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """[-1, 1] images -> float32 [0, 1] (what the image processors' mean/std expect), checked."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name}: expected [N, 3, H, W] in [-1, 1], got shape {tuple(images.shape)}")
    return ((images.float() + 1) / 2).clamp(0, 1)


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic with antialiasing (torch's match of PIL's bicubic, the processors' resample), clamped as a
    uint8 image would be."""
    if x.shape[-2:] == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def _get(size, key: str):
    """A key of a processor's size (a SizeDict in transformers 5, a dict in saved configs)."""
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _image_processor(name: str, folder: Path):
    """The PIL-backend processor when transformers has one (the default class warns about torchvision),
    loaded only to read its config values."""
    import transformers

    cls = getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)
    return cls.from_pretrained(folder, local_files_only=True)


def _normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def _cos_to_unit(cos: torch.Tensor) -> torch.Tensor:
    return ((cos + 1) / 2).clamp(0, 1)


# -- CLIP -------------------------------------------------------------------------------------------------


class ClipJudge:
    """CLIP image-text similarity (``t2i``) and directional similarity (``direction``), scores in [0, 1]."""

    def __init__(self, model, tokenizer, processor, batch_size: int = 64):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.mean, self.std = list(processor.image_mean), list(processor.image_std)
        side = model.config.vision_config.image_size
        self.shortest_edge = _get(processor.size, "shortest_edge") if processor.do_resize else None
        self.crop = (
            (_get(processor.crop_size, "height"), _get(processor.crop_size, "width"))
            if processor.do_center_crop
            else (side, side)
        )
        if self.crop != (side, side):
            raise ValueError(f"CLIP judge: crop_size {self.crop} differs from the model's image_size {side}")
        self.max_length = model.config.text_config.max_position_embeddings

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        batch_size: int = 64,
    ) -> ClipJudge:
        """CLIPModel + tokenizer + CLIPImageProcessor config from one local folder (cuda when available)."""
        from transformers import AutoTokenizer, CLIPModel

        path = _folder(folder, "CLIP")
        model = CLIPModel.from_pretrained(path, dtype=dtype, local_files_only=True).to(_device(device))
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(model, tokenizer, _image_processor("CLIPImageProcessor", path), batch_size)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """CLIPImageProcessor's steps in torch: shortest edge to ``size``, centre crop, normalise."""
        x = _unit(images)
        h, w = x.shape[-2:]
        if self.shortest_edge is not None:
            # as transformers' get_resize_output_image_size: the short side to `size`, the long one scaled (int)
            s = self.shortest_edge
            h, w = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
            x = _resize(x, h, w)
        ch, cw = self.crop
        if h < ch or w < cw:
            raise ValueError(f"CLIP judge: image {h}x{w} after resize is smaller than the crop {ch}x{cw}")
        top, left = (h - ch) // 2, (w - cw) // 2
        return _normalise(x[..., top : top + ch, left : left + cw], self.mean, self.std)

    @torch.no_grad()
    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings [N, D] (float32, CPU)."""
        out = []
        for lo in range(0, len(images), self.batch_size):
            pixels = self.pixels(images[lo : lo + self.batch_size]).to(self.device, self.dtype)
            out.append(self.model.get_image_features(pixel_values=pixels).pooler_output.float().cpu())
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def text_embeds(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings [N, D] (float32, CPU); each distinct text is encoded once."""
        unique = list(dict.fromkeys(texts))
        out = []
        for lo in range(0, len(unique), self.batch_size):
            batch = self.tokenizer(
                unique[lo : lo + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            out.append(self.model.get_text_features(**batch).pooler_output.float().cpu())
        table = F.normalize(torch.cat(out), dim=-1)
        index = {t: i for i, t in enumerate(unique)}
        return table[[index[t] for t in texts]]

    def cosine(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Raw CLIP cosine similarity [N] of each image with its prompt."""
        if len(images) != len(prompts):
            raise ValueError(f"CLIP judge: {len(images)} images but {len(prompts)} prompts")
        return (self.image_embeds(images) * self.text_embeds(prompts)).sum(-1)

    def t2i(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``clip_score`` per image [N]: (cos(image, prompt) + 1) / 2."""
        return _cos_to_unit(self.cosine(images, prompts))

    def direction(
        self,
        sources: torch.Tensor,
        edited: torch.Tensor,
        captions: Sequence[str] | None,
        instructions: Sequence[str],
    ) -> torch.Tensor:
        """``clip_direction`` per edit [N]: (cos(ΔE_img, ΔE_txt) + 1) / 2 with ΔE_txt built from the
        instruction (and the source's caption when given; see the module docstring)."""
        n = len(edited)
        if len(sources) != n or len(instructions) != n or (captions is not None and len(captions) != n):
            raise ValueError(
                f"CLIP judge: {len(sources)} sources, {n} edited images, {len(instructions)} instructions"
                + ("" if captions is None else f", {len(captions)} captions")
            )
        before = [""] * n if captions is None else [c or "" for c in captions]
        target = [f"{b}, {i}" if b else i for b, i in zip(before, instructions, strict=True)]
        d_img = self.image_embeds(edited) - self.image_embeds(sources)
        d_txt = self.text_embeds(target) - self.text_embeds(before)
        # F.cosine_similarity clamps the norms by eps: an unchanged image (zero direction) gives cos 0
        return _cos_to_unit(F.cosine_similarity(d_img, d_txt, dim=-1, eps=1e-8))


# -- VLM (VIEScore) ---------------------------------------------------------------------------------------

def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's image size rule (a copy of transformers' ``smart_resize``, whose module imports
    torchvision): both sides multiples of ``factor``, the area within [min_pixels, max_pixels], the aspect
    ratio kept as closely as possible."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"VLM judge: aspect ratio {max(height, width) / min(height, width):.0f} exceeds 200")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


SYSTEM = "You are a helpful assistant."
ANSWER = " Answer with a single number from 0 to {top}."
# VIEScore's rating criteria (Ku et al., 2024, the editing and T2I prompts), one question per sub-score.
QUESTIONS = {
    "align": 'How well does the image match the prompt "{text}"? Rate it from 0 (it does not match at all) '
    "to {top} (it matches the prompt perfectly).",
    "follow": "The first image is the original, the second is an edited version of it. The editing instruction "
    'is "{text}". How successfully has the instruction been executed in the second image? Rate it from 0 '
    "(the edit does not follow the instruction at all) to {top} (it follows the instruction perfectly).",
    "preserve": "The first image is the original, the second is an edited version of it. The editing "
    'instruction is "{text}". Rate the degree of overediting from 0 (the edited image is completely different '
    "from the original) to {top} (the edited image is a minimal yet effective edit of the original).",
    "natural": "Rate how natural the image looks from 0 (unnatural: wrong sense of distance, shadows or "
    "lighting) to {top} (it looks perfectly natural).",
    "artifacts": "Rate the image for artifacts from 0 (heavy distortion, blur, watermarks or broken parts) "
    "to {top} (no artifacts at all).",
}


class VlmJudge:
    """Qwen2.5-VL ratings read off the digit-token probabilities (VIEScore's SC, PQ and T2I alignment)."""

    def __init__(self, model, tokenizer, processor, batch_size: int = 8):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.mean, self.std = list(processor.image_mean), list(processor.image_std)
        self.patch, self.merge = processor.patch_size, processor.merge_size
        self.temporal = processor.temporal_patch_size
        self.min_pixels = _get(processor.size, "shortest_edge")
        self.max_pixels = _get(processor.size, "longest_edge")
        self.image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        if self.image_token_id != model.config.image_token_id:
            raise ValueError(
                f"VLM judge: the tokenizer's <|image_pad|> is id {self.image_token_id}, the model's "
                f"image_token_id is {model.config.image_token_id}"
            )
        if self.merge != model.config.vision_config.spatial_merge_size or self.patch != (
            model.config.vision_config.patch_size
        ):
            raise ValueError("VLM judge: the image processor's patch/merge size differ from the vision config's")
        self.top = 10 if len(tokenizer("10", add_special_tokens=False)["input_ids"]) == 1 else 9
        ids = [tokenizer(str(d), add_special_tokens=False)["input_ids"] for d in range(self.top + 1)]
        if any(len(i) != 1 for i in ids):
            raise ValueError("VLM judge: the tokenizer does not have single tokens for the digits 0..9")
        self.digit_ids = torch.tensor([i[0] for i in ids])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int = 8,
    ) -> VlmJudge:
        """Qwen2_5_VLForConditionalGeneration + tokenizer + Qwen2VLImageProcessor config from one folder.

        ``dtype`` defaults to bfloat16 on CUDA (a 7B judge next to the world's transformers) and float32 on
        CPU; the digit softmax is computed in float32 either way.
        """
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        path = _folder(folder, "VLM")
        dev = _device(device)
        dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(model.to(dev), tokenizer, _image_processor("Qwen2VLImageProcessor", path), batch_size)

    # -- inputs (what Qwen2_5_VLProcessor would build, without its torchvision dependency) ----------------

    def vision_inputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat patches [Σ patches, C·T·P·P] and image_grid_thw [N, 3], as Qwen2VLImageProcessor makes them:
        smart_resize (sides multiples of patch·merge within [min, max] pixels), normalise, patchify."""
        x = _unit(images)
        n, c, h, w = x.shape
        h, w = smart_resize(h, w, self.patch * self.merge, self.min_pixels, self.max_pixels)
        x = _normalise(_resize(x, h, w), self.mean, self.std)
        p, m, gh, gw = self.patch, self.merge, h // self.patch, w // self.patch
        # [N, C, gh/m, m, P, gw/m, m, P] -> [N, gh/m, gw/m, m, m, C, P, P]: merge windows contiguous, as in
        # the processor's patchify; a still image is repeated over the temporal patch.
        x = x.reshape(n, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
        x = x.unsqueeze(6).expand(*x.shape[:6], self.temporal, p, p)
        grid = torch.tensor([[1, gh, gw]] * n, dtype=torch.long)
        return x.reshape(n * gh * gw, c * self.temporal * p * p), grid

    def chat(self, question: str, n_images: int) -> str:
        """Qwen2.5-VL's chat prompt (its template's rendering): the images first, as VIEScore puts them,
        then the question; ends at the assistant's turn, where the answer's first token is read."""
        vision = "<|vision_start|><|image_pad|><|vision_end|>" * n_images
        return (
            f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{vision}{question}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )

    def _batch(self, items: Sequence[Sequence[torch.Tensor]], questions: Sequence[str]) -> dict:
        """Model inputs for a batch: each <|image_pad|> expanded to grid.prod() // merge² tokens (one per
        merged patch), right-padded (the answer position is each row's last real token)."""
        pixels, grids, rows = [], [], []
        for images, question in zip(items, questions, strict=True):
            ids = self.tokenizer(self.chat(question, len(images)), add_special_tokens=False)["input_ids"]
            tokens = []
            for image in images:
                pv, grid = self.vision_inputs(image[None])
                pixels.append(pv)
                grids.append(grid)
            if ids.count(self.image_token_id) != len(images):  # a text holding "<|image_pad|>" itself
                raise ValueError(f"VLM judge: question {question!r} contains an image placeholder token")
            counts = iter(int(g.prod()) // self.merge**2 for g in grids[len(grids) - len(images) :])
            for t in ids:
                tokens += [t] * next(counts) if t == self.image_token_id else [t]
            rows.append(tokens)
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "mm_token_type_ids": (input_ids == self.image_token_id).int() * mask,  # 1 = image token
            "pixel_values": torch.cat(pixels),
            "image_grid_thw": torch.cat(grids),
        }

    # -- ratings ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def digit_probs(self, items: Sequence[Sequence[torch.Tensor]], questions: Sequence[str]) -> torch.Tensor:
        """[N, top + 1] probabilities of the answers "0".."top" (renormalised over the digits) for item i's
        images (each [3, H, W] in [-1, 1]) and question i."""
        if len(items) != len(questions):
            raise ValueError(f"VLM judge: {len(items)} items but {len(questions)} questions")
        out = []
        head = self.model.lm_head.weight[self.digit_ids.to(self.device)]  # only the digit rows are read
        for lo in range(0, len(items), self.batch_size):
            batch = self._batch(items[lo : lo + self.batch_size], questions[lo : lo + self.batch_size])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
            self.model.model.rope_deltas = None  # stateful cache of the last call's positions: not ours to reuse
            hidden = self.model.model(**batch, use_cache=False).last_hidden_state
            last = batch["attention_mask"].sum(1) - 1
            h = hidden[torch.arange(len(last), device=self.device), last]
            out.append(torch.softmax((h @ head.T).float(), dim=-1).cpu())
        return torch.cat(out)

    def rate(self, items: Sequence[Sequence[torch.Tensor]], questions: Sequence[str]) -> torch.Tensor:
        """Expected rating / top, [N] in [0, 1]."""
        probs = self.digit_probs(items, questions)
        return probs @ torch.arange(self.top + 1, dtype=probs.dtype) / self.top

    def ask(self, kind: str, items: Sequence[Sequence[torch.Tensor]], texts: Sequence[str] | None = None):
        """Rate every item with the question ``QUESTIONS[kind]`` (``texts``: the prompt or instruction)."""
        texts = [""] * len(items) if texts is None else texts
        questions = [QUESTIONS[kind].format(text=t, top=self.top) + ANSWER.format(top=self.top) for t in texts]
        return self.rate(items, questions)

    def alignment(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """T2I prompt alignment [N] (image + prompt)."""
        return self.ask("align", [[im] for im in images], prompts)

    def semantic_consistency(
        self, sources: torch.Tensor, edited: torch.Tensor, instructions: Sequence[str]
    ) -> torch.Tensor:
        """VIEScore's SC [N] = min(instruction followed, not over-edited), from the source, edit and instruction."""
        items = [[s, e] for s, e in zip(sources, edited, strict=True)]
        return torch.minimum(self.ask("follow", items, instructions), self.ask("preserve", items, instructions))

    def perceptual_quality(self, edited: torch.Tensor) -> torch.Tensor:
        """VIEScore's PQ [N] = min(natural, free of artifacts), from the edited image alone."""
        items = [[e] for e in edited]
        return torch.minimum(self.ask("natural", items), self.ask("artifacts", items))


# -- aggregation (what the world reports) ------------------------------------------------------------------


def _per_item(values: Sequence, n: int, k: int, name: str) -> list:
    """Per-image values from per-image (n) or per-prompt (n / k) lists."""
    values = list(values)
    if len(values) == n:
        return values
    if len(values) * k == n:
        return [v for v in values for _ in range(k)]
    raise ValueError(f"{name}: expected {n} (one per image) or {n // k} (one per prompt), got {len(values)}")


def group_stats(
    name: str, values: torch.Tensor, groups: Sequence[str], unit_of: torch.Tensor, se: bool = True
) -> dict[str, float]:
    """``name/<group>`` (mean over the group's items), ``name`` (mean over groups) and ``name_se``.

    ``unit_of``: the independent unit of each item (a T2I item's prompt, an edit's own index); units are
    averaged first, then SE = sqrt(Σ_g var_g / n_g) / G (ddof 1; a one-unit group adds 0).
    """
    values = values.double().cpu()
    out: dict[str, float] = {}
    var = 0.0
    order = list(dict.fromkeys(groups))
    for g in order:
        sel = torch.tensor([x == g for x in groups])
        units, index = torch.unique(unit_of[sel], return_inverse=True)
        means = torch.zeros(len(units), dtype=torch.float64).index_add_(0, index, values[sel])
        means /= torch.bincount(index, minlength=len(units)).double()
        out[f"{name}/{g}"] = float(means.mean())
        var += float(means.var()) / len(units) if len(units) > 1 else 0.0
    out[name] = float(sum(out[f"{name}/{g}"] for g in order) / len(order))
    if se:
        out[f"{name}_se"] = math.sqrt(var) / len(order)
    return out


def score_t2i(
    clip: ClipJudge,
    vlm: VlmJudge | None,
    images: torch.Tensor,
    prompts: Sequence[str],
    categories: Sequence[str],
    samples_per_prompt: int,
) -> dict[str, float]:
    """``t2i_score`` (+ ``/<category>``), ``t2i_score_se``, ``clip_score`` of ``images`` [P·K, 3, H, W].

    Images are prompt-major: prompt p's K samples are rows p·K .. p·K + K − 1 (as trainers.evaluate lays
    them out). ``prompts``/``categories``: one per image, or one per prompt. Item score: the CLIP score, or
    with a VLM the mean of the CLIP score and the VLM's alignment.
    """
    n, k = len(images), samples_per_prompt
    if n == 0 or k < 1 or n % k:
        raise ValueError(f"score_t2i: {n} images are not a positive multiple of samples_per_prompt={k}")
    prompts = _per_item(prompts, n, k, "prompts")
    categories = _per_item(categories, n, k, "categories")
    prompt_of = torch.arange(n // k).repeat_interleave(k)
    clip_s = clip.t2i(images, prompts)
    item = clip_s if vlm is None else (clip_s + vlm.alignment(images, prompts)) / 2
    out = group_stats("t2i_score", item, categories, prompt_of)
    out["clip_score"] = group_stats("clip_score", clip_s, categories, prompt_of, se=False)["clip_score"]
    return out


def score_edits(
    clip: ClipJudge,
    vlm: VlmJudge | None,
    sources: torch.Tensor,
    edited: torch.Tensor,
    instructions: Sequence[str],
    edit_types: Sequence[str],
    captions: Sequence[str] | None = None,
) -> dict[str, float]:
    """``edit_score`` (+ ``/<edit_type>``), ``edit_score_se`` and ``edit_sc`` + ``edit_pq`` (VLM: item score
    sqrt(SC · PQ)) or ``clip_direction`` (no VLM: the item score is the CLIP direction score)."""
    n = len(edited)
    if n == 0 or len(sources) != n or len(instructions) != n or len(edit_types) != n:
        raise ValueError(
            f"score_edits: {len(sources)} sources, {n} edited, {len(instructions)} instructions, "
            f"{len(edit_types)} edit types (expected the same positive number)"
        )
    unit_of, types = torch.arange(n), list(edit_types)
    if vlm is None:
        item = clip.direction(sources, edited, captions, instructions)
        extra = {"clip_direction": group_stats("clip_direction", item, types, unit_of, se=False)["clip_direction"]}
    else:
        sc, pq = vlm.semantic_consistency(sources, edited, instructions), vlm.perceptual_quality(edited)
        item = (sc * pq).sqrt()
        extra = {
            "edit_sc": group_stats("edit_sc", sc, types, unit_of, se=False)["edit_sc"],
            "edit_pq": group_stats("edit_pq", pq, types, unit_of, se=False)["edit_pq"],
        }
    return {**group_stats("edit_score", item, types, unit_of), **extra}
