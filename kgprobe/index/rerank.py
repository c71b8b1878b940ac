"""Re-rank retrieved entities with a causal LM read as a reverse dictionary.

A sentence encoder matches a descriptive query by its words: for "a domesticated carnivorous
mammal" all-MiniLM-L6-v2 puts "carnivorous", "carnivore" and "domestic animal" first among
WordNet's 117,659 labels and "dog" 162nd. A causal LM has learnt what such a description names.
So: retrieve ``depth`` candidates by embedding, then score each one by how readily the LM writes
one of its names after the description,

.. math:: s(e) = \\max_{n \\in \\mathrm{names}(e)} \\Big[\\log p_{LM}(\\text{" } n \\text{\\n"} \\mid
          \\mathrm{prompt}(q)) - a \\log p_{LM}(\\text{" } n \\text{\\n"} \\mid \\mathrm{prompt}(\\varnothing))\\Big]
          + c \\cos(q, e)

where ``names(e)`` are the parts of the label split at ``separator`` (WordNet labels list their
lemmas: "dog, domestic dog, Canis familiaris") and ``prompt(q)`` is a few-shot
"Definition: ... / Word: ..." prompt ending in the query. The newline closes the name, so a name
that is only the start of a likelier word ("cat" of "caterpillar") gets no credit for it. The
total log-probability (not per token) is used: a one-token answer should not lose to a long
name whose later tokens are predictable once it has begun. Two optional terms: ``a`` times the
name's log-probability after the same prompt with an empty definition (its prior: a small LM
likes frequent general words, "tulip" for "Eurasian tulip with small flowers blotched at the
base", whose synset is "lady tulip"), and ``c`` times the candidate's retrieval cosine.

What it is worth, measured by ``eval/bench_rerank.py`` (SmolLM2-135M, MiniLM-L6 label index of
WordNet, depth 200, 60 glosses as queries; ``eval/results/rerank.json`` and
``rerank_common.json``): on random synsets the embedding alone is better (MRR 0.18; the LM
0.05 with a = c = 0, at best 0.16 with a = 1, c = 32); on synsets named by a common word (one
token) they are close (embedding 0.11, LM 0.10, at best 0.14). No weighting wins on both. So the
defaults are the plain LM (a = c = 0): the re-ranker says which candidate *the LM* takes the
description to name, a probe of the LM as much as a search tool. For the example above it puts
dog first.

The prompt's examples are generic (house, banana, hammer), not drawn from any KG.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kgprobe.errors import KgprobeError

__all__ = ["COSINE_WEIGHT", "PRIOR_WEIGHT", "REVERSE_DICTIONARY_PROMPT", "NameScores", "Reranked", "combine",
           "label_names", "lm_rerank", "score_names"]

# the plain LM score; see the module docstring for what the other weightings measured
PRIOR_WEIGHT = 0.0
COSINE_WEIGHT = 0.0

REVERSE_DICTIONARY_PROMPT = (
    "Definition: a building where people live\nWord: house\n\n"
    "Definition: an elongated yellow fruit that grows in bunches\nWord: banana\n\n"
    "Definition: a tool with a heavy metal head for driving nails\nWord: hammer\n\n"
    "Definition: {query}\nWord:"
)


def label_names(label: str, separator: str | None = ", ") -> list[str]:
    """The distinct names in ``label`` (split at ``separator``; ``None`` keeps it whole)."""
    parts = label.split(separator) if separator else [label]
    names = [" ".join(p.replace("_", " ").split()) for p in parts]
    return list(dict.fromkeys(n for n in names if n)) or [label.strip() or "?"]


@dataclass
class NameScores:
    """Every name of every candidate: its candidate (``owner``), log-prob after the query's prompt
    and after the empty prompt (the prior; zeros when not computed)."""

    owner: np.ndarray  # (m,) candidate position of each name
    names: list[str]
    logprob: np.ndarray  # (m,)
    prior: np.ndarray  # (m,)
    count: int  # number of candidates


@dataclass
class Reranked:
    """LM scores of the candidates, in the order given, and the name that earned each score."""

    scores: np.ndarray  # (n,) max over names of logprob - prior_weight * prior, + retrieval_weight * retrieval
    names: list[str]  # the name reaching the max
    logprob: np.ndarray  # (n,) log p(name | prompt(query)) of that name
    prior: np.ndarray  # (n,) log p(name | prompt with an empty definition) of that name

    def order(self) -> np.ndarray:
        """Candidate positions, best first (ties keep the retrieval order)."""
        return np.argsort(-self.scores, kind="stable")


def score_names(query: str, labels: Sequence[str], *, runner: Any, prompt: str = REVERSE_DICTIONARY_PROMPT,
                separator: str | None = ", ", prior: bool = True) -> NameScores:
    """The LM log-probabilities behind :func:`lm_rerank`, for every name of every candidate."""
    if "{query}" not in prompt:
        raise KgprobeError("the re-ranking prompt has no {query} slot")
    if not query.strip():
        raise KgprobeError("the query text is empty")
    groups = [label_names(label, separator) for label in labels]
    flat = [n for group in groups for n in group]
    owner = np.repeat(np.arange(len(groups)), [len(g) for g in groups]).astype(np.int64)
    if not flat:
        return NameScores(owner, [], np.zeros(0), np.zeros(0), 0)
    end = runner.encode("\n")
    seqs = [runner.encode(" " + n) + end for n in flat]

    def totals(text: str) -> np.ndarray:
        return np.array([float(lp.sum()) for lp in runner.token_logprobs(text, seqs)])

    logprob = totals(prompt.format(query=query.strip()))
    base = totals(prompt.format(query="")) if prior else np.zeros(len(flat))
    return NameScores(owner, flat, logprob, base, len(groups))


def combine(scores: NameScores, prior_weight: float = PRIOR_WEIGHT, *, retrieval: Any = None,
            retrieval_weight: float = COSINE_WEIGHT) -> Reranked:
    """Per candidate, the best name by ``logprob - prior_weight * prior`` (the first on ties),
    plus ``retrieval_weight`` times the candidate's retrieval score (e.g. its cosine) when given."""
    if not scores.count:
        empty = np.zeros(0)
        return Reranked(empty, [], empty, empty)
    combined = scores.logprob - prior_weight * scores.prior
    if retrieval is not None and retrieval_weight:
        retrieval = np.asarray(retrieval, dtype=np.float64)
        if retrieval.shape != (scores.count,):
            raise KgprobeError(f"{scores.count} candidates but {retrieval.size} retrieval scores")
        combined = combined + retrieval_weight * retrieval[scores.owner]
    order = np.lexsort((np.arange(len(combined)), -combined, scores.owner))
    first = order[np.r_[True, scores.owner[order][1:] != scores.owner[order][:-1]]]
    return Reranked(scores=combined[first], names=[scores.names[i] for i in first],
                    logprob=scores.logprob[first], prior=scores.prior[first])


def lm_rerank(query: str, labels: Sequence[str], *, runner: Any, prompt: str = REVERSE_DICTIONARY_PROMPT,
              separator: str | None = ", ", prior_weight: float = PRIOR_WEIGHT, retrieval: Any = None,
              retrieval_weight: float = COSINE_WEIGHT) -> Reranked:
    """Score every candidate label as an answer to ``query`` (see the module docstring).

    ``runner``: a :class:`kgprobe.models.lm.CausalLMRunner` (batched, each prompt's state
    computed once and shared by every continuation). ``prompt`` must contain ``{query}``.
    ``retrieval``: the candidates' retrieval scores (cosines), added with ``retrieval_weight``.
    """
    names = score_names(query, labels, runner=runner, prompt=prompt, separator=separator,
                        prior=bool(prior_weight))
    return combine(names, prior_weight, retrieval=retrieval, retrieval_weight=retrieval_weight)
