"""A hidden-state critic: a linear probe on the LM's residual stream, as one more harvest signal.

After "The Internal State of an LLM Knows When It's Lying" (Azaria & Mitchell, 2023) and
"Inside-Out: Hidden Factual Knowledge in LLMs" (Gekhman et al., 2025): whether a statement is
true is often linearly readable from the LM's hidden states, even where its output probabilities
do not show it. Here the statements are the relation's prompt filled with a tuple, ``x = t.fill(e)``
(no few-shot prefix), and the feature is

    h(x) = H_l(x)[last real token]          causal LM   (the state that predicts what follows)
    h(x) = mean over real tokens of H_l(x)  masked LM   (no position sees the whole sentence alone)

with ``H_l`` the residual stream after layer ``l`` (``output_hidden_states[l]``, 0 = embeddings).

Training data: the seeds are the positives, corrupted seeds the negatives (:func:`negatives`: one
slot swapped to another seed's value of that slot, or to a value the search found for it). The
critic is an L2-regularised, class-balanced logistic regression on standardised features
``u = (h - mu) / sigma`` (``mu, sigma`` over positives and negatives):

    z(u) = w.u + b,   min_{w,b}  sum_i c_i log(1 + exp(-y_i z(u_i))) + l2/2 |w|^2,
    y_i = +-1,  c_i = n / (2 n_{class(i)})           (each class weighs n/2 in all)

(``l2`` is sklearn's ``1/C``; the bias is not penalised). The harvest's score of a tuple becomes

    score = base + w_c * z(u) / s,   s = std of z over the critic's own training set

where ``base`` is the harvest's own (log-probability-like) score and dividing by ``s`` puts the
critic's logit on a fixed scale, so one grid of weights ``w_c`` means the same for every fit.
``w_c`` is chosen by leave-one-out on the seeds (:func:`loo_weight`); ``w_c = 0`` when the critic
does not help the base score rank held-out seeds above their corruptions, and the prior
:data:`PRIOR_WEIGHT` when the seeds cannot tell (the base score already ranks each held-out seed
first, whatever the weight: the common case, as seeds are the easiest tuples there are).
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from kgprobe.harvest.relation import Template
from kgprobe.models.device import input_device
from kgprobe.models.lm import forward_parameters
from kgprobe.models.memory import OomHalving

Tuple = tuple[str, ...]
GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
#: ``w_c`` when leave-one-out cannot tell the weights apart (every weight ranks every held-out seed
#: exactly as ``w = 0`` does): the grid weight with the best mean precision@50 over the judged
#: suite with SmolLM2-135M (eval/results/relations.json ``critic_weight_sweep``: 0.852 at 0, 0.864
#: at 0.25, 0.859 at 0.5, 0.849 at 1, 0.823 at 2, 0.792 at 4; with the harvest's earlier
#: ``prior_correction`` 0.5 it was 0.5: 0.833 / 0.847 / 0.849 / 0.840 / 0.839 / 0.835)
PRIOR_WEIGHT = 0.25


def default_layer(model) -> int:
    """About two thirds of the way up: ``hidden_states[(2 L) // 3]`` of ``L`` layers (20 of 30 on
    SmolLM2-135M). The lying-probe paper finds the middle-to-upper layers best (its 20th of 32 beat
    the 16th, 24th, 28th and the last); the last layers specialise in the next token rather than
    in the statement."""
    layers = getattr(model.config, "num_hidden_layers", None)
    if layers is None:
        raise ValueError("the model's config has no num_hidden_layers: pass layer=")
    return (2 * int(layers)) // 3


def is_masked_lm(model) -> bool:
    """A BERT/RoBERTa-like encoder (``...ForMaskedLM``) rather than a causal LM."""
    return type(model).__name__.endswith("ForMaskedLM")


@torch.inference_mode()
def hidden_states(model, tokenizer, texts: list[str], *, layer: int | Sequence[int] | None = None,
                  batch_size: int = 32, memory: OomHalving | None = None) -> torch.Tensor:
    """``[N, d]`` float32 features on the CPU, one row per text (``d`` times the number of layers
    when ``layer`` is a list: their states concatenated). Causal LM: the state at the last real
    token; masked LM: the mean over real tokens (special tokens included).

    Each text is encoded alone (with the special tokens the tokenizer adds by default); batches of
    similar lengths are right-padded and the padding masked out, so a text's state does not depend
    on its batch (up to float rounding), nor on the tokenizer's padding side or pad token.
    A batch that runs out of memory is halved and retried; ``memory`` (a harvest passes its LM's)
    keeps that halving for later batches, the LM's too (both share one device), and notes it.
    """
    layers = [default_layer(model)] if layer is None else [layer] if isinstance(layer, int) else list(layer)
    if not texts:
        width = int(model.config.hidden_size) * len(layers)
        return torch.zeros((0, width))
    device, mean = input_device(model), is_masked_lm(model)
    # only the hidden states are read: one position of logits instead of [batch, length, vocab]
    extra = {"logits_to_keep": 1} if "logits_to_keep" in forward_parameters(model) else {}
    encoded = [list(tokenizer(t)["input_ids"]) for t in texts]
    if any(not e for e in encoded):
        raise ValueError("a text encodes to no tokens")
    order = sorted(range(len(texts)), key=lambda i: (len(encoded[i]), i))
    rows: list[torch.Tensor | None] = [None] * len(texts)

    def run(idx: Sequence[int]) -> None:
        width = max(len(encoded[i]) for i in idx)
        ids = torch.zeros((len(idx), width), dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, :len(encoded[i])] = 1
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True,
                    **extra)
        states = out.hidden_states
        picked = []
        for lay in layers:
            h = states[lay].float().cpu()
            if mean:
                picked.append((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
            else:
                picked.append(h[torch.arange(len(idx)), mask.sum(1) - 1])
        feats = torch.cat(picked, 1)
        for row, i in enumerate(idx):
            rows[i] = feats[row]

    halving = memory or OomHalving(batch_size, device=device, what="hidden-state batch")
    halving.run(run, order, batch_size=min(batch_size, halving.batch_size))
    return torch.stack(rows)  # type: ignore[arg-type]


def negatives(seeds: list[Tuple], pool: dict[int, list[str]], *, per_seed: int, seed: int) -> list[list[Tuple]]:
    """Per seed ``i``, up to ``per_seed`` corrupted copies, alternating between

    (a) one slot swapped to another seed's value of that slot (the next seeds first, cyclically;
        every other seed in turn, every slot), and
    (b) one slot, in turn, set to a value drawn from ``pool[slot]`` with ``random.Random(seed)``.

    None equals a seed tuple (compared case-insensitively) or repeats; the seeds are visited in
    order with one generator, so the result is a function of the arguments.
    """
    rng = random.Random(seed)
    truth = {tuple(e.casefold() for e in s) for s in seeds}
    arity = len(seeds[0]) if seeds else 0
    values = {j: list(dict.fromkeys(pool.get(j, []))) for j in range(arity)}
    result = []
    for i, s in enumerate(seeds):
        swaps = [s[:j] + (seeds[(i + k) % len(seeds)][j],) + s[j + 1:]
                 for k in range(1, len(seeds)) for j in range(arity)]
        drawn = []
        for n in range(4 * per_seed if any(values.values()) else 0):
            j = n % arity
            if values[j]:
                drawn.append(s[:j] + (rng.choice(values[j]),) + s[j + 1:])
        picked: list[Tuple] = []
        seen = set(truth)
        sources = [iter(swaps), iter(drawn)]
        while len(picked) < per_seed and sources:
            for src in list(sources):
                for t in src:
                    key = tuple(e.casefold() for e in t)
                    if key not in seen:
                        seen.add(key)
                        picked.append(t)
                        break
                else:
                    sources.remove(src)
                if len(picked) == per_seed:
                    break
        result.append(picked)
    return result


@dataclass(frozen=True)
class Critic:
    """A fitted probe: ``logit(h) = w . (h - mean) / std + bias``; ``scale`` is the std of the
    logit over the training set (:meth:`standardised` divides by it)."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: float
    scale: float

    def logit(self, features: torch.Tensor) -> torch.Tensor:
        u = (features.double() - self.mean) / self.std
        return (u @ self.weight + self.bias).float()

    def standardised(self, features: torch.Tensor) -> torch.Tensor:
        return self.logit(features) / self.scale


def fit_critic(pos: torch.Tensor, neg: torch.Tensor, *, l2: float = 1.0, seed: int = 0) -> Critic:
    """Class-balanced, L2-regularised logistic regression (see the module docstring), solved by
    full-batch L-BFGS in float64 on the CPU from zero. Nothing is drawn, so the fit is a function
    of the data (``seed`` is there for a solver that would draw; torch's global generator is left
    alone)."""
    x = torch.cat([pos, neg]).double().cpu()
    y = torch.cat([torch.ones(len(pos)), -torch.ones(len(neg))]).double()
    c = torch.cat([torch.full((len(pos),), len(x) / (2 * len(pos))),
                   torch.full((len(neg),), len(x) / (2 * len(neg)))]).double()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    u = (x - mean) / std
    params = torch.zeros(u.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=1, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = u @ params[:-1] + params[-1]
        loss = (c * torch.nn.functional.softplus(-y * z)).sum() + 0.5 * l2 * params[:-1].square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    w, b = params[:-1].detach(), float(params[-1].detach())
    scale = float((u @ w + b).std(unbiased=False))
    return Critic(mean, std, w, b, scale if scale > 1e-12 else 1.0)


def reciprocal_rank(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """``1 / rank`` of the score ``pos`` among ``pos`` and ``neg`` (ties count half)."""
    return 1.0 / (1 + float((neg > pos).sum()) + 0.5 * float((neg == pos).sum()))


def _keep(tuples: list[Tuple], held_out: Tuple) -> torch.Tensor:
    """Which of ``tuples`` share no entity with ``held_out`` (case-insensitively)."""
    names = {e.casefold() for e in held_out}
    return torch.tensor([not names & {e.casefold() for e in t} for t in tuples], dtype=torch.bool)


def _gain(rr: list[float], base: list[float]) -> tuple[float, float]:
    """Mean and standard error of the per-seed differences ``rr - base``."""
    d = torch.tensor(rr, dtype=torch.float64) - torch.tensor(base, dtype=torch.float64)
    if len(d) < 2:
        return (float(d.mean()) if len(d) else 0.0), 0.0
    return float(d.mean()), float(d.std() / len(d) ** 0.5)


def loo_weight(*, pos_feats: torch.Tensor, neg_feats: list[torch.Tensor], pos_base: torch.Tensor,
               neg_base: list[torch.Tensor], grid: Sequence[float] = GRID, l2: float = 1.0, seed: int = 0,
               seeds: list[Tuple] | None = None, neg_tuples: list[list[Tuple]] | None = None,
               min_t: float = 2.0, prior: float = PRIOR_WEIGHT) -> tuple[float, list[dict]]:
    """The critic's weight ``w_c`` in ``base + w_c * z / s``, chosen by leave-one-out on the seeds.

    A harvest has about five seeds and no other labelled data, so the critic cannot be judged on
    the data it is fitted on (with ``d`` in the hundreds and tens of examples it separates them
    perfectly) and there is none to hold out. Leave-one-out uses every seed once as the test: for
    held-out seed ``i``, the critic is fitted on the other seeds and their negatives only (nothing
    derived from seed ``i``), standardised by its own training logits' std ``s``, and seed ``i`` is
    ranked among itself and its negatives under ``base + w * z / s`` for each ``w`` in ``grid``.
    The weight with the best mean reciprocal rank wins; ties go to the smallest weight, so ``0``
    wins when the critic adds nothing. Five seeds make that argmax noisy (one seed moving from rank
    2 to 1 is +0.1 MRR, and pure-noise features do that for some ``w`` most of the time), so a
    weight above 0 competes only if its per-seed gain over ``0``, ``g_i = RR_i(w) - RR_i(0)``, has
    ``mean(g) > min_t * se(g)`` (``se = std(g) / sqrt(S)``; ``min_t = 0``: any gain). On synthetic
    data with 5 seeds and 8 negatives each, ``min_t = 2`` kept noise features out 40 times in 40
    when the base score was informative (3 in 20 picked when it was noise too) and let features
    carrying the label in 20 times in 20; ``min_t = 1`` let noise in about half the time.

    When no grid weight changes any held-out seed's rank (:func:`seeds_tell_nothing`: typically the
    base score ranks every seed first, whatever the weight), the seeds say nothing about the critic
    and ``prior`` (:data:`PRIOR_WEIGHT`) is returned instead of 0.

    Returns the weight and one row per grid weight ``{weight, mrr, gain, gain_se}``, then
    ``{weight: "base", mrr}`` (the base score alone) and ``{weight: "critic", mrr}`` (the critic
    alone).

    With ``seeds`` and ``neg_tuples`` (the tuples behind ``neg_feats``), fold ``i`` also drops the
    other seeds' negatives that contain one of seed ``i``'s entities: swapping builds them from seed
    ``i`` (``(Paris, Japan)`` from ``(Tokyo, Japan)``), and a critic that has seen ``Paris`` only in
    negatives ranks the held-out ``(Paris, France)`` low for a reason no candidate shares.
    """
    n = len(pos_feats)
    if n < 2:
        raise ValueError("leave-one-out needs at least two seeds")
    rr = {w: [] for w in grid}
    critic_only = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        train_neg = [neg_feats[j][_keep(neg_tuples[j], seeds[i])] if seeds and neg_tuples else neg_feats[j]
                     for j in others]
        train_neg = [f for f in train_neg if len(f)]
        if not train_neg or not len(neg_feats[i]):
            continue
        critic = fit_critic(pos_feats[others], torch.cat(train_neg), l2=l2, seed=seed)
        zp, zn = critic.standardised(pos_feats[i:i + 1])[0], critic.standardised(neg_feats[i])
        for w in grid:
            rr[w].append(reciprocal_rank(pos_base[i] + w * zp, neg_base[i] + w * zn))
        critic_only.append(reciprocal_rank(zp, zn))
    mrr = {w: sum(v) / len(v) if v else 0.0 for w, v in rr.items()}
    gain = {w: _gain(rr[w], rr[0]) if 0 in rr else (0.0, 0.0) for w in grid}
    eligible = [w for w in grid if w == 0 or 0 not in rr or gain[w][0] > max(min_t * gain[w][1], 0)]
    best = min(eligible, key=lambda w: (-round(mrr[w], 12), w))
    base_rr = [reciprocal_rank(pos_base[i], neg_base[i]) for i in range(n) if len(neg_base[i])]
    table = [{"weight": float(w), "mrr": round(mrr[w], 6), "gain": round(gain[w][0], 6),
              "gain_se": round(gain[w][1], 6)} for w in grid]
    table.append({"weight": "base", "mrr": round(sum(base_rr) / max(len(base_rr), 1), 6)})
    table.append({"weight": "critic", "mrr": round(sum(critic_only) / max(len(critic_only), 1), 6)})
    return (float(prior) if seeds_tell_nothing(table) else float(best)), table


def seeds_tell_nothing(table: list[dict]) -> bool:
    """Whether :func:`loo_weight`'s table shows every grid weight ranking every held-out seed as
    ``w = 0`` does (each per-seed gain zero: mean and spread both 0)."""
    return all(row["gain"] == 0 and row["gain_se"] == 0 for row in table if not isinstance(row["weight"], str))


def critic_scores(model, tokenizer, *, template: Template, seeds: list[Tuple], candidates: list[Tuple],
                  seed_base: torch.Tensor, base_fn: Callable[[list[Tuple]], torch.Tensor],
                  pool: dict[int, list[str]], layer: int | Sequence[int] | None = None, per_seed: int = 8,
                  seed: int = 0, l2: float = 1.0, grid: Sequence[float] = GRID, min_t: float = 2.0,
                  batch_size: int = 32, memory: OomHalving | None = None) -> tuple[torch.Tensor, dict]:
    """The critic's term ``w_c * z / s`` for each candidate (zeros when ``w_c == 0``) and a
    JSON-serialisable report ``{layer, weight, weight_from, table, n_pos, n_neg, train_accuracy, logits}``
    (``logits``: each candidate's ``z / s``).

    ``seed_base``: the harvest's own score of each seed; ``base_fn(tuples)``: the same score for
    other tuples (here the negatives). Texts are ``template.fill(t)``; the features of seeds,
    negatives and candidates come from one batched :func:`hidden_states` call.
    """
    negs = negatives(seeds, pool, per_seed=per_seed, seed=seed)
    flat = [t for ns in negs for t in ns]
    layer = default_layer(model) if layer is None else layer
    feats = hidden_states(model, tokenizer, [template.fill(t) for t in [*seeds, *flat, *candidates]],
                          layer=layer, batch_size=batch_size, memory=memory)
    pos_feats, neg_all, cand_feats = feats.split([len(seeds), len(flat), len(candidates)])
    sizes = [len(ns) for ns in negs]
    base_all = base_fn(flat).float().cpu() if flat else torch.zeros(0)
    weight, table = loo_weight(pos_feats=pos_feats, neg_feats=list(neg_all.split(sizes)),
                               pos_base=seed_base.float().cpu(), neg_base=list(base_all.split(sizes)),
                               grid=grid, l2=l2, seed=seed, seeds=seeds, neg_tuples=negs,
                               min_t=min_t)
    critic = fit_critic(pos_feats, neg_all, l2=l2, seed=seed)
    hits = torch.cat([critic.logit(pos_feats) > 0, critic.logit(neg_all) <= 0]).float().mean()
    z = critic.standardised(cand_feats)
    scores = weight * z if weight else torch.zeros(len(candidates))
    report = {"layer": layer if isinstance(layer, int) else list(layer), "weight": weight,
              "weight_from": "prior" if seeds_tell_nothing(table) else "leave-one-out", "table": table,
              "n_pos": len(seeds), "n_neg": len(flat), "train_accuracy": round(float(hits), 6),
              # z / s per candidate, so another weight can be tried without refitting
              "logits": [round(float(x), 6) for x in z]}
    return scores, report
