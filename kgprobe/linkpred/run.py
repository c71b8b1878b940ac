"""Run a link-prediction job end to end: the one code path behind ``kgprobe linkpred`` and the
``linkpred_train`` pipeline step.

* :func:`load_split_data` reads an inductive split directory as ``kgprobe data build NAME
  --inductive --out DIR`` writes it (``DIR`` is the whole graph, ``DIR/{train,valid,test}`` the
  parts, ``DIR/{train,valid,test}_entities.txt`` the held-out entity sets) onto one entity table.
* :func:`run_training` takes a :class:`~kgprobe.linkpred.config.LinkPredConfig` (the one
  configuration: defaults, bounds and help of every setting), has each component's class build
  it from the config and the split (:func:`~kgprobe.linkpred.encoders.build_encoder`,
  :func:`~kgprobe.linkpred.scorers.get_scorer`, :func:`~kgprobe.linkpred.losses.get_loss`,
  :func:`~kgprobe.linkpred.samplers.build_sampler`), trains with
  :class:`~kgprobe.linkpred.trainer.Trainer` into ``OUT`` (checkpoints, ``metrics.jsonl``,
  ``best.pt``; re-running resumes), then evaluates the best model on the test triples with BLP's
  candidate sets (validation: train + valid entities; test: every entity; known triples of all
  three parts filtered) and writes ``OUT/test_metrics.json``.
* :func:`load_trained` rebuilds a trained model from ``OUT``; :func:`evaluate_run` and
  :func:`encode_texts` (unseen entities from their text) use it.

``OUT/linkpred.json`` records the config plus every entity id and text, so a run directory can
rebuild its encoder without the data it was trained on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from kgprobe.atomic import atomic_path, write_json
from kgprobe.errors import KgprobeError
from kgprobe.kg.texts import read_texts_tsv
from kgprobe.linkpred.config import LinkPredConfig, LinkPredOptions, parse_key_values
from kgprobe.linkpred.data import PARTS, SplitData
from kgprobe.models.memory import OomHalving, warn_on_halve
from kgprobe.outdir import check_output_dir, open_output_dir, write_marker
from kgprobe.seeding import seed_everything

RUN_FILE = "linkpred.json"
TEST_METRICS_FILE = "test_metrics.json"
COMMAND = "linkpred train"


def check_names(*, encoder: str | None = None, scorer: str | None = None, loss: str | None = None,
                sampler: str | None = None) -> None:
    """Raise a :class:`KgprobeError` listing the known names for any unknown component name."""
    from kgprobe.linkpred.encoders import ENCODER_REGISTRY
    from kgprobe.linkpred.losses import LOSS_REGISTRY
    from kgprobe.linkpred.samplers import SAMPLER_REGISTRY
    from kgprobe.linkpred.scorers import SCORER_REGISTRY

    for registry, name in ((ENCODER_REGISTRY, encoder), (SCORER_REGISTRY, scorer), (LOSS_REGISTRY, loss),
                           (SAMPLER_REGISTRY, sampler)):
        if name is not None:
            registry.lookup(name)


def check_component_option_values(component: str, name: str, options: Mapping[str, Any]) -> None:
    """Raise a :class:`KgprobeError` for an option of ``component`` (``scorer``, ``loss`` or
    ``sampler``) ``name`` that is unknown or has a bad value, before any data loads: a scorer or
    loss is built (they are small), a sampler's options checked by
    :func:`~kgprobe.linkpred.samplers.check_sampler_options`."""
    from kgprobe.linkpred.losses import get_loss
    from kgprobe.linkpred.samplers import check_sampler_options
    from kgprobe.linkpred.scorers import get_scorer

    if component == "sampler":
        check_sampler_options(name, options)
        return
    try:
        {"scorer": get_scorer, "loss": get_loss}[component](name, **options)
    except (TypeError, ValueError) as err:  # a value of the wrong type, e.g. margin=x
        raise KgprobeError(f"{name}: bad option value ({err})") from None


def check_component_options(cfg: LinkPredOptions) -> None:
    """:func:`check_component_option_values` for the scorer, the loss and the sampler of ``cfg``."""
    for component in ("scorer", "loss", "sampler"):
        check_component_option_values(component, getattr(cfg, component), getattr(cfg, f"{component}_options"))


def check_combinations(cfg: LinkPredOptions, *, processes: int = 1) -> None:
    """Raise a :class:`KgprobeError` for options that do not go together (the trainer says the same,
    but only once the data is loaded): pre-batch negatives or the query encoder with several
    processes, pre-batch negatives with the query encoder, and a pre-batch weight with a loss
    other than infonce."""
    from kgprobe.linkpred.config import PRE_BATCH_WEIGHT_NEEDS_INFONCE
    from kgprobe.linkpred.losses import LOSS_REGISTRY, InfoNCELoss
    from kgprobe.linkpred.scorers import SCORER_REGISTRY

    queries = bool(getattr(SCORER_REGISTRY.lookup(cfg.scorer), "encodes_queries", False))
    if cfg.pre_batch and processes > 1:
        raise KgprobeError("pre_batch negatives work in one process only: drop pre_batch or run one process")
    if queries and processes > 1:
        raise KgprobeError("the query-encoder scorer works in one process only")
    if queries and cfg.pre_batch:
        raise KgprobeError("the query-encoder scorer does not take pre_batch negatives (yet): drop pre_batch")
    if cfg.pre_batch and cfg.pre_batch_weight != 1 and not issubclass(LOSS_REGISTRY.lookup(cfg.loss), InfoNCELoss):
        raise KgprobeError(PRE_BATCH_WEIGHT_NEEDS_INFONCE)


def _read_ids(path: Path, graph: Any) -> torch.Tensor:
    index = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                index.append(graph.entity_index(line.strip()))
            except KgprobeError as err:
                raise KgprobeError(str(err), path=path, line=n) from None
    return torch.tensor(sorted(index), dtype=torch.long)


def _mapped(part: Any, graph: Any, where: Path) -> torch.Tensor:
    """The part's triples as indices into ``graph``'s tables."""
    try:
        e_map = torch.tensor([graph.entity_index(e) for e in part.entity_ids], dtype=torch.long)
        r_map = torch.tensor([graph.relation_index(r) for r in part.relation_ids], dtype=torch.long)
    except KgprobeError as err:
        raise KgprobeError(f"not part of the graph in the split directory: {err}", path=where) from None
    t = part.triples
    if not len(t):
        return torch.empty((0, 3), dtype=torch.long)
    return torch.stack([e_map[t[:, 0]], r_map[t[:, 1]], e_map[t[:, 2]]], dim=1)


def load_split_data(path: str | Path) -> SplitData:
    """Read an inductive split directory (see the module docstring)."""
    from kgprobe.kg.formats import load_kg

    path = Path(path)
    if not path.is_dir():
        raise KgprobeError("no such split directory (make one with: kgprobe data build NAME --inductive "
                           "--out DIR)", path=path)
    missing = [p for p in PARTS if not (path / p).is_dir() or not (path / f"{p}_entities.txt").is_file()]
    if missing:
        raise KgprobeError(f"not an inductive split directory: no {missing[0]}/ or {missing[0]}_entities.txt "
                           "(make one with: kgprobe data build NAME --inductive --out DIR)", path=path)
    # an empty part is this function's own one-line error below, not a warning as well
    parts = {p: load_kg(path / p, format="dir", warn_empty=False) for p in PARTS}
    if (path / "entities.tsv").is_file():
        graph = load_kg(path, format="dir")
    else:  # no whole graph next to the parts: their union
        graph = parts["train"].merge(parts["valid"]).merge(parts["test"])
    triples = {p: _mapped(parts[p], graph, path / p) for p in PARTS}
    entities = {p: _read_ids(path / f"{p}_entities.txt", graph) for p in PARTS}
    for part, words in (("train", "training"), ("valid", "validation"), ("test", "test")):
        if not len(triples[part]):  # found now, not after an epoch of training
            raise KgprobeError(f"the split has no {words} triples", path=path / part)
    return SplitData(graph=graph, triples=triples, entities=entities)


def entity_texts_of(graph: Any, text: str) -> list[str]:
    from kgprobe.kg.texts import entity_texts

    return entity_texts(graph, text)


# ------------------------------------------------------------------ model
def _echo_default(message: str) -> None:
    import click

    click.echo(message, err=True)


def _training_triples(data: SplitData, cfg: LinkPredConfig) -> torch.Tensor:
    """The training part, or a seeded random subset of ``max_train_triples`` of it (in split order)."""
    train_triples = data.triples["train"]
    if cfg.max_train_triples is not None and cfg.max_train_triples < len(train_triples):
        pick = torch.randperm(len(train_triples), generator=torch.Generator().manual_seed(cfg.seed))
        train_triples = train_triples[torch.sort(pick[:cfg.max_train_triples]).values]
    return train_triples


def _components(options: dict, data: SplitData, texts: Sequence[str], *, progress: bool) -> tuple:
    """Encoder, scorer, loss and sampler of a run, each built by its class from the run's options."""
    from kgprobe.linkpred.encoders import build_encoder
    from kgprobe.linkpred.losses import get_loss
    from kgprobe.linkpred.samplers import build_sampler
    from kgprobe.linkpred.scorers import get_scorer

    encoder = build_encoder(options["encoder"], texts, options, train_entities=data.entities["train"],
                            seed=options["seed"])
    scorer = _with_texts(get_scorer(options["scorer"], **options["scorer_options"]), texts, data.graph.relation_ids)
    loss = get_loss(options["loss"], **options["loss_options"])
    sampler = build_sampler(options["sampler"], data, options["sampler_options"], progress=progress)
    return encoder, scorer, loss, sampler


def _with_texts(scorer: Any, texts: Sequence[str], relation_ids: Sequence[str]) -> Any:
    """A ``query-encoder`` scorer (queries read from text) with the entity texts and relation names."""
    if getattr(scorer, "encodes_queries", False):
        scorer.set_texts(texts, relation_ids)
    return scorer


def preflight(cfg: LinkPredConfig, *, overwrite: bool = False) -> tuple[torch.device, Any]:
    """Everything :func:`run_training` checks before it loads data or writes a file: the component
    names and options, the encoder's model, the device and the output folder. Returns the device and
    what writing to ``OUT`` means (:func:`kgprobe.outdir.check_output_dir`)."""
    from kgprobe.linkpred.encoders import ENCODER_REGISTRY
    from kgprobe.models.device import resolve_device

    check_names(encoder=cfg.encoder, scorer=cfg.scorer, loss=cfg.loss, sampler=cfg.sampler)
    device = resolve_device(cfg.device)
    check_component_options(cfg)
    check_combinations(cfg)
    ENCODER_REGISTRY.lookup(cfg.encoder).preflight(cfg.model_dump())
    return device, check_output_dir(cfg.out, command=COMMAND, overwrite=overwrite)


def run_training(config: LinkPredConfig | dict, *, progress: bool = True,
                 echo: Callable[[str], None] | None = None, overwrite: bool = False) -> dict:
    """Train, evaluate the best checkpoint on test, write ``OUT/test_metrics.json``; return those metrics.

    ``OUT`` may be new, empty or a run of this command (resumed); anything else is refused unless
    ``overwrite`` (see :mod:`kgprobe.outdir`), before any data or model is loaded. So are unknown
    component names and bad component options (:func:`preflight`).

    Started by ``torchrun`` with several processes (``WORLD_SIZE`` > 1), each process is one rank
    of a data-parallel run (:mod:`kgprobe.linkpred.distributed`; ``batch_size`` per process): every
    rank checks and loads the same, rank 0 alone writes ``OUT`` and echoes, and every rank returns
    the test metrics.
    """
    from kgprobe.linkpred.distributed import join
    from kgprobe.models.device import resolve_device

    cfg = config if isinstance(config, LinkPredConfig) else LinkPredConfig(**config)
    check_names(encoder=cfg.encoder, scorer=cfg.scorer, loss=cfg.loss, sampler=cfg.sampler)
    world, device = join(resolve_device(cfg.device))
    try:
        check_combinations(cfg, processes=world.size)  # before any data loads, by every rank alike
        _, target = preflight(cfg, overwrite=overwrite)
        world.barrier()  # every rank has looked at OUT before rank 0 changes it
        if not world.is_main:
            echo, progress = (lambda message: None), False
        summary = _train_and_test(cfg, target, world, device, progress=progress, echo=echo or _echo_default)
        # no rank tears its groups down while a peer still has gloo work in flight (a rank that
        # destroyed them first has been seen to abort the others at exit); only on success, as a
        # dead peer would hang this barrier
        world.barrier()
        return summary
    finally:
        world.close()


def _train_and_test(cfg: LinkPredConfig, target: Any, world: Any, device: torch.device, *, progress: bool,
                    echo: Callable[[str], None]) -> dict:
    """:func:`run_training` once the checks passed: load, build, train, test; rank 0 writes."""
    from kgprobe.linkpred.trainer import Trainer

    data = load_split_data(cfg.data)
    graph = data.graph
    texts = entity_texts_of(graph, cfg.text)
    train_triples = _training_triples(data, cfg)
    record = {"config": json.loads(cfg.model_dump_json()), "entity_ids": list(graph.entity_ids),
              "relation_ids": list(graph.relation_ids), "texts": texts,
              "train_entities": data.entities["train"].tolist(), "normalize_entities": None}

    seed_everything(cfg.seed)
    # the sampler sees the whole training part, also under max_train_triples: known positives and
    # relation statistics (bernoulli, which relations are symmetric) are facts of the split, not of the subset
    encoder, scorer, loss, sampler = _components(cfg.model_dump(), data, texts, progress=progress)
    out = Path(cfg.out)
    if world.is_main:
        out = open_output_dir(target)
        write_json(out / RUN_FILE, record, indent=None)
    trainer = Trainer(encoder=encoder, scorer=scorer, loss=loss, sampler=sampler, train_triples=train_triples,
                      num_relations=graph.num_relations, valid_triples=data.triples["valid"],
                      valid_candidates=torch.cat([data.entities["train"], data.entities["valid"]]),
                      filter_triples=torch.cat([data.triples["train"], data.triples["valid"]]),
                      config=cfg.train_config(cfg.seed), out_dir=out, device=device, progress=progress,
                      world=world)
    processes = f" x {world.size} processes (batch {cfg.batch_size} each)" if world.size > 1 else ""
    echo(f"training {cfg.encoder} + {cfg.scorer} ({cfg.sampler} negatives) on {len(train_triples)} triples, "
         f"{graph.num_entities} entities, {cfg.epochs} epochs on {device}{processes}")
    result = trainer.fit(resume=cfg.resume)
    if result.resumed_from is not None:
        inside = trainer.resumed_batches
        echo(f"resumed after epoch {result.resumed_from}"
             + (f" and {inside} batches of epoch {result.resumed_from + 1}" if inside else ""))
    record["normalize_entities"] = trainer.model.normalize_entities
    if world.is_main:
        write_json(out / RUN_FILE, record, indent=None)
    metrics = trainer.evaluate(data.triples["test"], candidates=None, filter_triples=data.all_triples)
    summary = {"split": "test", "best_epoch": result.best_epoch, "best_valid_metric": result.best_metric,
               "epochs_run": result.epochs_run, "stopped_early": result.stopped_early, **metrics}
    if world.is_main:
        write_json(out / TEST_METRICS_FILE, summary, indent=2)
    mrr = metrics.get("both.realistic.mrr")
    echo(f"test MRR {mrr:.4f} (best epoch {result.best_epoch}); wrote {out / TEST_METRICS_FILE}"
         if mrr is not None else f"wrote {out / TEST_METRICS_FILE}")
    return summary


@dataclass
class TrainedRun:
    """A model rebuilt from a run directory, and the record it was trained with."""

    model: Any
    record: dict

    @property
    def config(self) -> dict:
        return self.record["config"]


def load_trained(run_dir: str | Path, *, device: str = "auto") -> TrainedRun:
    """Rebuild the best model of a run directory written by :func:`run_training`."""
    from kgprobe.linkpred.encoders import build_encoder
    from kgprobe.linkpred.scorers import get_scorer
    from kgprobe.linkpred.trainer import BEST_FILE, CHECKPOINT_FILE, LinkPredictionModel
    from kgprobe.models.device import resolve_device

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KgprobeError("no such run directory (make one with: kgprobe linkpred train)", path=run_dir)
    if not (run_dir / RUN_FILE).is_file():
        raise KgprobeError(f"not a linkpred run directory: no {RUN_FILE}", path=run_dir)
    try:
        record = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
        cfg = record["config"]
    except (ValueError, KeyError) as err:
        raise KgprobeError(f"unreadable run record: {err}", path=run_dir / RUN_FILE) from None
    weights = run_dir / BEST_FILE if (run_dir / BEST_FILE).is_file() else run_dir / CHECKPOINT_FILE
    if not weights.is_file():
        raise KgprobeError("no trained model yet (no best.pt or checkpoint.pt)", path=run_dir)
    try:
        payload = torch.load(weights, map_location="cpu", weights_only=True)
        state = payload["model"]
    except Exception as err:
        raise KgprobeError(f"unreadable checkpoint: {str(err).splitlines()[0] if str(err) else err}",
                           path=weights) from None
    encoder = build_encoder(cfg["encoder"], record["texts"], cfg,
                            train_entities=torch.tensor(record["train_entities"], dtype=torch.long), seed=cfg["seed"])
    scorer = _with_texts(get_scorer(cfg["scorer"], **cfg.get("scorer_options", {})), record["texts"],
                         record["relation_ids"])
    # None in the record of a run that has not finished: the config's setting, else the scorer's default
    normalize = record.get("normalize_entities")
    model = LinkPredictionModel(encoder, scorer, len(record["relation_ids"]),
                                normalize_entities=cfg.get("normalize_entities") if normalize is None else normalize)
    model.load_state_dict(state)
    model.to(resolve_device(device)).eval()
    _say_which_epoch(run_dir, weights, payload.get("epoch"), cfg.get("epochs"))
    return TrainedRun(model=model, record=record)


def _say_which_epoch(run_dir: Path, weights: Path, epoch: int | None, planned: int | None) -> None:
    """Warn when the model comes from a run that has not finished: which epoch, after how many."""
    from kgprobe.errors import warn
    from kgprobe.linkpred.trainer import METRICS_FILE

    if (run_dir / TEST_METRICS_FILE).is_file():
        return
    try:  # one line per finished epoch
        done = sum(1 for line in (run_dir / METRICS_FILE).open(encoding="utf-8") if line.strip())
    except OSError:
        done = 0
    which = f"from epoch {epoch}" if epoch is not None and weights.name != "checkpoint.pt" else "of its last checkpoint"
    warn(f"training has not finished ({done} of {planned or '?'} epochs): using the model {which} "
         f"({weights.name}); run `kgprobe linkpred train` with the same --out to finish it", path=run_dir)


def load_for_evaluation(run_dir: str | Path, data: str | Path, *, device: str = "auto",
                        batch_size: int = 256) -> tuple[TrainedRun, SplitData, torch.Tensor]:
    """A trained run, the split it was trained on (checked) and every entity's vector, encoded once."""
    run = load_trained(run_dir, device=device)
    splits = load_split_data(data)
    if list(splits.graph.entity_ids) != run.record["entity_ids"]:
        raise KgprobeError("the split's entities are not the ones the run was trained on", path=data)
    with torch.no_grad():
        entities = run.model.all_entity_vectors(batch_size)
    return run, splits, entities


def evaluate_run(run_dir: str | Path, data: str | Path, *, split: str = "test", device: str = "auto",
                 batch_size: int = 256) -> dict:
    """Filtered metrics of a trained run on ``split`` of the split directory ``data`` (BLP candidates)."""
    from kgprobe.linkpred.evaluator import evaluate_model, evaluate_query_model

    if split not in ("valid", "test"):
        raise KgprobeError(f"unknown split {split!r}; choose valid or test")
    run, splits, entities = load_for_evaluation(run_dir, data, device=device, batch_size=batch_size)
    if split == "valid":
        candidates = torch.cat([splits.entities["train"], splits.entities["valid"]])
        known = torch.cat([splits.triples["train"], splits.triples["valid"]])
    else:
        candidates, known = None, splits.all_triples
    model = run.model
    device_ = next(model.parameters()).device
    memory = OomHalving(device=device_, what="query block", on_halve=warn_on_halve("query block", device_))
    where = dict(filter_triples=known.to(device_), candidates=None if candidates is None else candidates.to(device_),
                 memory=memory)
    if model.encodes_queries:  # SimKGC's bi-encoder: the queries are encoded from text
        metrics = evaluate_query_model(model, entities, splits.triples[split].to(device_),
                                       encode_batch_size=batch_size, **where)
    else:
        metrics = evaluate_model(entities, model.relations.weight.detach().float(), model.scorer,
                                 splits.triples[split].to(device_), **where)
    record = {"split": split, **{k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}}
    if memory.notes:  # query blocks halved after running out of memory: said in the record
        record["memory_halvings"] = memory.notes
    return record


def _vectors_for(model: Any, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    encoder = model.encoder.for_texts(list(texts))
    vectors = encoder.encode_all(batch_size).float()
    return torch.nn.functional.normalize(vectors, dim=-1) if model.normalize_entities else vectors


def encode_texts(run_dir: str | Path, texts: Sequence[str], *, device: str = "auto",
                 batch_size: int = 256) -> np.ndarray:
    """``(len(texts), dim)`` float32 embeddings of (unseen) entities from their text."""
    run = load_trained(run_dir, device=device)
    return _vectors_for(run.model, texts, batch_size).cpu().numpy()


def encode_file(run_dir: str | Path, tsv: str | Path, out: str | Path, *, device: str = "auto",
                batch_size: int = 256, neighbors: str | Path | None = None, k: int = 5,
                overwrite: bool = False) -> dict:
    """Encode ``tsv`` (``id<TAB>text``) into ``out/embeddings.npy`` + ``out/ids.txt`` (atomically).

    With ``neighbors`` (a KG), also the ``k`` nearest of its entities to every new one (cosine
    similarity, the KG's entities embedded by the same encoder): ``{id: [(entity, score), ...]}``.
    """
    from kgprobe.index import VectorIndex

    if k <= 0:
        raise KgprobeError(f"k must be positive, got {k}")
    check_output_dir(out, command="linkpred encode", overwrite=overwrite)
    ids, texts = read_texts_tsv(tsv)
    run = load_trained(run_dir, device=device)
    vectors = _vectors_for(run.model, texts, batch_size).cpu().numpy().astype(np.float32)
    out = Path(out)
    with atomic_path(out, directory=True) as tmp:
        write_marker(tmp, "linkpred encode")
        np.save(tmp / "embeddings.npy", vectors)
        (tmp / "ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    result: dict = {"embeddings": str(out / "embeddings.npy"), "ids": str(out / "ids.txt"),
                    "shape": list(vectors.shape)}
    if neighbors is not None:
        from kgprobe.kg.formats import load_kg

        kg = load_kg(neighbors)
        known = _vectors_for(run.model, entity_texts_of(kg, run.config.get("text", "description")), batch_size)
        index = VectorIndex(known.shape[1], metric="cosine", backend="torch", device="cpu")
        index.add(known.cpu().numpy().astype(np.float32))
        scores, rows = index.search(vectors, min(k, kg.num_entities))
        result["neighbors"] = {i: [(kg.entity_ids[int(r)], round(float(s), 4)) for r, s in zip(row, srow) if r >= 0]
                               for i, row, srow in zip(ids, rows, scores)}
    return result


__all__ = ["PARTS", "LinkPredConfig", "LinkPredOptions", "SplitData", "TrainedRun", "check_combinations",
           "check_component_option_values",
           "check_component_options", "check_names", "encode_file", "encode_texts", "evaluate_run",
           "load_split_data", "load_trained", "parse_key_values", "preflight", "read_texts_tsv", "run_training"]
