"""ICR pooling models for vLLM: its Qwen2/Llama decoders, plus query-row attention recording.

Each request is one prompt ``context + query span``; ``PoolingParams.extra_kwargs`` carries
``compressed_token_type_ids`` (where the span starts, which vLLM hands to the model as
``token_type_ids``) and the layer window.  During the forward pass a hook on every attention
layer receives the query and key vectors that vLLM's own attention gets (after rotary
embedding and any q/k norm), and computes, for each request, only the rows of its query span
(:func:`.rows.suffix_attention_to_keys`): ``heads x span x prompt`` per layer.  The model's
output is, per token, the attention it received in each layer (summed over heads and span
rows), ``[tokens, layers]``; :class:`IcrPooler` sums a request's layer window over its context
tokens and divides by the span length.

Early exit: the model is built with ``num_hidden_layers`` = the window's end (the engine
passes it as ``hf_overrides``), so vLLM creates, loads and runs only those layers.

Next-token log-probabilities (a scoring engine without a decoding one): a full-depth model built
with ``rerankd_icr_lm_head`` also loads the LM head and appends the final hidden states to its
output; a request whose ``extra_kwargs`` name token ids (``rerankd_logprob_token_ids``) gets
their log-probabilities after its last token, computed as vLLM's sampler does (float32
log-softmax of the logits).

Requirements (checked here, and by the engine before it submits a request:
:func:`rerankd.engines.vllm.icr.check_icr_request`; a failure here takes down every request
in flight on the engine): whole prompts in one step (no chunked prefill, no prefix-cache reads:
every key of a request must be in the forward pass), eager mode (the recording is Python
code), no pipeline parallelism, no sliding-window layers.  Tensor parallelism sums the
per-rank heads with an all-reduce.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.distributed import (
    get_pp_group,
    get_tensor_model_parallel_world_size,
    tensor_model_parallel_all_reduce,
)
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.pooler import Pooler, PoolingParamsUpdate
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead
from vllm.model_executor.models.llama import LlamaModel
from vllm.model_executor.models.qwen2 import Qwen2Model
from vllm.model_executor.models.utils import AutoWeightsLoader, maybe_prefix
from vllm.sequence import IntermediateTensors
from vllm.tasks import PoolingTask
from vllm.v1.outputs import PoolerOutput
from vllm.v1.pool.metadata import PoolingMetadata

from rerankd.engines.vllm.icr import (
    EXTRA_KEY_LAYERS,
    LM_HEAD_KEY,
    LOGPROB_IDS_KEY,
    QUERY_START_KEY,
    TASK,
    check_vllm_version,
)
from rerankd.engines.vllm.icr.rows import suffix_attention_to_keys

FULL_LAYERS_KEY = "rerankd_icr_full_layers"
"""hf_overrides key: the model's full depth (``num_hidden_layers`` is the built depth)."""

WHOLE_PROMPTS = (
    "ICR attention needs each prompt in one forward pass: start the pooling engine with "
    "enable_chunked_prefill=False, enable_prefix_caching=False and max_num_batched_tokens >= max_model_len"
)


@dataclass
class _Segment:
    start: int
    end: int
    n_query: int


class _Recorder:
    """Per forward pass: the requests' token ranges and the ``[tokens, layers]`` output."""

    def __init__(self, segments: list[_Segment], out: torch.Tensor) -> None:
        self.segments = segments
        self.out = out

    def record(self, layer: int, q: torch.Tensor, k: torch.Tensor, attn: nn.Module, scale: float) -> None:
        n_heads, n_kv, head_dim = (int(getattr(attn, a)) for a in ("num_heads", "num_kv_heads", "head_size"))
        for seg in self.segments:
            if seg.n_query == 0:
                continue
            rows_q = q[seg.end - seg.n_query : seg.end].reshape(seg.n_query, n_heads, head_dim)
            keys = k[seg.start : seg.end].reshape(seg.end - seg.start, n_kv, head_dim)
            self.out[seg.start : seg.end, layer] = suffix_attention_to_keys(rows_q, keys, scale)


def _segments(positions: torch.Tensor, token_type_ids: torch.Tensor) -> list[_Segment]:
    """Requests in a flattened batch of whole prompts (positions restart at 0 for each)."""
    pos = positions.detach().to("cpu", torch.long)
    n = pos.shape[0]
    types = token_type_ids.detach().to("cpu", torch.long)[:n]
    if types.shape[0] < n:
        types = torch.cat([types, types.new_zeros(n - types.shape[0])])
    if n == 0:
        return []
    if int(pos[0]) != 0:
        raise RuntimeError(WHOLE_PROMPTS)
    starts = torch.nonzero(pos == 0).flatten().tolist()
    segments = []
    for start, end in zip(starts, [*starts[1:], n], strict=True):
        if int(pos[end - 1]) != end - 1 - start:
            raise RuntimeError(WHOLE_PROMPTS)
        seg_types = types[start:end]
        n_query = int(seg_types.sum())
        if n_query and int(seg_types[end - start - n_query :].sum()) != n_query:
            raise RuntimeError("the query span must be the end of the prompt")
        segments.append(_Segment(start, end, n_query))
    return segments


class IcrPooler(Pooler):
    """Per request: attention of its query span to each context token, over a layer window;
    or, with ``logits`` (the model's LM head), next-token log-probabilities of asked token ids."""

    def __init__(self, num_layers: int, logits: Callable[[torch.Tensor], torch.Tensor | None] | None = None) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.logits = logits

    def get_supported_tasks(self) -> Set[PoolingTask]:
        return {TASK}

    def get_pooling_updates(self, task: PoolingTask) -> PoolingParamsUpdate:
        return PoolingParamsUpdate()

    def forward(self, hidden_states: torch.Tensor, pooling_metadata: PoolingMetadata) -> PoolerOutput:
        cursor = pooling_metadata.get_pooling_cursor()
        if cursor.is_partial_prefill():
            raise RuntimeError(WHOLE_PROMPTS)
        firsts = cursor.first_token_indices_gpu.tolist()
        lasts = cursor.last_token_indices_gpu.tolist()
        outputs: list[torch.Tensor | None] = []
        wanted: dict[int, list[int]] = {}
        for i, params in enumerate(pooling_metadata.pooling_params):
            extra = params.extra_kwargs or {}
            rows = hidden_states[firsts[i] : lasts[i] + 1]
            if extra.get(LOGPROB_IDS_KEY) is not None:
                wanted[i] = [int(t) for t in extra[LOGPROB_IDS_KEY]]
                outputs.append(None)  # filled below, one LM-head pass for all of them
                continue
            n_context = extra.get(QUERY_START_KEY)
            if n_context is None:  # vLLM's warm-up runs: no query span
                outputs.append(rows.new_zeros(0, dtype=torch.float32))
                continue
            n_context = int(n_context)
            start, end = extra.get(EXTRA_KEY_LAYERS) or (0, self.num_layers)
            if not 0 <= start < end <= self.num_layers:
                raise ValueError(f"layer window [{start}, {end}) outside the {self.num_layers} layers run")
            n_query = rows.shape[0] - n_context
            if n_context < 1 or n_query < 1:
                raise ValueError(f"query span starts at {n_context} of a {rows.shape[0]}-token prompt")
            outputs.append(rows[:n_context, start:end].sum(dim=-1).div_(n_query))
        if wanted:
            self._logprobs(hidden_states, lasts, wanted, outputs)
        return outputs

    def _logprobs(
        self,
        hidden_states: torch.Tensor,
        lasts: list[int],
        wanted: dict[int, list[int]],
        outputs: list[torch.Tensor | None],
    ) -> None:
        """Log-probabilities of each request's ``wanted`` ids after its last token."""
        if self.logits is None:
            raise ValueError("next-token logprobs need the full-depth ICR model built with its LM head")
        order = sorted(wanted)
        last = hidden_states[[lasts[i] for i in order], self.num_layers :]
        logits = self.logits(last)
        if logits is None:  # tensor-parallel ranks other than the first get no logits
            for i in order:
                outputs[i] = last.new_zeros(len(wanted[i]), dtype=torch.float32)
            return
        logprobs = logits.float().log_softmax(dim=-1)
        for row, i in enumerate(order):
            ids = wanted[i]
            if any(not 0 <= t < logprobs.shape[-1] for t in ids):
                raise ValueError(f"token ids {ids} outside the vocabulary of {logprobs.shape[-1]}")
            outputs[i] = logprobs[row, ids]


class _IcrModelBase(nn.Module):
    """A vLLM decoder whose output is per-token, per-layer attention from the query span."""

    is_pooling_model = True
    decoder_cls: Any = None
    hf_to_vllm_mapper: Any = None
    packed_modules_mapping: ClassVar[dict[str, list[str]]] = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        check_vllm_version()
        model_config = vllm_config.model_config
        config = model_config.hf_config
        if not model_config.enforce_eager:
            raise ValueError("the ICR pooling model records attention in Python: start it with enforce_eager=True")
        if get_pp_group().world_size > 1:
            raise ValueError("the ICR pooling model does not support pipeline parallelism")
        self.config = config
        self.dtype = model_config.dtype
        self.full_layers = int(getattr(config, FULL_LAYERS_KEY, config.num_hidden_layers))
        self.model = self.decoder_cls(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
        self.num_layers = len(self.model.layers)
        self.lm_head: nn.Module | None = None
        if getattr(config, LM_HEAD_KEY, False):
            if self.num_layers != self.full_layers:
                raise ValueError("only the full-depth ICR model can have the LM head (next-token logprobs)")
            head = ParallelLMHead(
                config.vocab_size,
                config.hidden_size,
                quant_config=vllm_config.quant_config,
                prefix=maybe_prefix(prefix, "lm_head"),
            )
            if config.tie_word_embeddings:
                head = head.tie_weights(self.model.embed_tokens)
            self.lm_head = head
            self.logits_processor = LogitsProcessor(config.vocab_size, scale=getattr(config, "logit_scale", 1.0))
        self._recorder: _Recorder | None = None
        max_len = int(model_config.max_model_len)
        for idx, layer in enumerate(self.model.layers):
            self_attn = layer.self_attn
            attn = self_attn.attn
            window = getattr(attn, "sliding_window", None)
            if window is not None and window < max_len:
                raise ValueError(f"layer {idx} uses a sliding window of {window}; ICR rows assume full attention")
            attn.register_forward_hook(self._hook(idx, float(self_attn.scaling)))
        self.pooler = IcrPooler(self.num_layers, self._logits if self.lm_head is not None else None)
        self.make_empty_intermediate_tensors = self.model.make_empty_intermediate_tensors

    def _hook(self, idx: int, scale: float) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            recorder = self._recorder
            if recorder is not None:
                recorder.record(idx, args[0], args[1], module, scale)

        return hook

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """Logits of final hidden states (float32 rows of the output), as the causal LM computes them."""
        assert self.lm_head is not None
        return self.logits_processor(self.lm_head, hidden.to(self.dtype))

    @classmethod
    def get_model_state_cls(cls) -> Any:
        """vLLM's V2 model runner: the model state that turns ``compressed_token_type_ids``
        into ``token_type_ids`` (the V1 runner does that for every pooling model)."""
        from vllm.v1.worker.gpu.model_states.encoder_only import EncoderOnlyModelState

        return EncoderOnlyModelState

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_input_ids(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        n = positions.shape[-1]
        out = torch.zeros(n, self.num_layers, dtype=torch.float32, device=positions.device)
        if token_type_ids is not None:
            self._recorder = _Recorder(_segments(positions, token_type_ids), out)
        try:
            hidden = self.model(input_ids, positions, intermediate_tensors, inputs_embeds)
        finally:
            self._recorder = None
        if get_tensor_model_parallel_world_size() > 1:
            out = tensor_model_parallel_all_reduce(out)
        if self.lm_head is not None:  # the pooler reads the final hidden states (replicated across ranks)
            out = torch.cat([out, hidden.float()], dim=-1)
        return out

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """The decoder's weights, without the layers past the built depth (nor the LM head
        unless the model has one)."""
        dropped = tuple(f"model.layers.{i}." for i in range(self.num_layers, self.full_layers))
        skip_head = self.lm_head is None or bool(getattr(self.config, "tie_word_embeddings", False))

        def kept() -> Iterable[tuple[str, torch.Tensor]]:
            for name, tensor in weights:
                if (skip_head and name.startswith("lm_head.")) or (dropped and name.startswith(dropped)):
                    continue
                yield name, tensor

        return AutoWeightsLoader(self).load_weights(kept())


class RerankdIcrQwen2Model(_IcrModelBase):
    """ICR attention rows on vLLM's Qwen2 decoder."""

    decoder_cls = Qwen2Model
    hf_to_vllm_mapper = Qwen2Model.hf_to_vllm_mapper


class RerankdIcrLlamaModel(_IcrModelBase):
    """ICR attention rows on vLLM's Llama decoder (Llama, Mistral without sliding window)."""

    decoder_cls = LlamaModel
    hf_to_vllm_mapper = LlamaModel.hf_to_vllm_mapper
