"""Which value vectors do a concept's answers lean on? First-order effects of removing each one.

Removing value vector ``v_lj`` (neuron ``j`` of layer ``l``) takes ``a_lj(t) · v_lj`` out of the
residual stream at every position ``t``, i.e. sets the activation ``a_lj(t)`` to 0. For the summed
answer log-likelihood ``L = sum_items log p(answer | prompt)``, to first order

    effect_lj = L(a) - L(a with a_lj = 0)  ≈  sum_t a_lj(t) · dL/da_lj(t)

(attribution patching: one forward and one backward pass score all neurons at once; positions of a
shared few-shot prefix, which :func:`~kgprobe.probe.qa.answer_logprobs` runs once and caches, are not
counted: the effect is that of the question and answer tokens). A large
positive effect means the answers need the vector. The locate step uses it to choose, among the
vectors whose logit-lens tokens match a concept, those the concept's questions actually use;
validation then checks the real (not first-order) effect by ablation.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from kgprobe.probe.hooks import arch_of, edit
from kgprobe.probe.qa import answer_logprobs


def _keep_into(acts: dict[int, torch.Tensor], layer: int) -> Callable[[torch.Tensor], None]:
    """A hook that stores what it sees as ``acts[layer]``."""
    def fn(t: torch.Tensor) -> None:
        acts[layer] = t
    return fn


def neuron_effects(model, tokenizer, items: Sequence, *, few_shot: str = "", batch_size: int = 16) -> torch.Tensor:
    """``[n_layers, n_neurons]``: summed first-order effect of zeroing each value vector on the
    answers' log-likelihood (positive: the answers need it)."""
    arch = arch_of(model)
    total = torch.zeros(arch.n_layers, arch.n_neurons)
    if not items:
        return total
    names = [f"blocks.{i}.mlp.hook_post" for i in range(arch.n_layers)]
    for start in range(0, len(items), batch_size):
        acts: dict[int, torch.Tensor] = {}
        with torch.enable_grad(), edit(model, {n: _keep_into(acts, i) for i, n in enumerate(names)}):
            loss = answer_logprobs(model, tokenizer, items[start:start + batch_size], few_shot=few_shot,
                                   batch_size=batch_size).sum()
            layers = sorted(acts)
            # autograd.grad: gradients for the activations only, nothing accumulates in .grad
            grads = torch.autograd.grad(loss, [acts[i] for i in layers])
        for i, g in zip(layers, grads):
            total[i] += (acts[i].detach() * g).float().sum(dim=tuple(range(g.dim() - 1))).cpu()
    return total
