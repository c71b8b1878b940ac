"""Score cloze QA pairs with a causal LM: answer log-likelihood and teacher-forced exact match.

Each item is the sequence ``few_shot + prompt`` followed by ``" " + answer``. The two parts are
tokenised separately and their ids concatenated, so the answer tokens are exactly
``tokenizer(" " + answer, add_special_tokens=False)`` whatever the prompt ends with. For answer
tokens ``a_1..a_m`` after prompt ``x``:

    logprob = sum_j log p(a_j | x, a_<j)        mean_logprob = logprob / m
    correct = all_j  a_j == argmax_v p(v | x, a_<j)

``correct`` is teacher-forced greedy exact match: greedy decoding from ``x`` reproduces the
answer's tokens (what comes after them is not checked).

A ``few_shot`` prefix is tokenised on its own (with the tokenizer's special tokens; the prompt
then gets none), run once, and its key/value cache is shared by every row: the prefix is the
same for all items, and under causal attention its keys and values do not depend on the tokens
after it, so a batch only computes its own prompt and answer tokens and the numbers equal those
of the full sequence (the machinery, shared with harvesting, is in :mod:`kgprobe.models.lm`).
End the prefix with a newline: byte-level BPE tokenisers then split ``few_shot + prompt``
exactly there anyway, so the ids equal those of the joint string.

Items are sorted by length and cut into batches so rows of one batch need little padding; rows
are padded on the LEFT (between the shared prefix and the prompt), and the attention mask plus
position ids counted over real tokens only make a padded row give the same numbers as that
sequence alone. Only the last ``max answer length + 1`` positions go through the unembedding
(``logits_to_keep``), since with left padding every answer sits at the end of its row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence

import torch

from kgprobe.errors import KgprobeError
from kgprobe.models.device import input_device
from kgprobe.models.lm import KV, cache_keyword, expand_cache, forward_parameters, prefix_cache
from kgprobe.models.memory import OomHalving, lm_bytes_per_item, plan_batch_size, resolve_batch_size, warn_on_halve

#: the most rows ``batch_size="auto"`` puts in one batch (the fixed default it replaced)
AUTO_BATCH_LIMIT = 32


class _Item(Protocol):
    prompt: str
    answer: str


@dataclass(frozen=True)
class QAScores:
    """Per-item scores, in the order the items were given (CPU tensors, no gradient)."""

    logprob: torch.Tensor        # [n] float32: sum of the answer tokens' log-probs
    mean_logprob: torch.Tensor   # [n] float32: logprob / number of answer tokens
    correct: torch.Tensor        # [n] bool: every answer token is the argmax at its position
    n_tokens: torch.Tensor       # [n] int64: number of answer tokens

    def __len__(self) -> int:
        return int(self.logprob.numel())


@dataclass(frozen=True)
class _Batch:
    order: torch.Tensor          # [b] positions of these rows in the caller's item list
    input_ids: torch.Tensor      # [b, T] left padded
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    answer_mask: torch.Tensor    # [b, T] True on answer tokens


def _encode(tokenizer, items: Sequence[_Item], *, special: bool) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) per item; prompt ids carry special tokens when ``special``."""
    if not items:
        return []
    prompts = [item.prompt for item in items]
    answers = [" " + item.answer for item in items]
    prompt_ids = tokenizer(prompts, add_special_tokens=special)["input_ids"]
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    for item, p, a in zip(items, prompt_ids, answer_ids):
        if not p or not a:
            raise KgprobeError(f"QA item has an empty prompt or answer after tokenising: "
                               f"{item.prompt!r} -> {item.answer!r}")
    return list(zip(prompt_ids, answer_ids))


@dataclass(frozen=True)
class _Encoded:
    """Every item's ids (``lead`` + prompt, answer), their lengths, and the length-sorted order."""

    ids: list[tuple[list[int], list[int]]]
    lengths: list[int]
    order: list[int]
    pad_id: int
    prefix_len: int

    @classmethod
    def of(cls, tokenizer, items: Sequence[_Item], *, lead: list[int], prefix_len: int) -> _Encoded:
        encoded = _encode(tokenizer, items, special=not (lead or prefix_len))
        encoded = [(lead + p, a) for p, a in encoded]
        lengths = [len(p) + len(a) for p, a in encoded]
        # stable sort: equal lengths keep input order, so batches are the same on every run
        order = sorted(range(len(encoded)), key=lengths.__getitem__)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(encoded, lengths, order, pad_id, prefix_len)

    def batch(self, rows: list[int], device: torch.device) -> _Batch:
        """The left-padded batch of the items ``rows``."""
        encoded, lengths, pad_id, prefix_len = self.ids, self.lengths, self.pad_id, self.prefix_len
        width = max(lengths[i] for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        answer = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, i in enumerate(rows):
            p, a = encoded[i]
            ids[r, width - lengths[i]:] = torch.tensor(p + a)
            mask[r, width - lengths[i]:] = 1
            answer[r, width - len(a):] = True
        # positions count real tokens only, so a padded row sees the positions it would alone
        positions = prefix_len + (mask.cumsum(-1) - 1).clamp(min=0)
        return _Batch(torch.tensor(rows), ids.to(device), mask.to(device), positions.to(device),
                      answer.to(device))


@dataclass(frozen=True)
class _Prefix:
    """The few-shot prefix's per-layer keys and values, computed once and shared by all batches
    (:func:`kgprobe.models.lm.prefix_cache`; with autograd on they keep their graph)."""

    length: int
    kv: KV

    @classmethod
    def run(cls, model, ids: list[int]) -> _Prefix:
        return cls(len(ids), prefix_cache(model, ids))


def _score_batch(model, batch: _Batch, prefix: _Prefix | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logprob [b], n_tokens [b], correct [b]) for one batch; logprob keeps the autograd graph.

    Token t of a row is predicted by the logits at t - 1, so the answer mask shifted left by one
    picks the predicting positions; the selected logits are gathered into one flat
    [n_answer_tokens, vocab] matrix and summed back per row with index_add.
    """
    b, width = batch.input_ids.shape
    keep = int(batch.answer_mask.sum(-1).max()) + 1
    kwargs = {"logits_to_keep": keep} if "logits_to_keep" in forward_parameters(model) else {}
    mask = batch.attention_mask
    if prefix is not None:
        # every row attends to all prefix positions; its own left padding stays masked out
        mask = torch.cat([mask.new_ones(b, prefix.length), mask], dim=1)
        kwargs.update({cache_keyword(model): expand_cache(prefix.kv, b, model.config), "use_cache": True})
    else:
        kwargs.update(use_cache=False)
    logits = model(input_ids=batch.input_ids, attention_mask=mask,
                   position_ids=batch.position_ids, **kwargs).logits
    logits = logits[:, -keep:]                              # [b, keep, V] whether or not it was cut
    targets_mask = batch.answer_mask[:, -keep:][:, 1:]      # [b, keep-1] tokens to predict
    targets = batch.input_ids[:, -keep:][:, 1:][targets_mask]
    selected = logits[:, :-1][targets_mask].float()         # [n_tok, V]
    token_logprob = torch.log_softmax(selected, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    hit = selected.argmax(-1) == targets
    row = torch.arange(b, device=targets.device)[:, None].expand_as(targets_mask)[targets_mask]
    logprob = torch.zeros(b, dtype=token_logprob.dtype, device=targets.device).index_add(0, row, token_logprob)
    n_tokens = targets_mask.sum(-1)
    misses = torch.zeros(b, dtype=torch.long, device=targets.device).index_add(0, row, (~hit).long())
    return logprob, n_tokens, misses == 0


def _device(model) -> torch.device:
    return input_device(model)  # with a device map: where the embeddings run


def _prepare(model, tokenizer, items: Sequence[_Item], *, few_shot: str,
             cache_prefix: bool) -> tuple[_Encoded, _Prefix | None]:
    """The encoded items and the cached few-shot prefix (None: no prefix, or not cached). Each
    row starts with the few-shot ids when they are not cached; positions start after the cached
    prefix's tokens."""
    lead = tokenizer(few_shot, add_special_tokens=True)["input_ids"] if few_shot and items else []
    prefix = _Prefix.run(model, lead) if lead and cache_prefix else None
    enc = _Encoded.of(tokenizer, items, lead=[] if prefix else lead, prefix_len=prefix.length if prefix else 0)
    return enc, prefix


def _prepared(model, tokenizer, items: Sequence[_Item], *, few_shot: str, batch_size: int,
              cache_prefix: bool) -> Iterator[tuple[_Batch, _Prefix | None]]:
    """Length-sorted, left-padded batches of ``batch_size`` rows covering every item once."""
    if batch_size < 1:
        raise KgprobeError(f"batch_size must be >= 1, got {batch_size}")
    enc, prefix = _prepare(model, tokenizer, items, few_shot=few_shot, cache_prefix=cache_prefix)
    for start in range(0, len(enc.order), batch_size):
        yield enc.batch(enc.order[start:start + batch_size], _device(model)), prefix


def _auto_batch_size(model, enc: _Encoded) -> int:
    """``batch_size="auto"`` of :func:`score_qa`: rows of the longest item after the cached prefix,
    logits at its answer positions only (:func:`kgprobe.models.memory.lm_bytes_per_item`), at most
    :data:`AUTO_BATCH_LIMIT`."""
    if not enc.order:
        return AUTO_BATCH_LIMIT
    longest = enc.order[-1]
    keep = max(len(a) for _, a in enc.ids) + 1
    per_item = lm_bytes_per_item(model, tokens=enc.lengths[longest], cached=enc.prefix_len, logit_positions=keep)
    return plan_batch_size(bytes_per_item=per_item, device=_device(model), limit=AUTO_BATCH_LIMIT)


def answer_logprobs(model, tokenizer, items: Sequence[_Item], *, few_shot: str = "",
                    batch_size: int = 32, cache_prefix: bool = True) -> torch.Tensor:
    """Summed answer log-probs ``log p(answer | few_shot + prompt)`` [n], WITH gradients.

    For training objectives (NLL, gradient ascent, NPO). Same tokenising and batching as
    :func:`score_qa`; the result is on the model's device, in item order.
    """
    if not items:
        return torch.zeros(0, device=_device(model))
    parts, orders = [], []
    for batch, prefix in _prepared(model, tokenizer, items, few_shot=few_shot, batch_size=batch_size,
                                   cache_prefix=cache_prefix):
        logprob, _, _ = _score_batch(model, batch, prefix)
        parts.append(logprob)
        orders.append(batch.order)
    order = torch.cat(orders).to(parts[0].device)
    # scatter back to item order; indexing with the inverse permutation keeps the graph
    return torch.cat(parts)[torch.argsort(order)]


def score_qa(model, tokenizer, items: Sequence[_Item], *, batch_size: int | str = "auto",
             few_shot: str = "", cache_prefix: bool = True, memory: OomHalving | None = None) -> QAScores:
    """Log-likelihood and teacher-forced exact match of every item's answer (no gradients).

    ``cache_prefix=False`` puts the few-shot ids at the start of every row instead of sharing
    their key/value cache (same numbers, more compute; for models without a cache).

    ``batch_size="auto"``: :func:`_auto_batch_size`. A batch that runs out of memory is scored in
    halves (same numbers up to float rounding); ``memory`` (an
    :class:`~kgprobe.models.memory.OomHalving`, kept across calls by a caller that wants the
    halvings in its run record, in ``memory.notes``) remembers the reduced size; without one each
    halving is a warning line.
    """
    fixed = resolve_batch_size(batch_size)
    n = len(items)
    logprob = torch.zeros(n, dtype=torch.float32)
    n_tokens = torch.zeros(n, dtype=torch.long)
    correct = torch.zeros(n, dtype=torch.bool)
    device = _device(model)
    if memory is None:
        memory = OomHalving(device=device, what="QA batch", on_halve=warn_on_halve("QA batch", device))
    with torch.inference_mode():
        enc, prefix = _prepare(model, tokenizer, items, few_shot=few_shot, cache_prefix=cache_prefix)

        def run(rows: list[int]) -> None:
            batch = enc.batch(rows, device)
            lp, nt, ok = _score_batch(model, batch, prefix)
            logprob[batch.order] = lp.float().cpu()
            n_tokens[batch.order] = nt.cpu()
            correct[batch.order] = ok.cpu()

        memory.run(run, enc.order, batch_size=fixed or _auto_batch_size(model, enc))
    return QAScores(logprob=logprob, mean_logprob=logprob / n_tokens.clamp(min=1).float(),
                    correct=correct, n_tokens=n_tokens)


def accuracy(scores: QAScores) -> float:
    """Fraction of items answered correctly (0.0 for no items)."""
    return float(scores.correct.float().mean()) if len(scores) else 0.0


def mean_logprob(scores: QAScores) -> float:
    """Mean over items of the summed answer log-prob (0.0 for no items)."""
    return float(scores.logprob.mean()) if len(scores) else 0.0
