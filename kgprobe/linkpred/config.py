"""The one configuration of link-prediction training: pydantic models whose fields carry the
defaults, the bounds and the help text (``description``) of every setting.

* :class:`TrainOptions`: the optimisation settings (BLP's defaults where BLP has one). The fields
  in :attr:`TrainOptions.ADVANCED` are the fine-tuning knobs; the command line sets them with
  ``--set KEY=VALUE`` instead of an option of their own.
* :class:`TrainConfig`: those plus the seed, what :class:`~kgprobe.linkpred.trainer.Trainer` runs
  with; :meth:`TrainConfig.resume_key` says which of them a resumed run must share (checkpoints
  store it). A bad value raises :class:`~kgprobe.errors.KgprobeError` naming the field.
* :class:`ComponentOptions`: encoder, scorer, loss and sampler by name, with their options.
* :class:`LinkPredOptions`: components + training + ``resume`` and ``max_train_triples``: a job's
  options, shared with the ``linkpred_train`` pipeline step.
* :class:`LinkPredConfig`: those plus where to read (``data``), write (``out``) and run
  (``device``, ``seed``): what :func:`kgprobe.linkpred.run.run_training` takes, and what
  ``kgprobe linkpred train`` builds its options from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kgprobe.errors import KgprobeError

_SEED = "Seed of every random draw."
# Each pre-batch negative's weight in InfoNCE's softmax. At 1 the detached negatives of two batches
# (four times a batch's own, as heads and tails) took most of the softmax and the encoder collapsed
# (WordNet, bag of words on the CPU and MiniLM on an H200 alike); chosen on the CPU pilot of
# docs/linkpred.md "Pre-batch negatives".
PRE_BATCH_WEIGHT = 0.05
PRE_BATCH_WEIGHT_NEEDS_INFONCE = (f"pre_batch_weight (default {PRE_BATCH_WEIGHT}) weighs the infonce loss's softmax: "
                                  "with another loss set pre_batch_weight=1 (every negative alike)")

__all__ = ["ComponentOptions", "LinkPredConfig", "LinkPredOptions", "TrainConfig", "TrainOptions",
           "one_line", "parse_key_values"]


def one_line(err: ValidationError) -> str:
    """The first problem of a pydantic error as one line: ``warmup: Input should be ... (got 1.5)``."""
    first = err.errors()[0]
    return f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']} (got {first.get('input')!r})"


def parse_key_values(items: Sequence[str], option: str) -> dict:
    """``("gamma=9.5", "n=3", "adversarial=false")`` -> ``{"gamma": 9.5, "n": 3, "adversarial": False}``
    (numbers and booleans parsed, anything else kept as text); ``option`` names the flag in errors."""
    out: dict = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise KgprobeError(f"{option} wants KEY=VALUE, got {item!r}")
        raw = raw.strip()
        value: object = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for number in (int, float):
                try:
                    value = number(raw)
                    break
                except ValueError:
                    pass
        out[key.strip()] = value
    return out


class TrainOptions(BaseModel):
    """How the trainer optimises (BLP's defaults where BLP has one)."""

    model_config = ConfigDict(extra="forbid")

    #: fine-tuning knobs: no option of their own on the command line (``--set KEY=VALUE``)
    ADVANCED: ClassVar[tuple[str, ...]] = ("weight_decay", "grad_accumulation", "max_grad_norm", "regularization",
                                           "normalize_entities", "amp", "min_delta", "metric", "drop_last",
                                           "restore_best", "dropout", "cpu_bf16", "pre_batch_weight")

    epochs: int = Field(default=40, ge=1, description="Training epochs.")
    batch_size: int = Field(default=64, ge=1, description="Positive triples per batch.")
    lr: float = Field(default=2e-5, gt=0, description="Peak learning rate (AdamW).")
    warmup: float = Field(default=0.2, ge=0, lt=1,
                          description="Warm-up fraction of the steps (then linear decay to zero).")
    num_negatives: int = Field(default=64, ge=1, description="Negatives per positive.")
    patience: int | None = Field(default=None, ge=1,
                                 description="Stop after this many validations without a gain.")
    eval_every: int = Field(default=1, ge=1, description="Validate every N epochs (and after the last).")
    eval_batch_size: int = Field(default=256, ge=1,
                                 description="Entities encoded, and queries ranked, per batch when evaluating.")
    checkpoint_minutes: float | None = Field(
        default=10.0, ge=0,
        description="Also write OUT/checkpoint.pt inside an epoch this often (a resumed run goes on from there). "
                    "SIGTERM or Ctrl-C writes it at the next step and exits with 143 / 130.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    grad_accumulation: int = Field(default=1, ge=1, description="Batches per optimiser step.")
    max_grad_norm: float | None = Field(default=None, gt=0, description="Clip the gradient norm to this.")
    regularization: float = Field(default=0.0, ge=0,
                                  description="Weight of an L2 term on the positives' embeddings (BLP's option).")
    normalize_entities: bool | None = Field(
        default=None, description="L2-normalise entity vectors before scoring (none: the scorer's default, "
                                  "true for TransE as in BLP).")
    amp: bool = Field(default=True, description="Mixed precision on CUDA (bf16, else fp16).")
    cpu_bf16: bool = Field(
        default=False, description="With amp: bf16 autocast on a CPU with native bf16 (AVX512-BF16 or AMX) too, "
                                   "about 1.8x faster steps there; off by default since it changes CPU runs' numbers.")
    dropout: bool = Field(default=True,
                          description="Dropout in the encoder while training (false: as BLP's original loop, "
                                      "whose encoder never leaves eval mode).")
    min_delta: float = Field(default=0.0, ge=0, description="Smallest validation gain that counts for patience.")
    metric: str = Field(default="both.realistic.mrr", description="Validation metric that picks the best epoch.")
    drop_last: bool = Field(default=False, description="Leave out each epoch's last, smaller batch.")
    restore_best: bool = Field(default=True,
                               description="End with the best validation epoch's weights (false: the last epoch's).")
    pre_batch: int = Field(
        default=0, ge=0,
        description="SimKGC's pre-batch negatives: the (detached) vectors of the entities of the last N batches "
                    "join every row's negatives, as heads and as tails; known training triples and the row's own "
                    "answer are masked (0: none; SimKGC uses 2). One process only.")
    pre_batch_weight: float = Field(
        default=PRE_BATCH_WEIGHT, gt=0, le=1,
        description="Weight of each pre-batch negative in InfoNCE's softmax (log w added to its logit): "
                    "detached negatives that outnumber a batch's own take its repulsion and the encoder "
                    "collapses at 1 (docs/linkpred.md). infonce loss only.")


class TrainConfig(TrainOptions):
    """Everything :class:`~kgprobe.linkpred.trainer.Trainer` runs with: the training options and
    the seed. A bad value raises :class:`KgprobeError` (``warmup: Input should be less than 1 ...``)."""

    #: settings that may change between a run and its resumption without changing a finished epoch
    NOT_RESUMED: ClassVar[tuple[str, ...]] = ("patience", "min_delta", "eval_batch_size", "restore_best",
                                              "checkpoint_minutes")

    #: settings added after checkpoints were first written: left out of the resume key at their
    #: default, so that those checkpoints still resume
    ADDED_LATER: ClassVar[tuple[str, ...]] = ("dropout", "cpu_bf16", "pre_batch", "pre_batch_weight")

    seed: int = Field(default=0, description=_SEED)

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise KgprobeError(one_line(err)) from None

    def resume_key(self) -> dict:
        """The settings a resumed run must share with the run that wrote the checkpoint."""
        fields = type(self).model_fields
        key = {name: getattr(self, name) for name in fields if name not in self.NOT_RESUMED
               and not (name in self.ADDED_LATER and getattr(self, name) == fields[name].default)}
        # the weight of pre-batch negatives counts only with them, and then always: a pre-batch
        # checkpoint from before the weight (trained at 1) refuses to resume under the default
        key.pop("pre_batch_weight", None)
        if self.pre_batch:
            key["pre_batch_weight"] = self.pre_batch_weight
        return key

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes``, validated."""
        return TrainConfig(**{**self.model_dump(), **changes})


class ComponentOptions(BaseModel):
    """The model's parts by registry name, each with its options."""

    model_config = ConfigDict(extra="forbid")

    encoder: str = Field(default="transformer", description="Entity encoder: transformer, bow or embedding.")
    model: str = Field(default="minilm-l6", description="Transformer: registry name, local directory or hub id.")
    text: Literal["description", "label", "both"] = Field(default="description",
                                                          description="Entity text the encoder reads.")
    pooling: Literal["cls", "mean"] = Field(
        default="cls", description="Transformer: the [CLS] vector or the mean of the token vectors.")
    dim: int = Field(default=128, ge=1, description="Entity embedding size.")
    max_length: int = Field(default=32, ge=2, description="Tokens (words for bow) per text.")
    scorer: str = Field(
        default="transe", description="transe, distmult, complex, simple, rotate, or query-encoder (SimKGC's "
                                      "bi-encoder: the query encoded from its head and relation texts).")
    scorer_options: dict[str, Any] = Field(
        default_factory=dict, description="A scorer parameter, repeatable: p=2 (transe, rotate); fast_l2=true "
                                          "(transe); clamp=20 (simple).")
    loss: str = Field(default="margin", description="margin, softplus, adversarial or infonce.")
    loss_options: dict[str, Any] = Field(
        default_factory=dict, description="A loss parameter, repeatable: margin=1 (margin); gamma=9, alpha=1 "
                                          "(adversarial); tau=1, margin=0, learn_tau=false, max_inverse_tau=100 "
                                          "(infonce).")
    sampler: str = Field(default="in-batch", description="Negatives: in-batch, uniform, bernoulli, lemon, knn-hard, "
                                                         "lemon-replaced (near the replaced entity), lm-proposed (the "
                                                         "causal LM's wrong answers).")
    sampler_options: dict[str, Any] = Field(
        default_factory=dict, description="A sampler parameter, repeatable: self_negatives=1, "
                                          "self_relations=asymmetric, replacement=false (in-batch); n_clusters=15, "
                                          "n_nearest=3 (lemon); filtered=true.")


class LinkPredOptions(TrainOptions, ComponentOptions):
    """The model and training options of a job (BLP's defaults), shared with the pipeline step."""

    resume: bool = Field(default=True, description="Continue from OUT/checkpoint.pt if there is one.")
    max_train_triples: int | None = Field(default=None, ge=1,
                                          description="Train on a random subset of this many triples (quick runs).")

    def train_config(self, seed: int) -> TrainConfig:
        """The trainer's share of these options."""
        return TrainConfig(seed=seed, **self.model_dump(include=set(TrainOptions.model_fields)))


class LinkPredConfig(LinkPredOptions):
    """Everything a training job needs: the options plus where to read, write and run."""

    data: Path = Field(description="Inductive split directory (kgprobe data build NAME --inductive --out DIR).")
    out: Path = Field(description="Run directory: checkpoint.pt, best.pt, metrics.jsonl, test_metrics.json.")
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N.")
    seed: int = Field(default=0, description=_SEED)
