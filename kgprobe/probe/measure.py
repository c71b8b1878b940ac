"""Did the knowledge leave the model's answers, its weights, or both?

**Behavioural** (:func:`behavioural`): accuracy (teacher-forced greedy exact match) and mean summed
answer log-prob of the forget, retain and attack QA sets, via :func:`kgprobe.probe.qa.score_qa`.

**Intrinsic** (:func:`intrinsic`): for value vectors ``v`` (before) and ``v'`` (after),

    cosine  = v·v' / (|v| |v'|)            (0 when either is the zero vector)
    l2      = |v' - v|
    jaccard = |T(v) ∩ T(v')| / |T(v) ∪ T(v')|,  T = the top-k logit-lens tokens of a vector

each averaged over the concept vectors (``cosine``, ``l2``, ``jaccard_topk``) and over every
value vector of the layers that hold them (``layer_cosine``, ``layer_l2``, ``layer_jaccard``).

ConceptVectors' own token measures (Hong et al. 2024) read the vectors through the RAW lens
``R(v) = top-200 of v · W_U^T`` (no final norm), over the concept vectors only:

    jaccard_top200_raw  = |R(v) ∩ R(v')| / |R(v) ∪ R(v')|
    concept_token_share = |R(v') ∩ L1| / |L1|,   L1 = R(v) ∩ C

where ``C`` is the concept's token ids (:func:`kgprobe.probe.concepts.concept_token_ids`; the
original uses the tokens of the concept's Wikipedia text). ``concept_token_share`` is the
original's "related tokens rate": the share of the concept tokens among the top 200 before that
are still there after; it is None for a vector whose top 200 holds no concept token (L1 empty),
and the mean is over the other vectors (None when there are none).
The top-k tokens of the zero vector are an arbitrary tie-break of identical logits, not tokens it
promotes, so a vector that is zero before or after counts as sharing nothing: Jaccard 0 (this is
what concept-vector ablation gives).

Which read-out projects the "before" vectors depends on what the caller kept: with a
:func:`~kgprobe.probe.unlearn.snapshot` the before vectors go through the snapshot's own final
norm and unembedding (each model reads its own vector, so a method that also moves the
unembedding changes the Jaccard through it); with a plain ``{layer: [n_neurons, d_model]}`` dict
both sides go through the current model's read-out (the Jaccard then reflects the vector alone).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from kgprobe.errors import KgprobeError
from kgprobe.probe.hooks import arch_of, logit_lens, raw_lens_ids, value_vectors
from kgprobe.probe.qa import accuracy, mean_logprob, score_qa

__all__ = ["behavioural", "intrinsic", "layer_vectors", "jaccard_rows", "raw_lens_ids", "lens_jaccard_top200",
           "concept_token_share", "RAW_TOP_K"]

#: ConceptVectors' top-k for its token measures
RAW_TOP_K = 200


def behavioural(model: nn.Module, tokenizer, *, forget: Sequence, retain: Sequence = (), attack: Sequence = (),
                few_shot: str = "", batch_size: int = 32) -> dict[str, float | int | None]:
    """``{forget,retain,attack}_{acc,logprob}`` and ``n_{forget,retain,attack}``; an empty set
    gives None for its two figures."""
    out: dict[str, float | int | None] = {}
    for part, items in (("forget", forget), ("retain", retain), ("attack", attack)):
        items = list(items)
        out[f"n_{part}"] = len(items)
        if items:
            scores = score_qa(model, tokenizer, items, batch_size=batch_size, few_shot=few_shot)
            out[f"{part}_acc"], out[f"{part}_logprob"] = accuracy(scores), mean_logprob(scores)
        else:
            out[f"{part}_acc"] = out[f"{part}_logprob"] = None
    return out


def fact_accuracy(model: nn.Module, tokenizer, fact_set, facts: Sequence, *,
                  batch_size: int | str = "auto") -> float | None:
    """Share of ``facts`` (some of the :class:`~kgprobe.probe.fact_sets.FactSet` ``fact_set``'s)
    whose true statement the model ranks first among its options (:mod:`kgprobe.probe.facts`);
    None for no facts."""
    from kgprobe.probe.statements import ranks, score_causal

    if not facts:
        return None
    scores = score_causal(model, tokenizer, fact_set.option_statements(facts), batch_size=batch_size)
    width = len(facts[0].options)
    return float((ranks(scores.score("statement", "sum").view(len(facts), width)) == 1).float().mean())


def layer_vectors(model: nn.Module, layers: Sequence[int]) -> dict[int, Tensor]:
    """``{layer: value vectors [n_neurons, d_model]}`` copies: a light "before" for :func:`intrinsic`."""
    return {int(layer): value_vectors(model, int(layer)).detach().float().cpu().clone() for layer in layers}


def jaccard_rows(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Jaccard of two ``[n, k]`` id matrices whose rows hold distinct ids: ``[n]`` float."""
    inter = (a[:, :, None] == b[:, None, :]).any(-1).sum(-1).float()
    return inter / (a.shape[1] + b.shape[1] - inter)


def _param_names(model: nn.Module) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return names


def _snapshot_layer(model: nn.Module, snap: Mapping[str, Tensor], layer: int) -> Tensor:
    """The value vectors of ``layer`` as stored in a state-dict snapshot, ``[n_neurons, d_model]``."""
    arch = arch_of(model)
    module = arch.down_proj(layer)
    key = next((n for n in _param_names(model).get(id(module.weight), []) if n in snap), None)
    if key is None:
        raise KgprobeError(f"intrinsic: the snapshot has no weight for the MLP output of layer {layer}")
    weight = snap[key].float()
    # nn.Linear stores [d_model, n_neurons]; GPT-2's Conv1D stores [n_neurons, d_model]
    vectors = weight if arch.rows_are_vectors(layer) else weight.T
    expected = tuple(value_vectors(model, layer).shape)
    if tuple(vectors.shape) != expected:
        raise KgprobeError(f"intrinsic: snapshot layer {layer} has shape {tuple(vectors.shape)}, expected {expected}")
    return vectors


@contextlib.contextmanager
def _readout_of(model: nn.Module, snap: Mapping[str, Tensor] | None) -> Iterator[None]:
    """Temporarily put the snapshot's final norm and unembedding into ``model`` (then restore
    the current ones bitwise), so the logit lens reads vectors the way the snapshot model did."""
    if snap is None:
        yield
        return
    arch = arch_of(model)
    head = model.get_output_embeddings()
    params = list(arch.final_norm.parameters()) + (list(head.parameters()) if head is not None else [])
    names = _param_names(model)
    swaps = []
    for p in {id(p): p for p in params}.values():
        key = next((n for n in names.get(id(p), []) if n in snap), None)
        if key is None:
            raise KgprobeError("intrinsic: the snapshot lacks the final norm or unembedding weights")
        swaps.append((p, snap[key]))
    saved = [p.detach().clone() for p, _ in swaps]
    try:
        with torch.no_grad():
            for p, value in swaps:
                p.copy_(value)
        yield
    finally:
        with torch.no_grad():
            for (p, _), value in zip(swaps, saved):
                p.copy_(value)


def _zero_rows(*tensors: Tensor) -> Tensor:
    return torch.stack([t.detach().float().cpu().abs().amax(dim=1) == 0 for t in tensors]).any(0)


def lens_jaccard_top200(before: Tensor, after: Tensor, unembed: Tensor, *, k: int = RAW_TOP_K,
                        unembed_before: Tensor | None = None) -> Tensor:
    """``|R(v) ∩ R(v')| / |R(v) ∪ R(v')|`` per row [n], ``R`` = top-``k`` of the raw lens
    ``v · W_U^T``; ``before`` is read through ``unembed_before`` when given (the model before
    unlearning), else ``unembed``. A row that is zero before or after gives 0 (its top-k is an
    arbitrary tie-break, as in :func:`intrinsic`)."""
    old, new = _raw_ids(before, after, unembed, unembed_before, k)
    return jaccard_rows(old, new).masked_fill(_zero_rows(before, after), 0.0)


def concept_token_share(before: Tensor, after: Tensor, unembed: Tensor, concept_ids: Sequence[int], *,
                        k: int = RAW_TOP_K, unembed_before: Tensor | None = None) -> list[float | None]:
    """Per row: ``|R(v') ∩ L1| / |L1|`` with ``L1 = R(v) ∩ C`` (``C`` = ``concept_ids``), ``R``
    the raw top-``k`` lens as in :func:`lens_jaccard_top200`; None where ``L1`` is empty, 0 where
    the vector is zero after (its top-k promotes nothing)."""
    old, new = _raw_ids(before, after, unembed, unembed_before, k)
    return _shares(old, new, _zero_rows(after), concept_ids)


def _raw_ids(before: Tensor, after: Tensor, unembed: Tensor, unembed_before: Tensor | None, k: int):
    """The raw top-``k`` lens ids of ``before`` (through ``unembed_before`` when given) and ``after``."""
    return (raw_lens_ids(before, unembed if unembed_before is None else unembed_before, k=k),
            raw_lens_ids(after, unembed, k=k))


def _shares(old: Tensor, new: Tensor, zero_after: Tensor, concept_ids: Sequence[int]) -> list[float | None]:
    """:func:`concept_token_share` from the lens ids before and after."""
    concept = {int(i) for i in concept_ids}
    out: list[float | None] = []
    for row in range(old.shape[0]):
        l1 = {int(t) for t in old[row].tolist()} & concept
        if not l1:
            out.append(None)
        elif bool(zero_after[row]):
            out.append(0.0)
        else:
            out.append(len(l1 & {int(t) for t in new[row].tolist()}) / len(l1))
    return out


def intrinsic(before: Mapping, model: nn.Module, *, concept_vectors: Sequence[tuple[int, int]],
              k: int = 50, concept_ids: Sequence[int] | None = None, raw_k: int = RAW_TOP_K) -> dict:
    """Change of the concept vectors and of their layers between ``before`` and ``model`` now.

    ``before`` is a snapshot (``{state-dict key: Tensor}``) or ``{layer: [n_neurons, d_model]}``
    covering every layer in ``concept_vectors``. Returns the six means described in the module
    docstring plus ``per_vector`` (layer, index, cosine, l2, jaccard, jaccard_raw, share), ``k``
    and ``layers``, and ConceptVectors' ``jaccard_top200_raw`` and ``concept_token_share`` (raw lens,
    top ``raw_k``, capped at the vocabulary; the share needs ``concept_ids``, else it is None).
    """
    if not concept_vectors:
        raise KgprobeError("intrinsic: no concept vectors given")
    arch = arch_of(model)
    if not 1 <= k <= arch.unembed.shape[0]:
        raise KgprobeError(f"intrinsic: k must be in 1..{arch.unembed.shape[0]}, got {k}")
    pairs = [(int(layer), int(index)) for layer, index in concept_vectors]
    for layer, index in pairs:
        if not (0 <= layer < arch.n_layers and 0 <= index < arch.n_neurons):
            raise KgprobeError(f"concept vector ({layer}, {index}) is outside the model "
                               f"({arch.n_layers} layers x {arch.n_neurons} neurons)")
    layers = sorted({layer for layer, _ in pairs})

    is_snapshot = bool(before) and all(isinstance(key, str) for key in before)
    if is_snapshot:
        old = torch.cat([_snapshot_layer(model, before, layer) for layer in layers])
    else:
        missing = [layer for layer in layers if layer not in before]
        if missing:
            raise KgprobeError(f"intrinsic: 'before' has no value vectors for layer(s) {missing}")
        old = torch.cat([torch.as_tensor(before[layer]).float().cpu() for layer in layers])
    new = torch.cat([value_vectors(model, layer).detach().float().cpu() for layer in layers])
    if old.shape != new.shape:
        raise KgprobeError(f"intrinsic: 'before' vectors have shape {tuple(old.shape)}, the model's {tuple(new.shape)}")

    # every row of the concept layers at once: [len(layers) * n_neurons]
    cosine = torch.nn.functional.cosine_similarity(old, new, dim=1)
    l2 = (new - old).norm(dim=1)
    device = next(model.parameters()).device
    with _readout_of(model, before if is_snapshot else None), torch.no_grad():
        _, old_ids = logit_lens(model, old.to(device), k=k)
    with torch.no_grad():
        _, new_ids = logit_lens(model, new.to(device), k=k)
    zero = (old.abs().amax(dim=1) == 0) | (new.abs().amax(dim=1) == 0)
    jaccard = jaccard_rows(old_ids.cpu(), new_ids.cpu()).masked_fill(zero, 0.0)

    rows = torch.tensor([layers.index(layer) * arch.n_neurons + index for layer, index in pairs])
    raw = _raw_measures(model, before if is_snapshot else None, old[rows], new[rows], concept_ids,
                        k=min(raw_k, arch.unembed.shape[0]))
    return {
        "cosine": float(cosine[rows].mean()),
        "l2": float(l2[rows].mean()),
        "jaccard_topk": float(jaccard[rows].mean()),
        "layer_cosine": float(cosine.mean()),
        "layer_l2": float(l2.mean()),
        "layer_jaccard": float(jaccard.mean()),
        "jaccard_top200_raw": float(raw["jaccard"].mean()),
        "concept_token_share": _mean_known(raw["share"]),
        "per_vector": [{"layer": layer, "index": index, "cosine": float(cosine[r]), "l2": float(l2[r]),
                        "jaccard": float(jaccard[r]), "jaccard_raw": float(raw["jaccard"][j]),
                        "share": raw["share"][j]}
                       for j, ((layer, index), r) in enumerate(zip(pairs, rows.tolist()))],
        "k": int(k),
        "layers": layers,
    }


def _mean_known(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _raw_measures(model: nn.Module, snap: Mapping[str, Tensor] | None, old: Tensor, new: Tensor,
                  concept_ids: Sequence[int] | None, *, k: int) -> dict:
    """Raw-lens Jaccard and concept token share of the concept rows; the before rows are read
    through the snapshot's unembedding when there is one (as the original reads v0 with the
    original model's lm_head), the after rows through the model's own."""
    arch = arch_of(model)
    unembed = arch.unembed.detach().float().cpu()
    unembed_before = None
    if snap is not None:
        with _readout_of(model, snap):
            unembed_before = arch.unembed.detach().float().cpu().clone()
    old_ids, new_ids = _raw_ids(old, new, unembed, unembed_before, k)  # once for both measures
    jaccard = jaccard_rows(old_ids, new_ids).masked_fill(_zero_rows(old, new), 0.0)
    share = ([None] * old.shape[0] if concept_ids is None else
             _shares(old_ids, new_ids, _zero_rows(new), concept_ids))
    return {"jaccard": jaccard, "share": share}
