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
needle                mean_f logp_θ(y|x), θ = the concept columns only, after v ← v + ε (below)
====================  =========================================================================

**Text items.** ``forget`` and ``retain`` may mix QA items with plain strings (concept text such
as :func:`kgprobe.probe.concept_text.concept_sentences`). A string ``s`` with tokens
``s_1..s_n`` counts as one item with ``logp(s) = sum_{t>=2} log p(s_t | s_<t)`` (the NLL of the
whole sentence, BOS prepended when the tokenizer has one, so then ``s_1`` is scored too), and
goes through every loss exactly like a QA item's ``logp(y|x)``; the few-shot prefix is not used
for text. This is how the original ConceptVectors trains (on Wikipedia chunks, not questions).

**Needle** (ConceptVectors, Hong et al. 2024): first each concept vector gets Gaussian noise,
``v ← v + ε``, ``ε ~ N(0, σ² I)``, ``σ = noise_ratio · |v| / sqrt(d_model)`` (so ``|ε| ≈
noise_ratio · |v|``; the original adds N(0, 0.1²) to LLaMA-2-7B columns, which we estimate at a
ratio of about 4; drawn from a generator seeded by ``seed``); then gradient ascent where only
those columns are trainable: the gradient of each down projection is multiplied by a 0/1 mask
that is 1 on the concept columns alone. With AdamW (no weight decay) an entry whose gradient is
always 0 keeps ``m = v = 0`` and moves by ``lr · 0 / (0 + eps) = 0``, so every other weight stays
bit-identical. Its default lr is :data:`NEEDLE_LR` (the original uses 1e-1..5e-1: one column
moves), used when ``unlearn(lr=None)``; ``noise_ratio`` is a method option
(``unlearn(method_options={"noise_ratio": ...})``).

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
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn

from kgprobe.errors import KgprobeError
from kgprobe.models.device import input_device
from kgprobe.probe.hooks import arch_of, set_value_vector, value_vector
from kgprobe.probe.original import ORIGINAL_NOISE_RATIO, noise_std_for
from kgprobe.probe.qa import answer_logprobs
from kgprobe.registry import Registry

if TYPE_CHECKING:  # QA items: anything with .prompt and .answer
    from kgprobe.probe.concepts import QA

__all__ = ["UNLEARNERS", "UNLEARNER_REGISTRY", "Unlearner", "GradientAscent", "GradientDifference", "NPO",
           "Ablation", "Needle", "Snapshot", "unlearn", "unlearner_names", "snapshot", "restore", "default_lr",
           "text_logprobs", "add_vector_noise", "DEFAULT_STEPS", "DEFAULT_LR", "NEEDLE_LR", "NEEDLE_NOISE_RATIO"]

# Measured on SmolLM2-135M with 7 France cloze QA it answers right and 9 facts about other
# countries (batch 8, AdamW, all parameters): at lr 1e-5, 10 steps (1-3 minutes of shared 2-core
# CPU) take forget accuracy 1.0 -> 0.0 for gradient ascent and NPO (retain collapses too: the
# known failure of ascent without a retain term) and 1.0 -> 0.29 for gradient difference with
# retain 1.0 -> 0.89. lr 3e-6 needs ~8 steps to empty the forget set; 3e-5 wrecks everything
# within 4. 1e-5 is also the lr of the NPO and TOFU papers.
DEFAULT_STEPS = 10
DEFAULT_LR = 1e-5
# Needle trains one column per concept vector: the original's lr range is 1e-1..5e-1 (2e-1 in its
# scripts). On the tiny test Llama 1e-1 with AdamW moves the column by ~lr per entry per step.
NEEDLE_LR = 1e-1
# |noise| / |v|: the original adds N(0, 0.1^2) per entry to 4096-dim LLaMA-2 columns (|ε| ≈ 6.4);
# the same estimate of the ratio to the columns' norms there as the original protocol's
NEEDLE_NOISE_RATIO = ORIGINAL_NOISE_RATIO

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
    default_lr: ClassVar[float] = DEFAULT_LR
    only_concept_vectors: ClassVar[bool] = False  # train the concept columns alone (see Needle)

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


class Needle(GradientAscent):
    """Needle: ``v ← v + ε`` on each concept vector (``σ = noise_ratio · |v| / sqrt(d)``), then
    ``L = mean_f logp_θ(y|x) [+ w · mean_r NLL_θ]`` with θ = those columns only (gradient mask)."""

    name = "needle"
    default_lr = NEEDLE_LR
    only_concept_vectors = True

    def __init__(self, *, beta: float = 0.1, retain_weight: float | None = None,
                 noise_ratio: float = NEEDLE_NOISE_RATIO):
        super().__init__(beta=beta, retain_weight=retain_weight)
        if not noise_ratio >= 0 or not math.isfinite(noise_ratio):
            raise KgprobeError(f"unlearning: noise_ratio must be >= 0, got {noise_ratio}")
        self.noise_ratio = float(noise_ratio)

    def options(self) -> dict:
        return {"retain_weight": self.retain_weight, "noise_ratio": self.noise_ratio}


UNLEARNERS: dict[str, type[Unlearner]] = {cls.name: cls for cls in
                                          (GradientAscent, GradientDifference, NPO, Ablation, Needle)}
UNLEARNER_REGISTRY = Registry("unlearning method", Unlearner, UNLEARNERS,
                              aliases={"ga": "gradient-ascent", "gd": "gradient-difference"})


def unlearner_names() -> list[str]:
    return sorted(UNLEARNERS)


def default_lr(method: str | Unlearner) -> float:
    """The lr ``unlearn(lr=None)`` uses for ``method``: :data:`NEEDLE_LR` for needle,
    :data:`DEFAULT_LR` for the others."""
    return method.default_lr if isinstance(method, Unlearner) else UNLEARNER_REGISTRY.lookup(method).default_lr


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


def unlearn(model: nn.Module, tokenizer, *, method: str | Unlearner, forget: Sequence["QA | str"],
            retain: Sequence["QA | str"] = (), concept_vectors: Sequence[tuple[int, int]] = (),
            steps: int = DEFAULT_STEPS, lr: float | None = None, beta: float = 0.1,
            retain_weight: float | None = None, train: Literal["all", "mlp"] = "all",
            optimizer: Literal["adamw", "sgd"] = "adamw",
            batch_size: int = 8, max_grad_norm: float | None = 1.0, seed: int = 0,
            few_shot: str = "", on_step: Callable[[int, float], None] | None = None,
            method_options: Mapping[str, Any] | None = None) -> dict:
    """Run one unlearning ``method`` on ``model`` in place and return its log.

    ``forget`` / ``retain`` are QA items and/or plain strings (concept text, scored as whole
    sentences: see the module docstring; the retain set only enters methods whose retain weight
    is > 0); ``concept_vectors`` are the (layer, index) value vectors that ``ablation`` zeroes and
    ``needle`` noises and trains alone (the other training methods ignore them). ``steps``
    optimiser steps of ``optimizer`` (AdamW or SGD, lr ``lr``, None: the method's
    :func:`default_lr`, no weight decay, gradient norm clipped to ``max_grad_norm``) each see one
    forget batch of ``batch_size`` items (and one retain batch); ``train`` picks the parameters:
    every parameter, or the MLPs only (needle ignores it: its log says ``"concept-vectors"``).
    ``beta`` is NPO's; ``retain_weight`` None keeps the method's default (1 for
    gradient-difference, 0 otherwise: plain NPO; 1 gives NPO+RT); ``method_options`` are further
    constructor options of the method (needle: ``noise_ratio``). The log holds ``method``,
    ``options``, ``steps``, ``lr``, ``train``, ``n_trainable``, ``losses`` (one per step),
    ``seconds`` and, for needle, ``noise_norms`` (|ε| per vector). ``on_step(step, loss)``, when
    given, is called after every optimiser step (1-based).
    """
    unlearner = UNLEARNER_REGISTRY.make(method, beta=beta, retain_weight=retain_weight, **dict(method_options or {})) \
        if not isinstance(method, Unlearner) else method
    vectors = _check_vectors(model, concept_vectors)
    start = time.perf_counter()
    log = {"method": unlearner.name, "options": unlearner.options(), "steps": 0, "lr": None, "train": None,
           "optimizer": None, "n_trainable": 0, "losses": [], "seconds": 0.0}
    if not unlearner.trains or unlearner.only_concept_vectors:
        if not vectors:
            raise KgprobeError(f"unlearning method {unlearner.name!r} needs at least one concept vector")
    if not unlearner.trains:
        unlearner.apply(model, vectors)
        log["seconds"] = time.perf_counter() - start
        return log

    lr = unlearner.default_lr if lr is None else lr
    _check_training(unlearner, steps=steps, lr=lr, batch_size=batch_size, forget=forget, retain=retain)
    if optimizer not in OPTIMIZERS:
        raise KgprobeError(f"unlearning: unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    masks: dict[int, Tensor] = {}
    if unlearner.only_concept_vectors:
        params, masks = _column_masks(model, vectors)
        train = "concept-vectors"
        log["noise_norms"] = add_vector_noise(model, vectors, noise_ratio=getattr(unlearner, "noise_ratio", 0.0),
                                              seed=seed)
        n_trainable = int(sum(int(m.sum()) for m in masks.values()))
    else:
        params = _trainable(model, train)
        n_trainable = sum(p.numel() for p in params)
    log.update(steps=int(steps), lr=float(lr), train=train, optimizer=optimizer, n_trainable=n_trainable)
    generator = torch.Generator().manual_seed(int(seed))
    with _training_only(model, params), _masked_gradients(params, masks):
        log["losses"] = _descend(model, tokenizer, unlearner, params, forget=forget,
                                 retain=retain if unlearner.retain_weight > 0 else None, steps=int(steps),
                                 optimizer=optimizer, lr=float(lr), batch_size=batch_size,
                                 max_grad_norm=max_grad_norm, generator=generator, few_shot=few_shot,
                                 on_step=on_step)
    log["seconds"] = time.perf_counter() - start
    return log


# ------------------------------------------------------------------ needle: noise and column masks
def add_vector_noise(model: nn.Module, vectors: Sequence[tuple[int, int]], *, noise_ratio: float,
                     seed: int = 0) -> list[float]:
    """``v ← v + ε`` for each (layer, index) in order, ``ε ~ N(0, σ² I_d)`` with
    ``σ = noise_ratio · |v| / sqrt(d)`` (so ``E|ε|² = noise_ratio² |v|²``), drawn in float32 on
    the CPU from a generator seeded by ``seed`` (the same seed, the same noise); returns ``|ε|``
    per vector. A repeated pair gets noise twice."""
    generator = torch.Generator().manual_seed(int(seed))
    norms = []
    for layer, index in vectors:
        v = value_vector(model, layer, index)
        sigma = noise_std_for(model, layer, index, noise_ratio=noise_ratio)
        eps = torch.randn(v.numel(), generator=generator) * sigma
        set_value_vector(model, layer, index, (v.float().cpu() + eps).to(v.dtype))
        norms.append(float(eps.norm()))
    return norms


def _column_masks(model: nn.Module, vectors: Sequence[tuple[int, int]]) -> tuple[list[nn.Parameter], dict[int, Tensor]]:
    """The down projection weights holding ``vectors`` and, per weight (by ``id``), a 0/1 mask of
    its shape that is 1 exactly on those value vectors (a column of ``nn.Linear``, a row of Conv1D)."""
    arch = arch_of(model)
    params: dict[int, nn.Parameter] = {}
    masks: dict[int, Tensor] = {}
    for layer, index in vectors:
        weight = arch.down_proj(layer).weight
        if weight.device.type == "meta":
            raise KgprobeError(f"needle: layer {layer}'s weights are offloaded by the device map")
        mask = masks.setdefault(id(weight), torch.zeros_like(weight))
        params[id(weight)] = weight
        if arch.rows_are_vectors(layer):
            mask[index] = 1
        else:
            mask[:, index] = 1
    return list(params.values()), masks


@contextmanager
def _masked_gradients(params: list[nn.Parameter], masks: Mapping[int, Tensor]) -> Iterator[None]:
    """Every gradient of a parameter with a mask multiplied by it before it is accumulated
    (``grad ← grad ⊙ M``), so the optimiser only ever sees gradients on the mask's entries."""
    def multiply_by(mask: Tensor) -> Callable[[Tensor], Tensor]:
        return lambda grad: grad * mask

    handles = [p.register_hook(multiply_by(masks[id(p)])) for p in params if id(p) in masks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# ------------------------------------------------------------------ text items
def text_logprobs(model: nn.Module, tokenizer, texts: Sequence[str], *, batch_size: int = 8) -> Tensor:
    """Summed log-probs of whole texts [n], WITH gradients, in order: for tokens ``s_1..s_n``,
    ``logp(s) = sum_{t>=2} log p(s_t | s_<t)``. ``s_1`` is the start token the tokenizer adds
    (LLaMA's BOS) or, when it adds none, its EOS (the document separator a base LM saw before each
    text); without either the first word is context only. Rows are right padded."""
    if not texts:
        return torch.zeros(0, device=input_device(model))
    rows = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    plain = tokenizer(list(texts[:1]), add_special_tokens=False)["input_ids"][0]
    start = tokenizer.eos_token_id if len(rows[0]) == len(plain) else None
    rows = [([start] if start is not None else []) + list(r) for r in rows]
    for text, row in zip(texts, rows):
        if len(row) < 2:
            raise KgprobeError(f"unlearning: the text {text[:40]!r} has fewer than 2 tokens to score")
    device = input_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for at in range(0, len(rows), batch_size):
        part = rows[at:at + batch_size]
        width = max(len(r) for r in part)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in part], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in part], device=device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        token_lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        out.append((token_lp * mask[:, 1:].to(token_lp.dtype)).sum(-1))
    return torch.cat(out)


def _logprobs(model: nn.Module, tokenizer, items: Sequence, *, few_shot: str, batch_size: int) -> Tensor:
    """``logp`` per item in order: :func:`~kgprobe.probe.qa.answer_logprobs` for QA items,
    :func:`text_logprobs` (no few-shot prefix) for strings."""
    texts = [i for i, item in enumerate(items) if isinstance(item, str)]
    if not texts:
        return answer_logprobs(model, tokenizer, items, few_shot=few_shot, batch_size=batch_size)
    qa = [i for i, item in enumerate(items) if not isinstance(item, str)]
    parts = [text_logprobs(model, tokenizer, [items[i] for i in texts], batch_size=batch_size)]
    if qa:
        parts.append(answer_logprobs(model, tokenizer, [items[i] for i in qa], few_shot=few_shot,
                                     batch_size=batch_size).to(parts[0].device))
    order = torch.tensor(texts + qa)
    return torch.cat(parts)[torch.argsort(order).to(parts[0].device)]


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
             forget: Sequence["QA | str"], retain: Sequence["QA | str"] | None, steps: int, optimizer: str, lr: float,
             batch_size: int, max_grad_norm: float | None, generator: torch.Generator, few_shot: str,
             on_step: Callable[[int, float], None] | None) -> list[float]:
    """``steps`` steps of ``optimizer`` on the unlearner's loss, each on one forget batch (and one
    retain batch when ``retain`` is given), drawn from ``generator``; the loss of every step."""
    ref = None
    if unlearner.needs_reference:  # NPO: the forget items under the weights before any step
        with torch.no_grad():
            ref = _logprobs(model, tokenizer, forget, few_shot=few_shot, batch_size=batch_size).detach()
    optimiser = _optimizer(optimizer, params, lr)
    forget_batches = _batches(len(forget), batch_size, generator)
    retain_batches = _batches(len(retain), batch_size, generator) if retain is not None else None
    losses = []
    for _ in range(steps):
        rows = next(forget_batches)
        logp_f = _logprobs(model, tokenizer, [forget[i] for i in rows.tolist()],
                           few_shot=few_shot, batch_size=batch_size)
        logp_r = None
        if retain_batches is not None:
            logp_r = _logprobs(model, tokenizer, [retain[i] for i in next(retain_batches).tolist()],
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
