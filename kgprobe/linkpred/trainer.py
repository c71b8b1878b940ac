"""Train a link-prediction model whose entity vectors come from an encoder (BLP and friends).

The model is ``encoder`` (entity index -> vector, from text or a table) + a relation table
(Xavier-initialised, width ``scorer.relation_dim(dim)``) + a parameter-free ``scorer``. One
training step, for a batch of ``B`` positive triples:

1. the ``sampler`` draws ``K`` negatives per positive (head or tail replaced);
2. the entities of positives *and* negatives are deduplicated and encoded once: with BLP's
   ``in-batch`` negatives that is only the batch's own entities, so negatives cost no extra
   encoder pass;
3. ``loss(pos (B,), neg (B, K), mask)`` (+ ``regularization`` x mean squared embedding of the
   positives, BLP's optional L2 term); entity vectors are L2-normalised first when
   ``normalize_entities`` (``None``: as the scorer's own ``normalize_entities`` says, true for
   TransE as in BLP).

Optimisation: AdamW, linear warm-up over the first ``warmup`` fraction of the optimiser steps
then linear decay to zero (BLP: 20 %), gradient accumulation over ``grad_accumulation``
batches, optional gradient clipping, mixed precision on CUDA only (bf16 where supported, else
fp16 with a gradient scaler).

Reproducibility and resumption: every epoch draws its shuffling, its negatives and its dropout
from RNGs seeded with ``(seed, epoch)``, so an epoch's outcome depends only on the state at its
start. After every epoch ``OUT/checkpoint.pt`` is replaced atomically (model, optimiser,
scheduler, gradient scaler, RNG states, epoch, best metric, patience counter, history),
the epoch's record is appended to ``OUT/metrics.jsonl``, and ``OUT/best.pt`` holds the model
with the best validation metric so far. Re-running with the same ``OUT`` resumes after the last
finished epoch and reaches the same final state as an uninterrupted run (bitwise on a CPU).
Within an epoch the checkpoint is also replaced every ``checkpoint_minutes`` (after an
optimiser step; it then also holds the epoch's batch position, its generator and RNG states
and its running loss), so a run cut short in a long epoch (88 minutes on a 2-core CPU for
WordNet's 175k triples) loses at most those minutes and still ends in the same state. With an
``out_dir``, a SIGTERM or Ctrl-C (:mod:`kgprobe.stopping`) is honoured after the current optimiser
step: the checkpoint is written there and :class:`~kgprobe.stopping.Stopped` raised; during a
validation the run stops at once and saves the epoch's end, so the resume starts with that
validation.

Early stopping: validation every ``eval_every`` epochs (and after the last one) by the injected
``evaluate`` function; training stops after ``patience`` validations without an improvement of
more than ``min_delta`` in ``metric`` (default ``both.realistic.mrr``), and the best model is
restored at the end.

Evaluation encodes every entity once per call; the vectors are kept with a digest of the
model's weights, so the test evaluation right after a final validation of the same weights (the
usual case: the last epoch is the best) reuses them instead of a second pass over every entity
text (most of the 8 minutes of WordNet's test evaluation on a 2-core CPU).
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from kgprobe.atomic import atomic_path
from kgprobe.errors import KgprobeError
from kgprobe.linkpred.config import TrainConfig
from kgprobe.linkpred.data import as_triples, batch_slices, num_batches
from kgprobe.linkpred.encoders import EntityEncoder
from kgprobe.linkpred.samplers import NegativeSampler
from kgprobe.linkpred.scorers import normalizes_entities
from kgprobe.models.device import host_to_device
from kgprobe.stopping import StopNow, Stopped, StopRequests, signal_name

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FORMAT = "kgprobe-linkpred-checkpoint"
#: steps between reads of the running loss (progress bar, NaN check); each read waits for the GPU
LOSS_READ_EVERY = 50

#: ``evaluate(entity_emb (E, d), relation_emb (R, d_r), scorer, triples, *, candidates=None,
#: filter_triples=None) -> {"both.realistic.mrr": ..., ...}``: the signature of
#: :func:`kgprobe.linkpred.evaluator.evaluate_model`, which is the default
EvaluateFn = Callable[..., Mapping[str, float]]
#: ``callback(trainer, record)`` after every finished (and checkpointed) epoch
Callback = Callable[["Trainer", dict], Any]


class LinkPredictionModel(nn.Module):
    """Encoder + relation table + scorer; the one module the trainer optimises and saves.

    ``normalize_entities``: L2-normalise the entity vectors (``None``: as the scorer does by
    default, :func:`~kgprobe.linkpred.scorers.normalizes_entities`)."""

    def __init__(self, encoder: EntityEncoder, scorer: Any, num_relations: int, *,
                 relation_dim: int | None = None, normalize_entities: bool | None = False, seed: int = 0):
        super().__init__()
        self.encoder = encoder
        self.scorer = scorer
        if relation_dim is None:
            relation_dim = scorer.relation_dim(encoder.dim) if hasattr(scorer, "relation_dim") else encoder.dim
        self.relations = nn.Embedding(int(num_relations), int(relation_dim))
        nn.init.xavier_uniform_(self.relations.weight, generator=torch.Generator().manual_seed(int(seed)))
        self.normalize_entities = normalizes_entities(scorer, normalize_entities)

    def entity_vectors(self, entities: torch.Tensor) -> torch.Tensor:
        vectors = self.encoder.encode(entities)
        return nn.functional.normalize(vectors, dim=-1) if self.normalize_entities else vectors

    def all_entity_vectors(self, batch_size: int = 256, *, entities: torch.Tensor | None = None,
                           progress: bool = False) -> torch.Tensor:
        """``(num_entities, dim)`` float32 vectors of every entity (or ``(len(entities), dim)`` of the
        given ones, in that order), eval mode, no gradient."""
        vectors = self.encoder.encode_all(batch_size, entities=entities, progress=progress).float()
        return nn.functional.normalize(vectors, dim=-1) if self.normalize_entities else vectors


def weights_digest(model: nn.Module) -> str:
    """BLAKE2b digest of every parameter and buffer (names, dtypes, shapes and bytes): equal
    digests mean an evaluation would encode every entity to the same vectors."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1).contiguous().cpu()
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns. ``model`` holds the best weights when ``restore_best``."""

    model: LinkPredictionModel
    history: list[dict]
    best_epoch: int | None
    best_metric: float | None
    epochs_run: int
    stopped_early: bool
    resumed_from: int | None = None
    out_dir: Path | None = None
    best_metrics: dict = field(default_factory=dict)


def _scorer_name(scorer: Any) -> str:
    return str(getattr(scorer, "name", type(scorer).__name__)).lower()


def _accepts_mask(loss: Any) -> bool:
    try:
        params = inspect.signature(loss).parameters
    except (TypeError, ValueError):
        return False
    return "mask" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _numpy_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _set_numpy_state(state: list) -> None:
    name, keys, pos, has_gauss, cached = state
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _plain(value: Any) -> Any:
    """JSON-ready copy of a metrics record (tensors and numpy numbers become Python numbers)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class Trainer:
    """Train ``encoder`` + relation table with ``scorer``, ``loss`` and ``sampler``.

    ``evaluate`` is called as ``evaluate(entity_emb, relation_emb, scorer, triples, *,
    candidates=, filter_triples=)`` (the signature of
    :func:`kgprobe.linkpred.evaluator.evaluate_model`, the default, run with one filter index
    built once) and returns a flat dict of metrics.
    ``valid_candidates`` restricts the ranked entities (BLP, inductive: train + valid
    entities); ``filter_triples`` are the known triples filtered from the ranking (default:
    train + valid). Config fields (:class:`~kgprobe.linkpred.config.TrainConfig`) may be given as
    keyword arguments instead of ``config``, or on top of it.
    """

    def __init__(
        self,
        *,
        encoder: EntityEncoder,
        scorer: Any,
        loss: Callable,
        sampler: NegativeSampler,
        train_triples: Any,
        num_relations: int | None = None,
        valid_triples: Any = None,
        valid_candidates: Any = None,
        filter_triples: Any = None,
        evaluate: EvaluateFn | None = None,
        config: TrainConfig | None = None,
        out_dir: str | Path | None = None,
        device: str | torch.device = "auto",
        progress: bool = True,
        callbacks: Iterable[Callback] = (),
        **overrides: Any,
    ):
        from kgprobe.models.device import resolve_device

        config = config or TrainConfig()
        self.config = config.replace(**overrides) if overrides else config
        self.device = resolve_device(device)
        self._set_triples(encoder, train_triples, num_relations, valid_triples, valid_candidates, filter_triples)
        self.evaluate_fn = evaluate
        self.loss_fn = loss
        self._loss_takes_mask = _accepts_mask(loss)
        self.sampler = sampler
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.progress = progress
        self.callbacks = list(callbacks)
        self._stop: StopRequests | None = None  # set while fit() runs with an out_dir to save to
        self._epoch_end: dict | None = None
        self._eval_vectors: tuple[tuple, torch.Tensor] | None = None
        self._build_model(encoder, scorer)
        self._build_optimizer()

        self.history: list[dict] = []
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict = {}
        self.bad_evals = 0
        self.stopped_early = False
        self.finished = False
        self._best_state: dict | None = None
        self._partial: dict | None = None  # set by load_checkpoint when it stopped inside an epoch
        self.resumed_batches = 0  # batches of the resumed epoch that the checkpoint had already done

    def _set_triples(self, encoder: EntityEncoder, train_triples: Any, num_relations: int | None,
                     valid_triples: Any, valid_candidates: Any, filter_triples: Any) -> None:
        """The training, validation and filter triples as tensors (filter: train + valid unless
        given), the number of relations, and the check that the model covers the training triples."""
        self.train_triples = as_triples(train_triples, what="training triples")
        if not len(self.train_triples):
            raise KgprobeError("no training triples")
        if num_relations is None:
            num_relations = getattr(train_triples, "num_relations", None) or int(self.train_triples[:, 1].max()) + 1
        self.num_relations = int(num_relations)
        t = self.train_triples
        if t[:, [0, 2]].max() >= encoder.num_entities or t[:, 1].max() >= self.num_relations or t.min() < 0:
            raise KgprobeError("a training triple refers to an entity or relation the model does not have")
        self.valid_triples = None if valid_triples is None else as_triples(valid_triples, what="validation triples")
        self.valid_candidates = None if valid_candidates is None else torch.as_tensor(valid_candidates).long()
        if filter_triples is None and self.valid_triples is not None:
            filter_triples = torch.cat([self.train_triples, self.valid_triples])
        self.filter_triples = None if filter_triples is None else as_triples(filter_triples, what="filter triples")

    def _build_model(self, encoder: EntityEncoder, scorer: Any) -> None:
        """The encoder, relation table and scorer as one model on the device (entity vectors
        normalised as the config says, by default as the scorer does: TransE)."""
        config = self.config
        self.model = LinkPredictionModel(encoder, scorer, self.num_relations,
                                         normalize_entities=config.normalize_entities,
                                         seed=config.seed).to(self.device)

    def _build_optimizer(self) -> None:
        """AdamW, a linear warmup then linear decay over every optimizer step, and mixed precision
        (bf16, or fp16 with a gradient scaler where bf16 is missing) when asked for on CUDA."""
        config = self.config
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.steps_per_epoch = -(-num_batches(len(self.train_triples), config.batch_size, drop_last=config.drop_last)
                                 // config.grad_accumulation)
        self.total_steps = max(1, self.steps_per_epoch * config.epochs)
        self.warmup_steps = int(config.warmup * self.total_steps)
        warmup_steps, total_steps = self.warmup_steps, self.total_steps

        def lr_factor(step: int) -> float:  # a plain function, so the scheduler's state_dict stays small
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)
        self.use_amp = bool(config.amp) and self.device.type == "cuda"
        fp16 = self.use_amp and not torch.cuda.is_bf16_supported()
        self.amp_dtype = torch.float16 if fp16 else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)

    # ----------------------------------------------------------------- seeds
    def _epoch_seed(self, epoch: int) -> int:
        return (int(self.config.seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2 ** 63)

    # ----------------------------------------------------------------- one epoch
    def _batch_loss(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg, model = self.config, self.model
        negatives = self.sampler.sample_negatives(batch, cfg.num_negatives, generator=generator)
        b, k = negatives.mask.shape
        ids = torch.cat([batch[:, [0, 2]].reshape(-1), negatives.triples[..., [0, 2]].reshape(-1)])
        unique, inverse = torch.unique(ids, return_inverse=True)
        usable = bool(negatives.mask.all())  # read on the host, before anything moves to the GPU
        # one non-blocking copy for every index of the step (see host_to_device)
        parts = (inverse, batch[:, 1], negatives.triples[..., 1], negatives.mask.long())
        flat = host_to_device(torch.cat([p.reshape(-1) for p in parts]), self.device)
        inverse, rel_ids, neg_rel_ids, mask = (
            piece.view(part.shape) for piece, part in zip(flat.split([p.numel() for p in parts]), parts))
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            vectors = model.entity_vectors(unique)  # host indices: the encoder copies them itself
            # Gather rows with ``embedding``, not ``vectors[inverse]``: the backward of advanced
            # indexing (index_put_ with accumulate) adds repeated rows with atomics on a CPU
            # with several threads, in no fixed order; embedding's backward is deterministic.
            pos_ent = nn.functional.embedding(inverse[:2 * b], vectors).view(b, 2, -1)
            neg_ent = nn.functional.embedding(inverse[2 * b:], vectors).view(b, k, 2, -1)
            rel = model.relations(rel_ids)
            neg_rel = model.relations(neg_rel_ids)
            pos = model.scorer.score(pos_ent[:, 0], rel, pos_ent[:, 1])
            neg = model.scorer.score(neg_ent[:, :, 0], neg_rel, neg_ent[:, :, 1])
        loss = self._loss(pos.float(), neg.float(), mask.bool(), usable)
        if cfg.regularization:
            loss = loss + cfg.regularization * (pos_ent.float().pow(2).mean() + rel.float().pow(2).mean())
        return loss

    def _loss(self, pos: torch.Tensor, neg: torch.Tensor, mask: torch.Tensor, usable: bool) -> torch.Tensor:
        if usable:  # every negative usable (known on the host: asking the GPU tensor would wait for it)
            return self.loss_fn(pos, neg)
        if self._loss_takes_mask:
            return self.loss_fn(pos, neg, mask=mask)
        # A loss without a mask argument: unusable negatives take the score of the row's first
        # usable one, and rows without any usable negative leave the loss.
        first = mask.float().argmax(dim=1, keepdim=True)
        neg = torch.where(mask, neg, neg.gather(1, first))
        keep = mask.any(dim=1)
        if not bool(keep.any()):
            return pos.sum() * 0.0
        return self.loss_fn(pos[keep], neg[keep])

    def _train_epoch(self, epoch: int, partial: dict | None = None) -> dict:
        """One epoch, or the rest of one from ``partial`` (a mid-epoch checkpoint's position)."""
        cfg = self.config
        seed = self._epoch_seed(epoch)
        generator = torch.Generator().manual_seed(seed)
        # dropout and anything else drawing from the global RNGs. Not seed_everything: the epoch
        # seed is a 63-bit number (numpy's global seeding takes < 2**32), and numpy's global state is
        # part of every checkpoint; seeding it here would change what those hold.
        torch.manual_seed(seed)
        random.seed(seed)
        n_batches = num_batches(len(self.train_triples), cfg.batch_size, drop_last=cfg.drop_last)
        # drawn whole now, so that the generator's state after the shuffle is the one negatives start from
        batches = list(batch_slices(len(self.train_triples), cfg.batch_size, generator=generator,
                                    drop_last=cfg.drop_last))
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        # the running loss stays on the device and is read every LOSS_READ_EVERY steps: reading it
        # each step would make the CPU wait for the GPU (a NaN still surfaces within that window)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        seen, done_before, started = 0, 0, time.perf_counter()
        if partial is not None:
            generator.set_state(partial["generator"])
            self._restore_rng(partial["rng"])
            total += float(partial["total"])
            seen, done_before = int(partial["seen"]), int(partial["batches_done"])
            started -= float(partial["train_seconds"])
        last_save = time.perf_counter()

        def position(batches_done: int) -> dict:
            return {"epoch": epoch, "batches_done": batches_done, "generator": generator.get_state(),
                    "rng": self._rng_states(), "total": float(total), "seen": seen,
                    "train_seconds": time.perf_counter() - started}

        from tqdm.auto import tqdm

        bar = tqdm(batches[done_before:], total=n_batches, initial=done_before, desc=f"epoch {epoch}/{cfg.epochs}",
                   unit="batch", disable=not self.progress, leave=False)
        for i, index in enumerate(bar, start=done_before):
            batch = self.train_triples[index]
            group_start = (i // cfg.grad_accumulation) * cfg.grad_accumulation
            group_size = min(cfg.grad_accumulation, n_batches - group_start)
            loss = self._batch_loss(batch, generator)
            self.scaler.scale(loss / group_size).backward()
            total += loss.detach().double() * len(batch)
            seen += len(batch)
            if (i + 1) % LOSS_READ_EVERY == 0 or i + 1 == n_batches:
                mean = float(total) / seen
                if not np.isfinite(mean):
                    raise KgprobeError(f"the loss became {mean} in epoch {epoch} (lower the learning rate?)")
                bar.set_postfix(loss=f"{mean:.4f}", refresh=False)
            if i + 1 == group_start + group_size:
                if cfg.max_grad_norm is not None:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.out_dir is None or i + 1 == n_batches:
                    continue
                stop = self._stop.requested if self._stop is not None else None
                due = (cfg.checkpoint_minutes is not None
                       and time.perf_counter() - last_save >= 60 * cfg.checkpoint_minutes)
                if stop is not None or due:
                    self._save(CHECKPOINT_FILE, self._state(epoch - 1, partial=position(i + 1)))
                    last_save = time.perf_counter()
                if stop is not None:
                    bar.close()
                    raise self._stopped(stop, f"in epoch {epoch} after batch {i + 1} of {n_batches}")
        bar.close()
        # where the epoch's training ended: what a stop during the validation that follows saves
        self._epoch_end = position(n_batches)
        return {"epoch": epoch, "loss": float(total) / max(seen, 1), "lr": self.scheduler.get_last_lr()[0],
                "step": int(self.scheduler.last_epoch), "train_seconds": round(time.perf_counter() - started, 3)}

    def _stopped(self, signum: int, where: str) -> Stopped:
        return Stopped(f"stopped by {signal_name(signum)} {where}; checkpoint written to "
                       f"{self.out_dir / CHECKPOINT_FILE}; run the same command again to resume", signum=signum)

    # ----------------------------------------------------------------- evaluation
    def _default_evaluate(self) -> EvaluateFn:
        """:func:`kgprobe.linkpred.evaluator.evaluate_model` with one filter index reused by every validation."""
        from kgprobe.linkpred.evaluator import evaluate_model
        from kgprobe.linkpred.filters import FilterIndex

        cache: dict[int, Any] = {}

        def run(entity_emb, relation_emb, scorer, triples, *, candidates=None, filter_triples=None):
            index = None
            if filter_triples is not None:
                key = id(filter_triples)
                if key not in cache:
                    cache.clear()
                    cache[key] = FilterIndex(filter_triples, num_entities=entity_emb.shape[0],
                                             num_relations=relation_emb.shape[0]).to(entity_emb.device)
                index = cache[key]
            return evaluate_model(entity_emb, relation_emb, scorer, triples, filter_index=index,
                                  candidates=candidates, batch_size=self.config.eval_batch_size)

        return run

    def evaluate(self, triples: Any, *, candidates: Any = None, filter_triples: Any = None) -> dict:
        """Metrics of the current model on ``triples`` (every entity encoded once, no gradient)."""
        if self.evaluate_fn is None:
            self.evaluate_fn = self._default_evaluate()
        self.model.eval()
        entities = self._evaluation_vectors()
        relations = self.model.relations.weight.detach().float()
        metrics = self.evaluate_fn(
            entities, relations, self.model.scorer, as_triples(triples).to(self.device),
            candidates=None if candidates is None else torch.as_tensor(candidates).long().to(self.device),
            filter_triples=filter_triples)
        return _plain(dict(metrics))

    def _evaluation_vectors(self) -> torch.Tensor:
        """Every entity's vector (eval mode, no gradient), reused while the weights are unchanged."""
        key = (weights_digest(self.model), self.model.normalize_entities, self.config.eval_batch_size, self.use_amp)
        if self._eval_vectors is not None and self._eval_vectors[0] == key:
            return self._eval_vectors[1]
        self._eval_vectors = None  # the old vectors are not kept alive while the new ones are made
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.amp_dtype,
                                             enabled=self.use_amp):
            entities = self.model.all_entity_vectors(self.config.eval_batch_size)
        self._eval_vectors = (key, entities)
        return entities

    def _metric_of(self, metrics: Mapping[str, Any]) -> float:
        key = self.config.metric
        if key in metrics:
            return float(metrics[key])
        raise KgprobeError(f"the evaluation gave no {key!r} metric (it gave: {', '.join(sorted(metrics)[:12])})")

    # ----------------------------------------------------------------- checkpoints
    def _fingerprint(self) -> dict:
        return _plain({
            "config": self.config.resume_key(),
            "num_entities": int(self.model.encoder.num_entities),
            "num_relations": self.num_relations,
            "train_triples": int(len(self.train_triples)),
            "encoder": _plain(self.model.encoder.describe()),
            "scorer": _scorer_name(self.model.scorer),
            "sampler": self.sampler.describe() if hasattr(self.sampler, "describe") else type(self.sampler).__name__,
        })

    def _rng_states(self) -> dict:
        states = {"torch": torch.get_rng_state(), "python": list(random.getstate()), "numpy": _numpy_state()}
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state_all()
        return states

    def _restore_rng(self, states: dict) -> None:
        torch.set_rng_state(states["torch"])
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
        _set_numpy_state(states["numpy"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])

    def _state(self, epoch: int, *, partial: dict | None = None) -> dict:
        """Everything after ``epoch`` finished epochs, plus ``partial``: how far the next one got."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": self._rng_states(),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "bad_evals": self.bad_evals,
            "stopped_early": self.stopped_early,
            "finished": self.finished,
            "history": self.history,
            "fingerprint": self._fingerprint(),
            "partial": partial,
        }

    def _save(self, name: str, payload: dict) -> None:
        assert self.out_dir is not None
        with atomic_path(self.out_dir / name) as tmp:
            torch.save(payload, tmp)

    def _save_best(self, epoch: int) -> None:
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        if self.out_dir is None:
            self._best_state = state
            return
        self._save(BEST_FILE, {"format": CHECKPOINT_FORMAT, "kind": "best", "epoch": epoch, "model": state,
                               "metric": self.best_metric, "metrics": self.best_metrics,
                               "fingerprint": self._fingerprint()})

    def _write_metrics_file(self) -> None:
        """``metrics.jsonl`` rewritten from the history (after a resume: no stale or torn lines)."""
        assert self.out_dir is not None
        with atomic_path(self.out_dir / METRICS_FILE) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.history))

    def _append_metrics(self, record: dict) -> None:
        assert self.out_dir is not None
        with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def load_checkpoint(self, path: str | Path) -> int:
        """Restore everything from a checkpoint written by this trainer; returns its epoch."""
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise KgprobeError(f"unreadable checkpoint: {str(err).splitlines()[0] if str(err) else err}",
                               path=path) from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "optimizer" not in state:
            raise KgprobeError("not a kgprobe link-prediction training checkpoint", path=path)
        mine, theirs = self._fingerprint(), state.get("fingerprint")
        if mine != theirs:
            diff = sorted(k for k in mine if not isinstance(theirs, dict) or mine[k] != theirs.get(k))
            raise KgprobeError(f"the checkpoint was made with other settings ({', '.join(diff)} differ): "
                               "use a new output folder or start over without resuming", path=path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self._restore_rng(state["rng"])
        self.best_metric, self.best_epoch = state["best_metric"], state["best_epoch"]
        self.best_metrics = dict(state.get("best_metrics") or {})
        self.bad_evals = int(state["bad_evals"])
        self.stopped_early, self.finished = bool(state["stopped_early"]), bool(state["finished"])
        self.history = list(state["history"])
        self._partial = state.get("partial")
        self.resumed_batches = int(self._partial["batches_done"]) if self._partial else 0
        return int(state["epoch"])

    # ----------------------------------------------------------------- the loop
    def fit(self, *, resume: bool = True) -> TrainResult:
        """Train (or resume and finish training) and return the result."""
        cfg = self.config
        start, resumed_from = 1, None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            checkpoint = self.out_dir / CHECKPOINT_FILE
            if resume and checkpoint.is_file():
                resumed_from = self.load_checkpoint(checkpoint)
                start = resumed_from + 1
            self._write_metrics_file()
        validate = self.valid_triples is not None and len(self.valid_triples) > 0
        if not self.finished:
            with StopRequests() if self.out_dir is not None else contextlib.nullcontext() as stop:
                self._stop = stop
                try:
                    self._epochs(start, validate)
                finally:
                    self._stop = None
            if stop is not None and stop.requested is not None:  # it came after the last step
                raise self._stopped(stop.requested, "after the last epoch (training is finished)")
        if cfg.restore_best:
            self._restore_best()
        return TrainResult(model=self.model, history=list(self.history), best_epoch=self.best_epoch,
                           best_metric=self.best_metric, epochs_run=len(self.history),
                           stopped_early=self.stopped_early, resumed_from=resumed_from, out_dir=self.out_dir,
                           best_metrics=dict(self.best_metrics))

    def _validate(self, epoch: int) -> dict:
        try:
            with self._stop.immediate() if self._stop is not None else contextlib.nullcontext():
                return self.evaluate(self.valid_triples, candidates=self.valid_candidates,
                                     filter_triples=self.filter_triples)
        except StopNow:
            # the weights are the epoch's last step's: a resume goes straight to this validation
            self._save(CHECKPOINT_FILE, self._state(epoch - 1, partial=self._epoch_end))
            raise self._stopped(self._stop.requested, f"while validating epoch {epoch}") from None

    def _epochs(self, start: int, validate: bool) -> None:
        cfg = self.config
        for epoch in range(start, cfg.epochs + 1):
            started = time.perf_counter()
            partial, self._partial = self._partial, None
            if partial is not None and int(partial["epoch"]) == epoch:
                started -= float(partial["train_seconds"])
                record = self._train_epoch(epoch, partial)
            else:
                record = self._train_epoch(epoch)
            improved = False
            if validate and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                metrics = self._validate(epoch)
                value = self._metric_of(metrics)
                record["valid"] = metrics
                record["metric"] = value
                if self.best_metric is None or value > self.best_metric + cfg.min_delta:
                    self.best_metric, self.best_epoch, self.best_metrics = value, epoch, metrics
                    self.bad_evals, improved = 0, True
                else:
                    self.bad_evals += 1
            elif not validate:
                self.best_epoch, improved = epoch, True  # no validation: the latest model is the best
            record["best"] = improved
            record["seconds"] = round(time.perf_counter() - started, 3)
            record = _plain(record)
            self.history.append(record)
            if cfg.patience is not None and self.bad_evals >= cfg.patience:
                self.stopped_early = True
            self.finished = self.stopped_early or epoch == cfg.epochs
            if improved:
                self._save_best(epoch)
            if self.out_dir is not None:
                self._save(CHECKPOINT_FILE, self._state(epoch))
                self._append_metrics(record)
            for callback in self.callbacks:
                callback(self, record)
            if self.stopped_early:
                break
            if self._stop is not None and self._stop.requested is not None and not self.finished:
                raise self._stopped(self._stop.requested, f"after epoch {epoch}")

    def _restore_best(self) -> None:
        state = self._best_state
        if state is None and self.out_dir is not None and (self.out_dir / BEST_FILE).is_file():
            state = torch.load(self.out_dir / BEST_FILE, map_location="cpu", weights_only=True)["model"]
        if state is not None:
            self.model.load_state_dict(state)


def train(
    *,
    encoder: EntityEncoder,
    scorer: Any = "transe",
    loss: Any = "margin",
    sampler: Any = "in-batch",
    train_triples: Any,
    scorer_kwargs: Mapping[str, Any] | None = None,
    loss_kwargs: Mapping[str, Any] | None = None,
    sampler_kwargs: Mapping[str, Any] | None = None,
    resume: bool = True,
    **kwargs: Any,
) -> TrainResult:
    """One call: components by name, class or instance (PyKEEN style), then :meth:`Trainer.fit`.

    >>> result = train(encoder=get_encoder("transformer", kg=split.train), scorer="transe",
    ...                loss="margin", sampler="in-batch", train_triples=split.train,
    ...                valid_triples=split.valid, valid_candidates=train_and_valid_entities,
    ...                filter_triples=all_triples, out_dir="runs/blp", epochs=40, lr=2e-5)

    A sampler given by name is built with the encoder's entity count and the training triples
    (plus ``sampler_kwargs``, e.g. ``entities=split.train_entities`` or ``filtered=True``).
    Remaining keyword arguments go to :class:`Trainer` (and :class:`TrainConfig`).
    """
    from kgprobe.linkpred.losses import get_loss
    from kgprobe.linkpred.samplers import get_sampler
    from kgprobe.linkpred.scorers import get_scorer

    scorer_obj = get_scorer(scorer, **dict(scorer_kwargs or {}))
    loss_obj = get_loss(loss, **dict(loss_kwargs or {}))
    if isinstance(sampler, NegativeSampler):
        sampler_obj = get_sampler(sampler, **dict(sampler_kwargs or {}))
    else:
        options = {"num_entities": encoder.num_entities, "triples": as_triples(train_triples)}
        if kwargs.get("num_relations") is not None:
            options["num_relations"] = kwargs["num_relations"]
        elif hasattr(train_triples, "num_relations"):
            options["num_relations"] = train_triples.num_relations
        options.update(sampler_kwargs or {})
        sampler_obj = get_sampler(sampler, **options)
    trainer = Trainer(encoder=encoder, scorer=scorer_obj, loss=loss_obj, sampler=sampler_obj,
                      train_triples=train_triples, **kwargs)
    return trainer.fit(resume=resume)


__all__ = ["BEST_FILE", "CHECKPOINT_FILE", "METRICS_FILE", "LinkPredictionModel", "TrainConfig", "TrainResult",
           "Trainer", "train"]
