"""Propose entity tuples with a causal LM: slot by slot in text order, token by token.

The state of the search is a partial tuple (entities already chosen for the earlier slots) plus
the tokens of the entity being written. Its *value* is, by default, the log-likelihood of the
entities written so far (``value="sum"``); BertNet's smallest token log-probability is
``value="min"``. With a left-to-right LM the minimum is a poor guide: "United King" and
"United Kingdom" share it, so the beam fills with truncations and run-ons of a few names; the sum
charges every token, the end of the entity included. Either way extending a state can only lower
its value, so any state below the current ``n``-th best finished candidate is pruned (branch
and bound). The next-token distribution is
the weight-averaged log-probability over the search prompts (those that share the best prompt's
slot order and spacing). An entity may end once it has a token: ending costs the log-probability
of the template text that follows the slot (" is", " .", or a newline at the end). A slot whose
seeds are numbers is written from digit tokens only, and may start with the bare space token that
SmolLM2's and Gemma3's tokenizers put before digits (" 1756" is " ", "1", "7", "5", "6").

Positions after the first are searched independently per partial tuple, in fixed chunks, so a
run can checkpoint every chunk and resume with identical results.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from kgprobe.harvest.causal import Layout, context
from kgprobe.harvest.filters import EntityFilter, SlotForm
from kgprobe.models.lm import CausalLMRunner, advance_beam, begin_beam


@dataclass(frozen=True)
class SearchParams:
    max_entity_tokens: int = 4
    branch: int = 16              # tokens expanded per state and step
    first_beam: int = 256         # states kept per step at the first position
    first_candidates: int = 200   # entities kept for the first position
    later_beam: int = 4           # states kept per partial tuple and step at later positions
    later_candidates: int = 3     # entities kept per partial tuple at later positions
    chunk: int = 32               # partial tuples per checkpointed chunk
    value: str = "sum"            # "sum": log-likelihood so far; "min": BertNet's smallest log-prob


@dataclass(frozen=True)
class Partial:
    filled: tuple[str, ...]   # entities in text order
    value: float


class VocabMasks:
    """Which tokens may start an entity (with or without a leading space) or continue one."""

    def __init__(self, runner: CausalLMRunner):
        vocab = len(runner.tokenizer)
        texts = runner.tokenizer.batch_decode([[i] for i in range(vocab)])

        def mask(pred: Callable[[str], bool]) -> torch.Tensor:
            return torch.tensor([pred(t) for t in texts], dtype=torch.bool)

        self.first_spaced = mask(lambda t: len(t) > 1 and t[0] == " " and t[1].isalnum())
        self.first_plain = mask(lambda t: bool(t) and t[0].isalnum())
        self.cont = mask(lambda t: bool(t) and "\n" not in t and (
            t[0].isalnum() or t[0] in "-'." or (len(t) > 1 and t[0] == " " and t[1].isalnum())))
        # numbers: SmolLM2's and Gemma3's tokenizers write " 1756" as " ", "1", "7", "5", "6", so a
        # number after a space starts with the bare space token (others have " 17"-like tokens)
        digits = lambda t: t.isascii() and t.isdigit()  # noqa: E731 (not "²", which isdigit() too)
        self.number_first_spaced = mask(lambda t: t == " " or (t[:1] == " " and digits(t[1:])))
        self.number_first_plain = mask(digits)
        self.number_cont = mask(lambda t: digits(t) or t in (",", "."))

    def starts(self, *, spaced: bool, numeric: bool) -> torch.Tensor:
        """Tokens that may begin an entity at a position with or without a space before it."""
        if numeric:
            return self.number_first_spaced if spaced else self.number_first_plain
        return self.first_spaced if spaced else self.first_plain


def _rank_within_groups(groups: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Rank (0 = best) of each value among those with the same group id."""
    order = torch.sort(values, descending=True, stable=True).indices
    order = order[torch.sort(groups[order], stable=True).indices]
    sorted_groups = groups[order]
    starts = torch.ones_like(sorted_groups, dtype=torch.bool)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    idx = torch.arange(len(order))
    group_start = torch.cummax(torch.where(starts, idx, torch.zeros_like(idx)), 0).values
    ranks = torch.empty_like(idx)
    ranks[order] = idx - group_start
    return ranks


def search_position(
    runner: CausalLMRunner,
    layouts: list[Layout],
    weights: list[float],
    prefixes: list[str],
    partials: list[Partial],
    *,
    filt: EntityFilter,
    masks: VocabMasks,
    params: SearchParams,
    first: bool,
    form: SlotForm | None = None,
    max_tokens: int | None = None,
) -> list[Partial]:
    """Extend every partial tuple by one entity; returns the finished (longer) partial tuples.
    ``form``: the entity is a number or a code (:func:`~kgprobe.harvest.filters.slot_forms`); a
    number is written from digit tokens only. ``max_tokens``: the entity's length limit (default
    ``params.max_entity_tokens``)."""
    position = len(partials[0].filled)
    contexts = [[context(runner, lay, p.filled) for p in partials] for lay in layouts]
    numeric = form is not None and form.kind == "number"
    start_mask = masks.starts(spaced=layouts[0].spaced[position], numeric=numeric)
    cont_mask = masks.number_cont if numeric else masks.cont
    max_tokens = params.max_entity_tokens if max_tokens is None else max_tokens
    keep_states = params.first_beam if first else params.later_beam
    keep_done = params.first_candidates if first else params.later_candidates

    owner = torch.arange(len(partials))                     # partial tuple of each state
    values = torch.tensor([p.value for p in partials])
    tokens: list[tuple[int, ...]] = [()] * len(partials)
    done: dict[int, dict[str, float]] = {}
    beams = [begin_beam(runner, prefix, ctx) for prefix, ctx in zip(prefixes, contexts)]
    combine = torch.minimum if params.value == "min" else torch.add

    for depth in range(max_tokens + 1):
        if not tokens:
            break
        lp = torch.zeros((len(tokens), masks.cont.shape[0]))
        end = torch.zeros(len(tokens))
        for lay, w, beam in zip(layouts, weights, beams):
            step = beam.logprobs.cpu()
            lp += w * step
            end += w * step[:, lay.end_token[position]]
        if depth > 0:
            finished = combine(values, end).tolist()
            for o, toks, val in zip(owner.tolist(), tokens, finished):
                ent = runner.decode(toks).strip()
                filled = partials[o].filled + (ent,)
                if filt.ok(ent, form=form) and filt.tuple_ok(filled):
                    best = done.setdefault(o, {})
                    best[ent] = max(val, best.get(ent, float("-inf")))
        if depth == max_tokens:
            break
        lp = lp.masked_fill(~(start_mask if depth == 0 else cont_mask), float("-inf"))
        # few states (the start) may branch wider, so the beam is filled by distinct first tokens
        groups = 1 if first else len(partials)
        width = min(lp.shape[1], max(params.branch, -(-keep_states * groups // len(tokens))))
        top = lp.topk(width, dim=1)
        child_values = combine(values[:, None], top.values).reshape(-1)
        child_owner = owner[:, None].expand(-1, width).reshape(-1)
        child_token = top.indices.reshape(-1)
        parent = torch.arange(len(tokens))[:, None].expand(-1, width).reshape(-1)
        # branch and bound: a state below the keep_done-th finished value of its group cannot win
        group = torch.zeros_like(child_owner) if first else child_owner
        bound = torch.full((len(partials),), float("-inf"))
        finished_by_group = ({0: [v for ents in done.values() for v in ents.values()]} if first
                             else {o: list(ents.values()) for o, ents in done.items()})
        for g, vals in finished_by_group.items():
            if len(vals) >= keep_done:
                bound[g] = sorted(vals, reverse=True)[keep_done - 1]
        alive = torch.isfinite(child_values) & (child_values > bound[group])
        ranks = _rank_within_groups(group[alive], child_values[alive])
        sel = alive.nonzero().squeeze(1)[ranks < keep_states]
        tokens = [tokens[i] + (t,) for i, t in zip(parent[sel].tolist(), child_token[sel].tolist())]
        owner, values = child_owner[sel], child_values[sel]
        if tokens:
            beams = [advance_beam(runner, beam, parent[sel], child_token[sel]) for beam in beams]

    out: list[Partial] = []
    if first:
        ranked = sorted(((v, o, e) for o, ents in done.items() for e, v in ents.items()), key=lambda x: (-x[0], x[2]))
        out = [Partial(partials[o].filled + (e,), v) for v, o, e in ranked[:keep_done]]
    else:
        for o in sorted(done):
            ranked = sorted(done[o].items(), key=lambda x: (-x[1], x[0]))[:keep_done]
            out += [Partial(partials[o].filled + (e,), v) for e, v in ranked]
    return out


def chunks(items: list, size: int) -> Iterable[tuple[int, list]]:
    for start in range(0, len(items), size):
        yield start // size, items[start:start + size]
