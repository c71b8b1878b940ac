"""Scoring functions of knowledge-graph embedding models, resolved by name.

A scorer turns embeddings of a head ``h``, a relation ``r`` and a tail ``t`` into one real
score per triple; higher means "more likely true". Every scorer is a parameter-free
:class:`torch.nn.Module` (the embeddings live elsewhere: a table, a text encoder) with three
entry points:

* ``score(h, r, t)`` — aligned triples; the leading dimensions broadcast, the last one is the
  feature dimension. ``forward`` is the same call.
* ``score_all_tails(h, r, candidates)`` — ``h: (B, d)``, ``r: (B, d_r)``, ``candidates: (C, d)``
  -> ``(B, C)``: the score of ``(h_b, r_b, c)`` for every candidate tail ``c``.
* ``score_all_heads(r, t, candidates)`` — ``(B, C)``: the score of ``(c, r_b, t_b)``.

The all-candidates versions never build a ``(B, C, d)`` tensor for the bilinear models (one
matrix product) and bound it for the distance models (candidates are taken in chunks).

Entity vectors have dimension ``d``; ``relation_dim(d)`` says how wide a relation vector must
be. The complex models read a vector as two halves ``[real | imaginary]``.

=========  ==========================================  ============  ===================
name       score                                        relation dim  entity dim
=========  ==========================================  ============  ===================
transe     -||h + r - t||_p  (p = 1 by default)        d             any
distmult   sum_i h_i r_i t_i                           d             any
complex    Re(sum_i h_i r_i conj(t_i))                 d             even
simple     (<h_H, r, t_T> + <t_H, r_inv, h_T>) / 2      d             even
rotate     -sum_i |h_i e^{i theta_i} - t_i|   (p = 1)   d / 2         even
=========  ==========================================  ============  ===================

``query-encoder`` (SimKGC's bi-encoder) is the odd one out: its ``h`` is a query vector encoded
from ``"text(h) [SEP] text(r)"``, scored against ``t`` by cosine (see :class:`QueryEncoder`).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from kgprobe.errors import KgprobeError
from kgprobe.registry import Registry

__all__ = [
    "SCORERS", "Scorer", "TransE", "DistMult", "ComplEx", "SimplE", "RotatE", "QueryEncoder", "get_scorer",
    "normalizes_entities", "scorer_names",
]

# Elements of one (B, C, d) temporary in the distance scorers: 8 MB on a CPU (measured on par
# with or faster than torch.cdist for p = 1, and than smaller blocks), larger on a GPU.
_CPU_BLOCK = 1 << 21
_CUDA_BLOCK = 1 << 24


def _halves(x: Tensor) -> tuple[Tensor, Tensor]:
    d = x.shape[-1]
    if d % 2:
        raise KgprobeError(f"this scorer reads vectors as two halves, but their dimension {d} is odd")
    return x[..., : d // 2], x[..., d // 2:]


def _needs_grad(*xs: Tensor) -> bool:
    return torch.is_grad_enabled() and any(x.requires_grad for x in xs)


def _pairwise(queries: Tensor, candidates: Tensor, fn: Callable[[Tensor, Tensor], Tensor], width: int) -> Tensor:
    """``(B, C)`` from ``fn(query_rows, candidate_rows) -> (b, c)`` over blocks whose
    ``(b, c, width)`` temporaries stay below the block budget.

    Without autograd the blocks are written into one preallocated output; with autograd
    (training with all-candidates scoring) the blocks are concatenated."""
    n_q, n_c = queries.shape[0], candidates.shape[0]
    budget = _CUDA_BLOCK if queries.device.type == "cuda" else _CPU_BLOCK
    width = max(1, width)
    c_step = max(1, min(n_c, budget // width))
    q_step = max(1, budget // (c_step * width))
    if q_step >= n_q and c_step >= n_c:
        return fn(queries, candidates)
    if _needs_grad(queries, candidates):
        return torch.cat([torch.cat([fn(queries[s:s + q_step], candidates[u:u + c_step])
                                     for u in range(0, n_c, c_step)], dim=1)
                          for s in range(0, n_q, q_step)], dim=0)
    out = torch.empty((n_q, n_c), dtype=torch.result_type(queries, candidates), device=queries.device)
    for s in range(0, n_q, q_step):
        for u in range(0, n_c, c_step):
            out[s:s + q_step, u:u + c_step] = fn(queries[s:s + q_step], candidates[u:u + c_step])
    return out


def _lp_distance(a: Tensor, b: Tensor, p: int) -> Tensor:
    """``(len(a), len(b))`` L_p distances by broadcasting (in place when autograd is off)."""
    diff = a[:, None, :] - b[None, :, :]
    if _needs_grad(a, b):
        return torch.linalg.vector_norm(diff, ord=p, dim=-1)
    if p == 1:
        return diff.abs_().sum(dim=-1)
    return diff.square_().sum(dim=-1).sqrt_()


class Scorer(nn.Module):
    """Base class: the interface every scorer implements (see the module docstring).

    Subclasses set ``name`` and implement ``score``; the default ``score_all_tails`` /
    ``score_all_heads`` broadcast ``score`` over chunks of candidates, and the concrete
    scorers override them with a matrix product or a pairwise distance.
    """

    name: ClassVar[str] = ""
    #: entity vectors are read as ``[real | imaginary]`` halves (so ``d`` must be even)
    complex_valued: ClassVar[bool] = False
    #: a model with this scorer L2-normalises its entity vectors unless told otherwise
    #: (:func:`normalizes_entities`)
    normalize_entities: ClassVar[bool] = False

    @classmethod
    def relation_dim(cls, entity_dim: int) -> int:
        """The width of a relation vector for entity vectors of width ``entity_dim``."""
        cls.check_entity_dim(entity_dim)
        return entity_dim

    @classmethod
    def check_entity_dim(cls, entity_dim: int) -> None:
        """Raise :class:`KgprobeError` when ``entity_dim`` does not suit this scorer."""
        if entity_dim < 1:
            raise KgprobeError(f"{cls.name}: the entity dimension must be positive, got {entity_dim}")
        if cls.complex_valued and entity_dim % 2:
            raise KgprobeError(f"{cls.name} reads entity vectors as [real | imaginary] halves: "
                               f"the entity dimension must be even, got {entity_dim}")

    def score(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        return self.score(h, r, t)

    def score_all_tails(self, h: Tensor, r: Tensor, candidates: Tensor) -> Tensor:
        """``(B, C)`` scores of ``(h_b, r_b, c)`` for every row ``c`` of ``candidates``."""
        d = h.shape[-1]
        return _pairwise(torch.cat([h, r], dim=-1), candidates,
                         lambda q, c: self.score(q[:, None, :d], q[:, None, d:], c[None]), 3 * d)

    def score_all_heads(self, r: Tensor, t: Tensor, candidates: Tensor) -> Tensor:
        """``(B, C)`` scores of ``(c, r_b, t_b)`` for every row ``c`` of ``candidates``."""
        d_r = r.shape[-1]
        return _pairwise(torch.cat([r, t], dim=-1), candidates,
                         lambda q, c: self.score(c[None], q[:, None, :d_r], q[:, None, d_r:]), 3 * t.shape[-1])

    def extra_repr(self) -> str:
        return ""


class TransE(Scorer):
    r"""TransE (Bordes et al. 2013): a relation is a translation.

    .. math:: f(h, r, t) = -\lVert h + r - t \rVert_p

    ``p = 1`` by default, as in BLP and PyKEEN; no normalisation happens here, but a model with
    this scorer normalises its entity vectors to unit length by default (``normalize_entities``,
    as BLP does for TransE). All-candidates scores are
    ``-||(h + r) - c||_p`` for tails and ``-||c - (t - r)||_p`` for heads, computed on
    cache-sized blocks of ``(queries, candidates, d)`` differences (faster than ``torch.cdist``
    with ``p = 1`` on a CPU, and never a full ``B x C x d`` tensor). For ``p = 2``, ``fast_l2=True``
    switches to ``torch.cdist``'s matrix-product expansion ``||x||^2 + ||y||^2 - 2 x.y`` (several
    times faster on a CPU, but it loses precision when two vectors are close, which can reorder
    near-ties).
    """

    name = "transe"
    normalize_entities = True

    def __init__(self, p: int | float = 1, *, fast_l2: bool = False):
        super().__init__()
        if p not in (1, 2):
            raise KgprobeError(f"transe: p must be 1 or 2, got {p!r}")
        self.p = int(p)
        self.fast_l2 = bool(fast_l2)

    def score(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        return -torch.linalg.vector_norm(h + r - t, ord=self.p, dim=-1)

    def _dist(self, q: Tensor, candidates: Tensor) -> Tensor:
        if self.p == 2 and self.fast_l2:
            return torch.cdist(q, candidates, p=2).neg_()
        return _pairwise(q, candidates, lambda a, b: _lp_distance(a, b, self.p), q.shape[-1]).neg_()

    def score_all_tails(self, h: Tensor, r: Tensor, candidates: Tensor) -> Tensor:
        return self._dist(h + r, candidates)

    def score_all_heads(self, r: Tensor, t: Tensor, candidates: Tensor) -> Tensor:
        return self._dist(t - r, candidates)

    def extra_repr(self) -> str:
        return f"p={self.p}" + (", fast_l2=True" if self.fast_l2 else "")


class DistMult(Scorer):
    r"""DistMult (Yang et al. 2015): a diagonal bilinear form.

    .. math:: f(h, r, t) = \sum_i h_i \, r_i \, t_i

    All tails: ``(h * r) @ C^T``; all heads: ``(r * t) @ C^T`` (the product is symmetric).
    """

    name = "distmult"

    def score(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        return (h * r * t).sum(dim=-1)

    def score_all_tails(self, h: Tensor, r: Tensor, candidates: Tensor) -> Tensor:
        return (h * r) @ candidates.T

    def score_all_heads(self, r: Tensor, t: Tensor, candidates: Tensor) -> Tensor:
        return (r * t) @ candidates.T


class ComplEx(Scorer):
    r"""ComplEx (Trouillon et al. 2016) with vectors stored as ``[real | imaginary]`` halves.

    .. math:: f(h, r, t) = \operatorname{Re}\Big(\sum_i h_i \, r_i \, \overline{t_i}\Big)
              = \langle h_{re} r_{re} - h_{im} r_{im}, t_{re} \rangle
              + \langle h_{re} r_{im} + h_{im} r_{re}, t_{im} \rangle

    All tails: ``q = h * r`` (complex), scores ``[q_re | q_im] @ C^T``. All heads: with
    ``p = r * conj(t)``, ``Re(h p) = <h_re, p_re> - <h_im, p_im>``, i.e. ``[p_re | -p_im] @ C^T``.
    """

    name = "complex"
    complex_valued = True

    def score(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        (h_re, h_im), (r_re, r_im), (t_re, t_im) = _halves(h), _halves(r), _halves(t)
        return ((h_re * r_re - h_im * r_im) * t_re + (h_re * r_im + h_im * r_re) * t_im).sum(dim=-1)

    def score_all_tails(self, h: Tensor, r: Tensor, candidates: Tensor) -> Tensor:
        (h_re, h_im), (r_re, r_im) = _halves(h), _halves(r)
        q = torch.cat([h_re * r_re - h_im * r_im, h_re * r_im + h_im * r_re], dim=-1)
        return q @ candidates.T

    def score_all_heads(self, r: Tensor, t: Tensor, candidates: Tensor) -> Tensor:
        (r_re, r_im), (t_re, t_im) = _halves(r), _halves(t)
        # p = r * conj(t); Re(h * p) = h_re p_re - h_im p_im
        p_re = r_re * t_re + r_im * t_im
        p_im = r_im * t_re - r_re * t_im
        return torch.cat([p_re, -p_im], dim=-1) @ candidates.T


class SimplE(Scorer):
    r"""SimplE (Kazemi & Poole 2018) in BLP's form: one vector per entity, split in halves.

    An entity vector is ``[e_H | e_T]`` (its embedding as a head and as a tail), a relation
    vector ``[r | r_inv]`` (the relation and its inverse). The score averages both directions:

    .. math:: f(h, r, t) = \tfrac12 \big( \langle h_H, r, t_T \rangle
              + \langle t_H, r_{inv}, h_T \rangle \big)

    The original SimplE code clamps scores to ``[-20, 20]``; ``clamp`` does the same when
    given (off by default, because clamping creates ties among high scores).
    """

    name = "simple"
    complex_valued = True  # "two halves", the same parity rule

    def __init__(self, *, clamp: float | None = None):
        super().__init__()
        self.clamp = None if clamp is None else float(clamp)

    def _clamp(self, s: Tensor) -> Tensor:
        return s if self.clamp is None else s.clamp(-self.clamp, self.clamp)

    def score(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        (h_h, h_t), (r_f, r_i), (t_h, t_t) = _halves(h), _halves(r), _halves(t)
        return self._clamp(0.5 * (h_h * r_f * t_t + t_h * r_i * h_t).sum(dim=-1))

    def score_all_tails(self, h: Tensor, r: Tensor, candidates: Tensor) -> Tensor:
        # candidate c = [c_H | c_T]: <h_H r, c_T> + <h_T r_inv, c_H>
        (h_h, h_t), (r_f, r_i) = _halves(h), _halves(r)
        q = torch.cat([h_t * r_i, h_h * r_f], dim=-1)
        return self._clamp(0.5 * (q @ candidates.T))

    def score_all_heads(self, r: Tensor, t: Tensor, candidates: Tensor) -> Tensor:
        # candidate c = [c_H | c_T]: <c_H, r t_T> + <c_T, r_inv t_H>
        (r_f, r_i), (t_h, t_t) = _halves(r), _halves(t)
        q = torch.cat([r_f * t_t, r_i * t_h], dim=-1)
        return self._clamp(0.5 * (q @ candidates.T))

    def extra_repr(self) -> str:
        return "" if self.clamp is None else f"clamp={self.clamp}"


class RotatE(Scorer):
    r"""RotatE (Sun et al. 2019): a relation rotates each complex coordinate.

    Entities are complex vectors of ``d / 2`` coordinates stored as ``[real | imaginary]``;
    a relation is ``d / 2`` phases ``theta`` (so ``|r_i| = 1``):

    .. math:: f(h, r, t) = -\sum_i \big| h_i e^{\mathrm{i}\theta_i} - t_i \big|  \quad (p = 1)

    which is the distance of the RotatE paper's code (a sum of complex moduli). ``p = 2`` gives
    ``-\sqrt{\sum_i |h_i e^{i\theta_i} - t_i|^2}``, the Euclidean norm of the ``d`` real
    coordinates (PyKEEN's RotatE). Because the rotation is an isometry,
    ``|h r - t| = |h - t \bar r|``, so head prediction is a distance to ``t * conj(r)``.
    """

    name = "rotate"
    complex_valued = True

    def __init__(self, p: int = 1):
        super().__init__()
        if p not in (1, 2):
            raise KgprobeError(f"rotate: p must be 1 or 2, got {p!r}")
        self.p = int(p)

    @classmethod
    def relation_dim(cls, entity_dim: int) -> int:
        cls.check_entity_dim(entity_dim)
        return entity_dim // 2

    @staticmethod
    def _rotate(x: Tensor, theta: Tensor, *, inverse: bool = False) -> Tensor:
        x_re, x_im = _halves(x)
        cos, sin = torch.cos(theta), torch.sin(theta)
        if inverse:
            sin = -sin
        return torch.cat([x_re * cos - x_im * sin, x_re * sin + x_im * cos], dim=-1)

    def _distance(self, diff: Tensor) -> Tensor:
        if self.p == 2:
            return torch.linalg.vector_norm(diff, ord=2, dim=-1)
        d_re, d_im = _halves(diff)
        if _needs_grad(diff):  # the norm's gradient is defined (0) where a modulus is 0
            return torch.linalg.vector_norm(torch.stack([d_re, d_im], dim=-1), ord=2, dim=-1).sum(dim=-1)
        return torch.hypot(d_re, d_im).sum(dim=-1)

    def score(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        if r.shape[-1] * 2 != h.shape[-1]:
            raise KgprobeError(f"rotate: relation vectors hold d/2 phases; got {r.shape[-1]} for d={h.shape[-1]}")
        return -self._distance(self._rotate(h, r) - t)

    def _to_candidates(self, q: Tensor, candidates: Tensor) -> Tensor:
        if self.p == 2:
            return _pairwise(q, candidates, lambda a, b: _lp_distance(a, b, 2), q.shape[-1]).neg_()
        return _pairwise(q, candidates, lambda a, b: self._distance(a[:, None, :] - b[None, :, :]),
                         2 * q.shape[-1]).neg_()

    def score_all_tails(self, h: Tensor, r: Tensor, candidates: Tensor) -> Tensor:
        return self._to_candidates(self._rotate(h, r), candidates)

    def score_all_heads(self, r: Tensor, t: Tensor, candidates: Tensor) -> Tensor:
        return self._to_candidates(self._rotate(t, r, inverse=True), candidates)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class QueryEncoder(Scorer):
    r"""SimKGC's bi-encoder (Wang et al. 2022): the *query* is encoded from text, and a candidate
    scores by the cosine between the query vector and its entity vector:

    .. math:: f(h, r, t) = \cos\big(\mathrm{enc}(\text{"text}(h)\ \text{[SEP]}\ \text{text}(r)\text{"}),
              \ \mathrm{enc}(\text{text}(t))\big)

    for tail queries, and for head queries the tail's text with the *inverse* relation's text,
    ``"text(t) [SEP] inverse text(r)"`` (SimKGC's inverse triples). The same encoder reads
    entities and queries (BLP's single encoder; SimKGC has two). The relation is read as words,
    not looked up: the model's relation table (``d`` wide, as for the others) goes unused.

    Here ``score(q, r, t)`` is the cosine of ``q`` and ``t`` (``r`` ignored): the trainer and
    the evaluator pass query vectors as ``q`` (see :meth:`query_texts`); they need the entity and
    relation texts, given by :meth:`set_texts` (:func:`kgprobe.linkpred.run.run_training` does).
    Relation names are read with underscores as spaces (``_hypernym`` -> ``hypernym``). A
    bag-of-words encoder ignores relation words outside its vocabulary (the entity texts').
    """

    name = "query-encoder"
    normalize_entities = True
    #: the trainer and the evaluator encode queries from text for this scorer
    encodes_queries: ClassVar[bool] = True

    def __init__(self, *, separator: str = " [SEP] ", inverse: str = "inverse"):
        super().__init__()
        if not isinstance(separator, str) or not isinstance(inverse, str):
            raise KgprobeError("query-encoder: separator and inverse must be texts")
        self.separator, self.inverse = separator, inverse
        self.entity_texts: list[str] | None = None
        self.relation_texts: list[str] | None = None

    def set_texts(self, entity_texts: Any, relation_names: Any) -> "QueryEncoder":
        """The texts the queries are made of: one per entity id, one name per relation id."""
        self.entity_texts = [str(x) for x in entity_texts]
        self.relation_texts = [" ".join(str(x).replace("_", " ").split()) for x in relation_names]
        return self

    def query_texts(self, anchors: Tensor, relations: Tensor, *, head: bool) -> list[str]:
        """``"text(h) [SEP] text(r)"`` (tail queries) or ``"text(t) [SEP] inverse text(r)"`` (``head``)."""
        if self.entity_texts is None or self.relation_texts is None:
            raise KgprobeError("query-encoder: no entity and relation texts (call set_texts first)")
        return [self.query_text(self.entity_texts[a], r, head=head)
                for a, r in zip(anchors.tolist(), relations.tolist())]

    def query_text(self, anchor: str, relation: int, *, head: bool) -> str:
        """One query's text from the anchor entity's text (a new entity's too) and a relation id."""
        if self.relation_texts is None:
            raise KgprobeError("query-encoder: no relation texts (call set_texts first)")
        inverse = f"{self.inverse} " if head else ""
        return f"{anchor}{self.separator}{inverse}{self.relation_texts[relation]}"

    def score(self, h: Tensor, r: Tensor | None, t: Tensor) -> Tensor:
        return nn.functional.cosine_similarity(h, t, dim=-1)

    def score_all_tails(self, h: Tensor, r: Tensor | None, candidates: Tensor) -> Tensor:
        norm = nn.functional.normalize
        return norm(h, dim=-1) @ norm(candidates, dim=-1).T

    def score_all_heads(self, r: Tensor | None, t: Tensor, candidates: Tensor) -> Tensor:
        return self.score_all_tails(t, r, candidates)  # t is the head query's vector

    def extra_repr(self) -> str:
        return f"separator={self.separator!r}, inverse={self.inverse!r}"


SCORERS: dict[str, type[Scorer]] = {cls.name: cls for cls in (TransE, DistMult, ComplEx, SimplE, RotatE,
                                                               QueryEncoder)}
# folding drops the hyphen: the folded name leads back to the registered one
SCORER_REGISTRY = Registry("scorer", Scorer, SCORERS, fold=True,
                           aliases={"queryencoder": "query-encoder", "simkgc": "query-encoder"})


def normalizes_entities(scorer: Any, setting: bool | None = None) -> bool:
    """Whether a model L2-normalises its entity vectors before ``scorer``: ``setting`` when given,
    else the scorer's own default (its ``normalize_entities``: TransE yes, the others no)."""
    return bool(getattr(scorer, "normalize_entities", False) if setting is None else setting)


def scorer_names() -> list[str]:
    return sorted(SCORERS)


def get_scorer(name: str | Scorer | type[Scorer], **kwargs) -> Scorer:
    """A scorer from its name (case-insensitive), class or instance; ``kwargs`` go to the class.

    >>> get_scorer("TransE", p=2)
    TransE(p=2)
    """
    return SCORER_REGISTRY.make(name, **kwargs)
