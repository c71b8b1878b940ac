"""Training losses over positive and negative scores, resolved by name.

Every loss is a :class:`torch.nn.Module` called as ``loss(pos, neg, mask=None)``:

* ``pos``: ``(B,)`` scores of the true triples;
* ``neg``: ``(B, K)`` scores of ``K`` negatives per positive (a ``(B,)`` tensor means ``K = 1``);
* ``mask``: optional ``(B, K)`` bool, ``False`` where a negative must be ignored (e.g. a
  sampler found it to be a known true triple). A row without valid negatives keeps its
  positive term only (margin ranking: contributes nothing).

and returns a scalar. Higher scores mean "more likely true", as for every kgprobe scorer.

============  =========================================================================
name          loss per positive ``b`` (then the mean over ``b``)
============  =========================================================================
margin        mean_k max(0, margin - s+_b + s-_bk)         (BLP's default, margin 1)
softplus      softplus(-s+_b) + mean_k softplus(s-_bk)      (BLP's "nll")
adversarial   -log sig(gamma + s+_b) - sum_k w_bk log sig(-gamma - s-_bk),
              w_b = softmax(alpha * s-_b) (no gradient through w; RotatE / LEMON)
infonce       -log softmax([s+_b - margin, s-_b1, ..., s-_bK] / tau)[0]
              (``learn_tau=True``: tau a parameter, trained with the model)
              (softmax cross-entropy over the positive and its negatives; SimKGC)
============  =========================================================================

The margin loss averages over all valid (positive, negative) pairs, which equals the mean
over positives of the per-positive mean when every row has the same number of negatives.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgprobe.errors import KgprobeError
from kgprobe.registry import Registry

__all__ = ["LOSSES", "Loss", "MarginRankingLoss", "SoftplusLoss", "SelfAdversarialLoss", "InfoNCELoss", "get_loss",
           "loss_names"]


def _prepare(pos: Tensor, neg: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    pos = pos.reshape(-1)
    if neg.dim() == 1:
        neg = neg[:, None]
    if neg.dim() != 2 or neg.shape[0] != pos.shape[0]:
        raise KgprobeError(f"loss: negatives must be (B, K) for B = {pos.shape[0]} positives, got {tuple(neg.shape)}")
    if mask is not None:
        if mask.dim() == 1:
            mask = mask[:, None]
        if mask.shape != neg.shape:
            raise KgprobeError(f"loss: mask shape {tuple(mask.shape)} differs from negatives {tuple(neg.shape)}")
        mask = mask.to(device=neg.device, dtype=torch.bool)
    return pos, neg, mask


def _row_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over the last dimension, valid entries only (0 for a row without any)."""
    if mask is None:
        return values.mean(dim=-1)
    values = values.masked_fill(~mask, 0.0)
    return values.sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)


class Loss(nn.Module):
    """Base class; subclasses set ``name`` and implement ``forward(pos, neg, mask=None)``."""

    name: ClassVar[str] = ""

    def forward(self, pos: Tensor, neg: Tensor, mask: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class MarginRankingLoss(Loss):
    r"""Pairwise hinge: :math:`\operatorname{mean}_{b,k} \max(0, m - s^+_b + s^-_{bk})`, ``m = margin``."""

    name = "margin"

    def __init__(self, margin: float = 1.0):
        super().__init__()
        self.margin = float(margin)

    def forward(self, pos: Tensor, neg: Tensor, mask: Tensor | None = None) -> Tensor:
        pos, neg, mask = _prepare(pos, neg, mask)
        hinge = F.relu(self.margin - pos[:, None] + neg)
        if mask is None:
            return hinge.mean()
        return hinge.masked_fill(~mask, 0.0).sum() / mask.sum().clamp(min=1)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class SoftplusLoss(Loss):
    r"""Logistic loss, the positive and the average negative weighted equally:

    .. math:: \operatorname{mean}_b \Big[\operatorname{softplus}(-s^+_b)
              + \tfrac1K \sum_k \operatorname{softplus}(s^-_{bk})\Big]

    (``softplus(x) = log(1 + e^x)``, so ``softplus(-s) = -log sigmoid(s)``.)
    """

    name = "softplus"

    def forward(self, pos: Tensor, neg: Tensor, mask: Tensor | None = None) -> Tensor:
        pos, neg, mask = _prepare(pos, neg, mask)
        return (F.softplus(-pos) + _row_mean(F.softplus(neg), mask)).mean()


class SelfAdversarialLoss(Loss):
    r"""Negative sampling loss with self-adversarial weights (Sun et al. 2019, RotatE):

    .. math:: \operatorname{mean}_b \Big[-\log\sigma(\gamma + s^+_b)
              - \sum_k w_{bk} \log\sigma(-\gamma - s^-_{bk})\Big],\qquad
              w_b = \operatorname{softmax}(\alpha\, s^-_b)

    The weights are constants (detached), as in the paper. With ``adversarial=False`` they are
    uniform, ``1/K``: the plain ``-log sigmoid`` loss with a margin ``gamma``. Defaults
    ``gamma = 9``, ``alpha = 1`` (PyKEEN's NSSA defaults); for distance scores (TransE, RotatE)
    ``gamma`` plays the role of the RotatE margin.
    """

    name = "adversarial"

    def __init__(self, gamma: float = 9.0, alpha: float = 1.0, *, adversarial: bool = True):
        super().__init__()
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.adversarial = bool(adversarial)

    def forward(self, pos: Tensor, neg: Tensor, mask: Tensor | None = None) -> Tensor:
        pos, neg, mask = _prepare(pos, neg, mask)
        neg_term = -F.logsigmoid(-self.gamma - neg)
        if self.adversarial:
            logits = (self.alpha * neg).detach()
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(logits, dim=-1)
            if mask is not None:  # a row with no valid negative gives NaN weights: zero them
                weights = torch.nan_to_num(weights, nan=0.0)
            neg_part = (weights * neg_term.masked_fill(~mask, 0.0) if mask is not None
                        else weights * neg_term).sum(dim=-1)
        else:
            neg_part = _row_mean(neg_term, mask)
        return (-F.logsigmoid(self.gamma + pos) + neg_part).mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}, adversarial={self.adversarial}"


class InfoNCELoss(Loss):
    r"""Softmax cross-entropy of the positive against its negatives (InfoNCE; SimKGC, Wang et al.
    2022; PyKEEN's ``CrossEntropyLoss`` over one positive and ``K`` negatives):

    .. math:: \operatorname{mean}_b \Big[-\log
              \frac{e^{(s^+_b - \gamma)/\tau}}{e^{(s^+_b - \gamma)/\tau} + \sum_k e^{s^-_{bk}/\tau}}\Big]

    Unlike the margin loss, whose gradient is the same for every negative inside the margin, the
    softmax weights each negative by how close it comes to the positive, so the few hard
    negatives among many easy ones carry the update: that is what ranking against all entities
    asks for, and it gains from more negatives per positive (e.g. every other entity of an
    in-batch draw). ``tau`` sets the score scale (TransE on unit vectors: distances of 0 to ~2
    sqrt(d) for L1; on WordNet pilots tau 0.5 ranked best of 0.25 to 2, see
    ``eval/results/linkpred_pilots.jsonl``).

    ``margin`` is SimKGC's additive margin :math:`\gamma`: subtracted from the positive's score
    *before* the division by :math:`\tau` (SimKGC: ``logits -= margin`` on the diagonal, then
    ``logits *= 1/t``), so the positive must beat every negative by :math:`\gamma` in score units
    before its term fades. Masked negatives get :math:`-\infty`, so a row without valid negatives
    contributes zero.

    ``learn_tau=True`` (SimKGC's learnable temperature) makes :math:`\tau` a parameter, trained by
    the trainer's optimiser with the model: stored as :math:`\log(1/\tau)` (initialised from
    ``tau``) so that it stays positive and its steps are relative, and read as
    :math:`1/\tau = \min(e^{\log(1/\tau)}, \text{max\_inverse\_tau})`, ``max_inverse_tau = 100`` as
    in SimKGC (beyond it the clamp passes no gradient, so the temperature stops falling).
    :attr:`tau` gives the current value.

    ``log_weight`` (per negative, broadcast over the rows) is added to the negatives' logits after
    the scaling: a negative of weight :math:`w_k` counts :math:`w_k` times in the denominator,
    :math:`\sum_k w_k e^{s^-_{bk}/\tau}`. The trainer weighs its pre-batch negatives so
    (``pre_batch_weight``), so that detached negatives do not crowd out the batch's own.
    """

    name = "infonce"

    def __init__(self, tau: float = 1.0, margin: float = 0.0, *, learn_tau: bool = False,
                 max_inverse_tau: float = 100.0):
        super().__init__()
        for what, value in (("tau", tau), ("max_inverse_tau", max_inverse_tau)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise KgprobeError(f"infonce: {what} must be positive, got {value!r}")
        if not isinstance(learn_tau, bool):
            raise KgprobeError(f"infonce: learn_tau must be true or false, got {learn_tau!r}")
        if learn_tau and 1.0 / tau > max_inverse_tau:
            raise KgprobeError(f"infonce: tau {tau} is below 1/max_inverse_tau = {1.0 / max_inverse_tau:g}")
        self.margin = float(margin)
        self.learn_tau = learn_tau
        self.max_inverse_tau = float(max_inverse_tau)
        self._tau = float(tau)
        if learn_tau:  # float64 would make the fused optimiser step refuse the mixed dtypes
            self.log_inverse_tau = nn.Parameter(torch.tensor(math.log(1.0 / tau), dtype=torch.float32))

    def inverse_tau(self) -> Tensor | float:
        """:math:`1/\\tau`: a fixed number, or the clamped learnt one (a tensor with gradient)."""
        if not self.learn_tau:
            return 1.0 / self._tau
        return self.log_inverse_tau.exp().clamp(max=self.max_inverse_tau)

    @property
    def tau(self) -> float:
        """The current temperature (the learnt one with ``learn_tau``)."""
        return 1.0 / float(self.inverse_tau().detach()) if self.learn_tau else self._tau

    def forward(self, pos: Tensor, neg: Tensor, mask: Tensor | None = None,
                log_weight: Tensor | None = None) -> Tensor:
        pos, neg, mask = _prepare(pos, neg, mask)
        logits = torch.cat([(pos - self.margin)[:, None], neg], dim=1)
        # a fixed tau divides, as this loss always has (the same bits as runs made before learn_tau)
        logits = logits * self.inverse_tau() if self.learn_tau else logits / self._tau
        if log_weight is not None:
            logits = torch.cat([logits[:, :1], logits[:, 1:] + log_weight.to(logits.dtype)], dim=1)
        if mask is not None:  # after the scaling: -inf x 1/tau would give the learnt tau a NaN gradient
            logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(~mask, float("-inf"))], dim=1)
        return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()

    def record(self) -> dict:
        """What the trainer adds to each epoch's metrics record: the learnt temperature."""
        return {"tau": self.tau} if self.learn_tau else {}

    def extra_repr(self) -> str:
        learnt = f", learn_tau=True, max_inverse_tau={self.max_inverse_tau}" if self.learn_tau else ""
        return f"tau={self._tau}, margin={self.margin}{learnt}"


LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (MarginRankingLoss, SoftplusLoss, SelfAdversarialLoss,
                                                           InfoNCELoss)}
_ALIASES = {"marginranking": "margin", "nll": "softplus", "bce": "softplus", "nssa": "adversarial",
            "selfadversarial": "adversarial", "crossentropy": "infonce", "softmax": "infonce"}
LOSS_REGISTRY = Registry("loss", Loss, LOSSES, aliases=_ALIASES, fold=True)


def loss_names() -> list[str]:
    return sorted(LOSSES)


def get_loss(name: str | Loss | type[Loss], **kwargs) -> Loss:
    """A loss from its name (case-insensitive; aliases ``nll``, ``nssa``, ``self_adversarial``),
    class or instance; ``kwargs`` go to the class."""
    return LOSS_REGISTRY.make(name, **kwargs)
