"""Locate concept vectors: the logit lens of every value vector in one chunked pass, then scores.

For value vector ``v`` (row r = layer · N + neuron of ``all_value_vectors``) the scan keeps the
top-``k`` of ``logits(v) = W_U · norm(v)``.  The [L·N, vocab] logit matrix is never held:
rows go through in chunks, each chunk is one matmul with the unembedding followed by ``topk``.

RMSNorm-style final norms, ``norm(v) = g ⊙ v / rms(v)`` with ``rms(v) = sqrt(mean(v²) + eps)``,
are folded into the unembedding once: ``logits(v) = (W_U · diag(g)) · v / rms(v)``.  The
positive per-vector factor ``1/rms(v)`` does not change which tokens are on top, so it is
applied only to the ``k`` kept values.  Other norms (GPT-2's LayerNorm, OLMo's parameter-free
LayerNorm) are applied as modules to each chunk, which costs O(chunk · d) against the
O(chunk · d · vocab) matmul.

Concept scores: with a membership matrix ``M`` [C, vocab] (1 when a token belongs to concept c,
or any non-negative token weight) and rank weights ``w`` [k],

    score[c, r] = Σ_j  w_j · M[c, top_ids[r, j]]

``weighting="rank"``: ``w_j = (1/(j+1)) / Σ_i 1/(i+1)`` (score in [0, 1]);
``weighting="count"``: ``w_j = 1`` (score = how many of the top-k tokens are concept tokens).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kgprobe.atomic import atomic_path
from kgprobe.errors import KgprobeError
from kgprobe.models.memory import OomHalving, plan_batch_size, scan_bytes_per_row, warn_on_halve
from kgprobe.probe.hooks import Arch, arch_of

WEIGHTINGS = ("rank", "count")
#: the most rows ``chunk="auto"`` puts in one chunk (the fixed default it replaced)
AUTO_CHUNK = 4096


# ------------------------------------------------------------------ result
@dataclass
class ScanResult:
    """Top-k logit-lens tokens of every value vector; row r = (r // n_neurons, r % n_neurons)."""

    top_ids: torch.Tensor      # [n_layers * n_neurons, k] int32, best first
    top_logits: torch.Tensor   # [n_layers * n_neurons, k] float32, logits of lm_head(final_norm(v))
    n_layers: int
    n_neurons: int
    k: int
    vocab_size: int = 0        # size of the unembedding (0: unknown, e.g. an old file)

    def row(self, layer: int, index: int) -> int:
        if not (0 <= layer < self.n_layers and 0 <= index < self.n_neurons):
            raise KgprobeError(f"(layer {layer}, index {index}) is outside the scan "
                               f"({self.n_layers} layers x {self.n_neurons} neurons)")
        return layer * self.n_neurons + index

    def layer_index(self, row: int) -> tuple[int, int]:
        return divmod(int(row), self.n_neurons)

    def save(self, path: str | Path) -> Path:
        """Write ``.pt`` (torch) or ``.npz`` (numpy) atomically."""
        path = Path(path)
        meta = {"n_layers": self.n_layers, "n_neurons": self.n_neurons, "k": self.k, "vocab_size": self.vocab_size}
        if path.suffix not in (".pt", ".npz"):
            raise KgprobeError(f"{path}: scan files end in .pt or .npz")
        with atomic_path(path) as tmp:
            if path.suffix == ".pt":
                torch.save({"top_ids": self.top_ids.cpu(), "top_logits": self.top_logits.cpu(), **meta}, tmp)
            else:
                with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
                    np.savez(f, top_ids=self.top_ids.cpu().numpy(), top_logits=self.top_logits.cpu().numpy(),
                             **{key: np.int64(v) for key, v in meta.items()})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ScanResult":
        path = Path(path)
        if not path.is_file():
            raise KgprobeError(f"{path}: no such scan file")
        try:
            if path.suffix == ".pt":
                data = torch.load(path, map_location="cpu", weights_only=True)
            elif path.suffix == ".npz":
                with np.load(path) as z:
                    data = {key: z[key] for key in z.files}
            else:
                raise KgprobeError(f"{path}: scan files end in .pt or .npz")
            ids, logits = torch.as_tensor(data["top_ids"]), torch.as_tensor(data["top_logits"])
            result = cls(top_ids=ids.to(torch.int32), top_logits=logits.to(torch.float32),
                         n_layers=int(data["n_layers"]), n_neurons=int(data["n_neurons"]), k=int(data["k"]),
                         vocab_size=int(data.get("vocab_size", 0)))
        except KgprobeError:
            raise
        except Exception as err:  # a truncated/foreign file: one line, not a traceback
            first_line = str(err).splitlines()[0] if str(err) else ""
            raise KgprobeError(f"{path}: not a scan file ({type(err).__name__}: {first_line})") from None
        if ids.shape != (result.n_layers * result.n_neurons, result.k) or logits.shape != ids.shape:
            raise KgprobeError(f"{path}: arrays of shape {tuple(ids.shape)} do not match {result.n_layers} layers "
                               f"x {result.n_neurons} neurons, k={result.k}")
        return result


# ------------------------------------------------------------------ projection
def _rms_fold(norm: nn.Module, d_model: int) -> tuple[torch.Tensor, float] | None:
    """``(g, eps)`` with ``norm(v) == g ⊙ v / sqrt(mean(v²) + eps)``, or None when ``norm`` is not like that.

    ``g`` is read off the module's output (so Gemma's ``1 + w`` gain comes out right) and the
    identity is checked on a random vector before it is trusted.
    """
    looks_rms = "RMSNorm" in type(norm).__name__ or (
        getattr(norm, "weight", None) is not None and getattr(norm, "bias", None) is None)
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if not looks_rms or not isinstance(eps, (int, float)):
        return None
    with torch.no_grad():
        param = next(norm.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        ones = torch.ones(1, d_model, device=device)
        g = norm(ones).float()[0] * math.sqrt(1.0 + eps)
        x = torch.randn(4, d_model, generator=torch.Generator().manual_seed(0)).to(device)
        expect = g * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        if not torch.allclose(norm(x).float(), expect, rtol=1e-3, atol=1e-5 * float(g.abs().max()) + 1e-8):
            return None
    return g, float(eps)


class _Projection:
    """``v ↦ top-k of lm_head(final_norm(v))`` for chunks of vectors, with the RMSNorm fold if possible."""

    def __init__(self, arch: Arch, *, device: torch.device, dtype: torch.dtype):
        self.arch, self.device, self.dtype = arch, device, dtype
        w = arch.unembed.detach()
        bias = getattr(arch.output_embeddings, "bias", None)
        self.bias = None if bias is None else bias.detach().to(device=device, dtype=dtype)
        fold = _rms_fold(arch.final_norm, arch.d_model) if bias is None else None
        if fold is not None:
            g, self.eps = fold
            self.weight = (w.float() * g.to(w.device)).to(device=device, dtype=dtype)  # W_U · diag(g), once
        else:
            self.eps = None
            self.weight = w.to(device=device, dtype=dtype)
        self.folded = fold is not None

    def logits_into(self, chunk: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Unscaled logits of the (normed, unless folded) chunk written into ``out`` [m, vocab]."""
        if not self.folded:
            norm = self.arch.final_norm
            p = next(norm.parameters(), None)
            chunk = norm(chunk.to(p.dtype) if p is not None else chunk).to(self.dtype)
        torch.matmul(chunk, self.weight.T, out=out)
        if self.bias is not None:
            out += self.bias
        return out

    def topk(self, chunk: torch.Tensor, out: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        values, ids = self.logits_into(chunk, out).topk(k, dim=-1)
        values = values.float()
        if self.folded:  # the positive 1/rms(v) factor, applied to the k survivors only
            values *= torch.rsqrt(chunk.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return values, ids


def _row_chunks(arch: Arch, chunk: int, *, device: torch.device, dtype: torch.dtype) -> Iterator[torch.Tensor]:
    """Consecutive rows of ``all_value_vectors`` in chunks of ``chunk`` (crossing layer borders)."""
    parts: list[torch.Tensor] = []
    have = 0
    for layer in range(arch.n_layers):
        w = arch.down_proj(layer).weight.detach()
        vectors = w if arch.rows_are_vectors(layer) else w.T
        start = 0
        while start < arch.n_neurons:
            take = min(chunk - have, arch.n_neurons - start)
            parts.append(vectors[start:start + take])
            have, start = have + take, start + take
            if have == chunk:
                yield torch.cat(parts).to(device=device, dtype=dtype)
                parts, have = [], 0
    if parts:
        yield torch.cat(parts).to(device=device, dtype=dtype)


def _setup(model: nn.Module, chunk: int, device, dtype) -> tuple[Arch, torch.device, torch.dtype]:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
        raise KgprobeError(f"chunk must be a positive integer, got {chunk!r}")
    arch = arch_of(model)
    device = torch.device(device) if device is not None else arch.unembed.device
    if dtype is None:  # half-precision matmuls are slow on CPU
        dtype = torch.float32 if device.type == "cpu" else arch.unembed.dtype
    return arch, device, dtype


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def scan_value_vectors(model: nn.Module, *, k: int = 50, chunk: int | str = "auto",
                       device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                       progress: bool = True, memory: OomHalving | None = None) -> ScanResult:
    """Top-``k`` logit-lens tokens of all ``n_layers · n_neurons`` value vectors, chunk by chunk.

    ``device`` defaults to the unembedding's device; ``dtype`` to float32 on CPU and the model's
    dtype elsewhere.  Memory: one [chunk, vocab] logit buffer, reused.  ``chunk="auto"``: the
    most rows whose buffer and top-k work space (:func:`kgprobe.models.memory.scan_bytes_per_row`)
    fit half the free memory, at most :data:`AUTO_CHUNK`.  A chunk that runs out of memory is
    done in halves (rows are independent: same result); ``memory`` (an
    :class:`~kgprobe.models.memory.OomHalving`) keeps the halvings in ``memory.notes``, else
    each is a warning line.
    """
    arch, device, dtype = _setup(model, 1 if chunk == "auto" else chunk, device, dtype)
    vocab = arch.unembed.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= vocab:
        raise KgprobeError(f"k must be an integer in 1..{vocab} (the vocabulary size), got {k!r}")
    rows = arch.n_layers * arch.n_neurons
    if chunk == "auto":
        element = torch.empty(0, dtype=dtype).element_size()
        chunk = plan_batch_size(bytes_per_item=scan_bytes_per_row(vocab, element), device=device, limit=AUTO_CHUNK)
    if memory is None:
        memory = OomHalving(chunk, device=device, what="scan chunk", on_halve=warn_on_halve("scan chunk", device))
    with torch.no_grad():
        proj = _Projection(arch, device=device, dtype=dtype)
        buf: torch.Tensor | None = None
        top_ids = torch.empty(rows, k, dtype=torch.int32, device=device)
        top_logits = torch.empty(rows, k, dtype=torch.float32, device=device)
        start = 0

        def run(span: range) -> None:
            nonlocal buf
            want = min(memory.size(chunk), rows)
            if buf is None or buf.shape[0] != want:  # first chunk, or halved: drop the old buffer first
                buf = None
                buf = torch.empty(want, vocab, device=device, dtype=dtype)
            m = len(span)
            values, ids = proj.topk(part[span.start - start:span.stop - start], buf[:m], k)
            top_logits[span.start:span.stop], top_ids[span.start:span.stop] = values, ids

        with tqdm(total=rows, unit="vec", desc="scan value vectors", disable=not progress) as bar:
            for part in _row_chunks(arch, chunk, device=device, dtype=dtype):
                m = part.shape[0]
                memory.run(run, range(start, start + m), batch_size=m)
                start += m
                bar.update(m)
    return ScanResult(top_ids=top_ids.cpu(), top_logits=top_logits.cpu(), n_layers=arch.n_layers,
                      n_neurons=arch.n_neurons, k=k, vocab_size=vocab)


def bare_matmul_seconds(model: nn.Module, *, chunk: int = 4096, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, repeats: int = 1) -> float:
    """Seconds for the scan's matmuls alone: the same chunks times the same [vocab, d] matrix.

    No norm, no top-k, chunks prepared before the clock starts, one warm-up matmul; the best of
    ``repeats`` runs.  The benchmark reference for ``scan_value_vectors`` with the same arguments.
    """
    arch, device, dtype = _setup(model, chunk, device, dtype)
    with torch.no_grad():
        weight = arch.unembed.detach().to(device=device, dtype=dtype)
        parts = list(_row_chunks(arch, chunk, device=device, dtype=dtype))
        buf = torch.empty(parts[0].shape[0], weight.shape[0], device=device, dtype=dtype)
        torch.matmul(parts[-1], weight.T, out=buf[:parts[-1].shape[0]])  # warm-up
        best = math.inf
        for _ in range(max(1, int(repeats))):
            _sync(device)
            t0 = time.perf_counter()
            for part in parts:
                torch.matmul(part, weight.T, out=buf[:part.shape[0]])
            _sync(device)
            best = min(best, time.perf_counter() - t0)
    return best


# ------------------------------------------------------------------ concept scores
def rank_weights(k: int, *, weighting: str = "rank") -> torch.Tensor:
    """The weight ``w_j`` of the token at rank j (0 = best) in ``concept_scores``, [k] float32."""
    if weighting == "rank":
        w = 1.0 / torch.arange(1, k + 1, dtype=torch.float64)
        return (w / w.sum()).float()
    if weighting == "count":
        return torch.ones(k, dtype=torch.float32)
    raise KgprobeError(f"weighting {weighting!r}: expected one of {', '.join(WEIGHTINGS)}")


def membership_matrix(concept_token_ids: Sequence[Sequence[int]], *, vocab_size: int) -> torch.Tensor:
    """Bool [C, vocab_size]: True where token t belongs to concept c."""
    lengths = [len(ids) for ids in concept_token_ids]
    flat = torch.as_tensor([t for ids in concept_token_ids for t in ids], dtype=torch.long)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= vocab_size):
        bad = int(flat.min()) if int(flat.min()) < 0 else int(flat.max())
        raise KgprobeError(f"concept token id {bad} outside the vocabulary (0..{vocab_size - 1}): "
                           "wrong tokenizer for this model?")
    concept = torch.repeat_interleave(torch.arange(len(lengths)), torch.as_tensor(lengths, dtype=torch.long))
    member = torch.zeros(len(lengths), vocab_size, dtype=torch.bool)
    member[concept, flat] = True
    return member


def concept_scores(scan: ScanResult, concept_token_ids: Sequence[Sequence[int]] | torch.Tensor, *,
                   weighting: str = "rank", max_elements: int = 1 << 24) -> torch.Tensor:
    """Scores [C, n_layers · n_neurons]: ``Σ_j w_j · M[c, top_ids[r, j]]`` (see the module docstring).

    ``concept_token_ids`` is one list of token ids per concept, or a membership matrix
    [C, vocab] (bool, or float token weights).  Vectorised over concepts and vectors; rows go
    in blocks so the gathered [rows, k, C] block holds at most ``max_elements`` numbers.
    The result carries ``.n_neurons`` so ``top_candidates`` can name (layer, index).
    """
    weights = rank_weights(scan.k, weighting=weighting)
    max_id = int(scan.top_ids.max()) + 1 if scan.top_ids.numel() else 0
    if torch.is_tensor(concept_token_ids):
        member = concept_token_ids
        if member.dim() != 2 or member.shape[1] < max_id:
            raise KgprobeError(f"membership matrix must be [concepts, vocab >= {max_id}], got {tuple(member.shape)}")
    else:
        member = membership_matrix(concept_token_ids, vocab_size=max(scan.vocab_size, max_id))
    member_t = member.to(torch.float32).T.contiguous()           # [vocab, C]: one gather fetches every concept
    n_concepts, rows = member_t.shape[1], scan.top_ids.shape[0]
    out = torch.empty(rows, n_concepts, dtype=torch.float32)
    step = max(1, max_elements // max(1, scan.k * n_concepts))
    for start in range(0, rows, step):
        ids = scan.top_ids[start:start + step].long()               # [m, k]
        out[start:start + step] = torch.einsum("mkc,k->mc", member_t[ids], weights)
    scores = out.T.contiguous()
    scores.n_neurons = scan.n_neurons  # read by top_candidates
    return scores


def top_candidates(scores: torch.Tensor, *, per_concept: int, n_neurons: int | None = None
                   ) -> list[list[tuple[int, int, float]]]:
    """Per concept, up to ``per_concept`` (layer, index, score) with score > 0, best first.

    Ties go to the lower row (earlier layer, lower index).  ``n_neurons`` defaults to the value
    ``concept_scores`` attached to ``scores``.
    """
    n_neurons = n_neurons if n_neurons is not None else getattr(scores, "n_neurons", None)
    if n_neurons is None:
        raise KgprobeError("top_candidates needs n_neurons= (scores did not come from concept_scores)")
    if isinstance(per_concept, bool) or not isinstance(per_concept, int) or per_concept <= 0:
        raise KgprobeError(f"per_concept must be a positive integer, got {per_concept!r}")
    if scores.dim() != 2:
        raise KgprobeError(f"scores must be [concepts, vectors], got {tuple(scores.shape)}")
    values, rows = torch.sort(scores, dim=1, descending=True, stable=True)
    values, rows = values[:, :per_concept].tolist(), rows[:, :per_concept].tolist()
    return [[(r // n_neurons, r % n_neurons, v) for v, r in zip(vs, rs) if v > 0] for vs, rs in zip(values, rows)]
