"""Several LMs harvesting one relation together: each proposes candidates, every one scores them all.

With ``--ensemble`` the main LM (``--model``) is joined by other LMs, the *experts* ``m = 1..M``
(the main LM is the first). Each weighs the prompts on the seeds by itself (weights ``w_mt``
summing to 1 per expert) and searches with them; the candidates are the union of the searches,
and each is rescored under every expert's prompts. Its score is the mean of the experts' weighted
log-probability-like scores, a product of experts (Hinton, 2002) over their distributions:

    S_i = (1 / M) sum_m sum_t w_mt s_mt(i)

so a tuple ranks high only where every LM finds it likely. (SmolLM2-135M with Gemma3-270M, mean
precision@50 by default: 0.895 on the 15-relation suite against 0.859 and 0.845 for each alone,
0.592 on the 13 held-out relations against 0.549 and 0.583; ``docs/harvest.md``,
``eval/results/relations_ensemble.json``, ``eval/results/relations_heldout_ensemble.json``.)
Everything that reads hidden states or needs one LM (the critic, symmetry, written types,
paraphrases of the main LM) uses the main LM; the critic's base score is :func:`scorer`'s
ensemble score.

The other LMs rescore only the *pool*: the ``N`` candidates the main LM ranks first by itself,
and what it alone would output at ``top_k = N`` (:func:`pool`; ``N`` = ``ensemble_pool``, by
default three times ``top_k``). A candidate the main LM puts below them seldom reaches the output,
and the other LMs' rescoring, most of an ensemble's time, shrinks to about ``N`` candidates.

An expert's prompts, search and rescoring checkpoints live in ``OUT/experts/{m}/`` (``m`` from 1),
so a killed ensemble run resumes like a single one. Columns of the main LM keep the prompt as
their label; an expert's are ``"{model}: {prompt}"``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from kgprobe.harvest.relation import Template

#: subfolder of a run directory that holds the experts' checkpoints (``experts/1``, ...)
EXPERTS_DIR = "experts"


@dataclass
class Expert:
    """One LM of a harvest: its model, scoring backend, weighted prompts and checkpoint folder."""

    name: str  # the model as the options name it
    model: object
    tokenizer: object
    backend: object
    dir: Path  # where its prompts.json, search_*.jsonl and rescore.jsonl go
    main: bool  # the run's --model (its columns are labelled by the prompt alone)
    weighted: list[tuple[Template, float]] | None = None  # set once its prompts are weighed

    def label(self, template: Template) -> str:
        return template.prompt if self.main else f"{self.name}: {template.prompt}"


def ensemble_problem(model: str, ensemble: list[str]) -> str | None:
    """What is wrong with ``ensemble`` as the other LMs of a harvest by ``model`` (None: nothing)."""
    if model in ensemble:
        return f"{model} is the main model already (name the other LMs)"
    if len(set(ensemble)) != len(ensemble):
        return "an LM is named twice"
    return None


def expert_dir(out: Path, index: int) -> Path:
    """Checkpoint folder of the ``index``-th extra LM (1-based; the main LM's is ``out`` itself)."""
    return Path(out) / EXPERTS_DIR / str(index)


def columns(experts: list[Expert]) -> list[tuple[str, Template, float]]:
    """``(label, template, weight)`` of every scored column, expert by expert: each expert's prompt
    weights divided by the number of experts, so all the weights sum to 1 and the weighted sum of
    the columns is :math:`S_i` above."""
    share = 1.0 / len(experts)
    return [(e.label(t), t, w * share) for e in experts for t, w in e.weighted]


def pool(ranked: list[int], kept: list[int], size: int) -> list[int]:
    """The candidates the other LMs rescore, in candidate order: the ``size`` first of the main LM's
    own order (``ranked``, :func:`kgprobe.harvest.ranking.final_ranking` on its scores alone) and
    its whole output at ``top_k = size`` (``kept``: deeper where caps skip candidates, so a
    functional relation still fills ``top_k``). Its ranking breaks ties by the tuple, so a resumed
    run picks the same pool."""
    return sorted(set(ranked[:size]) | set(kept[:size]))


def scorer(experts: list[Expert]):
    """``(tuples, leave_out) -> S``: the ensemble's plain weighted score (each seed scored without
    itself in the few-shot prefix when ``leave_out`` names it)."""
    cols = [(e.backend, t, w / len(experts)) for e in experts for t, w in e.weighted]

    def score(tuples: list[tuple[str, ...]], leave_out: int | None = None) -> torch.Tensor:
        return sum(w * backend.score(t, tuples, leave_out) for backend, t, w in cols)

    return score
