"""Random-weight models, local tokenizers and synthetic passages for ``bench/gpu_smoke.py``.

Nothing is downloaded: the architectures' dimensions are written in below (from the public
``config.json`` of Qwen/Qwen2-7B-Instruct and mistralai/Mistral-7B-Instruct-v0.3), the
tokenizer is a byte-level BPE trained in a second on the generated passages, and the model's
vocabulary is sized to it.  Weights are created directly on the target device in the target
dtype, so a 7B model starts in seconds.  Outputs mean nothing: machinery and memory only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""Qwen2's ChatML turn format (without its default system message)."""

MISTRAL_CHAT = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
"""Mistral-Instruct's ``[INST]`` turns (the system message is simply written first)."""


@dataclass(frozen=True)
class Spec:
    """One architecture: its transformers ``model_type``, dimensions and chat format."""

    label: str
    model_type: str
    dims: dict[str, Any]
    chat: str  # "chatml" or "mistral"
    context_size: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> int:
        return int(self.dims["num_hidden_layers"])

    @property
    def heads(self) -> int:
        return int(self.dims["num_attention_heads"])

    @property
    def kv_heads(self) -> int:
        return int(self.dims["num_key_value_heads"])

    @property
    def head_dim(self) -> int:
        return int(self.dims.get("head_dim") or self.dims["hidden_size"] // self.heads)


_QWEN2_COMMON = {"rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0, "tie_word_embeddings": False, "hidden_act": "silu"}
_MISTRAL_COMMON = {"rms_norm_eps": 1e-5, "rope_theta": 1_000_000.0, "tie_word_embeddings": False, "hidden_act": "silu"}

SPECS: dict[str, Spec] = {
    "qwen2-7b": Spec(
        "Qwen2-7B-Instruct (random weights)",
        "qwen2",
        {
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 32768,
            **_QWEN2_COMMON,
        },
        "chatml",
        32768,
        {"use_sliding_window": False, "sliding_window": None, "max_window_layers": 28},
    ),
    "mistral-7b": Spec(
        "Mistral-7B-Instruct-v0.3 (random weights)",
        "mistral",
        {
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 32768,
            **_MISTRAL_COMMON,
        },
        "mistral",
        32768,
        {"sliding_window": None},
    ),
}
"""The real 7B dimensions (vocabulary aside: sized to the local tokenizer)."""

TINY_SPECS: dict[str, Spec] = {
    # Same structure (Qwen2's 7:1 query:key-value heads with q/k/v bias; Mistral's 4:1), tiny sizes.
    "qwen2-7b": Spec(
        "Qwen2 tiny (random weights)",
        "qwen2",
        {
            "hidden_size": 112,
            "intermediate_size": 224,
            "num_hidden_layers": 2,
            "num_attention_heads": 7,
            "num_key_value_heads": 1,
            "max_position_embeddings": 4096,
            **_QWEN2_COMMON,
        },
        "chatml",
        4096,
        {"use_sliding_window": False, "sliding_window": None, "max_window_layers": 2},
    ),
    "mistral-7b": Spec(
        "Mistral tiny (random weights)",
        "mistral",
        {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 4096,
            **_MISTRAL_COMMON,
        },
        "mistral",
        4096,
        {"sliding_window": None},
    ),
}

# --------------------------------------------------------------------------- passages

_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["an", "er", "in", "on", "ul", "est", "ing"]


def _lexicon(rng: random.Random, size: int = 3000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))))
    return sorted(words)


@dataclass
class SyntheticQuery:
    qid: str
    text: str
    passages: list[str]


def synthetic_queries(n_queries: int, n_passages: int, n_words: int, seed: int = 0) -> list[SyntheticQuery]:
    """``n_queries`` queries, each with ``n_passages`` passages of exactly ``n_words`` words
    (Zipf-like word frequencies, sentences with capitals and full stops)."""
    rng = random.Random(seed)
    lexicon = _lexicon(rng)
    weights = [1.0 / (rank + 1) for rank in range(len(lexicon))]

    def words(n: int) -> list[str]:
        return rng.choices(lexicon, weights=weights, k=n)

    def passage() -> str:
        out: list[str] = []
        for i, w in enumerate(words(n_words)):
            start = i == 0 or out[-1].endswith(".")
            end = i == n_words - 1 or rng.random() < 0.08
            out.append((w.capitalize() if start else w) + ("." if end else ""))
        return " ".join(out)

    return [
        SyntheticQuery(f"q{q}", " ".join(words(rng.randint(4, 8))) + "?", [passage() for _ in range(n_passages)])
        for q in range(n_queries)
    ]


# --------------------------------------------------------------------------- tokenizer

_PROMPT_TEXT = (
    "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query. "
    "I will provide you with passages, each indicated by a numerical identifier []. Rank the passages based on "
    "their relevance to the search query. Search Query: All the passages should be included and listed using "
    "identifiers, in descending order of relevance. The output format should be [] > [], e.g., [4] > [2]. "
    "Only respond with the ranking results, do not say any word or explain. Here are some paragraphs: "
    "Please find information that are relevant to the following query in the paragraphs above. Query: N/A"
)


def build_tokenizer(texts: list[str], vocab_size: int, chat: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``texts`` with ``chat``'s special tokens and template.

    Byte-level pre-tokenisation keeps every capital letter after ``[`` a token of its own,
    so FIRST's identifiers ``A``..``T`` are single tokens."""
    if chat == "chatml":
        special, bos, eos, pad = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", "<|endoftext|>"
    else:
        special, bos, eos, pad = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>", None
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*texts, *[_PROMPT_TEXT] * 20, " ".join(f"[{i}]" for i in range(1, 101))], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=special[0],
    )
    fast.chat_template = CHATML if chat == "chatml" else MISTRAL_CHAT
    return fast


# --------------------------------------------------------------------------- model


def build_model(spec: Spec, tokenizer: PreTrainedTokenizerFast, device: torch.device, dtype: torch.dtype) -> Any:
    """``spec``'s architecture with random weights, created on ``device`` in ``dtype``."""
    config = AutoConfig.for_model(
        spec.model_type,
        vocab_size=len(tokenizer),
        initializer_range=0.02,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **spec.dims,
        **spec.extra,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def weight_bytes(model: Any) -> int:
    """Bytes of the model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
