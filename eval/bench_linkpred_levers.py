"""Issue #27's ablations of the WordNet link-prediction pipeline: SimKGC's levers, LM-based
negatives and dropout. Each part writes its own key of eval/results/linkpred.json.

The base is the ``linkpred_train`` step of ``--pipeline`` (default pipelines/linkpred_wordnet.yaml:
MiniLM-L6 over "name: gloss", mean pooling, TransE, InfoNCE tau 0.5, in-batch negatives + one
asymmetric self-negative, 8 epochs of batch 128; test MRR 0.342 on an H200). Every ARM is a name and
options that replace the base's (a dict option such as ``loss_options`` is replaced whole), trained
by ``kgprobe.linkpred.run.run_training`` for each of ``--seeds``:

* ``--part levers`` (SimKGC's levers, cumulative, each compared with ``base``): ``learn_tau``
  (infonce tau 0.05 to start, learnt), ``margin`` (+ additive margin 0.02), ``pre_batch`` (+
  pre-batch negatives of the last 2 batches, each at the default ``pre_batch_weight``, named in the
  arm's options so that a record from before the weight, trained at 1, is not read back as this
  arm's), ``query_encoder`` (the relation-aware bi-encoder,
  ``--scorer query-encoder``, with learn_tau and margin 0.02 and no pre-batch, which it refuses; it
  keeps the base's in-batch sampler and asymmetric self-negative: SimKGC uses self-negatives too).
  SimKGC's 0.05 and 0.02 are for cosine scores in [-1, 1]; the base's TransE-L1 distances between
  unit vectors span about ten times more, and its tau 0.5 was chosen for them (the pilots' best of
  0.25-2). So ``learn_tau_scaled``, ``margin_scaled`` and ``pre_batch_scaled`` are the same three
  levers at the base's scale: tau learnt from the base's, a margin of 0.02 x base tau / 0.05 (0.2:
  the same 0.4 in logits as SimKGC's), then pre-batch negatives of the last 2 batches.
* ``--part negatives``: the samplers ``uniform``, ``lemon`` (as published: 15 k-means clusters, the
  3 nearest to the kept entity), ``in_batch`` (the base's sampler and its options, the asymmetric
  self-negative included, with the arms' count), ``lemon_replaced`` and ``lm_proposed`` (``--max-queries``
  queries, LM ``--lm``), all with the base's model and loss (InfoNCE) and ``--num-negatives``
  negatives each; test MRR mean and sample sd per sampler and the difference to ``uniform``
  (paired by seed). For each trained run, the share of its own sampler's negatives inside the loss
  margin on a fixed batch of ``--stats-triples`` training triples
  (``kgprobe.linkpred.negative_stats.margin_stats``). InfoNCE has no hinge: a negative's weight in
  the gradient is its softmax weight, ``exp((s- - s+ + m) / tau)`` of the positive's, so the
  margin used is ``m + tau`` (m the additive margin, 0 in the base): the negatives inside it weigh
  at least 1/e of the positive, the others fade exponentially. ``share_above_positive`` (margin 0)
  is the share that outscores the positive.
* ``--part dropout``: ``base`` (encoder dropout on, the default) against ``no_dropout`` (off, as
  BLP's own loop): best validation MRR and test MRR.

Budget options make a CPU pilot possible (``--encoder bow --lr 1e-2 --epochs 1 --max-train-triples
2000``; ``--lr`` for an encoder other than the base's); with ``--batch-size`` the in-batch
negatives follow the batch (every other batch entity once plus the self-negatives). Every arm
and seed trains into ``--runs/ARM_seedS``: a finished run
(``test_metrics.json``) is read back, not retrained, a partial one resumes from its checkpoint,
and a run made with other settings is refused. A run that ``--out`` already holds (same split,
base and budget) whose directory is absent, as on a new machine, is read from ``--out``
(``"reused": "published"``; ``--no-published`` trains it instead); the margin statistics under the
uniform model need that model, so run a seed's arms in one sitting. ``--out`` keeps every other key of the file; a
part's arms are merged with those already there when the budget is the same. After each run the
file is rewritten (atomically), so a killed bench keeps what finished.

    python eval/bench_linkpred_levers.py --part levers --device cuda            # the full budget (GPU)
    python eval/bench_linkpred_levers.py --part negatives dropout --encoder bow --lr 1e-2 --epochs 2 \\
        --max-train-triples 20000 --seeds 0 1 2                                 # a CPU pilot
    python eval/bench_linkpred_levers.py --part negatives --arms uniform lemon_replaced --seeds 0
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kgprobe.atomic import write_json  # noqa: E402
from kgprobe.errors import KgprobeError  # noqa: E402
from kgprobe.linkpred import config as linkpred_config  # noqa: E402
from kgprobe.linkpred.config import LinkPredConfig, LinkPredOptions, TrainConfig, parse_key_values  # noqa: E402
from kgprobe.linkpred.run import run_training  # noqa: E402
from kgprobe.models.device import resolve_device  # noqa: E402
from kgprobe.stopping import Stopped  # noqa: E402
from machine import machine_info  # noqa: E402  (eval/machine.py, beside this script)

DEFAULT_PIPELINE = ROOT / "pipelines" / "linkpred_wordnet.yaml"
DEFAULT_OUT = ROOT / "eval" / "results" / "linkpred.json"
DEFAULT_RUNS = ROOT / "eval" / "results" / "levers_runs"
TEST_KEYS = ("both.realistic.mrr", "both.realistic.hits_at_1", "both.realistic.hits_at_10")
SIMKGC = {"tau": 0.05, "learn_tau": True}  # SimKGC's starting temperature, learnt
REFERENCE = {"levers": "base", "negatives": "uniform", "dropout": "base"}  # what each arm is compared with
ARM_NAMES = {"levers": ("base", "learn_tau", "margin", "pre_batch", "query_encoder", "learn_tau_scaled",
                        "margin_scaled", "pre_batch_scaled"),
             "negatives": ("uniform", "lemon", "lemon_replaced", "lm_proposed", "in_batch"),
             "dropout": ("base", "no_dropout")}
# settings that may differ between a run and its read-back (where, not what)
NOT_COMPARED = ("out", "data", "device", "resume", *TrainConfig.NOT_RESUMED)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ arms
def part_arms(part: str, base: dict, args) -> dict[str, dict]:
    """``{arm: overrides}`` of a part, in the order they run (``--arms`` filters and orders)."""
    if part == "levers":
        infonce = base.get("loss_options", {})
        arms = {"base": {},
                "learn_tau": {"loss_options": {**infonce, **SIMKGC}},
                "margin": {"loss_options": {**infonce, **SIMKGC, "margin": 0.02}},
                "pre_batch": {"loss_options": {**infonce, **SIMKGC, "margin": 0.02}, "pre_batch": 2,
                              "pre_batch_weight": linkpred_config.PRE_BATCH_WEIGHT},
                "query_encoder": {"scorer": "query-encoder", "loss_options": {**infonce, **SIMKGC, "margin": 0.02}}}
        # the same levers at the base's score scale (see the module's docstring)
        tau = float(infonce.get("tau", 1.0))
        scaled = {**infonce, "tau": tau, "learn_tau": True}
        margin = round(0.02 * tau / SIMKGC["tau"], 6)
        arms |= {"learn_tau_scaled": {"loss_options": scaled},
                 "margin_scaled": {"loss_options": {**scaled, "margin": margin}},
                 "pre_batch_scaled": {"loss_options": {**scaled, "margin": margin}, "pre_batch": 2,
                                      "pre_batch_weight": linkpred_config.PRE_BATCH_WEIGHT}}
    elif part == "negatives":
        lm = {"max_queries": args.max_queries, **({"lm": args.lm} if args.lm else {}),
              **({"cache_dir": args.lm_cache} if args.lm_cache else {})}
        samplers = {"uniform": ("uniform", {}), "lemon": ("lemon", {"n_clusters": 15, "n_nearest": 3}),
                    "lemon_replaced": ("lemon-replaced", {}), "lm_proposed": ("lm-proposed", lm)}
        arms = {name: {"sampler": sampler, "sampler_options": options, "num_negatives": args.num_negatives}
                for name, (sampler, options) in samplers.items()}
        if base.get("sampler", "in-batch") == "in-batch":  # the base's own sampler (self-negatives and all)
            arms["in_batch"] = {"sampler": "in-batch", "sampler_options": base.get("sampler_options", {}),
                                "num_negatives": args.num_negatives}
    else:
        arms = {"base": {}, "no_dropout": {"dropout": False}}
    chosen = [name for name in args.arms or () if name in arms]
    return {name: arms[name] for name in chosen} if chosen else arms


def base_options(args) -> tuple[dict, dict, Path]:
    """The base step's options with the budget applied, the budget, and the split directory."""
    pipeline = yaml.safe_load(Path(args.pipeline).read_text(encoding="utf-8"))
    step = next(s for s in pipeline["steps"] if s["type"] == "linkpred_train")
    base = {k: v for k, v in step.items() if k in LinkPredOptions.model_fields}
    budget = {"encoder": args.encoder, "epochs": args.epochs, "max_train_triples": args.max_train_triples,
              "batch_size": args.batch_size, "lr": args.lr,
              "scorer_options": parse_key_values(args.scorer_option, "--scorer-option") or None}
    budget = {k: v for k, v in budget.items() if v is not None}
    if "batch_size" in budget and base.get("sampler", "in-batch") == "in-batch":
        # in-batch: every other entity of the batch once, plus the self-negatives, as the base has it
        old = base.get("batch_size", LinkPredOptions.model_fields["batch_size"].default)
        k = base.get("num_negatives", LinkPredOptions.model_fields["num_negatives"].default)
        budget["num_negatives"] = max(1, k - (2 * old - 2) + (2 * budget["batch_size"] - 2))
    data = Path(args.data) if args.data else _build_split(pipeline, step, Path(args.runs))
    return {**base, **budget}, budget, data


def _build_split(pipeline: dict, step: dict, runs: Path) -> Path:
    """The pipeline's split, built once into ``runs/<its name>`` as its build_dataset step builds it."""
    from kgprobe.kg.build import build_and_save

    build = next(s for s in pipeline["steps"] if s["type"] == "build_dataset" and s.get("out") == step["data"])
    out = runs / Path(step["data"]).name
    if not (out / "build.json").is_file():
        log(f"building {build['dataset']} into {out} (once)")
        build_and_save(build["dataset"], out, inductive=bool(build.get("inductive")),
                       seed=build.get("seed", pipeline.get("seed", 0)), options=build.get("options"))
    return out


def arm_config(base: dict, overrides: dict, seed: int, data: Path, out: Path, device: str) -> LinkPredConfig:
    return LinkPredConfig(**{**base, **overrides}, data=data, out=out, seed=seed, device=device)


def compared(cfg: LinkPredConfig) -> dict:
    """The settings that decide a run's figures (the read-back check)."""
    return {k: v for k, v in json.loads(cfg.model_dump_json()).items() if k not in NOT_COMPARED}


# ------------------------------------------------------------------ one run
def bench_file(out: Path) -> Path:
    """What this script knows about a run (settings, machine, margin statistics), beside its directory
    (``run_training`` wants the run directory to itself)."""
    return out.with_name(out.name + ".json")


def train_or_read(cfg: LinkPredConfig, device: torch.device) -> dict:
    """A finished run's record read back, or the run trained (resumed from its checkpoint)."""
    out = Path(cfg.out)
    path, want = bench_file(out), compared(cfg)
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        differ = sorted(k for k in set(want) | set(saved["config"]) if want.get(k) != saved["config"].get(k))
        if differ:
            raise KgprobeError(f"{out} was trained with other settings ({', '.join(differ)}): "
                               "give another --runs, or remove it and its .json")
        if (out / "test_metrics.json").is_file():
            return {**saved, "reused": True}
    log(f"training {out.name}")
    started = time.perf_counter()
    # the settings first: a killed run keeps them, so that resuming it with others is refused above
    write_json(path, {"config": want, "machine": machine_info(device)})
    run_training(cfg, progress=False, echo=log)
    record = {"config": want, "machine": machine_info(device),
              "wall_seconds_last_call": round(time.perf_counter() - started, 1)}
    write_json(path, record)
    return {**record, "reused": False}


def run_record(name: str, seed: int, overrides: dict, budget: dict, cfg: LinkPredConfig, saved: dict) -> dict:
    """What the results say about one arm and seed."""
    out = Path(cfg.out)
    test = json.loads((out / "test_metrics.json").read_text(encoding="utf-8"))
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()]
    taus = [r["tau"] for r in history if "tau" in r]
    valid = test.get("best_valid_metric")
    record = {"arm": name, "seed": seed, "options": overrides, "budget": budget,
              "test": {k: round(float(test[k]), 5) for k in TEST_KEYS},
              "best_valid_mrr": None if valid is None else round(float(valid), 5),
              "best_epoch": test.get("best_epoch"), "epochs_run": test.get("epochs_run"),
              "train_seconds": round(sum(r["train_seconds"] for r in history), 1),
              "train_and_validation_seconds": round(sum(r["seconds"] for r in history), 1),
              "learnt_tau": round(float(taus[-1]), 5) if taus else None,
              "machine": saved["machine"], "reused": saved["reused"], "run_dir": str(out)}
    return record


# ------------------------------------------------------------------ negatives' hardness
class Hardness:
    """The share of a run's own negatives inside the loss margin on a fixed batch of training
    triples; the split and each arm's sampler are built once, when first needed."""

    def __init__(self, data: Path, count: int, device: str):
        self.data, self.count, self.device = data, count, device
        self.split = self.triples = None
        self.negatives: dict[str, object] = {}

    def _negatives(self, name: str, cfg: LinkPredConfig):
        from kgprobe.linkpred.run import load_split_data
        from kgprobe.linkpred.samplers import build_sampler

        if self.split is None:
            self.split = load_split_data(self.data)
            train = self.split.triples["train"]
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:self.count]
            self.triples = train[torch.sort(pick).values]
        if name not in self.negatives:  # the sampler as run_training builds it; drawn once for every seed
            sampler = build_sampler(cfg.sampler, self.split, cfg.sampler_options)
            gen = torch.Generator().manual_seed(0)
            self.negatives[name] = sampler.sample_negatives(self.triples, cfg.num_negatives, generator=gen)
        return self.negatives[name]

    def __call__(self, name: str, cfg: LinkPredConfig, learnt_tau: float | None, *,
                 judge: Path | None = None) -> dict:
        """Under the arm's own trained model, or under ``judge`` (another run, e.g. the uniform one
        of the same seed: the same model for every sampler, so the shares compare the negatives)."""
        from kgprobe.linkpred.negative_stats import margin_stats
        from kgprobe.linkpred.run import load_trained

        negatives = self._negatives(name, cfg)
        model = load_trained(judge or cfg.out, device=self.device).model
        tau = learnt_tau or float(cfg.loss_options.get("tau", 1.0))
        margin = float(cfg.loss_options.get("margin", 0.0)) + tau if cfg.loss == "infonce" \
            else float(cfg.loss_options.get("margin", 1.0))
        stats = margin_stats(self.triples, negatives, margin, model=model)
        above = margin_stats(self.triples, negatives, 0.0, model=model)
        return {"share_inside_margin": round(stats["share_inside_margin"], 5), "margin": round(margin, 5),
                "share_above_positive": round(above["share_inside_margin"], 5),
                "mean_gap": round(stats["mean_gap"], 5), "negatives": stats["negatives"],
                "triples": len(self.triples),
                "margin_rule": "infonce: additive margin + tau (softmax weight >= 1/e of the positive's)"
                if cfg.loss == "infonce" else "the loss's margin"}


# ------------------------------------------------------------------ summaries and output
def mean_sd(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 5),
            "sd": round(statistics.stdev(values), 5) if len(values) > 1 else None, "n": len(values)}


def summarise(section: dict, reference: str) -> None:
    """Per arm: test and validation MRR over the seeds, and the paired difference to ``reference``."""
    ref = {r["seed"]: r for r in section["arms"].get(reference, {}).get("runs", [])}
    for arm in section["arms"].values():
        runs = arm["runs"]
        arm["test_mrr"] = mean_sd([r["test"]["both.realistic.mrr"] for r in runs])
        valid = [r["best_valid_mrr"] for r in runs if r["best_valid_mrr"] is not None]
        arm["best_valid_mrr"] = mean_sd(valid) if valid else None
        for key in ("hits_at_1", "hits_at_10"):
            arm[f"test_{key}"] = mean_sd([r["test"][f"both.realistic.{key}"] for r in runs])
        pairs = [(r["test"]["both.realistic.mrr"], ref[r["seed"]]["test"]["both.realistic.mrr"])
                 for r in runs if r["seed"] in ref]
        if pairs and arm is not section["arms"].get(reference):
            diffs = [round(a - b, 5) for a, b in pairs]
            arm[f"minus_{reference}_test_mrr"] = {**mean_sd(diffs), "per_seed": diffs}
        inside = [r["negatives_in_margin"]["share_inside_margin"] for r in runs if "negatives_in_margin" in r]
        if inside:
            arm["share_inside_margin"] = mean_sd(inside)
        judged = [r["negatives_in_margin_under_uniform"]["share_inside_margin"] for r in runs
                  if "negatives_in_margin_under_uniform" in r]
        if judged:
            arm["share_inside_margin_under_uniform"] = mean_sd(judged)


def write_section(path: Path, part: str, section: dict) -> None:
    """Update key ``part`` of ``path``, keeping every other key; the arms already there are kept
    (those run again replaced) when they were made on the same split with the same base and budget,
    as are keys this script does not write (a note on the conditions, say)."""
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    old = data.get(part)
    if isinstance(old, dict) and all(old.get(k) == section[k] for k in ("data", "base", "budget")):
        section["arms"] = {**old.get("arms", {}), **section["arms"]}
        section = {**{k: v for k, v in old.items() if k not in section}, **section}
    summarise(section, REFERENCE[part])
    data[part] = section
    write_json(path, data, indent=2)


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(part: str, section: dict) -> str:
    """The part's arms as a text table: mean over the seeds."""
    ref = REFERENCE[part]
    head = ("arm", "seeds", "test MRR", "sd", "H@1", "H@10", "valid MRR", f"vs {ref}", "in margin",
            f"in margin ({JUDGE})", "tau", "train s")
    rows = [head]
    for name, arm in section["arms"].items():
        runs, diff = arm["runs"], arm.get(f"minus_{ref}_test_mrr")
        taus = [r["learnt_tau"] for r in runs if r["learnt_tau"] is not None]
        inside, judged = arm.get("share_inside_margin"), arm.get("share_inside_margin_under_uniform")
        rows.append((name, str(len(runs)), _cell(arm["test_mrr"]["mean"], ".4f"), _cell(arm["test_mrr"]["sd"], ".4f"),
                     _cell(arm["test_hits_at_1"]["mean"], ".4f"), _cell(arm["test_hits_at_10"]["mean"], ".4f"),
                     _cell(arm["best_valid_mrr"] and arm["best_valid_mrr"]["mean"], ".4f"),
                     _cell(diff and diff["mean"], "+.4f"), _cell(inside and inside["mean"], ".3f"),
                     _cell(judged and judged["mean"], ".3f"),
                     _cell(statistics.fmean(taus) if taus else None, ".4f"),
                     _cell(statistics.fmean(r["train_seconds"] for r in runs), ".1f")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    return "\n".join([f"== {part} (budget {json.dumps(section['budget'])})", *lines])


# ------------------------------------------------------------------ main
WHAT = {
    "levers": "SimKGC's levers, cumulative, on the base step: learnt tau (0.05 to start), + additive margin 0.02, "
              "+ pre-batch negatives (2 batches); and the query encoder with learnt tau and margin 0.02; the *_scaled "
              "arms: the same three at the base's score scale (tau learnt from the base's, margin 0.02 x tau / 0.05)",
    "negatives": "negative samplers on the base's model and InfoNCE loss, same number of negatives and budget; "
                 "share of each run's own negatives inside the margin (additive margin + tau) on a fixed batch",
    "dropout": "encoder dropout on (base) vs off (as BLP's own loop): best validation and test MRR",
}


JUDGE = "uniform"  # the arm whose trained model scores every sampler's negatives (the same model for all)


def measure_hardness(hardness: Hardness, name: str, cfg: LinkPredConfig, record: dict, saved: dict,
                     reference: Path) -> None:
    """The arm's negatives inside the margin under its own model and under the reference arm's
    model of the same seed (when that run has finished), kept in the arm's .json."""
    keys = {"negatives_in_margin": None}
    if (reference / "test_metrics.json").is_file():
        keys["negatives_in_margin_under_uniform"] = reference
    missing = [k for k in keys if k not in saved]
    for key in missing:
        if key != "negatives_in_margin" and Path(keys[key]).resolve() == Path(cfg.out).resolve():
            saved[key] = saved["negatives_in_margin"]  # the reference arm itself: its own model judged it
        else:
            saved[key] = hardness(name, cfg, record["learnt_tau"], judge=keys[key])
    for key in keys:
        record[key] = saved[key]
    if missing:
        write_json(bench_file(Path(cfg.out)), {k: v for k, v in saved.items() if k != "reused"})


def published_runs(path: Path, part: str, section: dict) -> dict[tuple[str, int], dict]:
    """The runs ``path`` already holds for ``part`` on the same split, base and budget, by (arm,
    seed): a bench continued on another machine, whose run directories (not committed) are gone,
    reads them back instead of training them again."""
    old = (json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}).get(part)
    if not isinstance(old, dict) or any(old.get(k) != section[k] for k in ("data", "base", "budget")):
        return {}
    return {(r["arm"], r["seed"]): r for arm in old.get("arms", {}).values() for r in arm["runs"]}


def run_part(part: str, args, base: dict, budget: dict, data: Path) -> dict:
    """Train (or read back) every arm and seed of ``part``, rewriting ``--out`` after each run."""
    device = resolve_device(args.device)
    hardness = Hardness(data, args.stats_triples, args.device) if part == "negatives" else None
    section = {"what": WHAT[part], "pipeline": str(args.pipeline), "data": str(data), "base": base,
               "budget": budget, "arms": {}}
    published = {} if args.no_published else published_runs(Path(args.out), part, section)
    for name, overrides in part_arms(part, base, args).items():
        overrides = {k: v for k, v in overrides.items() if base.get(k) != v}  # what differs from the base
        for seed in args.seeds:
            cfg = arm_config(base, overrides, seed, data, Path(args.runs) / f"{name}_seed{seed}", args.device)
            record = published.get((name, seed))
            if record is not None and record["options"] == overrides and not bench_file(Path(cfg.out)).exists():
                log(f"{name} seed {seed}: read from {args.out} (its run directory is not here)")
                record = {**record, "reused": "published"}
            else:
                saved = train_or_read(cfg, device)
                record = run_record(name, seed, overrides, budget, cfg, saved)
                if hardness is not None:
                    reference = Path(args.runs) / f"{JUDGE}_seed{seed}"
                    if (JUDGE, seed) in published and not reference.exists():
                        log(f"{name} seed {seed}: the {JUDGE} run of this seed is only in {args.out}, so its "
                            "model cannot judge these negatives: run the seed's arms in one sitting")
                    measure_hardness(hardness, name, cfg, record, saved, reference)
            section["arms"].setdefault(name, {"options": overrides, "runs": []})["runs"].append(record)
            write_section(Path(args.out), part, json.loads(json.dumps(section)))
    return json.loads(Path(args.out).read_text(encoding="utf-8"))[part]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", nargs="+", required=True, choices=list(ARM_NAMES), help="parts to run, in order")
    ap.add_argument("--arms", nargs="+", default=None,
                    help="only these arms, in this order, of each part that has any of them (a part with none of "
                         "them runs all its arms): " + "; ".join(f"{p}: {' '.join(a)}" for p, a in ARM_NAMES.items()))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pipeline", type=Path, default=DEFAULT_PIPELINE, help="whose linkpred_train step is the base")
    ap.add_argument("--data", default=None, help="a built split directory (default: the pipeline's split, "
                                                 "built once into RUNS/<its name>)")
    ap.add_argument("--runs", type=Path, default=DEFAULT_RUNS,
                    help="run directories, RUNS/ARM_seedS (+ ARM_seedS.json: settings, machine, margin statistics)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file whose part keys are updated")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--no-published", action="store_true",
                    help="train a run that --out holds but whose directory is absent, instead of reading it from "
                         "--out (e.g. to judge a seed's other arms under its uniform model)")
    budget = ap.add_argument_group("budget (default: the base step's)")
    budget.add_argument("--encoder", default=None, help="e.g. bow for a CPU pilot")
    budget.add_argument("--epochs", type=int, default=None)
    budget.add_argument("--max-train-triples", type=int, default=None)
    budget.add_argument("--lr", type=float, default=None,
                        help="peak learning rate (the base's 2e-4 suits MiniLM; a bag-of-words encoder wants ~1e-2)")
    budget.add_argument("--scorer-option", action="append", default=[], metavar="KEY=VALUE",
                        help="replaces the base's scorer options, e.g. p=2 fast_l2=true: TransE-L2 by matrix "
                             "products, much faster to evaluate on a CPU than L1")
    budget.add_argument("--batch-size", type=int, default=None,
                        help="in-batch negatives follow it (every other batch entity once + the self-negatives)")
    neg = ap.add_argument_group("part negatives")
    neg.add_argument("--num-negatives", type=int, default=32, help="negatives per positive, every sampler (32)")
    neg.add_argument("--max-queries", type=int, default=2000, help="lm_proposed: queries the LM proposes for (2000)")
    neg.add_argument("--lm", default=None, help="lm_proposed: causal LM name or directory (default: the sampler's, "
                                                "smollm2-135m)")
    neg.add_argument("--lm-cache", default=None, metavar="DIR",
                     help="lm_proposed: where its LM table is kept (default: the sampler's, under $KGPROBE_HOME); "
                          "a committed folder spares a new machine the LM pass (73 min for 1,000 WordNet queries "
                          "on a 2-core CPU)")
    neg.add_argument("--stats-triples", type=int, default=1000,
                     help="training triples of the fixed batch for the margin statistics (1000)")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.arms or ()) - {a for arms in ARM_NAMES.values() for a in arms})
    if unknown:
        ap.error(f"unknown arm(s): {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sections = {}
    try:
        base, budget, data = base_options(args)
        for part in args.part:
            sections[part] = run_part(part, args, base, budget, data)
            print(table(part, sections[part]), flush=True)
    except Stopped as stop:  # SIGINT / SIGTERM: the run's checkpoint is written; run again to resume
        log(f"bench_linkpred_levers: {stop}")
        raise SystemExit(stop.exit_code) from None
    except KgprobeError as err:
        log(f"bench_linkpred_levers: {err}")
        raise SystemExit(2) from None
    log(f"wrote {args.out}")
    return sections


if __name__ == "__main__":
    main()
