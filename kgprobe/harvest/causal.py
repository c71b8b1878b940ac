"""Scoring and proposing entity tuples with a causal LM.

Sentences are built from token pieces so every entity's tokens are known exactly: the template
text between slots and each entity are tokenized separately, a space before a slot moving into
the entity (``" is the capital of" + " France"``), which matches how byte-level BPE tokenizes
the whole sentence.

**Score** of a tuple under a prompt, given the few-shot prefix ``P`` (the seeds filled into the
same prompt, one per line): with ``l_i = log p(t_i | P, t_<i)`` over the sentence's tokens and
``S_j`` the tokens of entity ``j``,

    l'_i = (1 - a) * l_i  for i in S_f,  l'_i = l_i otherwise     (f: the slot written first)
    joint = sum_i l'_i                 (template text after the last slot included)
    ent_j = sum_{i in S_j} l'_i
    score = (1 - lam) * joint + lam * min_j ent_j          (lam = ``min_weight``, default 0.5)

The joint term is what makes "Paris" fit ``<ENT0> is the capital of <ENT1> .`` and "2018 was"
not; the minimum keeps one implausible entity from hiding behind a likely one.

``a`` (``prior_correction``, default 1) discounts the log-probability of the entity written
first. Nothing before it in the sentence says which entity it should be, so its log-probability
is mostly how common the name is after the prefix: with ``a = 0`` "Istanbul is the capital of
Turkey" beats "Ankara ..." by Istanbul's fame alone; ``a = 1`` keeps only what the rest of the
sentence says given that entity (a pointwise-mutual-information score, as for surface-form
competition, Holtzman et al. 2021). On "capital of" with SmolLM2-135M (top 100, the same 434
candidates rescored): precision@100 0.62 with ``a = 0``, 0.67-0.71 with 0.5, 0.71-0.74 with 1;
end to end with ``a = 0.5`` (prompt weights too): precision@50 0.90 (was 0.84), @100 0.71.
Over the judged relation suite (15 relations, prompts + seeds only) ``a = 1`` beats 0.5 end to
end, mean precision@50 0.844 -> 0.859, and on 13 held-out relations 0.520 -> 0.538
(eval/results/relations.json, relations_heldout.json; docs/harvest.md), so 1 is the default.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kgprobe.harvest.relation import Template
from kgprobe.models.lm import CausalLMRunner


@dataclass(frozen=True)
class Layout:
    """Token pieces of one template: ``pieces[p]`` precedes the slot at text position ``p``."""

    template: Template
    pieces: tuple[tuple[int, ...], ...]   # k + 1 pieces of template text
    spaced: tuple[bool, ...]              # does the entity at position p take a leading space
    end_token: tuple[int, ...]            # first token after the slot at position p


def layout(runner: CausalLMRunner, template: Template) -> Layout:
    pieces, spaced = [], []
    for p, text in enumerate(template.texts):
        takes_space = p < template.arity and text.endswith(" ")
        pieces.append(runner.encode(text[:-1] if takes_space else text))
        if p < template.arity:
            spaced.append(takes_space)
    newline = runner.encode("\n")
    end = []
    for p in range(template.arity):
        nxt = pieces[p + 1]
        # two slots side by side have no text between them: the next entity's first token ends it
        end.append(nxt[0] if nxt else (newline[-1] if p == template.arity - 1 else -1))
    return Layout(template, tuple(pieces), tuple(spaced), tuple(end))


def entity_ids(runner: CausalLMRunner, lay: Layout, position: int, entity: str) -> tuple[int, ...]:
    return runner.encode((" " if lay.spaced[position] else "") + entity)


def sentence(runner: CausalLMRunner, lay: Layout,
             entities: tuple[str, ...]) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
    """Token ids of the filled template and the ``(start, end)`` span of each slot (by slot number)."""
    ids: list[int] = list(lay.pieces[0])
    spans: list[tuple[int, int]] = [(0, 0)] * lay.template.arity
    for p, slot in enumerate(lay.template.order):
        ent = entity_ids(runner, lay, p, entities[slot])
        spans[slot] = (len(ids), len(ids) + len(ent))
        ids += ent
        ids += lay.pieces[p + 1]
    return tuple(ids), spans


def context(runner: CausalLMRunner, lay: Layout, filled: tuple[str, ...]) -> tuple[int, ...]:
    """Tokens up to (not including) the entity at text position ``len(filled)``."""
    ids: list[int] = list(lay.pieces[0])
    for p, ent in enumerate(filled):
        ids += entity_ids(runner, lay, p, ent)
        ids += lay.pieces[p + 1]
    return tuple(ids)


def few_shot_prefix(template: Template, seeds: list[tuple[str, ...]]) -> str:
    """The seeds filled into ``template``, a line each; without seeds a bare line break (the LM
    needs one token of context, and a zero-shot search for seeds has none to give)."""
    return "".join(template.fill(s) + "\n" for s in seeds) or "\n"


def score_tuples(
    runner: CausalLMRunner,
    lay: Layout,
    prefix: str,
    tuples: list[tuple[str, ...]],
    *,
    min_weight: float = 0.5,
    prior_correction: float = 1.0,
) -> torch.Tensor:
    """Compatibility score (see module doc) of each tuple under one prompt and prefix."""
    if not tuples:
        return torch.zeros(0)
    built = [sentence(runner, lay, t) for t in tuples]
    logprobs = runner.token_logprobs(prefix, [ids for ids, _ in built])
    # prefix sums turn every span sum into one gather: sum(l[a:b]) = c[b] - c[a]
    padded = torch.nn.utils.rnn.pad_sequence(logprobs, batch_first=True)
    csum = torch.nn.functional.pad(padded.cumsum(1), (1, 0))
    spans = torch.tensor([sp for _, sp in built])                     # (N, k, 2)
    ent = csum.gather(1, spans[..., 1]) - csum.gather(1, spans[..., 0])  # (N, k)
    lengths = torch.tensor([len(ids) for ids, _ in built])
    joint = csum.gather(1, lengths[:, None]).squeeze(1)
    if prior_correction:  # l'_i = (1 - a) l_i on the first-written entity: take a * ent_f off both terms
        first = lay.template.order[0]
        cut = prior_correction * ent[:, first]
        joint = joint - cut
        ent = ent.clone()
        ent[:, first] -= cut
    return (1 - min_weight) * joint + min_weight * ent.min(1).values
