"""Link prediction: scoring functions, losses, a filter index and filtered rank-based evaluation.

* :mod:`~kgprobe.linkpred.scorers` — TransE, DistMult, ComplEx, SimplE, RotatE (:func:`get_scorer`).
* :mod:`~kgprobe.linkpred.losses` — margin ranking, softplus, self-adversarial (:func:`get_loss`).
* :mod:`~kgprobe.linkpred.filters` — :class:`FilterIndex` of known triples (CSR, tensor ops).
* :mod:`~kgprobe.linkpred.evaluator` — :func:`evaluate`, :func:`evaluate_model`,
  :class:`RankBasedEvaluator` (chunked, filtered, optimistic / realistic / pessimistic ranks).
* :mod:`~kgprobe.linkpred.encoders` — transformer, bag-of-words and table encoders (:func:`get_encoder`).
* :mod:`~kgprobe.linkpred.samplers` — in-batch, uniform, bernoulli, lemon, knn-hard, given
  negatives (:func:`get_sampler`).
* :mod:`~kgprobe.linkpred.trainer` — :class:`Trainer` / :func:`train` with checkpoints and resume.
"""
from kgprobe.linkpred.encoders import ENCODERS, EntityEncoder, get_encoder
from kgprobe.linkpred.evaluator import (
    RankBasedEvaluator,
    Ranks,
    SideRanks,
    compute_ranks,
    evaluate,
    evaluate_model,
    rank_metrics,
)
from kgprobe.linkpred.filters import FilterIndex
from kgprobe.linkpred.losses import LOSSES, Loss, get_loss, loss_names
from kgprobe.linkpred.samplers import SAMPLERS, NegativeSampler, get_sampler
from kgprobe.linkpred.scorers import SCORERS, Scorer, get_scorer, scorer_names
from kgprobe.linkpred.trainer import TrainConfig, Trainer, TrainResult, train

__all__ = [
    "ENCODERS", "EntityEncoder", "NegativeSampler", "SAMPLERS", "TrainConfig", "TrainResult", "Trainer",
    "get_encoder", "get_sampler", "train",
    "FilterIndex", "LOSSES", "Loss", "RankBasedEvaluator", "Ranks", "SCORERS", "Scorer", "SideRanks", "compute_ranks",
    "evaluate", "evaluate_model", "get_loss", "get_scorer", "loss_names", "rank_metrics", "scorer_names",
]
