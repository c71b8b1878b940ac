"""Null-controlled tests of concept vectors: does damaging a concept's vector hurt its concept more
than damaging a random vector of the same layer and norm does?

For concept ``c`` with questions ``Q`` (cloze items the intact model answers) and unrelated
questions ``U``, an intervention on a set ``S`` of value vectors changes each answer's teacher-forced
log-probability ``logp(a | x) = sum_t log p(a_t | x, a_<t)`` by ``D_S(q) = logp_S(q) - logp(q)``.
The effect is continuous and contrasts the two sets:

    e(S) = mean_{q in U} D_S(q) - mean_{q in Q} D_S(q)

(positive: the concept's answers lose more than unrelated ones). Interventions, on every token:

    zero    a_j <- 0                           (the neuron's value vector v_j removed)
    mean    a_j <- mu_j                        (mu_j: its mean activation over the questions' tokens)
    noise   v_j <- v_j + eps, eps ~ N(0, s^2 I), s = noise_ratio * |v_j| / sqrt(d)

**Null.** ``K`` random sets ``R_1..R_K`` of the same size, each member drawn from the same layer as
its counterpart among the columns whose norm is within ``norm_tolerance`` (relative) of its norm,
never one of the concept's candidates, get the same intervention. The Monte-Carlo p-value is

    p = (1 + #{k : e(R_k) >= e(S)}) / (1 + K)

drawn sequentially (Besag & Clifford 1991): sampling stops at the draw ``k`` where the
``min_exceed = h``-th null effect reaches ``e(S)``, and then ``p = h / k``, so a vector no better
than chance costs about ``h`` draws and only promising ones get all ``K``. When fewer than ``h`` of the ``K`` draws
reach ``e(S)``, the tail of the null is extrapolated with a generalised Pareto distribution fitted to
its top exceedances (Knijnenburg et al. 2009): ``p = (N_exc / K) (1 - F_GPD(e(S) - t))``, ``t`` the
exceedance threshold, which resolves p below ``1 / K`` (the Monte-Carlo value is kept too). Across
concepts, :func:`adjust` gives Benjamini-Hochberg (FDR) or Holm (FWER) adjusted p-values.

**Speed.** Layers below the set's lowest layer compute the same residual stream for every
intervention, so it is captured once (``blocks.{l}.hook_resid_pre``) and each pass feeds it as
``inputs_embeds`` through only layers ``l..L-1`` (earlier layers replaced by identities for the
pass), many interventions per pass as replicas in the batch dimension; the unembedding runs at the
answer positions only. Whether the model can be entered that way is checked on the intact model
(GPT-2 adds position embeddings to ``inputs_embeds``, so it runs whole).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import torch
from torch import nn

from kgprobe.errors import KgprobeError
from kgprobe.models.device import input_device
from kgprobe.models.lm import kept_logits
from kgprobe.probe.hooks import arch_of, capture, edit, value_vectors

INTERVENTIONS = ("zero", "mean", "noise")
CORRECTIONS = ("bh", "holm")
Target = tuple[int, int]  # (layer, column of the down-projection)


@dataclass(frozen=True)
class NullParams:
    intervention: Literal["zero", "mean", "noise"] = "zero"
    noise_ratio: float = 1.0          # noise norm / column norm (intervention "noise")
    null_size: int = 200              # K: most null draws per candidate
    min_exceed: int = 10              # h: stop once this many null effects reach the observed one
    norm_tolerance: float = 0.1       # null columns' norm within this fraction of the candidate's
    replicas_per_pass: int = 32       # interventions per forward pass
    tail: Literal["gpd", "none"] = "gpd"
    seed: int = 0

    def check(self) -> None:
        if self.intervention not in INTERVENTIONS:
            raise KgprobeError(f"intervention {self.intervention!r}: expected one of {', '.join(INTERVENTIONS)}")
        if self.null_size < 1 or self.min_exceed < 1 or self.replicas_per_pass < 1:
            raise KgprobeError("null_size, min_exceed and replicas_per_pass must be >= 1")
        if not 0 < self.norm_tolerance or not 0 < self.noise_ratio:
            raise KgprobeError("norm_tolerance and noise_ratio must be > 0")


class _Skip(nn.Module):
    """A decoder layer that passes the residual stream through: the layers below the intervention."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@contextlib.contextmanager
def _skipping(arch, below: int) -> Iterator[None]:
    layers = arch.layers
    saved = [layers[i] for i in range(below)]
    try:
        for i in range(below):
            layers[i] = _Skip()
        yield
    finally:
        for i, layer in enumerate(saved):
            layers[i] = layer


class InterventionRunner:
    """Answer log-probs of fixed cloze items under many interventions of value vectors at once.

    ``items`` (``.prompt``, ``.answer``) become ``few_shot + prompt`` then ``" " + answer`` (ids
    tokenised apart, as :mod:`kgprobe.probe.qa` does), right-padded into one batch."""

    def __init__(self, model, tokenizer, items: Sequence, *, few_shot: str = ""):
        if not items:
            raise KgprobeError("no questions to measure an intervention on")
        self.model, self.arch, self.device = model, arch_of(model), input_device(model)
        rows = []
        for it in items:
            prompt = tokenizer(few_shot + it.prompt)["input_ids"]
            answer = tokenizer(" " + it.answer, add_special_tokens=False)["input_ids"]
            if not answer:
                raise KgprobeError(f"answer {it.answer!r} has no tokens")
            rows.append((prompt, answer))
        width = max(len(p) + len(a) for p, a in rows)
        self.ids = torch.zeros((len(rows), width), dtype=torch.long)
        self.mask = torch.zeros((len(rows), width), dtype=torch.long)
        self.keep = torch.zeros((len(rows), width), dtype=torch.bool)  # positions predicting an answer token
        for r, (p, a) in enumerate(rows):
            self.ids[r, : len(p) + len(a)] = torch.tensor(p + a)
            self.mask[r, : len(p) + len(a)] = 1
            self.keep[r, len(p) - 1: len(p) + len(a) - 1] = True
        self.target = torch.cat([torch.tensor(a) for _, a in rows])
        self.owner = torch.cat([torch.full((len(a),), r) for r, (_, a) in enumerate(rows)])
        self.positions = (self.mask.cumsum(1) - 1).clamp(min=0)
        self._resid: dict[int, torch.Tensor] = {}
        self._skip_ok: dict[int, bool] = {}
        with torch.inference_mode():
            self.base = self._score(self.ids.to(self.device), None, self.ids.shape[0])
        self.mean_act: dict[int, torch.Tensor] = {}

    def _score(self, input_ids, inputs_embeds, n_rows: int) -> torch.Tensor:
        """[n_rows] answer log-probs; rows are replicas of the items (replica-major)."""
        reps = n_rows // self.ids.shape[0]
        inputs = {"attention_mask": self.mask.repeat(reps, 1).to(self.device),
                  "position_ids": self.positions.repeat(reps, 1).to(self.device)}
        inputs.update({"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds})
        _, logits = kept_logits(self.model, self.keep.repeat(reps, 1), **inputs)
        logits = logits.float()
        target = self.target.repeat(reps).to(logits.device)
        token_lp = logits.gather(-1, target[:, None]).squeeze(-1) - logits.logsumexp(-1)
        owner = (self.owner.repeat(reps) + torch.arange(reps).repeat_interleave(len(self.owner)) * self.ids.shape[0])
        return torch.zeros(n_rows, dtype=torch.float64).index_add_(0, owner, token_lp.double().cpu())

    def _entry(self, layer: int) -> bool:
        """Capture the residual stream entering ``layer`` once, and check that feeding it with the
        layers below skipped gives the intact model's scores (else passes run whole)."""
        if layer not in self._skip_ok:
            with torch.inference_mode():
                with capture(self.model, [f"blocks.{layer}.hook_resid_pre"]) as got:
                    self._score(self.ids.to(self.device), None, self.ids.shape[0])
                self._resid[layer] = got[f"blocks.{layer}.hook_resid_pre"]
                with _skipping(self.arch, layer):
                    again = self._score(None, self._resid[layer], self.ids.shape[0])
            self._skip_ok[layer] = bool(torch.allclose(again, self.base, atol=1e-3, rtol=1e-4))
        return self._skip_ok[layer]

    def mean_activation(self, layer: int) -> torch.Tensor:
        """mu [n_neurons]: each neuron's mean activation over the items' real tokens (intact model)."""
        if layer not in self.mean_act:
            with torch.inference_mode(), capture(self.model, [f"blocks.{layer}.mlp.hook_post"]) as got:
                self._score(self.ids.to(self.device), None, self.ids.shape[0])
            act = got[f"blocks.{layer}.mlp.hook_post"].float()
            m = self.mask.to(act.device)[..., None].float()
            self.mean_act[layer] = (act * m).sum((0, 1)) / m.sum()
        return self.mean_act[layer]

    def deltas(self, sets: Sequence[Sequence[Target]], *, params: NullParams, generator: torch.Generator
               ) -> torch.Tensor:
        """[len(sets), items]: ``D_S(q)`` for each intervention set ``S`` (one replica each)."""
        out = []
        for start in range(0, len(sets), params.replicas_per_pass):
            chunk = [list(s) for s in sets[start:start + params.replicas_per_pass]]
            out.append(self._pass(chunk, params, generator).reshape(len(chunk), -1) - self.base[None])
        return torch.cat(out)

    def _pass(self, chunk: list[list[Target]], params: NullParams, generator: torch.Generator) -> torch.Tensor:
        lowest = min(layer for s in chunk for layer, _ in s)
        q = self.ids.shape[0]
        edits = {}
        for layer in sorted({layer for s in chunk for layer, _ in s}):
            edits.update(_layer_edits(self, layer, [[j for lj, j in s if lj == layer] for s in chunk], q,
                                      params, generator))
        skip = self._entry(lowest) and lowest > 0  # checked on the intact model, before the edits
        with torch.inference_mode(), edit(self.model, edits):
            if skip:
                with _skipping(self.arch, lowest):
                    return self._score(None, self._resid[lowest].repeat(len(chunk), 1, 1), q * len(chunk))
            return self._score(self.ids.repeat(len(chunk), 1).to(self.device), None, q * len(chunk))


def _layer_edits(runner: InterventionRunner, layer: int, columns: list[list[int]], q: int, params: NullParams,
                 generator: torch.Generator) -> dict:
    """The hook edits of one layer for replicas whose columns there are ``columns[r]`` (maybe none):
    rows ``r * q .. r * q + q - 1`` belong to replica ``r``."""
    m = max(1, max(len(c) for c in columns))
    idx = torch.zeros((len(columns), m), dtype=torch.long)
    valid = torch.zeros((len(columns), m), dtype=torch.bool)
    for r, cols in enumerate(columns):
        idx[r, : len(cols)], valid[r, : len(cols)] = torch.tensor(cols, dtype=torch.long), True
    idx, valid = idx.repeat_interleave(q, 0), valid.repeat_interleave(q, 0)  # [rows, m]
    name = f"blocks.{layer}.mlp.hook_post"
    if params.intervention in ("zero", "mean"):
        mu = runner.mean_activation(layer) if params.intervention == "mean" else None

        def set_activation(a: torch.Tensor) -> torch.Tensor:
            at = idx.to(a.device)[:, None, :].expand(-1, a.shape[1], -1)
            old = a.gather(-1, at)
            new = torch.zeros_like(old) if mu is None else mu.to(a.device, a.dtype)[at]
            return a.scatter(-1, at, torch.where(valid.to(a.device)[:, None, :], new, old))
        return {name: set_activation}
    vectors = value_vectors(runner.model, layer).detach().float()  # [n_neurons, d]
    d = vectors.shape[1]
    per_replica = torch.randn((len(columns), m, d), generator=generator)
    scale = vectors.norm(dim=1)[idx[::q]] * params.noise_ratio / math.sqrt(d)  # [replicas, m]
    noise = (per_replica * scale[..., None] * valid[::q, :, None]).repeat_interleave(q, 0)  # [rows, m, d]
    kept: dict[str, torch.Tensor] = {}

    def read_activation(a: torch.Tensor) -> None:
        kept["a"] = a
        return None

    def add_noise(out: torch.Tensor) -> torch.Tensor:
        a = kept["a"]
        picked = a.gather(-1, idx.to(a.device)[:, None, :].expand(-1, a.shape[1], -1)).float()  # [rows, t, m]
        return out + torch.einsum("btm,bmd->btd", picked, noise.to(a.device)).to(out.dtype)
    return {name: read_activation, f"blocks.{layer}.hook_mlp_out": add_noise}


def effects(deltas: torch.Tensor, n_concept: int) -> torch.Tensor:
    """``e(S)`` per row of ``deltas`` [sets, items] whose first ``n_concept`` items are the concept's."""
    return deltas[:, n_concept:].mean(1) - deltas[:, :n_concept].mean(1)


def matched_pool(norms: torch.Tensor, column: int, *, tolerance: float, exclude: set[int], need: int) -> torch.Tensor:
    """Columns of one layer whose norm is within ``tolerance`` (relative) of ``column``'s, minus
    ``exclude``; the tolerance doubles until ``need`` columns qualify (or every column does)."""
    target = float(norms[column])
    allowed = torch.ones_like(norms, dtype=torch.bool)
    allowed[list(exclude | {column})] = False
    tol = tolerance
    while True:
        pool = torch.nonzero(allowed & ((norms - target).abs() <= tol * target)).squeeze(1)
        if len(pool) >= need or len(pool) == int(allowed.sum()):
            return pool
        tol *= 2


def gpd_tail_p(null: torch.Tensor, observed: float, *, exceedances: int | None = None) -> float | None:
    """Tail p-value ``P(E >= observed)`` from a generalised Pareto fit to the null's top
    exceedances (Knijnenburg et al. 2009): ``(N_exc / K) * (1 - F(observed - t))`` with ``t``
    halfway between the ``N_exc``-th and ``N_exc + 1``-th largest null values. ``N_exc`` is
    ``exceedances`` or a tenth of the null (at least 10); a fitted bounded tail (shape < 0) is
    replaced by the exponential one. None when the null is too small (< 50 draws), the observed
    value is not beyond ``t`` or the fit fails."""
    from scipy.stats import genpareto

    values = torch.sort(null.double(), descending=True).values
    k = len(values)
    n_exc = exceedances or max(10, k // 10)
    if k < 50 or n_exc >= k:
        return None
    t = float(values[n_exc - 1] + values[n_exc]) / 2
    excess = (values[:n_exc] - t).numpy()
    try:
        shape, _, scale = genpareto.fit(excess, floc=0.0)
    except (ValueError, RuntimeError, FloatingPointError):
        return None
    if not math.isfinite(shape) or not math.isfinite(scale) or scale <= 0:
        return None
    if shape < 0:
        # a bounded fitted tail would give p = 0 past its end point: an exponential tail (shape 0,
        # scale = mean excess, its maximum-likelihood fit) is the conservative choice there
        shape, scale = 0.0, float(excess.mean())
    if observed <= t:
        return None  # not in the tail: the Monte-Carlo value serves
    return float(n_exc / k * genpareto.sf(observed - t, shape, loc=0.0, scale=scale))


def monte_carlo_p(null: torch.Tensor, observed: float, *, min_exceed: int, complete: bool) -> float:
    """Besag-Clifford: ``h / k`` when the draws stopped at ``h`` exceedances after ``k`` draws,
    else ``(1 + g) / (1 + K)`` with ``g`` exceedances among all ``K`` draws."""
    g = int((null >= observed).sum())
    if not complete and g >= min_exceed:
        return g / len(null)
    return (1 + g) / (1 + len(null))


def adjust(pvalues: Sequence[float], *, method: str = "bh") -> list[float]:
    """Adjusted p-values: Benjamini-Hochberg ``min_{j >= i} m p_(j) / j`` (FDR) or Holm
    ``max_{j <= i} (m - j + 1) p_(j)`` (FWER), capped at 1, in the input order."""
    if method not in CORRECTIONS:
        raise KgprobeError(f"correction {method!r}: expected one of {', '.join(CORRECTIONS)}")
    p = torch.tensor(list(pvalues), dtype=torch.float64)
    m = len(p)
    if m == 0:
        return []
    order = torch.argsort(p, stable=True)
    ranked = p[order]
    i = torch.arange(1, m + 1, dtype=torch.float64)
    if method == "bh":
        adj = torch.flip(torch.cummin(torch.flip(ranked * m / i, [0]), 0).values, [0])
    else:
        adj = torch.cummax(ranked * (m - i + 1), 0).values
    out = torch.empty_like(adj)
    out[order] = adj.clamp(max=1.0)
    return out.tolist()


def null_sets(model, candidate: Sequence[Target], *, exclude: set[Target], params: NullParams,
              generator: torch.Generator) -> Iterator[list[Target]]:
    """Random norm-matched sets like ``candidate``: member ``i`` from ``candidate[i]``'s layer, among
    columns of about its norm, no column twice in a set and none of ``exclude`` (without replacement
    across draws while the pools last)."""
    pools, used = [], []
    for layer, column in candidate:
        norms = value_vectors(model, layer).detach().float().norm(dim=1)
        banned = {j for lj, j in exclude if lj == layer}
        pool = matched_pool(norms, column, tolerance=params.norm_tolerance, exclude=banned, need=params.null_size)
        pools.append(pool[torch.randperm(len(pool), generator=generator)].tolist())
        used.append(0)
    while True:
        draw: list[Target] = []
        for i, (layer, _) in enumerate(candidate):
            pool = pools[i]
            if used[i] == len(pool):  # the pool ran out: reshuffle and draw again (with replacement across draws)
                pools[i] = [pool[j] for j in torch.randperm(len(pool), generator=generator).tolist()]
                used[i] = 0
            pick = pools[i][used[i]]
            used[i] += 1
            if (layer, pick) in draw:
                continue
            draw.append((layer, pick))
        if len(draw) == len(candidate):
            yield draw


def null_test(runner: InterventionRunner, candidate: Sequence[Target], *, n_concept: int,
              exclude: set[Target] = frozenset(), params: NullParams = NullParams(), key: str = "") -> dict:
    """The candidate set's effect, its null draws (sequential, see the module docstring) and
    p-values. ``runner``'s first ``n_concept`` items are the concept's questions, the rest
    unrelated; ``key`` seeds the draws with ``params.seed`` (same key and seed: same result)."""
    params.check()
    candidate = [(int(layer), int(j)) for layer, j in candidate]
    generator = torch.Generator().manual_seed(_seed(params.seed, key))
    observed = float(effects(runner.deltas([candidate], params=params, generator=generator), n_concept)[0])
    draws = null_sets(runner.model, candidate, exclude=set(exclude) | set(candidate), params=params,
                      generator=generator)
    null: list[float] = []
    stopped = False
    while len(null) < params.null_size and not stopped:
        # the first pass holds just enough draws to stop on (most candidates are no better than
        # chance and stop there), later passes fill the batch
        take = min(params.min_exceed if not null else params.replicas_per_pass, params.null_size - len(null))
        sets = [next(draws) for _ in range(take)]
        null += effects(runner.deltas(sets, params=params, generator=generator), n_concept).tolist()
        hits = [i for i, v in enumerate(null) if v >= observed]
        if len(hits) >= params.min_exceed:
            # cut at the h-th exceedance: the draws after it in the same pass do not count, so the
            # p-value does not depend on how draws are grouped into passes
            null, stopped = null[: hits[params.min_exceed - 1] + 1], True
    values = torch.tensor(null, dtype=torch.float64)
    complete = not stopped
    p_mc = monte_carlo_p(values, observed, min_exceed=params.min_exceed, complete=complete)
    p_tail = (gpd_tail_p(values, observed) if params.tail == "gpd" and complete
              and int((values >= observed).sum()) < params.min_exceed else None)
    return {"vectors": [list(t) for t in candidate], "effect": observed, "draws": len(null),
            "exceed": int((values >= observed).sum()), "p_monte_carlo": p_mc,
            "p_tail": p_tail, "p": p_tail if p_tail is not None else p_mc,
            "null_mean": float(values.mean()), "null_std": float(values.std()) if len(values) > 1 else 0.0,
            "z": float((observed - values.mean()) / values.std()) if len(values) > 1 and values.std() > 0 else None,
            "null": [round(v, 6) for v in null]}


def _seed(seed: int, key: str) -> int:
    import zlib

    return (int(seed) * 1_000_003 + zlib.crc32(key.encode("utf-8"))) % (2**63 - 1)
