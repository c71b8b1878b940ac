"""Named read/edit points, value vectors and the logit lens on Hugging Face causal LMs.

A transformer block adds its MLP output to the residual stream:

    h_post = h_mid + W_down · a,   a = act(W_gate x) ⊙ (W_up x)   (Llama family)
                                   a = gelu(W_fc x)                (GPT-2)

so column ``j`` of ``W_down`` (row ``j`` of GPT-2's Conv1D ``c_proj.weight``) is the *value
vector* that neuron ``j`` writes, scaled by ``a_j``.  Projecting a vector ``v`` through the
final norm and the unembedding, ``logits = W_U · norm(v)``, shows the tokens it promotes (the
logit lens).

Hook point names are TransformerLens's (the same strings, the same tensors):

- ``blocks.{i}.hook_resid_pre``   input hidden state of block ``i``            [b, t, d_model]
- ``blocks.{i}.hook_resid_post``  output hidden state of block ``i``           [b, t, d_model]
- ``blocks.{i}.mlp.hook_post``    the activation ``a`` (input of down_proj)    [b, t, n_neurons]
- ``blocks.{i}.hook_mlp_out``     MLP output ``W_down · a``                    [b, t, d_model]

The architecture is found by structure (a list of decoder blocks whose ``mlp`` has a
down projection, a final norm next to it, and output embeddings), so Llama, Mistral, Qwen2,
Gemma 1/2/3, OLMo 1/2, Phi-3, GPT-2, GPT-NeoX and Falcon-style models all resolve.

Models whose layers a device map spreads over several devices (``load_causal_lm(...,
device_map="auto")``) work too: each hook sees the tensor on its own layer's device, a tensor an
edit returns is moved to the device and dtype of the one it replaces, and value vectors of layers
that accelerate offloaded to CPU or disk are read by loading the layer for the moment (editing
them in place needs the layer on a device).
"""
from __future__ import annotations

import contextlib
import operator
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from kgprobe.errors import KgprobeError
from kgprobe.models.device import execution_device

HOOK_POINTS = (
    "blocks.{i}.hook_resid_pre",
    "blocks.{i}.hook_resid_post",
    "blocks.{i}.mlp.hook_post",
    "blocks.{i}.hook_mlp_out",
)

# Where the decoder stack, the final norm and the MLP down projection live, tried in order.
_BASES = ("model", "model.language_model", "language_model", "transformer", "gpt_neox", "model.model")
_LAYER_LISTS = ("layers", "h")
_NORMS = ("norm", "ln_f", "final_layer_norm", "final_norm")
_DOWN_PROJS = ("down_proj", "c_proj", "dense_4h_to_h")
_NAME_RE = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|mlp\.hook_post|hook_mlp_out)$")


@dataclass(frozen=True)
class Arch:
    """Where the parts the probe needs live inside one model (see ``arch_of``)."""

    layers: Sequence[nn.Module]
    final_norm: nn.Module
    output_embeddings: nn.Module
    down_proj_name: str
    n_layers: int
    n_neurons: int
    d_model: int

    @property
    def unembed(self) -> torch.Tensor:
        """``W_U`` [vocab, d_model], the weight of the output embeddings (lm_head)."""
        return self.output_embeddings.weight

    def mlp(self, layer: int) -> nn.Module:
        return self.layers[self.check_layer(layer)].mlp

    def down_proj(self, layer: int) -> nn.Module:
        """``nn.Linear`` with weight [d_model, n_neurons], or GPT-2 ``Conv1D`` with weight [n_neurons, d_model]."""
        return getattr(self.mlp(layer), self.down_proj_name)

    def rows_are_vectors(self, layer: int) -> bool:
        """True when value vector ``j`` is ``weight[j]`` (Conv1D), False when it is ``weight[:, j]`` (Linear)."""
        return not isinstance(self.down_proj(layer), nn.Linear)

    def check_layer(self, layer: int) -> int:
        """``layer`` as an int, or a one-line error when it is not a layer of this model."""
        value = _as_int(layer)
        if value is None or not 0 <= value < self.n_layers:
            raise KgprobeError(f"layer {layer!r} out of range: the model has {self.n_layers} layers "
                               f"(0..{self.n_layers - 1})")
        return value

    def check_index(self, index: int) -> int:
        """``index`` as an int, or a one-line error when it is not a neuron of the MLPs."""
        value = _as_int(index)
        if value is None or not 0 <= value < self.n_neurons:
            raise KgprobeError(f"neuron index {index!r} out of range: each MLP has {self.n_neurons} neurons "
                               f"(0..{self.n_neurons - 1})")
        return value


def _as_int(value: object) -> int | None:
    """Python/numpy/0-d torch integers as int; None for bools, floats and anything else."""
    if isinstance(value, bool) or (torch.is_tensor(value) and (value.dim() or value.is_floating_point())):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _get_path(obj: object, path: str) -> object | None:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def arch_of(model: nn.Module) -> Arch:
    """Resolve the decoder blocks, final norm, unembedding and MLP down projection of ``model``."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for base_path in _BASES:
        base = _get_path(model, base_path)
        if not isinstance(base, nn.Module):
            continue
        layers = next((getattr(base, n) for n in _LAYER_LISTS if isinstance(getattr(base, n, None), nn.ModuleList)),
                      None)
        norm = next((getattr(base, n) for n in _NORMS if isinstance(getattr(base, n, None), nn.Module)), None)
        if not layers or norm is None:
            continue
        mlp = getattr(layers[0], "mlp", None)
        down_name = next((n for n in _DOWN_PROJS if isinstance(getattr(mlp, n, None), nn.Module)), None)
        if down_name is None or out is None or getattr(out, "weight", None) is None:
            continue
        down = getattr(mlp, down_name)
        if isinstance(down, nn.Linear):
            d_model, n_neurons = down.weight.shape
        elif down.weight.dim() == 2 and type(down).__name__ == "Conv1D":
            n_neurons, d_model = down.weight.shape  # Conv1D computes x @ W, W: [in, out]
        else:
            continue
        if out.weight.shape[-1] != d_model:
            continue
        return Arch(layers=layers, final_norm=norm, output_embeddings=out, down_proj_name=down_name,
                    n_layers=len(layers), n_neurons=int(n_neurons), d_model=int(d_model))
    raise KgprobeError(
        f"unsupported architecture {type(model).__name__}: expected decoder blocks whose mlp has "
        f"{'/'.join(_DOWN_PROJS)}, a final norm and an lm_head (Llama/Mistral/Qwen2/Gemma/OLMo/GPT-2 families)"
    )


def hook_names(model: nn.Module) -> list[str]:
    """Every hook point name of ``model``, block by block."""
    n = arch_of(model).n_layers
    return [p.format(i=i) for i in range(n) for p in HOOK_POINTS]


def _parse(arch: Arch, name: str) -> tuple[int, str]:
    m = _NAME_RE.match(name) if isinstance(name, str) else None
    if m is None:
        raise KgprobeError(f"unknown hook point {name!r}: expected one of {', '.join(HOOK_POINTS)}")
    return arch.check_layer(int(m.group(1))), m.group(2)


def _first(value):
    """Block outputs are a tensor (transformers 5) or a tuple whose first item is the hidden state."""
    return value if torch.is_tensor(value) else value[0]


def _replace_first(value, tensor):
    return tensor if torch.is_tensor(value) else (tensor, *value[1:])


def _register(arch: Arch, name: str, fn: Callable[[torch.Tensor], torch.Tensor | None], *, prepend: bool):
    """Register one hook that calls ``fn`` on the tensor at ``name``; a returned tensor replaces it."""
    layer, point = _parse(arch, name)
    block = arch.layers[layer]
    if point == "hook_resid_pre":
        def pre(module, args, kwargs):
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})
        return block.register_forward_pre_hook(pre, with_kwargs=True, prepend=prepend)
    if point == "mlp.hook_post":
        def pre_down(module, args):
            new = fn(args[0])
            return None if new is None else (new, *args[1:])
        return arch.down_proj(layer).register_forward_pre_hook(pre_down, prepend=prepend)
    target = block if point == "hook_resid_post" else arch.mlp(layer)

    def post(module, args, output):
        new = fn(_first(output))
        return None if new is None else _replace_first(output, new)
    return target.register_forward_hook(post, prepend=prepend)


@contextlib.contextmanager
def _hooks(arch: Arch, items: Iterable[tuple[str, Callable]], *, prepend: bool) -> Iterator[None]:
    handles = []
    try:
        for name, fn in items:
            handles.append(_register(arch, name, fn, prepend=prepend))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def capture(model: nn.Module, names: Iterable[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Yield a dict that each forward pass fills with detached copies of the named tensors.

    A second forward inside the block overwrites the entries.  Edits (``edit``) always run
    before captures of the same point, whatever the nesting order, so captures see edited values.
    """
    arch = arch_of(model)
    store: dict[str, torch.Tensor] = {}

    def saver(name: str):
        def fn(t: torch.Tensor) -> None:
            store[name] = t.detach().clone()  # clone: HF code may later modify the tensor in place
        return fn

    with _hooks(arch, [(n, saver(n)) for n in dict.fromkeys(names)], prepend=False):
        yield store


@contextlib.contextmanager
def edit(model: nn.Module, edits: Mapping[str, Callable[[torch.Tensor], torch.Tensor]]) -> Iterator[None]:
    """Replace the tensor at each named point by ``fn(tensor)`` during forward passes in the block.

    ``fn`` must return a tensor of the same shape (returning None keeps the input, which lets
    ``fn`` modify it in place); it is moved to the device and dtype of the tensor it replaces. With
    layers on several devices (a device map) each point's tensor is on its own layer's device, so
    a tensor ``fn`` combines with it belongs on ``tensor.device`` (``t + v.to(t.device)``). All
    hooks are removed on exit, also after an exception.
    """
    arch = arch_of(model)

    def checked(name: str, fn: Callable):
        def run(t: torch.Tensor):
            new = fn(t)
            if new is not None and (not torch.is_tensor(new) or new.shape != t.shape):
                got = tuple(new.shape) if torch.is_tensor(new) else type(new).__name__
                raise KgprobeError(f"edit of {name} must return a tensor of shape {tuple(t.shape)}, got {got}")
            return None if new is None else new.to(device=t.device, dtype=t.dtype)
        return run

    # prepend: edits run before any capture hook on the same module
    with _hooks(arch, [(n, checked(n, f)) for n, f in edits.items()], prepend=True):
        yield


# ------------------------------------------------------------------ value vectors
def value_vectors(model: nn.Module, layer: int) -> torch.Tensor:
    """Detached copy of layer ``layer``'s value vectors, [n_neurons, d_model] (row j = neuron j)."""
    arch = arch_of(model)
    layer = arch.check_layer(layer)
    with _loaded(arch.down_proj(layer)):
        w = arch.down_proj(layer).weight.detach()
        return (w if arch.rows_are_vectors(layer) else w.T).clone()


def all_value_vectors(model: nn.Module) -> torch.Tensor:
    """Every value vector, [n_layers * n_neurons, d_model]; row r is (layer r // N, neuron r % N)."""
    arch = arch_of(model)
    return torch.cat([value_vectors(model, i) for i in range(arch.n_layers)])


def _offloaded(module: nn.Module) -> bool:
    """True when accelerate offloaded ``module``'s weights (to CPU or disk): they sit on ``meta``
    and are loaded only while it runs."""
    return any(p.device.type == "meta" for p in module.parameters())


def _loaded(module: nn.Module):
    """A context in which an offloaded ``module``'s weights are real tensors (nothing otherwise;
    accelerate hooks each module of an offloaded layer that has weights of its own)."""
    if not _offloaded(module):
        return contextlib.nullcontext()
    from accelerate.utils import align_module_device

    return align_module_device(module)


def _weight_view(arch: Arch, layer: int, index: int) -> torch.Tensor:
    w = arch.down_proj(layer).weight
    if w.device.type == "meta":
        raise KgprobeError(f"layer {layer}'s weights are offloaded to CPU or disk by the device map: editing "
                           "value vectors needs the layer on a device (more GPU memory, or no offloading)")
    return w[index] if arch.rows_are_vectors(layer) else w[:, index]


def value_vector(model: nn.Module, layer: int, index: int) -> torch.Tensor:
    """Detached copy of value vector (layer, index) [d_model], read without copying the layer
    (the layer must be on a device, as for :func:`set_value_vector`)."""
    arch = arch_of(model)
    return _weight_view(arch, arch.check_layer(layer), arch.check_index(index)).detach().clone()


def set_value_vector(model: nn.Module, layer: int, index: int, vector: torch.Tensor) -> None:
    """Write ``vector`` [d_model] as value vector (layer, index), in place (persists; no grad)."""
    arch = arch_of(model)
    layer, index = arch.check_layer(layer), arch.check_index(index)
    vector = torch.as_tensor(vector)
    if vector.shape != (arch.d_model,):
        raise KgprobeError(f"value vector must have shape ({arch.d_model},), got {tuple(vector.shape)}")
    with torch.no_grad():
        _weight_view(arch, layer, index).copy_(vector)


@contextlib.contextmanager
def damage_value_vectors(model: nn.Module, targets: Iterable[tuple[int, int]], *, mode: str = "zero",
                         noise_std: float = 1.0, seed: int = 0) -> Iterator[None]:
    """Damage value vectors inside the block and restore them bitwise on exit.

    ``mode="zero"`` sets v ← 0; ``mode="noise"`` sets v ← v + noise_std · z with z ~ N(0, I)
    drawn from a CPU ``torch.Generator`` seeded with ``seed`` (same seed → same noise on any
    device), one draw per target in the given order.
    """
    if mode not in ("zero", "noise"):
        raise KgprobeError(f"damage mode {mode!r}: expected 'zero' or 'noise'")
    if mode == "noise" and not noise_std > 0:
        raise KgprobeError(f"noise_std must be > 0, got {noise_std!r}")
    arch = arch_of(model)
    # duplicates are damaged once (and restored once)
    targets = list(dict.fromkeys((arch.check_layer(layer), arch.check_index(index)) for layer, index in targets))
    gen = torch.Generator().manual_seed(int(seed))
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for layer, index in targets:
                view = _weight_view(arch, layer, index)
                saved.append((view, view.detach().clone()))
                if mode == "zero":
                    view.zero_()
                else:
                    z = torch.randn(arch.d_model, generator=gen, dtype=torch.float32)
                    view.add_((noise_std * z).to(device=view.device, dtype=view.dtype))
        yield
    finally:
        with torch.no_grad():
            for view, original in reversed(saved):
                view.copy_(original)


# ------------------------------------------------------------------ logit lens
def raw_lens_ids(vectors: torch.Tensor, unembed: torch.Tensor, *, k: int) -> torch.Tensor:
    """Top-``k`` token ids [n, k] of the raw lens ``v · W_U^T`` (no final norm, no bias; as
    ConceptVectors reads its vectors) of each row of ``vectors`` [n, d], in float32 on the CPU
    (``unembed`` is ``W_U`` [vocab, d]; pass it as float32 on the CPU to skip the conversion)."""
    w = unembed.detach().float().cpu()
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= w.shape[0]:
        raise KgprobeError(f"k must be an integer in 1..{w.shape[0]} (the vocabulary size), got {k!r}")
    return torch.topk(vectors.detach().float().cpu() @ w.T, k, dim=1).indices


def logit_lens(model: nn.Module, vectors: torch.Tensor, *, k: int = 20,
               chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (logits [n, k] float32, token ids [n, k]) of ``lm_head(final_norm(v))`` per vector.

    Uses the model's own final norm module (RMSNorm, Gemma's (1 + w) RMSNorm, LayerNorm, ...).
    Gemma 2/3's final logit soft-capping c·tanh(x/c) is left out: it is monotonic, so the
    top-k tokens are the same; the values are the pre-cap logits. ``chunk`` vectors are
    projected at a time, so at most ``chunk x vocab`` logits exist (a whole SmolLM2 layer,
    1,536 value vectors, would be 1,536 x 49,152).
    """
    arch = arch_of(model)
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise KgprobeError(f"k must be a positive integer, got {k!r}")
    vectors = torch.as_tensor(vectors)
    if vectors.dim() == 1:
        vectors = vectors[None]
    if vectors.dim() != 2 or vectors.shape[-1] != arch.d_model:
        raise KgprobeError(f"vectors must have shape [n, {arch.d_model}], got {tuple(vectors.shape)}")
    w = arch.unembed
    k = min(k, w.shape[0])
    values, ids = [], []
    # the norm and the unembedding may sit on different devices (a device map), or be offloaded
    head_at = execution_device(arch.output_embeddings, w.device)
    norm_at = execution_device(arch.final_norm, head_at)
    with torch.no_grad():
        for part in vectors.split(max(int(chunk), 1)):
            normed = arch.final_norm(part.to(device=norm_at, dtype=w.dtype))
            logits = arch.output_embeddings(normed.to(head_at))
            top = logits.float().topk(k, dim=-1)
            values.append(top.values)
            ids.append(top.indices)
    if not values:
        return torch.zeros((0, k)), torch.zeros((0, k), dtype=torch.long)
    return torch.cat(values), torch.cat(ids)
