"""Run a causal LM on many short continuations of a few shared prefixes.

Harvesting scores thousands of short sentences that all follow the same few-shot prefix, and the
probe's QA scoring thousands of questions after one few-shot block. The prefix is run once and
its key/value cache reused for every batch of continuations, so a batch costs only its own tokens.

Why sharing is exact: under causal attention the hidden state of position ``t``, in every layer,
is computed from positions ``0..t`` only, so the keys and values of the prefix positions ``< p``
do not depend on any later token. Running ``prefix + continuation`` in one pass therefore equals
running the prefix alone once, keeping its per-layer keys and values (:func:`prefix_cache`), and
then running only the continuation, with those keys and values as its cache (:func:`expand_cache`
gives each row of a batch the same prefix) and position ids that carry on from ``p``. The
numbers agree up to float rounding (a different order of summation), and a batch of ``b``
continuations costs their own tokens instead of ``b`` more copies of the prefix.

Continuations are right-padded in :meth:`CausalLMRunner.token_logprobs`: under a causal mask the
padding sits after every real token and cannot change their outputs, so no attention mask is
needed. Left-padded batches (the last-position and beam paths, QA scoring) mask the padding out.

This module holds the only copy of this machinery: the shim for the cache argument's name
(:func:`cache_keyword`), the reading of a cache from a model output (:func:`cache_layers`) and the
expansion of one prefix's cache over a batch (:func:`expand_cache`).
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from kgprobe.models.device import input_device
from kgprobe.models.memory import OomHalving, lm_bytes_per_item, plan_batch_size, resolve_batch_size

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [batch, heads, length, head_dim]


def forward_parameters(model) -> frozenset[str]:
    """Names of the arguments of ``model.forward`` (empty when they cannot be read)."""
    try:
        return frozenset(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def cache_keyword(model) -> str:
    """The name of ``model.forward``'s key/value cache argument: transformers 5 renamed
    ``past_key_values`` to ``cache``; accept either version."""
    return "cache" if "cache" in forward_parameters(model) else "past_key_values"


def cache_layers(out) -> KV:
    """Per-layer (keys, values) of the cache a forward pass with ``use_cache=True`` returned
    (``out.cache`` in transformers 5, ``out.past_key_values`` before)."""
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    return [(keys, values) for keys, values, *_ in cache]


def kept_logits(model, keep: torch.Tensor, **inputs):
    """The forward pass and its logits at the positions ``keep`` [batch, width] (bool), flattened
    row by row [kept, V]. The unembedding (49k x 576 of SmolLM2's 135M weights) then runs only on
    the positions a score needs, where the model takes ``logits_to_keep`` as transformers' causal
    LMs do (the class's forward is asked: a device map wraps the instance's and hides its
    signature); otherwise all logits are computed and the kept ones picked."""
    if "logits_to_keep" in inspect.signature(type(model).forward).parameters:
        out = model(**inputs, logits_to_keep=keep.to(input_device(model)))
        return out, out.logits.reshape(-1, out.logits.shape[-1])
    out = model(**inputs)
    return out, out.logits[keep.to(out.logits.device)]


def prefix_cache(model, ids: list[int]) -> KV:
    """Run one prefix ``ids`` alone and return its per-layer keys and values (batch of one).

    By causality these are exactly the keys and values that the prefix positions have inside any
    longer sequence that starts with ``ids``, so :func:`expand_cache` can hand them to every
    continuation. Only one position of logits is computed where the model allows
    (``logits_to_keep=1``) instead of the prefix's ``[P, vocab]``. Runs in the caller's grad mode:
    under autograd the keys and values keep their graph, so a loss on the continuations also
    differentiates through the prefix.
    """
    kwargs = {"logits_to_keep": 1} if "logits_to_keep" in forward_parameters(model) else {}
    device = input_device(model)
    out = model(input_ids=torch.tensor([list(ids)], device=device), use_cache=True, **kwargs)
    return cache_layers(out)


def expand_cache(kv: KV, batch: int, config, *, contiguous: bool = False):
    """A fresh ``DynamicCache`` holding one prefix's keys and values for each of ``batch`` rows.

    The rows are ``expand`` views of the single stored copy (some transformers versions copy
    them on storing). The cache grows by concatenation and never writes into ``kv``, so one
    prefix's ``kv`` serves every batch. ``contiguous`` materialises the rows up front, for the
    beam search (:func:`begin_beam`), whose cache is reordered and grown step after step.
    """
    from transformers import DynamicCache

    rows = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in kv]
    if contiguous:
        rows = [(k.contiguous(), v.contiguous()) for k, v in rows]
    return DynamicCache(ddp_cache_data=rows, config=config)


@dataclass
class LMStats:
    forward_calls: int = 0
    tokens: int = 0  # real (non-padding) tokens run through the model, prefixes included
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"forward_calls": self.forward_calls, "tokens": self.tokens, "seconds": round(self.seconds, 3)}


@dataclass
class _Prefix:
    length: int
    kv: KV
    last_logprobs: torch.Tensor  # (V,) distribution of the first continuation token


#: the most rows ``batch_size="auto"`` puts in one forward pass (the fixed default it replaced)
AUTO_BATCH_LIMIT = 64


@dataclass
class CausalLMRunner:
    """Batched, prefix-cached scoring with a Hugging Face causal LM.

    ``batch_size="auto"`` plans each call's batches from free memory
    (:func:`kgprobe.models.memory.plan_batch_size` with :func:`~kgprobe.models.memory.lm_bytes_per_item`
    of the call's longest row, at most :data:`AUTO_BATCH_LIMIT`); an integer is used as given.
    Either way a batch that runs out of memory is halved and retried (``memory``, an
    :class:`~kgprobe.models.memory.OomHalving`, keeps the reduced size and the notes).
    """

    model: torch.nn.Module
    tokenizer: object
    batch_size: int | str = "auto"
    stats: LMStats = field(default_factory=LMStats)

    def __post_init__(self) -> None:
        self.device = input_device(self.model)  # with a device map: where the embeddings run
        self._fixed_batch = resolve_batch_size(self.batch_size)
        self.memory = OomHalving(self._fixed_batch or AUTO_BATCH_LIMIT, device=self.device, what="LM forward batch")
        self._prefixes: dict[str, _Prefix] = {}
        self.encode = lru_cache(maxsize=200_000)(self._encode)
        self._cache_arg = cache_keyword(self.model)

    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids))

    def _timed_forward(self, **kwargs):
        start = time.perf_counter()
        out = self.model(**kwargs)
        self.stats.forward_calls += 1
        self.stats.seconds += time.perf_counter() - start
        return out

    def _plan(self, *, tokens: int, cached: int = 0, logit_positions: int | None = None) -> int:
        """Rows per forward pass for rows of up to ``tokens`` tokens after ``cached`` ones."""
        if self._fixed_batch is not None:
            return self._fixed_batch
        per_item = lm_bytes_per_item(self.model, tokens=tokens, cached=cached, logit_positions=logit_positions)
        return plan_batch_size(bytes_per_item=per_item, device=self.device, limit=AUTO_BATCH_LIMIT)

    def prefix(self, text: str) -> _Prefix:
        """The cached state after ``text`` (run on first use)."""
        if text not in self._prefixes:
            self.warm_prefixes([text])
        return self._prefixes[text]

    @torch.no_grad()
    def warm_prefixes(self, texts: list[str]) -> None:
        """Run every uncached prefix, many per forward pass (right-padded, each row's cache cut
        to its own length), with the special tokens the tokenizer adds by default."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._prefixes]
        encoded = {t: list(self.tokenizer(t)["input_ids"]) for t in todo}
        todo.sort(key=lambda t: (len(encoded[t]), t))
        if not todo:
            return

        def run(batch: list[str]) -> None:
            width = max(len(encoded[t]) for t in batch)
            x = torch.zeros((len(batch), width), dtype=torch.long)
            for i, t in enumerate(batch):
                x[i, : len(encoded[t])] = torch.tensor(encoded[t])
            out = self._timed_forward(input_ids=x.to(self.device), use_cache=True)
            self.stats.tokens += sum(len(encoded[t]) for t in batch)
            layers = cache_layers(out)
            for i, t in enumerate(batch):
                n = len(encoded[t])
                kv = [(k[i:i + 1, :, :n].clone(), v[i:i + 1, :, :n].clone()) for k, v in layers]
                self._prefixes[t] = _Prefix(n, kv, out.logits[i, n - 1].float().log_softmax(-1))

        self.memory.run(run, todo, batch_size=self._plan(tokens=len(encoded[todo[-1]])))

    @torch.no_grad()
    def _run_batch(self, pre: _Prefix, seqs: list[tuple[int, ...]], *, last_only: bool = False):
        """Logits after the cached prefix for a batch of continuations, and the padded ids.

        Right-padded, all positions: ``(B, L, V)``. With ``last_only`` the batch is left-padded
        (pads masked out, positions continuing the prefix) and only the final position goes
        through the output layer: ``(B, V)``, which saves most of the vocabulary projection.
        """
        b, width = len(seqs), max(len(s) for s in seqs)
        x = torch.zeros((b, width), dtype=torch.long)
        positions = torch.arange(pre.length, pre.length + width).repeat(b, 1)
        mask = torch.ones((b, pre.length + width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if last_only:
                pad = width - len(s)
                x[i, pad:] = torch.tensor(s)
                positions[i, pad:] = torch.arange(pre.length, pre.length + len(s))
                mask[i, pre.length : pre.length + pad] = 0
            else:
                x[i, : len(s)] = torch.tensor(s)
        x = x.to(self.device)
        cache = expand_cache(pre.kv, b, self.model.config)
        kwargs = dict(input_ids=x, **{self._cache_arg: cache}, position_ids=positions.to(self.device), use_cache=True)
        if last_only:
            kwargs.update(attention_mask=mask.to(self.device), logits_to_keep=1)
        out = self._timed_forward(**kwargs)
        self.stats.tokens += sum(len(s) for s in seqs)
        logits = out.logits.float()
        return (logits[:, -1] if last_only else logits), x

    def _batched(self, run, pre: _Prefix, seqs: list[tuple[int, ...]], *, last_only: bool = False) -> None:
        """``run(idx)`` over batches of the indices of the non-empty ``seqs``, similar lengths
        together (less padding) in a fixed order (reproducible), planned and halved on
        out-of-memory by ``self.memory``."""
        order = sorted((i for i, s in enumerate(seqs) if s), key=lambda i: (len(seqs[i]), i))
        if order:
            size = self._plan(tokens=len(seqs[order[-1]]), cached=pre.length, logit_positions=1 if last_only else None)
            self.memory.run(run, order, batch_size=size)

    def token_logprobs(self, prefix: str, seqs: list[tuple[int, ...]]) -> list[torch.Tensor]:
        """``log p(s_i | prefix, s_<i)`` for every token of every sequence (1-D tensor each)."""
        pre = self.prefix(prefix)
        out: list[torch.Tensor] = [torch.zeros(0)] * len(seqs)

        def run(idx: list[int]) -> None:
            logits, x = self._run_batch(pre, [seqs[i] for i in idx])
            rest = logits[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1) - logits[:, :-1].logsumexp(-1)
            full = torch.cat([pre.last_logprobs[x[:, :1]], rest], dim=1).cpu()
            for row, i in enumerate(idx):
                out[i] = full[row, : len(seqs[i])]

        self._batched(run, pre, seqs)
        return out

    def next_logprobs(self, prefix: str, seqs: list[tuple[int, ...]]) -> torch.Tensor:
        """(B, V) log-distribution of the token after each sequence (the prefix's own for empty ones)."""
        pre = self.prefix(prefix)
        out = pre.last_logprobs.cpu().expand(len(seqs), -1).clone()

        def run(idx: list[int]) -> None:
            logits, _ = self._run_batch(pre, [seqs[i] for i in idx], last_only=True)
            out[idx] = logits.log_softmax(-1).cpu()

        self._batched(run, pre, seqs, last_only=True)
        return out


@dataclass
class Beam:
    """Key/value state of a batch of continuations of one prefix, grown one token per step.

    Used by the search: each step feeds one token per surviving state instead of re-running
    the whole continuation, so a step costs one token per state.
    """

    cache: object
    mask: torch.Tensor       # (B, cached length): 0 over left padding
    next_pos: torch.Tensor   # (B,) position id of the next token
    logprobs: torch.Tensor   # (B, V) distribution of the next token


@torch.no_grad()
def begin_beam(runner: CausalLMRunner, prefix: str, seqs: list[tuple[int, ...]]) -> Beam:
    """Run the (left-padded) continuations once after the cached prefix."""
    pre = runner.prefix(prefix)
    b = len(seqs)
    width = max((len(s) for s in seqs), default=0)
    cache = expand_cache(pre.kv, b, runner.model.config, contiguous=True)
    if width == 0:
        mask = torch.ones((b, pre.length), dtype=torch.long, device=runner.device)
        pos = torch.full((b,), pre.length, device=runner.device)
        return Beam(cache, mask, pos, pre.last_logprobs.expand(b, -1).clone())
    x = torch.zeros((b, width), dtype=torch.long)
    positions = torch.zeros((b, width), dtype=torch.long)
    mask = torch.ones((b, pre.length + width), dtype=torch.long)
    for i, s in enumerate(seqs):
        pad = width - len(s)
        if s:
            x[i, pad:] = torch.tensor(s)
        positions[i, pad:] = torch.arange(pre.length, pre.length + len(s))
        mask[i, pre.length:pre.length + pad] = 0
    out = runner._timed_forward(input_ids=x.to(runner.device), **{runner._cache_arg: cache},
                                attention_mask=mask.to(runner.device), position_ids=positions.to(runner.device),
                                use_cache=True, logits_to_keep=1)
    runner.stats.tokens += sum(len(s) for s in seqs)
    logprobs = out.logits[:, -1].float().log_softmax(-1)
    empty = torch.tensor([not s for s in seqs], device=logprobs.device)
    logprobs[empty] = pre.last_logprobs.to(logprobs.device)
    pos = torch.tensor([pre.length + len(s) for s in seqs], device=runner.device)
    return Beam(cache, mask.to(runner.device), pos, logprobs)


@torch.no_grad()
def advance_beam(runner: CausalLMRunner, beam: Beam, parents: torch.Tensor, tokens: torch.Tensor) -> Beam:
    """Keep the states ``parents`` (repeats allowed) and feed each its next token."""
    parents = parents.to(runner.device)
    beam.cache.reorder_cache(parents)
    mask = torch.cat([beam.mask[parents], torch.ones((len(parents), 1), dtype=torch.long, device=runner.device)], 1)
    pos = beam.next_pos[parents]
    out = runner._timed_forward(input_ids=tokens.to(runner.device)[:, None], **{runner._cache_arg: beam.cache},
                                attention_mask=mask, position_ids=pos[:, None], use_cache=True, logits_to_keep=1)
    runner.stats.tokens += len(parents)
    return Beam(beam.cache, mask, pos + 1, out.logits[:, -1].float().log_softmax(-1))
