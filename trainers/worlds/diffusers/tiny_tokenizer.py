"""An offline stand-in for Qwen2's tokenizer: byte-level BPE with Qwen2's special tokens, built in code.

The real tokenizer (151k tokens) cannot be downloaded here, and a random-weight world does not need it: it
needs the same *kind* of tokenizer (``Qwen2Tokenizer``: NFC, Qwen2's split regex, byte-level BPE, the
``<|im_start|>``... special tokens) so Qwen-Image's pipelines, the Qwen2-VL processor and a VLM judge run
their real code paths. The vocabulary is the 256 byte symbols plus whole-word merges of a small corpus:

* Qwen-Image drops the first ``prompt_template_encode_start_idx`` tokens of its templated prompt (34 for
  T2I, 64 for edit), counted in the real tokenizer, where each word of the system prompt is one token. With
  whole-word merges of the templates the same count cuts at the same place (``template_prefix_len``),
  so the hidden states the transformer sees start at the user's text, as in the real model.
* Digits stay single tokens (Qwen2's regex isolates each ``\\p{N}``): a VLM judge reads the probabilities
  of the tokens "0".."9".

``clip_tokenizer`` is the same idea for CLIP's tokenizer (lower-cased, ``</w>`` word ends). Both are
deterministic: the merges are learnt here, not by ``tokenizers``' trainer (see ``_learn_merges``).
"""

from __future__ import annotations

import functools
from collections import Counter
from itertools import pairwise

from tokenizers import AddedToken, Tokenizer
from transformers import CLIPTokenizer, Qwen2Tokenizer

# Qwen2.5(-VL)'s added special tokens, in the real order (ids follow the byte vocabulary here, not 151643+).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2-VL's chat template (as shipped with Qwen2-VL / Qwen2.5-VL-Instruct): the processor's
# apply_chat_template renders images as <|vision_start|><|image_pad|><|vision_end|>.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Copies of diffusers' QwenImagePipeline / QwenImageEditPipeline `prompt_template_encode` system prompts
# (the parts before the user's text) and their `prompt_template_encode_start_idx`. The edit pipeline keeps
# <|vision_start|> and the image tokens: its drop ends right after "user\n" too.
T2I_PREFIX = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n"
)
EDIT_PREFIX = (
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, objects, "
    "background), then explain how the user's text instruction should alter or modify the image. Generate a "
    "new image that meets the user's requirements while maintaining consistency with the original input "
    "where appropriate.<|im_end|>\n<|im_start|>user\n"
)
T2I_DROP = 34
EDIT_DROP = 64

# Words worth a token of their own: the prompts and instructions make_tiny writes and the questions a
# judge asks. Anything else still tokenizes (byte fallback through the 256 byte symbols), just longer.
_WORDS = """
a an the of in on at with and or to by over under near next behind above below beside from into is are
this that it its how well does match describe rate score answer yes no question image picture photo prompt
instruction edit edited source original quality scale one ten zero only digit number reply
you helpful assistant system user
red orange yellow green blue purple pink white black grey gray brown golden silver dark bright pale
sky hills mountain mountains lake river sea ocean forest field desert valley beach sunset sunrise clouds
snow trees tree meadow cliffs island road village
portrait face man woman child girl boy old young smiling person hair eyes hat glasses beard scarf coat
text sign word letters poster banner label title reads saying written board neon shop
recolour recolor colour color make turn change add put place remove replace cat dog bird boat house moon
sun star car flower lamp cup chair say instead shows showing door wall "quoted"
OPEN CAFE HELLO SALE STOP BOOKS TAXI HOTEL MARKET PIZZA MUSIC EXIT
"""

def _corpus() -> list[str]:
    """Texts whose pre-tokens become whole tokens; special tokens are cut out (they are added tokens)."""
    texts = [T2I_PREFIX, EDIT_PREFIX, "You are a helpful assistant."]
    for special in SPECIAL_TOKENS:
        texts = [part for text in texts for part in text.split(special)]
    words = _WORDS.split()
    # Both the bare word (start of a text) and the word after a space (Qwen2's regex keeps the space).
    texts += words + [" " + " ".join(words)] + [w.capitalize() for w in words]
    return [t for t in texts if t]


def _byte_symbols() -> list[str]:
    """GPT-2's 256 byte symbols (printable bytes as themselves, the rest shifted past U+0100), in the id
    order of Qwen2's and CLIP's vocabularies ("!" is id 0)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    shifted = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(shifted))]


def _learn_merges(words: Counter[tuple[str, ...]]) -> list[tuple[str, str]]:
    """Plain BPE training: merge the most frequent adjacent pair (ties: the smallest pair) until every word
    is one symbol.

    Written here rather than with ``tokenizers``' BpeTrainer, whose tie-breaking and suffixed-alphabet order
    follow a per-process hash seed: the same code must give byte-identical tokenizer files. BPE applies merges
    by rank, and merges learnt in this order rebuild every corpus word as a single token.
    """
    merges = []
    words = Counter({w: n for w, n in words.items() if len(w) > 1})
    while words:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in words.items():
            for pair in pairwise(word):
                pairs[pair] += n
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            if len(out) > 1:
                merged[tuple(out)] += n
        words = merged
    return merges


def _vocab_and_merges(
    backend: Tokenizer, end_of_word: str = ""
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary (byte symbols, their word-final forms if ``end_of_word``, then one token per merge) and
    merges for the corpus as ``backend`` (a transformers tokenizer's own normalizer and pre-tokenizer)
    splits it."""
    words: Counter[tuple[str, ...]] = Counter()
    for text in _corpus():
        for piece, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            words[(*piece[:-1], piece[-1] + end_of_word)] += 1
    merges = _learn_merges(words)
    symbols = _byte_symbols()
    tokens = symbols + ([s + end_of_word for s in symbols] if end_of_word else [])
    tokens += [a + b for a, b in merges]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}, merges


@functools.cache
def _learnt(kind: str) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    """Training takes half a second and a world builds several tokenizers: learn once per process."""
    if kind == "qwen2":
        vocab, merges = _vocab_and_merges(Qwen2Tokenizer().backend_tokenizer)
    else:
        vocab, merges = _vocab_and_merges(CLIPTokenizer().backend_tokenizer, end_of_word="</w>")
    return tuple(vocab.items()), tuple(merges)


def _trained(kind: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab, merges = _learnt(kind)
    return dict(vocab), list(merges)


def qwen2_tokenizer() -> Qwen2Tokenizer:
    """A Qwen2 tokenizer (``transformers.Qwen2TokenizerFast``, which transformers 5 names ``Qwen2Tokenizer``).

    ``<|endoftext|>`` is pad/eos/unk as in Qwen2; the other special tokens are added special tokens;
    the Qwen2-VL chat template is set. Saves and loads with ``save_pretrained`` / ``AutoTokenizer``.
    """
    vocab, merges = _trained("qwen2")
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        errors="replace",
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )
    # As Qwen2.5-VL's `additional_special_tokens` (transformers 5: extra_special_tokens); <|endoftext|> is
    # already added by Qwen2Tokenizer as its eos/pad.
    extra = [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS[1:]]
    tokenizer.add_special_tokens({"extra_special_tokens": extra})
    return tokenizer


def template_prefix_len(tokenizer: Qwen2Tokenizer, prefix: str) -> int:
    """How many tokens ``prefix`` is (T2I_PREFIX should be T2I_DROP, EDIT_PREFIX EDIT_DROP)."""
    return len(tokenizer(prefix, add_special_tokens=False)["input_ids"])


def clip_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer (lower-cased byte-level BPE, ``</w>`` word ends, as openai/clip-vit-*), built offline.

    Same corpus as ``qwen2_tokenizer``; every byte also exists as a word-final ``x</w>`` symbol (as in the
    real vocabulary), so any text tokenizes without unknowns.
    """
    vocab, merges = _trained("clip")
    # CLIP's specials are the last two ids (49406, 49407 in the real vocabulary).
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
