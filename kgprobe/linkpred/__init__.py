"""Link prediction: scoring functions, losses, a filter index and filtered rank-based evaluation.

* :mod:`~kgprobe.linkpred.scorers` — TransE, DistMult, ComplEx, SimplE, RotatE (:func:`get_scorer`).
* :mod:`~kgprobe.linkpred.losses` — margin ranking, softplus, self-adversarial (:func:`get_loss`).
* :mod:`~kgprobe.linkpred.filters` — :class:`FilterIndex` of known triples (CSR, tensor ops).
* :mod:`~kgprobe.linkpred.evaluator` — :func:`evaluate`, :func:`evaluate_model`,
  :class:`RankBasedEvaluator` (chunked, filtered, optimistic / realistic / pessimistic ranks).
* :mod:`~kgprobe.linkpred.encoders` — transformer, bag-of-words and table encoders (:func:`get_encoder`;
  :func:`build_encoder` from a run's options).
* :mod:`~kgprobe.linkpred.samplers` — in-batch, uniform, bernoulli, lemon, knn-hard, lemon-replaced, lm-proposed, given
  negatives (:func:`get_sampler`; :func:`build_sampler` from an inductive split).
* :mod:`~kgprobe.linkpred.config` — the one configuration: :class:`TrainConfig` (the trainer's),
  ``LinkPredOptions`` / ``LinkPredConfig`` (a training run's, behind the command and the pipeline step).
* :mod:`~kgprobe.linkpred.trainer` — :class:`Trainer` / :func:`train` with checkpoints and resume.
* :mod:`~kgprobe.linkpred.run` — a training run end to end, evaluation and encoding of run directories.
* :mod:`~kgprobe.linkpred.predict` — :class:`Predictor`: a trained run's answers to ``(h, r, ?)`` / ``(?, r, t)``.

The names below are imported on first use (``from kgprobe.linkpred import get_scorer`` works as
ever): reading the configuration, as ``kgprobe linkpred train --help`` does, then needs
neither torch nor the models.
"""
from __future__ import annotations

import importlib
from typing import Any

#: every name this package offers, and the module it lives in
_EXPORTS = {
    "TrainConfig": "config",
    "ENCODERS": "encoders", "EntityEncoder": "encoders", "build_encoder": "encoders", "get_encoder": "encoders",
    "RankBasedEvaluator": "evaluator", "Ranks": "evaluator", "SideRanks": "evaluator", "compute_ranks": "evaluator",
    "evaluate": "evaluator", "evaluate_model": "evaluator", "rank_metrics": "evaluator",
    "FilterIndex": "filters",
    "Predictor": "predict",
    "LOSSES": "losses", "Loss": "losses", "get_loss": "losses", "loss_names": "losses",
    "SAMPLERS": "samplers", "NegativeSampler": "samplers", "build_sampler": "samplers", "get_sampler": "samplers",
    "SCORERS": "scorers", "Scorer": "scorers", "get_scorer": "scorers", "scorer_names": "scorers",
    "Trainer": "trainer", "TrainResult": "trainer", "train": "trainer",
}
_MODULES = ("config", "data", "encoders", "evaluator", "filters", "losses", "predict", "run", "samplers", "scorers",
            "trainer")

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_MODULES})
