"""Unlearning methods, resolved by name, that change a causal LM in place.

For a QA item (x, y) let ``logp(y|x) = sum_t log p(y_t | x, y_<t)`` be its summed answer
log-prob (:func:`kgprobe.probe.qa.answer_logprobs`), so its NLL is ``-logp``. ``f`` ranges over a
batch of the forget set, ``r`` over a batch of the retain set, ``w`` is ``retain_weight``:

====================  =========================================================================
name                  loss minimised (means over the batch)
====================  =========================================================================
gradient-ascent       mean_f logp_θ(y|x)                          (= ascend the forget NLL)
gradient-difference   mean_f logp_θ(y|x) + w · mean_r NLL_θ(y|x)           (w defaults to 1)
npo                   -(2/β) mean_f log σ(-β (logp_θ - logp_ref)) + w · mean_r NLL_θ   (w: 0)
ablation              no loss: every concept value vector V[l, i] ← 0 (persisting)
====================  =========================================================================

NPO (Zhang et al. 2024) compares the current model with the model before unlearning; since the
reference only ever enters through ``logp_ref`` of the forget items, those are computed once
before the first step and no second copy of the model is kept. At step 0 ``logp_θ = logp_ref``
so the loss is exactly ``(2/β) log 2``; unlike gradient ascent it saturates once
``logp_θ << logp_ref`` instead of growing without bound.

Training is mini-batch AdamW with no weight decay (decay would shrink every weight, the concept
vectors included, and blur the intrinsic measure), gradients clipped to norm ``max_grad_norm``,
all parameters by default (``train="mlp"``: the MLPs only), dropout off (the model is put in eval
mode for the run, so the NPO reference and every step see the same function), and batches drawn
from seeded permutations: the same seed gives the same weights. :func:`snapshot` /
:func:`restore` let a caller run several methods from the same starting weights.

Why AdamW and not SGD: AdamW at lr 1e-5 is what the NPO / TOFU unlearning papers use, so numbers
compare. Plain SGD (``optimizer="sgd"``; with the gradient clipped, the update norm is the lr)
was not clearly better on SmolLM2-135M in single hand-tuned runs of 10 steps: gradient ascent at
SGD lr 0.01 emptied forget and retain alike as AdamW does; gradient difference at SGD lr 0.02 gave
forget 1.0 -> 0.14 / retain 1.0 -> 1.0 against AdamW's 0.29 / 0.89, a small edge bought with an
lr that depends on the gradient scale (0.1 already wrecked the model in 2 steps). SGD stays as an
option for cheap runs: it keeps no optimiser state.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, ClassVar, Iterator, Literal, Sequence

import torch
from torch import Tensor, nn

from kgprobe.errors import KgprobeError
from kgprobe.probe.hooks import arch_of, set_value_vector
from kgprobe.probe.qa import answer_logprobs
from kgprobe.registry import Registry

if TYPE_CHECKING:  # QA items: anything with .prompt and .answer
    from kgprobe.probe.concepts import QA

__all__ = ["UNLEARNERS", "UNLEARNER_REGISTRY", "Unlearner", "GradientAscent", "GradientDifference", "NPO",
           "Ablation", "Snapshot", "unlearn", "unlearner_names", "snapshot", "restore",
           "DEFAULT_STEPS", "DEFAULT_LR"]

# Measured on SmolLM2-135M with 7 France cloze QA it answers right and 9 facts about other
# countries (batch 8, AdamW, all parameters): at lr 1e-5, 10 steps (1-3 minutes of shared 2-core
# CPU) take forget accuracy 1.0 -> 0.0 for gradient ascent and NPO (retain collapses too: the
# known failure of ascent without a retain term) and 1.0 -> 0.29 for gradient difference with
# retain 1.0 -> 0.89. lr 3e-6 needs ~8 steps to empty the forget set; 3e-5 wrecks everything
# within 4. 1e-5 is also the lr of the NPO and TOFU papers.
DEFAULT_STEPS = 10
DEFAULT_LR = 1e-5

Snapshot = dict[str, Tensor]
"""A CPU copy of a model's ``state_dict`` (see :func:`snapshot`)."""


class Unlearner:
    """Base class: subclasses set ``name`` and implement :meth:`loss` (or :meth:`apply` when
    ``trains`` is False).

    ``beta`` is used by NPO only; ``retain_weight`` None means the method's default
    (``default_retain_weight``). Both are accepted by every method so that one loop can pass the
    same options to all of them.
    """

    name: ClassVar[str] = ""
    trains: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False
    default_retain_weight: ClassVar[float] = 0.0

    def __init__(self, *, beta: float = 0.1, retain_weight: float | None = None):
        if not beta > 0 or not math.isfinite(beta):
            raise KgprobeError(f"unlearning: beta must be a positive number, got {beta}")
        weight = self.default_retain_weight if retain_weight is None else float(retain_weight)
        if not weight >= 0 or not math.isfinite(weight):
            raise KgprobeError(f"unlearning: retain_weight must be >= 0, got {retain_weight}")
        self.beta, self.retain_weight = float(beta), weight

    def forget_loss(self, logp: Tensor, ref: Tensor | None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def loss(self, logp_forget: Tensor, *, ref: Tensor | None = None, logp_retain: Tensor | None = None) -> Tensor:
        """The scalar to minimise from per-item summed answer log-probs (with gradients)."""
        value = self.forget_loss(logp_forget, ref)
        if self.retain_weight > 0 and logp_retain is not None and logp_retain.numel():
            value = value + self.retain_weight * (-logp_retain).mean()
        return value

    def apply(self, model: nn.Module, concept_vectors: Sequence[tuple[int, int]]) -> None:  # pragma: no cover
        raise NotImplementedError

    def options(self) -> dict:
        return {"beta": self.beta, "retain_weight": self.retain_weight}


class GradientAscent(Unlearner):
    """``L = mean_f logp_θ(y|x)``: gradient descent on the negated forget NLL."""

    name = "gradient-ascent"

    def forget_loss(self, logp: Tensor, ref: Tensor | None) -> Tensor:
        return logp.mean()

    def options(self) -> dict:
        return {"retain_weight": self.retain_weight}


class GradientDifference(GradientAscent):
    """``L = mean_f logp_θ(y|x) + w · mean_r NLL_θ(y|x)``: ascend on forget, descend on retain."""

    name = "gradient-difference"
    default_retain_weight = 1.0


class NPO(Unlearner):
    """``L = -(2/β) mean_f log σ(-β (logp_θ - logp_ref)) [+ w · mean_r NLL_θ]``."""

    name = "npo"
    needs_reference = True

    def forget_loss(self, logp: Tensor, ref: Tensor | None) -> Tensor:
        if ref is None:
            raise ValueError("NPO needs the reference log-probs of the forget batch")
        return -(2.0 / self.beta) * torch.nn.functional.logsigmoid(-self.beta * (logp - ref)).mean()


class Ablation(Unlearner):
    """Zero each concept value vector in the weights (persisting; no training)."""

    name = "ablation"
    trains = False

    def apply(self, model: nn.Module, concept_vectors: Sequence[tuple[int, int]]) -> None:
        arch = arch_of(model)
        zero = torch.zeros(arch.d_model)
        for layer, index in concept_vectors:  # a handful of vectors: one in-place row write each
            set_value_vector(model, layer, index, zero)

    def options(self) -> dict:
        return {}


UNLEARNERS: dict[str, type[Unlearner]] = {cls.name: cls for cls in (GradientAscent, GradientDifference, NPO, Ablation)}
UNLEARNER_REGISTRY = Registry("unlearning method", Unlearner, UNLEARNERS,
                              aliases={"ga": "gradient-ascent", "gd": "gradient-difference"})


def unlearner_names() -> list[str]:
    return sorted(UNLEARNERS)


# ------------------------------------------------------------------ snapshots
def snapshot(model: nn.Module) -> Snapshot:
    """A CPU copy of every entry of ``model.state_dict()`` (parameters and persistent buffers)."""
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}


def restore(model: nn.Module, snap: Snapshot) -> None:
    """Copy ``snap`` back into ``model`` in place (bitwise: ``copy_`` of the same dtype)."""
    try:
        model.load_state_dict(snap, strict=True)
    except RuntimeError as err:
        raise KgprobeError(f"restore: the snapshot does not fit this model: {str(err).splitlines()[0]}") from None


# ------------------------------------------------------------------ training
def _trainable(model: nn.Module, train: str) -> list[nn.Parameter]:
    if train == "all":
        params = list(model.parameters())
    elif train == "mlp":
        arch = arch_of(model)
        params = [p for layer in range(arch.n_layers) for p in arch.mlp(layer).parameters()]
    else:
        raise KgprobeError(f"unlearning: train must be 'all' or 'mlp', got {train!r}")
    unique: dict[int, nn.Parameter] = {id(p): p for p in params}  # tied weights appear once
    return list(unique.values())


OPTIMIZERS = ("adamw", "sgd")


def _optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """AdamW or plain SGD, no weight decay, no momentum; the fused kernel where the parameters
    allow it (on CPU the per-tensor AdamW loop is ~20x slower for a 135M model, and the step
    then dominates a training step)."""
    cls = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}.get(name)
    if cls is None:
        raise KgprobeError(f"unlearning: unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    try:
        return cls(params, lr=lr, weight_decay=0.0, fused=True)
    except (RuntimeError, ValueError, TypeError):  # dtypes / devices the fused kernel does not cover
        return cls(params, lr=lr, weight_decay=0.0)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless mini-batches of ``range(n)``: one seeded permutation per pass, cut in order."""
    while True:
        perm = torch.randperm(n, generator=generator)
        yield from perm.split(batch_size)


def _check_vectors(model: nn.Module, concept_vectors: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    arch = arch_of(model)
    out = []
    for pair in concept_vectors:
        try:
            layer, index = (int(v) for v in pair)
        except (TypeError, ValueError):
            raise KgprobeError(f"concept vector {pair!r} is not a (layer, index) pair") from None
        if not (0 <= layer < arch.n_layers and 0 <= index < arch.n_neurons):
            raise KgprobeError(f"concept vector ({layer}, {index}) is outside the model "
                               f"({arch.n_layers} layers x {arch.n_neurons} neurons)")
        out.append((layer, index))
    return out


def unlearn(model: nn.Module, tokenizer, *, method: str | Unlearner, forget: Sequence["QA"],
            retain: Sequence["QA"] = (), concept_vectors: Sequence[tuple[int, int]] = (),
            steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR, beta: float = 0.1,
            retain_weight: float | None = None, train: Literal["all", "mlp"] = "all",
            optimizer: Literal["adamw", "sgd"] = "adamw",
            batch_size: int = 8, max_grad_norm: float | None = 1.0, seed: int = 0,
            few_shot: str = "", on_step: Callable[[int, float], None] | None = None) -> dict:
    """Run one unlearning ``method`` on ``model`` in place and return its log.

    ``forget`` / ``retain`` are QA items (the retain set only enters methods whose retain weight
    is > 0); ``concept_vectors`` are the (layer, index) value vectors that ``ablation`` zeroes
    (the training methods ignore them). ``steps`` optimiser steps of ``optimizer`` (AdamW or
    SGD, lr ``lr``, no weight decay, gradient norm clipped to ``max_grad_norm``) each see one
    forget batch of ``batch_size`` items (and one retain batch); ``train`` picks the parameters:
    every parameter, or the MLPs only. ``beta`` is NPO's; ``retain_weight`` None keeps the
    method's default (1 for gradient-difference, 0 otherwise: plain NPO; 1 gives NPO+RT). The log holds ``method``,
    ``options``, ``steps``, ``lr``, ``train``, ``n_trainable``, ``losses`` (one per step) and
    ``seconds``. ``on_step(step, loss)``, when given, is called after every optimiser step
    (1-based), e.g. to follow the forget accuracy during a run.
    """
    unlearner = UNLEARNER_REGISTRY.make(method, beta=beta, retain_weight=retain_weight) \
        if not isinstance(method, Unlearner) else method
    vectors = _check_vectors(model, concept_vectors)
    start = time.perf_counter()
    log = {"method": unlearner.name, "options": unlearner.options(), "steps": 0, "lr": None, "train": None,
           "optimizer": None, "n_trainable": 0, "losses": [], "seconds": 0.0}
    if not unlearner.trains:
        if not vectors:
            raise KgprobeError(f"unlearning method {unlearner.name!r} needs at least one concept vector")
        unlearner.apply(model, vectors)
        log["seconds"] = time.perf_counter() - start
        return log

    _check_training(unlearner, steps=steps, lr=lr, batch_size=batch_size, forget=forget, retain=retain)
    params = _trainable(model, train)
    if optimizer not in OPTIMIZERS:
        raise KgprobeError(f"unlearning: unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    log.update(steps=int(steps), lr=float(lr), train=train, optimizer=optimizer,
               n_trainable=sum(p.numel() for p in params))
    generator = torch.Generator().manual_seed(int(seed))
    with _training_only(model, params):
        log["losses"] = _descend(model, tokenizer, unlearner, params, forget=forget,
                                 retain=retain if unlearner.retain_weight > 0 else None, steps=int(steps),
                                 optimizer=optimizer, lr=float(lr), batch_size=batch_size,
                                 max_grad_norm=max_grad_norm, generator=generator, few_shot=few_shot,
                                 on_step=on_step)
    log["seconds"] = time.perf_counter() - start
    return log


def _check_training(unlearner: Unlearner, *, steps, lr, batch_size: int, forget: Sequence, retain: Sequence) -> None:
    """The settings a training method needs: whole steps, a positive lr and batch size, a forget
    set, and a retain set when the method weighs one."""
    if int(steps) != steps or steps < 0:
        raise KgprobeError(f"unlearning: steps must be a whole number >= 0, got {steps}")
    if not lr > 0:
        raise KgprobeError(f"unlearning: lr must be > 0, got {lr}")
    if batch_size < 1:
        raise KgprobeError(f"unlearning: batch_size must be >= 1, got {batch_size}")
    if not forget:
        raise KgprobeError(f"unlearning method {unlearner.name!r} needs a non-empty forget set")
    if unlearner.retain_weight > 0 and not retain:
        raise KgprobeError(f"unlearning method {unlearner.name!r} has retain_weight "
                           f"{unlearner.retain_weight} but the retain set is empty")


@contextmanager
def _training_only(model: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
    """The model in eval mode (no dropout: the NPO reference and every step see the same function)
    with gradients for ``params`` alone; afterwards every parameter's ``requires_grad`` and the
    model's mode are as before and no gradient is left behind."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
            p.grad = None
        model.train(was_training)


def _descend(model: nn.Module, tokenizer, unlearner: Unlearner, params: list[nn.Parameter], *,
             forget: Sequence["QA"], retain: Sequence["QA"] | None, steps: int, optimizer: str, lr: float,
             batch_size: int, max_grad_norm: float | None, generator: torch.Generator, few_shot: str,
             on_step: Callable[[int, float], None] | None) -> list[float]:
    """``steps`` steps of ``optimizer`` on the unlearner's loss, each on one forget batch (and one
    retain batch when ``retain`` is given), drawn from ``generator``; the loss of every step."""
    ref = None
    if unlearner.needs_reference:  # NPO: the forget items under the weights before any step
        with torch.no_grad():
            ref = answer_logprobs(model, tokenizer, forget, few_shot=few_shot, batch_size=batch_size).detach()
    optimiser = _optimizer(optimizer, params, lr)
    forget_batches = _batches(len(forget), batch_size, generator)
    retain_batches = _batches(len(retain), batch_size, generator) if retain is not None else None
    losses = []
    for _ in range(steps):
        rows = next(forget_batches)
        logp_f = answer_logprobs(model, tokenizer, [forget[i] for i in rows.tolist()],
                                 few_shot=few_shot, batch_size=batch_size)
        logp_r = None
        if retain_batches is not None:
            logp_r = answer_logprobs(model, tokenizer, [retain[i] for i in next(retain_batches).tolist()],
                                     few_shot=few_shot, batch_size=batch_size)
        loss = unlearner.loss(logp_f, ref=None if ref is None else ref[rows.to(ref.device)], logp_retain=logp_r)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, float(max_grad_norm))
        optimiser.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(len(losses), losses[-1])
    return losses
