"""Hidden factual knowledge: does a linear probe on hidden states rank a fact's true option first
where the LM's own likelihood does not? (after Gekhman et al. 2025, "Inside-Out: Hidden Factual
Knowledge in LLMs").

A fact of a :class:`~kgprobe.probe.fact_sets.FactSet` gives ``k + 1`` statements (the true one
first, :func:`kgprobe.probe.statements.fill`). One causal-LM pass (:func:`score_causal`) gives,
per statement, its log-likelihood (the LM's *external* score, ``statement`` span summed, BEAR's
default) and its hidden state ``h_l`` at each chosen layer ``l``: the statement's last token
(``feature="last"``) or the mean over the answer's tokens (``feature="answer"``).

**The probe** (one per layer): features standardised with the training statements' mean ``mu``
and standard deviation ``sd``, ``z = (h_l - mu) / sd``, then logistic regression

    p(true | z) = sigmoid(w . z + b)
    minimise  sum_i c_i * BCE(w . z_i + b, y_i)  +  l2 / 2 * |w|^2,    c_i = 1 / (2 n_{y_i})

over the training statements (``y = 1`` for the true statement, 0 for the ``k`` alternatives;
``c`` gives both classes the same total weight, so ``k`` alternatives do not swamp the one true
statement), full batch, L-BFGS from ``w = 0``: convex, no randomness, the same numbers on rerun.
The probe's score ``w . z + b`` ranks a fact's options as the LM's score does
(:func:`kgprobe.probe.facts.ranks`: ties share the rank); correct = the true option ranked first.

**The split.** Within each relation the facts are split by *subject* (a seeded permutation of
its distinct subject ids, so all facts of one subject fall on one side): ``1 - train_fraction``
of the subjects are test subjects, and of the training subjects ``validation_fraction`` validate.
Probes are fit on the fit part; the best layer is the one with the highest accuracy on the
validation facts (never the test facts); every accuracy reported is on the test facts. A subject
may be a test subject of one relation and a training subject of another (its label never
depends on the subject alone: each subject's statements hold one true and ``k`` false ones).
**Held-out relations**: a probe per layer trained on the training facts (fit and validation) of
the other relations, tested on the held-out relation's test facts, the same facts as above, so
the two accuracies differ only by whether the probe saw the relation.

**The gap** at the best layer, over the test facts (Inside-Out's hidden knowledge):

    hidden_only = P(probe correct, LM wrong)    lm_only = P(LM correct, probe wrong)
    both        = P(both correct)               neither = P(both wrong)

**Memory**: hidden states stay on the CPU, float32, both features: ``2 * n_statements * layers
* d * 4`` bytes. With ``layers=None`` every hidden state (0 = embeddings .. L = last layer) is
kept when that fits ``memory_budget_mb``, else every ``s``-th counting back from the last layer,
``s`` the smallest stride that fits; ``result["layer_plan"]`` says which.
"""
from __future__ import annotations

import math
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kgprobe.atomic import atomic_path
from kgprobe.errors import KgprobeError

if TYPE_CHECKING:
    import torch

    from kgprobe.probe.fact_sets import Fact, FactSet
    from kgprobe.probe.statements import StatementScores

FIT, VALIDATION, TEST = 0, 1, 2  # the parts of the split, per fact
PARTS = ("fit", "validation", "test")


class HiddenOptions(BaseModel):
    """What is probed, how facts are split and how the probes are trained."""

    model_config = ConfigDict(extra="forbid")
    layers: list[int] | None = Field(
        default=None, description="hidden-state indices (0 = embeddings, L = last layer); default every one, "
                                  "or a stride when they would not fit memory_budget_mb")
    memory_budget_mb: int = Field(default=4096, ge=1, description="most CPU memory the kept hidden states may take")
    feature: Literal["last", "answer"] = Field(
        default="last", description="the statement's last token's hidden state, or the mean over the answer's tokens")
    train_fraction: float = Field(default=0.5, gt=0, lt=1, description="fraction of each relation's subjects "
                                                                       "whose facts train (the rest test)")
    validation_fraction: float = Field(default=0.25, gt=0, lt=1, description="fraction of the training subjects "
                                                                             "that choose the best layer")
    seed: int = Field(default=0, description="seeds the split (training itself has no randomness)")
    l2: float = Field(default=1e-2, ge=0, description="weight decay l2 / 2 * |w|^2 on the probe's weights")
    steps: int = Field(default=200, ge=1, description="L-BFGS iterations per probe")
    held_out_relations: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="relations held out together for the cross-relation test (seeded choice); "
                                  "None: leave each relation out once")


# --------------------------------------------------------------------------- layers and memory
def plan_layers(requested: Sequence[int] | None, *, n_layers: int, d: int, n_statements: int,
                budget_mb: int) -> dict:
    """The hidden-state indices to keep and what they cost (see the module docstring)."""
    per_layer = 2 * n_statements * d * 4  # score_causal keeps both features, float32
    budget = budget_mb * 2 ** 20
    if requested is not None:
        bad = [i for i in requested if not 0 <= i <= n_layers]
        if bad:
            raise KgprobeError(f"layer {bad[0]} out of range: this model has hidden states 0..{n_layers} "
                               "(0 = embeddings)")
        layers, stride = sorted(set(requested)), None
        note = "the layers asked for" + (", over memory_budget_mb" if per_layer * len(layers) > budget else "")
    else:
        stride = max(1, math.ceil(per_layer * (n_layers + 1) / budget))
        layers = list(range(n_layers, -1, -stride))[::-1]  # the last layer always among them
        note = "every layer" if stride == 1 else (
            f"one layer in {stride}: all {n_layers + 1} would take {per_layer * (n_layers + 1) / 2 ** 20:.0f} MiB, "
            f"over memory_budget_mb={budget_mb}")
    return {"layers": layers, "stride": stride, "mib": round(per_layer * len(layers) / 2 ** 20, 1),
            "budget_mib": budget_mb, "note": note}


# --------------------------------------------------------------------------- the split
def split_facts(facts: Sequence[Fact], *, train_fraction: float, validation_fraction: float,
                seed: int) -> np.ndarray:
    """Per fact its part (FIT, VALIDATION or TEST): each relation's subjects permuted with a
    generator seeded by (seed, relation), the first test, the next validation, the rest fit."""
    part = np.zeros(len(facts), dtype=np.int64)
    relations = list(dict.fromkeys(f.relation for f in facts))
    for rel in relations:
        idx = [i for i, f in enumerate(facts) if f.relation == rel]
        subjects = list(dict.fromkeys(facts[i].subject_id for i in idx))
        n = len(subjects)
        if n < 3:
            raise KgprobeError(f"relation {rel!r} has facts of {n} subject(s): splitting them into fit, validation "
                               "and test facts needs at least 3 subjects per relation")
        n_test = min(n - 2, max(1, round((1 - train_fraction) * n)))
        n_val = min(n - n_test - 1, max(1, round(validation_fraction * (n - n_test))))
        rng = np.random.default_rng([seed, zlib.crc32(f"hidden-split:{rel}".encode("utf-8"))])
        order = rng.permutation(n)
        side = {subjects[j]: TEST if r < n_test else VALIDATION if r < n_test + n_val else FIT
                for r, j in enumerate(order.tolist())}
        part[idx] = [side[facts[i].subject_id] for i in idx]
    return part


def relation_folds(relations: Sequence[str], held_out: int | None, seed: int) -> list[list[str]]:
    """The held-out-relation folds: each relation alone (``held_out=None``), or one seeded choice
    of ``held_out`` relations; none with a single relation (nothing to train on)."""
    if len(relations) < 2:
        return []
    if held_out is None:
        return [[r] for r in relations]
    if held_out >= len(relations):
        raise KgprobeError(f"held_out_relations={held_out} leaves no relation to train on: the fact set has "
                           f"{len(relations)} ({', '.join(relations)})")
    picked = set(np.random.default_rng([seed, 1]).choice(len(relations), size=held_out, replace=False).tolist())
    return [[r for i, r in enumerate(relations) if i in picked]]


# --------------------------------------------------------------------------- the probe
def train_probe(x: torch.Tensor, y: torch.Tensor, *, l2: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-weighted, L2-regularised logistic regression on standardised ``x`` [layers, n, d]
    (or [n, d]), labels ``y`` [n] bool: (w [layers, d], b [layers]), full-batch L-BFGS from zero
    (deterministic). The layers' objectives are independent and summed: one optimiser, one batched
    matmul per step for all layers (per-layer Python loops cost ~7x more on a CPU), the same
    minimiser per layer as alone (each is strictly convex), reached to the tolerances below."""
    import torch
    import torch.nn.functional as F

    single = x.dim() == 2
    with torch.inference_mode(False), torch.enable_grad():
        x = (x[None] if single else x).clone()  # a clone: tensors made under inference mode cannot train
        n_pos = int(y.sum())
        if n_pos in (0, len(y)):
            raise KgprobeError("probe training needs true and false statements")
        target = y.to(x.dtype).expand(x.shape[0], -1)
        weight = torch.where(y, 0.5 / n_pos, 0.5 / (len(y) - n_pos)).to(x.dtype)
        params = torch.zeros((x.shape[0], x.shape[2] + 1), dtype=x.dtype, requires_grad=True)
        opt = torch.optim.LBFGS([params], lr=1, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-6, tolerance_change=1e-10)

        def closure():
            opt.zero_grad()
            logits = torch.bmm(x, params[:, :-1, None]).squeeze(-1) + params[:, -1:]  # [layers, n]
            loss = (weight * F.binary_cross_entropy_with_logits(logits, target, reduction="none")).sum()
            loss = loss + 0.5 * l2 * params[:, :-1].square().sum()
            loss.backward()
            return loss

        opt.step(closure)
    w = params.detach()
    return (w[0, :-1], w[0, -1]) if single else (w[:, :-1], w[:, -1])


def fit_and_rank(x: torch.Tensor, train: torch.Tensor, evals: Sequence[torch.Tensor], *, width: int, l2: float,
                 steps: int) -> list[torch.Tensor]:
    """Standardise ``x`` [n_statements, layers, d] (or [n_statements, d]) per layer on the
    statements of the facts ``train`` (bool [facts]), train a probe per layer there, and per fact
    in each mask of ``evals`` whether it ranks the true option first: [layers, facts] (or [facts])."""
    import torch

    from kgprobe.probe.statements import ranks

    single = x.dim() == 2
    x = x[:, None] if single else x
    rows = train.repeat_interleave(width)
    y = (torch.arange(len(x)) % width == 0)  # each fact's first statement is the true one
    fit = x[rows].transpose(0, 1)  # [layers, n, d]
    mu, sd = fit.mean(1, keepdim=True), fit.std(1, keepdim=True)
    # a constant feature (the embedding of the final "." at layer 0) is 0, not rounding noise / ~0
    sd = torch.where(sd > 1e-5 * mu.abs().clamp(min=1), sd, torch.inf)
    w, b = train_probe((fit - mu) / sd, y[rows], l2=l2, steps=steps)
    out = []
    for keep in evals:
        z = (x[keep.repeat_interleave(width)].transpose(0, 1) - mu) / sd
        scores = torch.bmm(z, w[:, :, None]).squeeze(-1) + b[:, None]  # [layers, statements]
        correct = (ranks(scores.reshape(-1, width)) == 1).view(len(w), -1)
        out.append(correct[0] if single else correct)
    return out


# --------------------------------------------------------------------------- the report
def _accuracy(correct: torch.Tensor, relation: np.ndarray, relations: Sequence[str]) -> dict:
    """``correct`` [..., facts] bool: the mean over facts overall and per relation (lists per layer
    when there is a layer axis)."""
    hits = correct.numpy()
    return {"overall": hits.mean(-1).tolist(),
            "relations": {r: hits[..., relation == r].mean(-1).tolist() for r in relations if (relation == r).any()}}


def _gap(probe: torch.Tensor, lm: torch.Tensor) -> dict:
    """The four cells of (probe correct, LM correct) as fractions of the facts."""
    n = max(1, len(probe))
    return {"hidden_only": int((probe & ~lm).sum()) / n, "lm_only": int((~probe & lm).sum()) / n,
            "both": int((probe & lm).sum()) / n, "neither": int((~probe & ~lm).sum()) / n, "facts": len(probe)}


def _gaps(probe: torch.Tensor, lm: torch.Tensor, relation: np.ndarray, relations: Sequence[str]) -> dict:
    return {"overall": _gap(probe, lm),
            "relations": {r: _gap(probe[relation == r], lm[relation == r]) for r in relations}}


# --------------------------------------------------------------------------- the run
def check_hidden(model, fact_set: FactSet, options: HiddenOptions) -> tuple[dict, np.ndarray, int, list[list[str]]]:
    """Everything that can be wrong before the LM runs: the model kind, the layers, the options
    per fact, the split, the held-out relations. Returns the layer plan, each fact's part, the
    options per fact and the held-out-relation folds."""
    archs = [type(model).__name__, *(getattr(model.config, "architectures", None) or [])]
    if any("MaskedLM" in a for a in archs):
        raise KgprobeError(f"{archs[0]} is a masked LM: hidden-state probing is for causal LMs here (the states "
                           "of a statement's last token and answer, read in one left-to-right pass)")
    facts = fact_set.facts
    widths = {len(f.options) for f in facts}
    if len(widths) > 1:
        raise KgprobeError(f"facts offer different numbers of options ({sorted(widths)}): build the fact set "
                           "with one k")
    part = split_facts(facts, train_fraction=options.train_fraction,
                       validation_fraction=options.validation_fraction, seed=options.seed)
    width = widths.pop()
    plan = plan_layers(options.layers, n_layers=model.config.num_hidden_layers, d=model.config.hidden_size,
                       n_statements=len(facts) * width, budget_mb=options.memory_budget_mb)
    folds = relation_folds(list(dict.fromkeys(f.relation for f in facts)), options.held_out_relations, options.seed)
    return plan, part, width, folds


def score_facts(model, tokenizer, fact_set: FactSet, layers: Sequence[int], *, batch_size: int | str,
                progress: bool):
    """One pass: every option's statement, its log-likelihood and hidden states."""
    from tqdm.auto import tqdm

    from kgprobe.probe.statements import score_causal

    statements = fact_set.option_statements()
    with tqdm(total=len(statements), unit="fact", desc="probe hidden", disable=not progress) as bar:
        return score_causal(model, tokenizer, statements, batch_size=batch_size, layers=layers, progress=bar.update)


def probe_hidden(model, tokenizer, fact_set: FactSet, *, options: HiddenOptions | None = None,
                 batch_size: int | str = "auto", progress: bool = True,
                 scores: StatementScores | None = None) -> dict:
    """Probe every chosen layer of a loaded causal LM on ``fact_set``; the JSON-ready report.
    ``scores``: :func:`score_facts` of ``fact_set`` with the planned layers, when the caller made
    that pass already (``kgprobe probe facts --hidden`` shares it with the fact probe)."""
    import torch

    from kgprobe.probe.statements import ranks

    options = options or HiddenOptions()
    if not fact_set.facts:
        raise KgprobeError(f"fact set {fact_set.name!r} has no facts")
    plan, part, width, folds = check_hidden(model, fact_set, options)
    start = time.perf_counter()
    if scores is None:
        scores = score_facts(model, tokenizer, fact_set, plan["layers"], batch_size=batch_size, progress=progress)
    scored = time.perf_counter()
    feats = scores.hidden_last if options.feature == "last" else scores.hidden_answer
    lm_correct = ranks(scores.score("statement", "sum").view(-1, width)) == 1
    relation = np.array([f.relation for f in fact_set.facts])
    relations = list(dict.fromkeys(relation.tolist()))
    fit, val, test = (torch.from_numpy(part == p) for p in (FIT, VALIDATION, TEST))
    train_kw = {"width": width, "l2": options.l2, "steps": options.steps}
    val_correct, test_correct = fit_and_rank(feats, fit, [val, test], **train_kw)  # [layers, facts] each
    held = _held_out(feats, relation, folds, fit | val, test, train_kw)
    best = int(val_correct.double().mean(1).argmax())  # the first of equals: the shallower layer
    rel_test = relation[part == TEST]
    result = {
        "fact_set": fact_set.name, "options": options.model_dump(), "layer_plan": plan, "layers": plan["layers"],
        "chance_accuracy": 1 / width,
        "split": {p: {"facts": int((part == i).sum()),
                      "subjects": len({f.subject_id for f, q in zip(fact_set.facts, part) if q == i})}
                  for i, p in enumerate(PARTS)},
        "lm_accuracy": _accuracy(lm_correct[test], rel_test, relations),
        "probe_accuracy": _accuracy(test_correct, rel_test, relations),
        "validation_accuracy": val_correct.double().mean(1).tolist(),
        "best_layer": {"layer": plan["layers"][best], "index": best, "chosen_on": "validation facts (a subject "
                       "split of the training facts; the probes are fit on the rest)",
                       "validation_accuracy": float(val_correct[best].double().mean()),
                       "test_accuracy": float(test_correct[best].double().mean())},
        "gap": _gaps(test_correct[best], lm_correct[test], rel_test, relations),
        "held_out_relations": held,
    }
    result["seconds"] = {"scoring": round(scored - start, 3), "probes": round(time.perf_counter() - scored, 3)}
    return result


def _held_out(feats: torch.Tensor, relation: np.ndarray, folds: list[list[str]], train: torch.Tensor,
              test: torch.Tensor, train_kw: dict) -> dict:
    """Per fold and layer: a probe trained on the other relations' training facts, tested on the
    fold's relations' test facts; accuracy per layer overall (pooled) and per relation."""
    import torch

    if not folds:
        return {"folds": [], "accuracy": None, "note": "one relation: nothing to hold out"}
    correct = torch.zeros((feats.shape[1], len(relation)), dtype=torch.bool)
    tested = torch.zeros(len(relation), dtype=torch.bool)
    for fold in folds:
        inside = torch.from_numpy(np.isin(relation, fold))
        keep = test & inside
        (correct[:, keep],) = fit_and_rank(feats, train & ~inside, [keep], **train_kw)
        tested |= keep
    rel = relation[tested.numpy()]
    order = list(dict.fromkeys(r for fold in folds for r in fold))
    return {"folds": folds, "accuracy": _accuracy(correct[:, tested], rel, order)}


def plot_hidden(result: dict, path: str | Path) -> None:
    """Accuracy per layer: the probe on held-out facts and on held-out relations, the LM's own
    accuracy (horizontal), chance (dashed), the best layer (dotted)."""
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    layers = result["layers"]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.18 * len(layers) + 3), 4.2))
    ax.plot(layers, result["probe_accuracy"]["overall"], marker="o", ms=3, label="probe, held-out facts")
    held = result["held_out_relations"]["accuracy"]
    if held is not None:
        ax.plot(layers, held["overall"], marker="s", ms=3, label="probe, held-out relations")
    ax.axhline(result["lm_accuracy"]["overall"], color="#c44e52", label="LM likelihood")
    ax.axhline(result["chance_accuracy"], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.axvline(result["best_layer"]["layer"], color="grey", linestyle=":", linewidth=1, label="best layer (val.)")
    ax.set_ylim(0, 1)
    ax.set_xlabel("hidden state (0 = embeddings)")
    ax.set_ylabel("accuracy (true option ranked first)")
    ax.set_title(f"{result['fact_set']}: {result['split']['test']['facts']} test facts, "
                 f"feature {result['options']['feature']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
