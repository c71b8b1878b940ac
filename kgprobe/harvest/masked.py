"""Scoring and proposing entity tuples with a masked LM (BERT, RoBERTa, ...): BertNet's method.

**Score** of a tuple under a prompt: let its entity tokens be ``t_1..t_m`` (all entities, left to
right, ``k`` entities). Token ``t_i`` is read with itself and every later entity token masked
and everything before it filled in: ``l_i = log p(t_i | t_<i, masks)``. Then (the original
code's formula)

    score = (sum_i l_i / m  +  sum_i l_i / k  +  min_i l_i) / 3

**Search**: for every combination of entity lengths (1..``max_entity_tokens`` subwords each),
fill the masked positions left to right with a beam over the prompt-weighted average of the
token distributions; the value of a partial fill is its minimum log-probability so far.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from kgprobe.harvest.filters import EntityFilter, SlotForm
from kgprobe.harvest.relation import Template
from kgprobe.models.device import input_device
from kgprobe.models.lm import AUTO_BATCH_LIMIT, LMStats
from kgprobe.models.memory import OomHalving, lm_bytes_per_item, plan_batch_size, resolve_batch_size


@dataclass
class MaskedLM:
    """``batch_size``: rows per forward pass, or ``"auto"`` (planned from free memory, at most
    ``AUTO_BATCH_LIMIT``); a batch that runs out of memory is halved (``memory`` keeps the notes)."""

    model: torch.nn.Module
    tokenizer: object
    batch_size: int | str = "auto"

    def __post_init__(self) -> None:
        self.device = input_device(self.model)  # with a device map: where the embeddings run
        self.stats = LMStats()
        self._fixed_batch = resolve_batch_size(self.batch_size)
        self.memory = OomHalving(self._fixed_batch or AUTO_BATCH_LIMIT, device=self.device, what="LM forward batch")
        self.mask_id = self.tokenizer.mask_token_id
        if self.mask_id is None:
            raise ValueError("the tokenizer has no mask token: not a masked LM")

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def logprobs_at(self, inputs: list[list[int]], positions: list[int]) -> torch.Tensor:
        """(N, V) log-distribution at ``positions[n]`` of each input (special tokens added here)."""
        import time

        cls = [self.tokenizer.cls_token_id] if self.tokenizer.cls_token_id is not None else []
        sep = [self.tokenizer.sep_token_id] if self.tokenizer.sep_token_id is not None else []
        out = torch.empty((len(inputs), self.model.config.vocab_size))
        pad = self.tokenizer.pad_token_id or 0

        def run(rows: range) -> None:
            start = rows.start
            chunk = [cls + x + sep for x in inputs[rows.start:rows.stop]]
            width = max(len(x) for x in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, x in enumerate(chunk):
                ids[i, : len(x)] = torch.tensor(x)
                mask[i, : len(x)] = 1
            t = time.perf_counter()
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            self.stats.forward_calls += 1
            self.stats.seconds += time.perf_counter() - t
            self.stats.tokens += int(mask.sum())
            pos = torch.tensor(positions[rows.start:rows.stop], device=logits.device) + len(cls)
            out[start:start + len(chunk)] = logits[torch.arange(len(chunk)), pos].float().log_softmax(-1).cpu()

        size = self._fixed_batch
        if size is None and inputs:
            width = max(len(x) for x in inputs) + len(cls) + len(sep)
            size = plan_batch_size(bytes_per_item=lm_bytes_per_item(self.model, tokens=width),
                                   device=self.device, limit=AUTO_BATCH_LIMIT)
        self.memory.run(run, range(len(inputs)), batch_size=size)
        return out


def _pieces(lm: MaskedLM, template: Template) -> list[list[int]]:
    return [lm.encode(text) for text in template.texts]


def layout_ids(lm: MaskedLM, template: Template, entity_tokens: list[list[int]]) -> tuple[list[int], list[int]]:
    """Token ids of the filled template and the positions of the entity tokens, by slot number
    (slot 0's tokens first, then slot 1's, ...)."""
    pieces = _pieces(lm, template)
    ids: list[int] = list(pieces[0])
    where: dict[int, list[int]] = {}
    for p, slot in enumerate(template.order):
        where[slot] = list(range(len(ids), len(ids) + len(entity_tokens[slot])))
        ids += entity_tokens[slot]
        ids += pieces[p + 1]
    return ids, [i for slot in sorted(where) for i in where[slot]]


def score_tuples(lm: MaskedLM, template: Template, tuples: list[tuple[str, ...]]) -> torch.Tensor:
    """BertNet's compatibility score of each tuple under one prompt (see module doc)."""
    if not tuples:
        return torch.zeros(0)
    inputs, positions, targets, owner = [], [], [], []
    for n, ents in enumerate(tuples):
        toks = [lm.encode(e) for e in ents]
        ids, where = layout_ids(lm, template, toks)
        for i, pos in enumerate(where):
            masked = list(ids)
            for later in where[i:]:
                masked[later] = lm.mask_id
            inputs.append(masked)
            positions.append(pos)
            targets.append(ids[pos])
            owner.append(n)
    lp = lm.logprobs_at(inputs, positions).gather(1, torch.tensor(targets)[:, None]).squeeze(1)
    owner_t = torch.tensor(owner)
    total = torch.zeros(len(tuples)).index_add_(0, owner_t, lp)
    count = torch.zeros(len(tuples)).index_add_(0, owner_t, torch.ones_like(lp))
    low = torch.full((len(tuples),), float("inf")).scatter_reduce_(0, owner_t, lp, reduce="amin")
    k = len(tuples[0])
    return (total / count + total / k + low) / 3


def search(
    lm: MaskedLM,
    templates: list[Template],
    weights: list[float],
    *,
    arity: int,
    filt: EntityFilter,
    max_entity_tokens: int = 2,
    beam: int = 64,
    branch: int = 16,
    candidates: int = 200,
    forms: dict[int, SlotForm] | None = None,
) -> list[tuple[str, ...]]:
    """Best tuples by the min-log-prob value, over all entity-length combinations; a slot in
    ``forms`` takes values of its form only (:meth:`EntityFilter.ok`)."""
    vocab = lm.tokenizer.convert_ids_to_tokens(list(range(lm.model.config.vocab_size)))
    special = set(lm.tokenizer.all_special_ids)
    allowed = torch.tensor([i not in special and any(ch.isalnum() for ch in (t or "")) for i, t in enumerate(vocab)])
    found: dict[tuple[str, ...], float] = {}
    for lengths in itertools.product(range(1, max_entity_tokens + 1), repeat=arity):
        states: list[tuple[list[int], float]] = [([], 0.0)]
        total = sum(lengths)
        for step in range(total):
            dist = torch.zeros((len(states), len(vocab)))
            for tm, w in zip(templates, weights):
                inputs, positions = [], []
                for filled, _ in states:
                    toks, rest = [], list(filled) + [lm.mask_id] * (total - len(filled))
                    for n in lengths:
                        toks.append(rest[:n])
                        rest = rest[n:]
                    ids, where = layout_ids(lm, tm, toks)
                    inputs.append(ids)
                    positions.append(where[step])
                dist += w * lm.logprobs_at(inputs, positions)
            dist = dist.masked_fill(~allowed, float("-inf"))
            top = dist.topk(branch, dim=1)
            values = torch.minimum(torch.tensor([v for _, v in states])[:, None], top.values).reshape(-1)
            order = values.argsort(descending=True)[:beam]
            states = [(states[i // branch][0] + [int(top.indices.reshape(-1)[i])], float(values[i]))
                      for i in order.tolist() if torch.isfinite(values[i])]
        for filled, value in states:
            ents, rest = [], filled
            for n in lengths:
                ents.append(lm.tokenizer.decode(rest[:n]).strip())
                rest = rest[n:]
            key = tuple(ents)
            if all(filt.ok(e, form=(forms or {}).get(j)) for j, e in enumerate(key)) and filt.tuple_ok(key):
                found[key] = max(value, found.get(key, float("-inf")))
    return [t for t, _ in sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:candidates]]
