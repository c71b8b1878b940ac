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

SimKGC's levers (docs/linkpred.md): a loss with parameters (``infonce`` with ``learn_tau``: its
log inverse temperature) is trained by the same optimiser, in a group of its own without weight
decay, saved in the checkpoint (``loss``) and all-reduced with the model under several
processes; its ``record()`` (the learnt ``tau``) joins each epoch's record. ``pre_batch = N``
keeps the detached vectors of the entities encoded by the last ``N`` batches in a FIFO queue and
scores every row against them as extra tails and heads (:meth:`Trainer._pre_batch_negatives`;
the row's answer and known training triples masked), each weighing ``pre_batch_weight`` in
InfoNCE's softmax (``log w`` added to its logit: detached negatives at full weight crowd out the
batch's own and the encoder collapses); the queue is part of the checkpoint (one process only).
The ``query-encoder`` scorer (SimKGC's bi-encoder) encodes each triple's tail and
head queries from text (:meth:`LinkPredictionModel.query_vectors`) and scores answers by cosine
(:meth:`Trainer._query_batch_loss`; evaluation by
:func:`~kgprobe.linkpred.evaluator.evaluate_query_model`).

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

Several processes (``torchrun``, ``world``: a :class:`~kgprobe.linkpred.distributed.World`):
``batch_size`` is each process's share, the *global* batch ``batch_size x N`` is what one
process would take. Every rank draws the same shuffle and, for the whole global batch, the same
negatives (one generator, seeded alike); rank ``r`` keeps its contiguous share of the batch's rows
(:func:`~kgprobe.linkpred.distributed.shard_bounds`: shares differ by at most one row, so a last,
smaller batch is split as evenly as it goes). Each rank encodes the heads and tails of its own
rows, the vectors of all ranks are all-gathered (gradients flow back through the gather), and a
rank's rows are scored against them: in-batch negatives come from the whole global batch, N
times as many as one rank's share offers. The loss of a global batch is what one process
computes; rank ``r``'s part of it is ``w_r x loss(its rows)``, with ``w_r`` the share of the
batch's terms that its rows hold (``rows_r / B`` for the losses that average over positives;
for ``margin`` with masked negatives, ``valid pairs_r / valid pairs``; an empty share 0), so the
parts sum to the batch's loss. Each rank back-propagates ``N x`` its part, DDP averages the
gradients over the ``N`` ranks, and the update is that of the global batch: a 2-rank run with
batch ``B/2`` is the single-process run with batch ``B`` (up to float rounding; dropout draws
differ, each rank seeds its own). Rank 0 writes the checkpoints (with every rank's RNG states),
``metrics.jsonl`` and ``best.pt``; a resume reads rank 0's checkpoint and gives it to every rank.
Evaluation splits the entities to encode and the queries to rank between the ranks
(:func:`~kgprobe.linkpred.evaluator.evaluate_model_sharded`). A SIGTERM or Ctrl-C reaching any
rank stops all of them at the same step; a validation is not cut short (the ranks would have to
agree in the middle of it). A different number of processes cannot resume a checkpoint.

Evaluation encodes every entity once per call; the vectors are kept with a digest of the
model's weights, so the test evaluation right after a final validation of the same weights (the
usual case: the last epoch is the best) reuses them instead of a second pass over every entity
text (most of the 8 minutes of WordNet's test evaluation on a 2-core CPU).
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import inspect
import json
import math
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
from kgprobe.linkpred.config import PRE_BATCH_WEIGHT_NEEDS_INFONCE, TrainConfig
from kgprobe.linkpred.data import as_triples, batch_slices, num_batches
from kgprobe.linkpred.distributed import SINGLE, World, shard_bounds
from kgprobe.linkpred.encoders import EntityEncoder
from kgprobe.linkpred.filters import FilterIndex
from kgprobe.linkpred.losses import InfoNCELoss, MarginRankingLoss
from kgprobe.linkpred.samplers import Negatives, NegativeSampler
from kgprobe.linkpred.scorers import normalizes_entities
from kgprobe.models.device import cpu_has_native_bf16, host_to_device
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
#: ``step_callback(trainer, batch_index, loss)`` after every batch of an epoch (``loss``: the
#: batch's detached loss on the device; reading it waits for the device)
StepCallback = Callable[["Trainer", int, torch.Tensor], Any]


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

    @property
    def encodes_queries(self) -> bool:
        """Whether the scorer reads queries from text (``query-encoder``, SimKGC's bi-encoder)."""
        return bool(getattr(self.scorer, "encodes_queries", False))

    def query_vectors(self, anchors: torch.Tensor, relations: torch.Tensor, *, head: bool,
                      batch_size: int | None = None) -> torch.Tensor:
        """``(n, dim)`` query vectors of a ``query-encoder`` model: the encoder over
        ``"text(anchor) [SEP] text(relation)"`` (``head``: ``"... [SEP] inverse text(relation)"``).
        With ``batch_size``: eval mode, no gradient, in batches (evaluation); else one pass with
        gradient (training)."""
        texts = self.scorer.query_texts(anchors, relations, head=head)
        encoder = self.encoder.for_texts(texts)  # shares every weight; only the texts are new
        if batch_size is None:
            return encoder.encode(torch.arange(len(texts)))
        return encoder.encode_all(batch_size).float()

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


@dataclass
class _EpochRun:
    """Where an epoch is: its generator, batch count, running loss (on the device) and clocks."""

    epoch: int
    generator: torch.Generator
    n_batches: int
    total: torch.Tensor
    seen: int = 0
    done_before: int = 0
    started: float = field(default_factory=time.perf_counter)
    last_save: float = 0.0


class _DistributedStep(nn.Module):
    """What DDP wraps: the model, and as forward this rank's part of a global batch's loss
    (:meth:`Trainer._distributed_loss`), so every parameter the step uses is used inside it."""

    def __init__(self, trainer: "Trainer"):
        super().__init__()
        self.model = trainer.model
        if trainer._loss_parameters():  # a learnt temperature: its gradient is all-reduced like the model's
            self.loss = trainer.loss_fn
        self.trainer = trainer

    def forward(self, batch: torch.Tensor, negatives: Negatives) -> tuple[torch.Tensor, torch.Tensor]:
        return self.trainer._distributed_loss(batch, negatives)


class Trainer:
    """Train ``encoder`` + relation table with ``scorer``, ``loss`` and ``sampler``.

    ``evaluate`` is called as ``evaluate(entity_emb, relation_emb, scorer, triples, *,
    candidates=, filter_triples=)`` (the signature of
    :func:`kgprobe.linkpred.evaluator.evaluate_model`, the default, run with one filter index
    built once) and returns a flat dict of metrics.
    ``valid_candidates`` restricts the ranked entities (BLP, inductive: train + valid
    entities); ``filter_triples`` are the known triples filtered from the ranking (default:
    train + valid). Config fields (:class:`~kgprobe.linkpred.config.TrainConfig`) may be given as
    keyword arguments instead of ``config``, or on top of it. ``world``: the processes of a
    data-parallel run (:func:`kgprobe.linkpred.distributed.join`; ``device`` then is this rank's),
    ``None`` for one process.
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
        step_callbacks: Iterable[StepCallback] = (),
        world: World | None = None,
        **overrides: Any,
    ):
        from kgprobe.models.device import resolve_device

        config = config or TrainConfig()
        self.config = config.replace(**overrides) if overrides else config
        self.device = resolve_device(device)
        self.world = world or SINGLE
        self._set_triples(encoder, train_triples, num_relations, valid_triples, valid_candidates, filter_triples)
        self.evaluate_fn = evaluate
        # a loss with parameters (infonce's learnt temperature) trains on the model's device
        self.loss_fn = loss.to(self.device) if isinstance(loss, nn.Module) else loss
        self._loss_takes_mask = _accepts_mask(loss)
        self.sampler = sampler
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.progress = progress and self.world.is_main
        self.callbacks = list(callbacks)
        self.step_callbacks = list(step_callbacks)
        self._stop: StopRequests | None = None  # set while fit() runs with an out_dir to save to
        self._epoch_end: dict | None = None
        self._eval_vectors: tuple[tuple, torch.Tensor] | None = None
        self._build_model(encoder, scorer)
        self._check_query_encoder()
        self._set_pre_batch()
        self._ddp: nn.Module | None = None
        if self.world.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            # the buffers (token tables) never change: not broadcast at every step; parameters a
            # step leaves unused (a transformer's pooler) are searched for at every step, when there are any
            self._ddp = DistributedDataParallel(_DistributedStep(self), forward_sync_buffers=False,
                                                find_unused_parameters=self._has_unused_parameters())
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
        encoder.prepare_training(self.device)
        self.model = LinkPredictionModel(encoder, scorer, self.num_relations,
                                         normalize_entities=config.normalize_entities,
                                         seed=config.seed).to(self.device)

    def _check_query_encoder(self) -> None:
        """``query-encoder`` needs a text encoder and the scorer's texts; it runs in one process and
        without pre-batch negatives (their scores need relation vectors)."""
        if not self.model.encodes_queries:
            return
        if self.world.size > 1:
            raise KgprobeError("the query-encoder scorer works in one process only")
        if self.config.pre_batch:
            raise KgprobeError("the query-encoder scorer does not take pre_batch negatives (yet): drop pre_batch")
        if getattr(self.model.scorer, "entity_texts", None) is None:
            raise KgprobeError("query-encoder: no entity and relation texts (call scorer.set_texts first)")
        self.model.encoder.for_texts(["query"])  # a table encoder says here that it reads no text

    def _set_pre_batch(self) -> None:
        """The queue of pre-batch negatives (``pre_batch`` batches of ``(ids, vectors)``) and the
        index of the known training triples that masks its false negatives."""
        n = self.config.pre_batch
        self._pre_batch: collections.deque = collections.deque(maxlen=max(n, 1))
        self._known: FilterIndex | None = None
        if not n:
            return
        if self.world.size > 1:
            raise KgprobeError("pre_batch negatives work in one process only: drop pre_batch or run one process")
        if self.config.pre_batch_weight != 1 and not isinstance(self.loss_fn, InfoNCELoss):
            raise KgprobeError(PRE_BATCH_WEIGHT_NEEDS_INFONCE)
        known = [self.train_triples]
        sampler_triples = getattr(self.sampler, "triples", None)  # the whole training part under a subset
        if sampler_triples is not None:
            known.append(as_triples(sampler_triples))
        self._known = FilterIndex.from_triples(*known, num_entities=int(self.model.encoder.num_entities),
                                               num_relations=self.num_relations)

    def _is_known(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Whether ``(h, r, t)`` is a known training triple (broadcast over the arguments, on the host)."""
        h, r, t = torch.broadcast_tensors(h, r, t)
        return self._known.contains(torch.stack([h.reshape(-1), r.reshape(-1), t.reshape(-1)], dim=1)).view(h.shape)

    def _loss_parameters(self) -> list[nn.Parameter]:
        """The loss's trainable parameters (infonce's learnt temperature), trained with the model's."""
        if not isinstance(self.loss_fn, nn.Module):
            return []
        return [p for p in self.loss_fn.parameters() if p.requires_grad]

    def _loss_is_stateful(self) -> bool:
        return isinstance(self.loss_fn, nn.Module) and bool(self.loss_fn.state_dict())

    def _build_optimizer(self) -> None:
        """AdamW, a linear warmup then linear decay over every optimizer step, and mixed precision
        (bf16, or fp16 with a gradient scaler where bf16 is missing) when asked for on CUDA, and
        bf16 on a CPU with native bf16 when ``cpu_bf16`` asks for it too.

        The optimiser is fused (one kernel over every parameter) where torch has it for the
        device: the same update, and on a CPU 15x faster than the default per-tensor loops, which
        for MiniLM's 22M parameters cost 7 % of a step."""
        config = self.config
        fused = self.device.type in ("cpu", "cuda") and all(
            p.dtype.is_floating_point for p in self.model.parameters())
        groups: list[dict] = [{"params": list(self.model.parameters())}]
        if self._loss_parameters():
            # no weight decay on log(1/tau): it would pull the temperature towards 1, not towards "small"
            groups.append({"params": self._loss_parameters(), "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay,
                                           fused=fused or None)
        self.steps_per_epoch = -(-num_batches(len(self.train_triples), self.global_batch_size,
                                              drop_last=config.drop_last) // config.grad_accumulation)
        self.total_steps = max(1, self.steps_per_epoch * config.epochs)
        self.warmup_steps = int(config.warmup * self.total_steps)
        warmup_steps, total_steps = self.warmup_steps, self.total_steps

        def lr_factor(step: int) -> float:  # a plain function, so the scheduler's state_dict stays small
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)
        self.use_amp = bool(config.amp) and (self.device.type == "cuda" or (
            self.device.type == "cpu" and config.cpu_bf16 and cpu_has_native_bf16()))
        fp16 = self.use_amp and self.device.type == "cuda" and not torch.cuda.is_bf16_supported()
        self.amp_dtype = torch.float16 if fp16 else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)

    def _has_unused_parameters(self) -> bool:
        """Whether encoding an entity and looking up the relations leaves a parameter without a
        gradient (one pass in eval mode, no random draw; gradients cleared after)."""
        model, was_training = self.model, self.model.training
        model.eval()
        try:
            with torch.enable_grad():
                vectors = model.entity_vectors(torch.zeros(1, dtype=torch.long))
                (vectors.float().sum() + model.relations.weight.float().sum()).backward()
            return any(p.grad is None for p in model.parameters() if p.requires_grad)
        finally:
            for p in model.parameters():
                p.grad = None
            model.train(was_training)

    @property
    def global_batch_size(self) -> int:
        """Positives per step over all processes (``batch_size`` each)."""
        return self.config.batch_size * self.world.size

    # ----------------------------------------------------------------- seeds
    def _epoch_seed(self, epoch: int) -> int:
        return (int(self.config.seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2 ** 63)

    # ----------------------------------------------------------------- one epoch
    def _batch_loss(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg, model = self.config, self.model
        if model.encodes_queries:
            return self._query_batch_loss(batch, generator)
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
            mask = mask.bool()
            log_weight = None
            if self._pre_batch:  # the queue's entities join the negatives, then this batch joins the queue
                extra, extra_mask = self._pre_batch_negatives(batch, pos_ent, rel)
                if cfg.pre_batch_weight != 1:  # log w on each queued negative's logit (InfoNCE)
                    log_weight = torch.cat([neg.new_zeros(neg.shape[1], dtype=torch.float32),
                                            neg.new_full((extra.shape[1],), math.log(cfg.pre_batch_weight),
                                                         dtype=torch.float32)])
                neg, mask, usable = torch.cat([neg, extra], dim=1), torch.cat([mask, extra_mask], dim=1), False
        if cfg.pre_batch:
            self._pre_batch.append((unique, vectors.detach()))
        loss = self._loss(pos.float(), neg.float(), mask, usable, log_weight=log_weight)
        if cfg.regularization:
            loss = loss + cfg.regularization * (pos_ent.float().pow(2).mean() + rel.float().pow(2).mean())
        return loss

    def _query_batch_loss(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A ``query-encoder`` step (SimKGC's bi-encoder): each triple gives two rows, the tail
        query ``"h [SEP] r"`` answered by ``t`` and the head query ``"t [SEP] inverse r"`` answered
        by ``h``, scored by cosine. A negative replacing the tail joins the tail row, one replacing
        the head the head row (the other row masks it), so every row's softmax is over answers of
        its own query."""
        cfg, model = self.config, self.model
        negatives = self.sampler.sample_negatives(batch, cfg.num_negatives, generator=generator)
        b, k = negatives.mask.shape
        ids = torch.cat([batch[:, [0, 2]].reshape(-1), negatives.entities.reshape(-1)])
        unique, inverse = torch.unique(ids, return_inverse=True)
        side = negatives.corrupt_head
        mask = host_to_device(torch.cat([negatives.mask & ~side, negatives.mask & side]), self.device)
        inverse = host_to_device(inverse, self.device)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            vectors = model.entity_vectors(unique)
            queries = torch.cat([model.query_vectors(batch[:, 0], batch[:, 1], head=False),
                                 model.query_vectors(batch[:, 2], batch[:, 1], head=True)])
            pos_ent = nn.functional.embedding(inverse[:2 * b], vectors).view(b, 2, -1)
            answers = torch.cat([pos_ent[:, 1], pos_ent[:, 0]])  # tail rows: t; head rows: h
            neg_ent = nn.functional.embedding(inverse[2 * b:], vectors).view(b, k, -1).repeat(2, 1, 1)
            pos = model.scorer.score(queries, None, answers)
            neg = model.scorer.score(queries[:, None], None, neg_ent)
        loss = self._loss(pos.float(), neg.float(), mask, False)
        if cfg.regularization:
            loss = loss + cfg.regularization * pos_ent.float().pow(2).mean()
        return loss

    def _pre_batch_negatives(self, batch: torch.Tensor, pos_ent: torch.Tensor,
                             rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SimKGC's pre-batch negatives: ``(B, 2Q)`` scores of every row against the ``Q`` entity
        vectors of the last ``pre_batch`` batches (detached: no gradient reaches an older batch),
        first as tails ``(h, r, e)``, then as heads ``(e, r, t)``, and the ``(B, 2Q)`` mask that
        drops the false negatives: ``e`` the row's own answer, or a known training triple."""
        ids = torch.cat([queued for queued, _ in self._pre_batch])
        vectors = torch.cat([v for _, v in self._pre_batch]).to(pos_ent.dtype)
        h, r, t = (batch[:, i, None] for i in range(3))
        keep = torch.cat([(ids[None] != t) & ~self._is_known(h, r, ids[None]),
                          (ids[None] != h) & ~self._is_known(ids[None], r, t)], dim=1)
        scorer = self.model.scorer
        tails = scorer.score(pos_ent[:, None, 0], rel[:, None], vectors[None])
        heads = scorer.score(vectors[None], rel[:, None], pos_ent[:, None, 1])
        return torch.cat([tails, heads], dim=1), host_to_device(keep, self.device)

    def _loss(self, pos: torch.Tensor, neg: torch.Tensor, mask: torch.Tensor, usable: bool,
              log_weight: torch.Tensor | None = None) -> torch.Tensor:
        if log_weight is not None:  # the pre-batch negatives' weight (infonce, checked at the start)
            return self.loss_fn(pos, neg, mask=mask, log_weight=log_weight)
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
        # part of every checkpoint; seeding it here would change what those hold. Each rank of a
        # several-process run its own stream (rank 0's is the single process's).
        rank_seed = (seed + self.world.rank) % (2 ** 63)
        torch.manual_seed(rank_seed)
        random.seed(rank_seed)
        n_batches = num_batches(len(self.train_triples), self.global_batch_size, drop_last=cfg.drop_last)
        # drawn whole now, so that the generator's state after the shuffle is the one negatives start from
        batches = list(batch_slices(len(self.train_triples), self.global_batch_size, generator=generator,
                                    drop_last=cfg.drop_last))
        self.model.train(cfg.dropout)  # dropout off: BLP's loop never calls train()
        self.optimizer.zero_grad(set_to_none=True)
        # the running loss stays on the device and is read every LOSS_READ_EVERY steps: reading it
        # each step would make the CPU wait for the GPU (a NaN still surfaces within that window)
        run = _EpochRun(epoch=epoch, generator=generator, n_batches=n_batches,
                        total=torch.zeros((), dtype=torch.float64, device=self.device))
        if partial is not None:
            generator.set_state(partial["generator"])
            self._restore_rng(self._rank_rng(partial))
            if self.world.is_main:  # the sum over every rank's parts: counted once
                run.total += float(partial["total"])
            run.seen, run.done_before = int(partial["seen"]), int(partial["batches_done"])
            run.started -= float(partial["train_seconds"])
        run.last_save = time.perf_counter()

        from tqdm.auto import tqdm

        bar = tqdm(batches[run.done_before:], total=n_batches, initial=run.done_before,
                   desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", disable=not self.progress, leave=False)
        try:
            for i, index in enumerate(bar, start=run.done_before):
                loss = self._train_step(run, i, self.train_triples[index], bar)
                for step_callback in self.step_callbacks:
                    step_callback(self, i, loss)
        finally:
            bar.close()
        # where the epoch's training ended: what a stop during the validation that follows saves
        self._epoch_end = self._position(run, n_batches)
        # the loss's own state at the epoch's end (infonce with learn_tau: the learnt tau)
        learnt = self.loss_fn.record() if callable(getattr(self.loss_fn, "record", None)) else {}
        return {"epoch": epoch, "loss": self._global_total(run) / max(run.seen, 1),
                "lr": self.scheduler.get_last_lr()[0], "step": int(self.scheduler.last_epoch), **learnt,
                "train_seconds": round(time.perf_counter() - run.started, 3)}

    def _train_step(self, run: _EpochRun, i: int, batch: torch.Tensor, bar: Any) -> torch.Tensor:
        """Batch ``i`` of the epoch: its loss and backward pass, and at the end of an accumulation
        group the optimiser step and, when due or asked for, a checkpoint. Returns the detached loss."""
        cfg = self.config
        group_start = (i // cfg.grad_accumulation) * cfg.grad_accumulation
        group_size = min(cfg.grad_accumulation, run.n_batches - group_start)
        last_of_group = i + 1 == group_start + group_size
        if self._ddp is None:
            loss = self._batch_loss(batch, run.generator)
            self.scaler.scale(loss / group_size).backward()
        else:
            loss = self._distributed_batch(batch, run.generator, group_size, sync=last_of_group)
        run.total += loss.detach().double() * len(batch)
        run.seen += len(batch)
        if (i + 1) % LOSS_READ_EVERY == 0 or i + 1 == run.n_batches:
            mean = self._global_total(run) / run.seen
            if not np.isfinite(mean):
                raise KgprobeError(f"the loss became {mean} in epoch {run.epoch} (lower the learning rate?)")
            bar.set_postfix(loss=f"{mean:.4f}", refresh=False)
        if not last_of_group:
            return loss.detach()
        if cfg.max_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_([*self.model.parameters(), *self._loss_parameters()], cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.out_dir is not None and i + 1 != run.n_batches:
            self._checkpoint_within(run, i + 1)
        return loss.detach()

    def _checkpoint_within(self, run: _EpochRun, batches_done: int) -> None:
        """After an optimiser step inside the epoch: the checkpoint when ``checkpoint_minutes`` have
        passed or a stop was asked for (then :class:`Stopped`). Several ranks decide together:
        saving gathers from all of them, and all stop at the same step."""
        cfg = self.config
        stop = self._stop.requested if self._stop is not None else None
        due = cfg.checkpoint_minutes is not None and time.perf_counter() - run.last_save >= 60 * cfg.checkpoint_minutes
        if self.world.size > 1:
            stop_any, due_any = self.world.max_ints([stop or 0, int(due)])
            stop, due = stop_any or None, bool(due_any)
        if stop is not None or due:
            self._save(CHECKPOINT_FILE, self._state(run.epoch - 1, partial=self._position(run, batches_done)))
            run.last_save = time.perf_counter()
        if stop is not None:
            raise self._stopped(stop, f"in epoch {run.epoch} after batch {batches_done} of {run.n_batches}")

    def _global_total(self, run: _EpochRun) -> float:
        """The epoch's summed loss so far (x batch sizes), over every rank's part."""
        return self.world.sum_float(float(run.total))

    def _position(self, run: _EpochRun, batches_done: int) -> dict:
        """How far the epoch got: what a mid-epoch checkpoint holds (every rank's RNG states with several)."""
        position = {"epoch": run.epoch, "batches_done": batches_done, "generator": run.generator.get_state(),
                    "rng": self._rng_states(), "total": self._global_total(run), "seen": run.seen,
                    "train_seconds": time.perf_counter() - run.started}
        if self.world.size > 1:
            position["rank_rng"] = self.world.gather_objects(self._rng_states())
        return position

    def _rank_rng(self, state: dict) -> dict:
        """This rank's RNG states in a checkpoint (or its position within an epoch)."""
        return state["rank_rng"][self.world.rank] if state.get("rank_rng") else state["rng"]

    # ----------------------------------------------------------------- several processes
    def _distributed_batch(self, batch: torch.Tensor, generator: torch.Generator, group_size: int, *,
                           sync: bool) -> torch.Tensor:
        """A global batch on this rank: the negatives of the whole batch (as every rank draws them),
        its part of the loss through DDP, the backward pass (gradients all-reduced at the end of an
        accumulation group only); returns the part (no gradient)."""
        negatives = self.sampler.sample_negatives(batch, self.config.num_negatives, generator=generator)
        with contextlib.nullcontext() if sync else self._ddp.no_sync():
            scaled, part = self._ddp(batch, negatives)
            self.scaler.scale(scaled / group_size).backward()
        return part

    def _entity_plan(self, batch: torch.Tensor, negatives: Negatives, start: int,
                     stop: int) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
        """Host-side index work of a global batch, the same on every rank: the entities this rank
        encodes (the heads and tails of its rows; one unused entity when it has no rows), the
        padded width of every rank's block in the gathered table, the table row of each entity
        its rows score (positives' heads and tails, then the negatives', as ``_batch_loss``
        orders them), and the entities outside the gathered blocks (negatives from outside the
        batch), encoded by this rank alone after them."""
        world = self.world
        shards = [torch.unique(batch[a:b][:, [0, 2]]) for a, b in shard_bounds(len(batch), world.size)]
        shards = [part if len(part) else batch[:1, 0] for part in shards]
        width = max(len(part) for part in shards)
        rows = torch.cat([rank * width + torch.arange(len(part)) for rank, part in enumerate(shards)])
        keys, order = torch.sort(torch.cat(shards), stable=True)
        first = torch.ones(len(keys), dtype=torch.bool)
        first[1:] = keys[1:] != keys[:-1]  # an entity several ranks encode: the lowest rank's row
        keys, rows = keys[first], rows[order][first]
        ids = torch.cat([batch[start:stop][:, [0, 2]].reshape(-1),
                         negatives.triples[start:stop][..., [0, 2]].reshape(-1)])
        at = torch.searchsorted(keys, ids).clamp_max(len(keys) - 1)
        found = keys[at] == ids
        extra, extra_at = torch.unique(ids[~found], return_inverse=True)
        index = rows[at]
        index[~found] = world.size * width + extra_at
        return shards[world.rank], width, index, extra

    def _share(self, mask: torch.Tensor, start: int, stop: int, usable: bool) -> float:
        """``w``: this rank's rows' part of the global batch's loss is ``w x loss(its rows)``."""
        if stop == start:
            return 0.0
        if usable or (self._loss_takes_mask and not isinstance(self.loss_fn, MarginRankingLoss)):
            return (stop - start) / len(mask)  # a mean over positives
        if self._loss_takes_mask:  # the margin loss: a mean over the valid (positive, negative) pairs
            return max(1, int(mask[start:stop].sum())) / max(1, int(mask.sum()))
        kept = mask.any(dim=1)  # see _loss: rows without a usable negative leave the loss
        return int(kept[start:stop].sum()) / max(1, int(kept.sum()))

    def _distributed_loss(self, batch: torch.Tensor, negatives: Negatives) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's part of a global batch's loss (see the module docstring): ``(N x part, part)``,
        the first to back-propagate (DDP averages over the ``N`` ranks), the second to report."""
        cfg, model, world = self.config, self.model, self.world
        b, k = negatives.mask.shape
        start, stop = world.shard(b)
        n = stop - start
        usable = bool(negatives.mask.all())
        mine, width, index, extra = self._entity_plan(batch, negatives, start, stop)
        parts = (index, batch[start:stop, 1], negatives.triples[start:stop, :, 1], negatives.mask[start:stop].long())
        flat = host_to_device(torch.cat([p.reshape(-1) for p in parts]), self.device)
        index, rel_ids, neg_rel_ids, mask = (
            piece.view(part.shape) for piece, part in zip(flat.split([p.numel() for p in parts]), parts))
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            vectors = world.gather_rows(model.entity_vectors(mine), width)
            if len(extra):
                vectors = torch.cat([vectors, model.entity_vectors(extra).to(vectors.dtype)])
            dim = vectors.shape[-1]
            pos_ent = nn.functional.embedding(index[:2 * n], vectors).view(n, 2, dim)
            neg_ent = nn.functional.embedding(index[2 * n:], vectors).view(n, k, 2, dim)
            rel = model.relations(rel_ids)
            neg_rel = model.relations(neg_rel_ids)
            pos = model.scorer.score(pos_ent[:, 0], rel, pos_ent[:, 1])
            neg = model.scorer.score(neg_ent[:, :, 0], neg_rel, neg_ent[:, :, 1])
        if n == 0:  # no rows here: a zero that still reaches every parameter DDP waits for
            part = (vectors.float().sum() + model.relations.weight.float().sum()
                    + sum(p.sum() for p in self._loss_parameters())) * 0.0
        else:
            part = self._loss(pos.float(), neg.float(), mask.bool(), usable) * self._share(
                negatives.mask, start, stop, usable)
            if cfg.regularization:
                part = part + cfg.regularization * (n / b) * (pos_ent.float().pow(2).mean()
                                                               + rel.float().pow(2).mean())
        return part * world.size, part.detach()

    def _stopped(self, signum: int, where: str) -> Stopped:
        return Stopped(f"stopped by {signal_name(signum)} {where}; checkpoint written to "
                       f"{self.out_dir / CHECKPOINT_FILE}; run the same command again to resume", signum=signum)

    # ----------------------------------------------------------------- evaluation
    def _default_evaluate(self) -> EvaluateFn:
        """:func:`kgprobe.linkpred.evaluator.evaluate_model` with one filter index reused by every validation."""
        from kgprobe.linkpred.evaluator import evaluate_model, evaluate_model_sharded, evaluate_query_model
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
            if self.model.encodes_queries:  # queries from text: the model encodes them
                return evaluate_query_model(self.model, entity_emb, triples, filter_index=index,
                                            candidates=candidates, batch_size=self.config.eval_batch_size,
                                            encode_batch_size=self.config.eval_batch_size)
            if self.world.size > 1:  # each rank ranks its share of the queries
                return evaluate_model_sharded(entity_emb, relation_emb, scorer, triples, filter_index=index,
                                              candidates=candidates, batch_size=self.config.eval_batch_size,
                                              shard=(self.world.rank, self.world.size),
                                              gather=self.world.gather_varlen)
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
            entities = (self.model.all_entity_vectors(self.config.eval_batch_size) if self.world.size == 1
                        else self._sharded_entity_vectors())
        self._eval_vectors = (key, entities)
        return entities

    def _sharded_entity_vectors(self) -> torch.Tensor:
        """Every entity's vector, each rank encoding its share (:func:`shard_bounds`), all gathered."""
        start, stop = self.world.shard(self.model.encoder.num_entities)
        if stop > start:
            part = self.model.all_entity_vectors(self.config.eval_batch_size, entities=torch.arange(start, stop))
        else:
            part = torch.zeros((0, self.model.encoder.dim), device=self.device)
        return torch.cat(self.world.gather_varlen(part))

    def _metric_of(self, metrics: Mapping[str, Any]) -> float:
        key = self.config.metric
        if key in metrics:
            return float(metrics[key])
        raise KgprobeError(f"the evaluation gave no {key!r} metric (it gave: {', '.join(sorted(metrics)[:12])})")

    # ----------------------------------------------------------------- checkpoints
    def _fingerprint(self) -> dict:
        processes = {"processes": self.world.size} if self.world.size > 1 else {}
        return _plain({
            **processes,
            "config": self.config.resume_key(),
            "num_entities": int(self.model.encoder.num_entities),
            "num_relations": self.num_relations,
            "train_triples": int(len(self.train_triples)),
            "encoder": _plain(self.model.encoder.describe()),
            "scorer": _scorer_name(self.model.scorer),
            "sampler": self.sampler.describe() if hasattr(self.sampler, "describe") else type(self.sampler).__name__,
            # a loss with state (a learnt temperature) must be the same loss to resume it; stateless
            # losses stay out, so that checkpoints written before learn_tau still resume
            **({"loss": repr(self.loss_fn)} if self._loss_is_stateful() else {}),
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
            **({"rank_rng": self.world.gather_objects(self._rng_states())} if self.world.size > 1 else {}),
            **({"loss": self.loss_fn.state_dict()} if self._loss_is_stateful() else {}),
            **({"pre_batch": [{"ids": ids, "vectors": v.detach().cpu()} for ids, v in self._pre_batch]}
               if self.config.pre_batch else {}),
        }

    def _save(self, name: str, payload: dict) -> None:
        assert self.out_dir is not None
        if not self.world.is_main:
            return
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
        if not self.world.is_main:
            return
        with atomic_path(self.out_dir / METRICS_FILE) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.history))

    def _append_metrics(self, record: dict) -> None:
        assert self.out_dir is not None
        if not self.world.is_main:
            return
        with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def load_checkpoint(self, path: str | Path) -> int:
        """Restore everything from a checkpoint written by this trainer; returns its epoch."""
        path = Path(path)
        return self._apply_checkpoint(self._read_checkpoint(path), path)

    @staticmethod
    def _read_checkpoint(path: Path) -> dict:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise KgprobeError(f"unreadable checkpoint: {str(err).splitlines()[0] if str(err) else err}",
                               path=path) from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "optimizer" not in state:
            raise KgprobeError("not a kgprobe link-prediction training checkpoint", path=path)
        return state

    def _shared_checkpoint(self, path: Path) -> dict | None:
        """The checkpoint at ``path`` (None when there is none), read by rank 0 and given to every
        rank (the others need no access to rank 0's disk); an error there is every rank's."""
        if self.world.size == 1:
            return self._read_checkpoint(path) if path.is_file() else None
        state, error = None, None
        if self.world.is_main and path.is_file():
            try:
                state = self._read_checkpoint(path)
            except KgprobeError as err:
                error = str(err)
        state, error = self.world.broadcast((state, error))
        if error is not None:
            raise KgprobeError(error)
        return state

    def _apply_checkpoint(self, state: dict, path: Path) -> int:
        mine, theirs = self._fingerprint(), state.get("fingerprint")
        if mine != theirs:
            keys = [*mine, *(k for k in (theirs if isinstance(theirs, dict) else {}) if k not in mine)]
            diff = sorted(k for k in keys if not isinstance(theirs, dict) or mine.get(k) != theirs.get(k))
            raise KgprobeError(f"the checkpoint was made with other settings ({', '.join(diff)} differ): "
                               "use a new output folder or start over without resuming", path=path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if "loss" in state:
            self.loss_fn.load_state_dict(state["loss"])
        self._pre_batch.clear()
        for queued in state.get("pre_batch") or ():
            self._pre_batch.append((queued["ids"], queued["vectors"].to(self.device)))
        self._restore_rng(self._rank_rng(state))
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
            if self.world.is_main:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            checkpoint = self.out_dir / CHECKPOINT_FILE
            state = self._shared_checkpoint(checkpoint) if resume else None
            if state is not None:
                resumed_from = self._apply_checkpoint(state, checkpoint)
                start = resumed_from + 1
            self._write_metrics_file()
        validate = self.valid_triples is not None and len(self.valid_triples) > 0
        if not self.finished:
            with StopRequests() if self.out_dir is not None else contextlib.nullcontext() as stop:
                self._stop = stop
                try:
                    self._epochs(start, validate)
                    late = self._agreed_stop()
                finally:
                    self._stop = None
            if late is not None:  # it came after the last step
                raise self._stopped(late, "after the last epoch (training is finished)")
        if cfg.restore_best:
            self._restore_best()
        return TrainResult(model=self.model, history=list(self.history), best_epoch=self.best_epoch,
                           best_metric=self.best_metric, epochs_run=len(self.history),
                           stopped_early=self.stopped_early, resumed_from=resumed_from, out_dir=self.out_dir,
                           best_metrics=dict(self.best_metrics))

    def _agreed_stop(self) -> int | None:
        """The signal that asked the run to stop, if any; with several ranks, any rank's."""
        stop = self._stop.requested if self._stop is not None else None
        if self.world.size > 1:
            stop = self.world.max_ints([stop or 0])[0] or None
        return stop

    def _validate(self, epoch: int) -> dict:
        # one process stops at once; several finish the validation together and stop after the epoch
        immediate = self._stop is not None and self.world.size == 1
        try:
            with self._stop.immediate() if immediate else contextlib.nullcontext():
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
            stop = self._agreed_stop()
            if stop is not None and not self.finished:
                raise self._stopped(stop, f"after epoch {epoch}")

    def _restore_best(self) -> None:
        state = self._best_state
        if state is None and self.out_dir is not None and self.world.is_main and (self.out_dir / BEST_FILE).is_file():
            state = torch.load(self.out_dir / BEST_FILE, map_location="cpu", weights_only=True)["model"]
        if self.world.size > 1 and self.out_dir is not None:  # rank 0's file, every rank's weights
            state = self.world.broadcast(state)
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


__all__ = ["BEST_FILE", "CHECKPOINT_FILE", "METRICS_FILE", "LinkPredictionModel", "StepCallback", "TrainConfig",
           "TrainResult", "Trainer", "train"]
