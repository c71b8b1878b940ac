"""Memory planning: batch sizes from free memory, and out-of-memory answered by halving the batch.

**Free memory** (:func:`free_memory_bytes`): on a GPU, what the driver reports free plus what
PyTorch's caching allocator holds but does not use (``reserved - allocated``, reusable by the
next allocation); on a CPU, ``MemAvailable`` of ``/proc/meminfo`` (``psutil`` elsewhere, else a
conservative 2 GiB). Both are multiplied by a safety factor (0.9), since other processes and
allocator fragmentation take their share.

**Planning** (:func:`plan_batch_size`): a batch of ``n`` items needs about
``fixed + n * per_item`` bytes, so the largest batch that fits a ``fraction`` of free memory is

    n = floor((fraction * free - fixed) / per_item),   clamped to [minimum, limit]

The ``*_bytes`` estimators below give ``per_item`` for each use. They count the big tensors
only (logits, key/value caches, score blocks), so ``fraction`` (0.5 by default) leaves room for
what they leave out. ``batch_size="auto"`` everywhere means this plan with ``limit`` = the fixed
default the place had before, so a machine with room gets the very same batches (and numbers)
as before; an explicit integer is used as given.

**Halving** (:class:`OomHalving`, :func:`halve_on_oom`): an estimate can be wrong, so a batch
that runs out of memory anyway (``torch.OutOfMemoryError``, or a CPU allocator's
``RuntimeError``) is not a crash: the cache is freed, the batch size halved, and the same items
retried, down to batch size 1, where the error becomes a one-line ``KgprobeError``. The reduced
size is remembered, so later batches do not run out again. Each halving is reported through
``on_halve(old, new, reason)`` and kept in ``notes``, for the caller's run record. Every item
is run exactly once and the results come back in item order, so a halved run gives what an
unhalved run gives (up to float rounding where the model's arithmetic depends on the batch's
shape, e.g. its padding).
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch

from kgprobe.errors import KgprobeError, warn

T = TypeVar("T")

#: free memory is taken times this, for other processes and allocator fragmentation
SAFETY = 0.9
#: free host memory assumed when neither /proc/meminfo nor psutil can say
FALLBACK_BYTES = 2 << 30
MEMINFO = Path("/proc/meminfo")


# ------------------------------------------------------------------ free memory and the plan
def _as_device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    return device if isinstance(device, torch.device) else torch.device(device)


def host_available_bytes() -> int:
    """Host memory available to a new allocation, without swapping: ``MemAvailable`` (Linux)."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file counts kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # not installed, or no answer on this platform
        return FALLBACK_BYTES


def free_memory_bytes(device=None, *, safety: float = SAFETY) -> int:
    """Bytes a new batch may use on ``device``: ``safety * free``.

    CUDA: ``free = driver free + (reserved - allocated)`` of PyTorch's caching allocator; CPU
    (and anything else): :func:`host_available_bytes`.
    """
    dev = _as_device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        free += torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    else:
        free = host_available_bytes()
    return int(safety * free)


def plan_batch_size(*, bytes_per_item: int, device=None, fixed_bytes: int = 0, limit: int | None = None,
                    minimum: int = 1, fraction: float = 0.5) -> int:
    """The largest ``n`` with ``fixed_bytes + n * bytes_per_item <= fraction * free``, clamped to
    ``[minimum, limit]`` (``limit=None``: no upper bound)."""
    room = fraction * free_memory_bytes(device) - fixed_bytes
    n = int(room // max(1, int(bytes_per_item)))
    if limit is not None:
        n = min(n, int(limit))
    return max(int(minimum), n)


def resolve_batch_size(batch_size: int | str, *, what: str = "batch_size") -> int | None:
    """``batch_size`` checked: a positive int as given, ``None`` for ``"auto"`` (plan it)."""
    if batch_size == "auto":
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise KgprobeError(f"{what} must be a positive integer or 'auto', got {batch_size!r}")
    return batch_size


# ------------------------------------------------------------------ estimators of bytes per item
def _config_value(config, *names: str, default: int = 0) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def dtype_bytes(model: torch.nn.Module) -> int:
    """Bytes of one element of the model's parameters (4 when it has none)."""
    p = next(model.parameters(), None)
    return p.element_size() if p is not None else 4


def lm_bytes_per_item(model: torch.nn.Module, *, tokens: int, cached: int = 0,
                             logit_positions: int | None = None) -> int:
    """Bytes one row of a transformer LM's forward pass needs (causal or masked; for an encoder the
    ``kv`` term stands for its keys and values), with ``b`` the parameters' bytes per element,
    ``T = tokens`` run, ``P = cached`` prefix tokens in the key/value cache, ``K = logit_positions``
    (``T`` when None) positions through the unembedding, and the config's ``L`` layers, ``d``
    hidden size, ``f`` MLP size, ``h`` heads, ``h_kv`` key/value heads, ``V`` vocabulary:

        kv      = L * 2 * h_kv * (d / h) * (P + T) * b     the cache, grown to P + T per row
        acts    = T * (4 d + 2 f) * b + h * T * (P + T) * b  one layer's activations and attention
        logits  = K * V * (b + 4 + 4)                      logits, their float copy, log-softmax
        per_item = kv + acts + logits
    """
    cfg = getattr(model, "config", None)
    b = dtype_bytes(model)
    d = _config_value(cfg, "hidden_size", "n_embd", "d_model", default=1024)
    layers = _config_value(cfg, "num_hidden_layers", "n_layer", "num_layers", default=24)
    heads = _config_value(cfg, "num_attention_heads", "n_head", default=16)
    kv_heads = _config_value(cfg, "num_key_value_heads", default=heads)
    ffn = _config_value(cfg, "intermediate_size", "n_inner", default=4 * d)
    vocab = _config_value(cfg, "vocab_size", default=50_000)
    t, span = max(1, tokens), max(1, cached + tokens)
    k = t if logit_positions is None else max(1, logit_positions)
    kv = layers * 2 * kv_heads * (d // max(1, heads)) * span * b
    acts = t * (4 * d + 2 * ffn) * b + heads * t * span * b
    return kv + acts + k * vocab * (b + 8)


def scan_bytes_per_row(vocab: int, element_bytes: int) -> int:
    """Bytes one value vector of a logit-lens scan chunk needs: its ``[vocab]`` row of the logit
    buffer and about as much again for ``topk``'s work space: ``2 * vocab * element_bytes``."""
    return 2 * vocab * element_bytes


#: bytes per element of a link-prediction score block: the float32 score and about three more of
#: its size in work space (the scorer's temporaries, the NaN mask and the two comparison masks)
SCORE_BLOCK_BYTES_PER_ELEMENT = 16


# ------------------------------------------------------------------ halving on out-of-memory
def is_out_of_memory(err: BaseException) -> bool:
    """``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError`` is the same class), or a
    ``RuntimeError`` from an allocator that says it ran out (CPU, MPS)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def free_cached_memory() -> None:
    """Drop unreachable tensors (a failed batch's, held by reference cycles) and hand the CUDA
    allocator's unused blocks back, so the retry starts from a clean slate."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


#: the list :func:`recording_halvings` collects into (None: no recording)
_RECORDING: ContextVar[list | None] = ContextVar("kgprobe_memory_halvings", default=None)


@contextmanager
def recording_halvings():
    """Yields a list that every halving inside the block (by any :class:`OomHalving`, however deep
    in the calls) is appended to: for the run record of a stage whose batched functions make
    their own ``OomHalving`` (QA scoring, the scan, link-prediction evaluation)."""
    notes: list[dict] = []
    token = _RECORDING.set(notes)
    try:
        yield notes
    finally:
        _RECORDING.reset(token)


class OomHalving:
    """Runs batches of items, halving the batch size whenever one runs out of memory.

    ``batch_size`` is the size :meth:`run` uses unless told another; ``cap``, once a batch has run
    out of memory, the largest size since known to be worth trying: it bounds every later
    :meth:`run` too, so one halving serves the rest of the work. ``notes`` lists the halvings
    as ``{"what", "from", "to", "reason"}``; ``on_halve(old, new, reason)`` hears of each one.
    """

    def __init__(self, batch_size: int = 1, *, device=None, what: str = "batch",
                 on_halve: Callable[[int, int, str], None] | None = None):
        self.batch_size = max(1, int(batch_size))
        self.device, self.what, self.on_halve = device, what, on_halve
        self.cap: int | None = None
        self.notes: list[dict] = []

    def size(self, wanted: int | None = None) -> int:
        """The batch size to use for ``wanted`` (default ``batch_size``): at most ``cap``."""
        n = max(1, int(wanted or self.batch_size))
        return n if self.cap is None else min(n, self.cap)

    def run(self, run_batch: Callable[[Sequence], T], items: Sequence, *, batch_size: int | None = None) -> list[T]:
        """``[run_batch(chunk) for chunk in consecutive chunks of items]``, chunks of
        :meth:`size` ``(batch_size)`` items, a chunk that runs out of memory retried at half its
        length. ``items`` is anything with ``len`` and slices (a list, a range, a tensor)."""
        size = self.size(batch_size)
        results: list[T] = []
        start = 0
        while start < len(items):
            chunk = items[start:start + size]
            try:
                result = run_batch(chunk)
            except Exception as err:
                if not is_out_of_memory(err):
                    raise
                reason = _reason(err)
            else:
                results.append(result)
                start += len(chunk)
                continue
            # outside the except block: the failed batch's frames (and tensors) are released
            failed = len(chunk)
            del chunk
            size = self.halve(failed, reason)
        return results

    def halve(self, size: int, reason: str) -> int:
        """Record that a batch of ``size`` items ran out of memory and return the next size to try
        (``size // 2``, kept as ``cap``); at size 1 raise the one-line ``KgprobeError``."""
        free_cached_memory()
        if size <= 1:
            where = _as_device(self.device) if self.device is not None else "this device"
            raise KgprobeError(f"out of memory even at batch size 1 on {where} ({self.what}): {reason}")
        new = size // 2
        self.cap = new
        note = {"what": self.what, "from": size, "to": new, "reason": reason}
        self.notes.append(note)
        recording = _RECORDING.get()
        if recording is not None:
            recording.append(note)
        if self.on_halve is not None:
            self.on_halve(size, new, reason)
        return new


def warn_on_halve(what: str, device=None) -> Callable[[int, int, str], None]:
    """An ``on_halve`` that tells of each halving in a ``kgprobe: warning:`` line (for callers
    with no run record to write it in)."""
    where = f" on {_as_device(device)}" if device is not None else ""

    def on_halve(old: int, new: int, reason: str) -> None:
        warn(f"out of memory{where} with a {what} of {old}: going on with {new} ({reason})")

    return on_halve


def halve_on_oom(run_batch: Callable[[Sequence], T], items: Sequence, batch_size: int, *, device=None,
                 what: str = "batch", on_halve: Callable[[int, int, str], None] | None = None) -> list[T]:
    """One-off :meth:`OomHalving.run`: the results of ``run_batch`` over consecutive chunks of
    ``items``, in order, halving the chunk on out-of-memory."""
    return OomHalving(batch_size, device=device, what=what, on_halve=on_halve).run(run_batch, items)
