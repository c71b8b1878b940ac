"""Benchmark kgprobe's link prediction. Each part writes its own section of eval/results/linkpred.json.

Part (a), ``--part a`` — the evaluator against PyKEEN's, on the same embeddings:

* For Nations and UMLS (pykeen's copies, ``kgprobe.kg.datasets.pykeen_tsv.load_splits``) and
  for DistMult and TransE (L1), a small transductive model is trained here (an embedding
  table per entity and relation, kgprobe's scorer and loss, uniform negatives, Adam; seeded).
* The test split is scored by ``kgprobe.linkpred.evaluate_model`` and by
  ``pykeen.evaluation.RankBasedEvaluator`` on a ``pykeen.models.DistMult`` / ``TransE`` built on
  a ``TriplesFactory`` of the same integer triples, with the same weights copied in (no
  constrainer, no regulariser, TransE ``scoring_fct_norm=1``, ``power_norm=False``: the same
  scoring function). Both filter with train + valid + test; both timings (best of
  ``--repeats``, the two evaluators alternating) include building the filter. PyKEEN gets an
  explicit batch size (all test triples in one batch, its fastest setting here; no automatic
  batch-size search) and no progress bar.
* Reported: both wall times, their ratio, the largest absolute difference of realistic MRR and
  Hits@1/3/10 over head / tail / both, and of every metric the two share.
* Scaling: 200k synthetic entities x 20k test triples x dimension 128 (DistMult, random
  vectors, 1M random known triples), scored by kgprobe's evaluator in a child process: wall time
  and peak resident memory, against the 32 GB the full score matrix would take.

Part (b), ``--part b`` — the WordNet inductive pipeline (``pipelines/linkpred_wordnet.yaml``):
reads finished pipeline output folders (``run.json``, ``<run>/metrics.jsonl``,
``<run>/test_metrics.json``; default: the runs kept in ``eval/results/wordnet_inductive/``, H200 and CPU)
and reports their test MRR / Hits@k, the validation curve, the training time and where it ran
(a folder with ``pipeline.yaml`` + ``metrics.jsonl`` + ``device.txt`` and no ``run.json`` is a run
whose test evaluation never happened: its validation curve only),
against BLP-TransE's 0.285 on WN18RR (inductive). It trains nothing itself: the pipeline (8 InfoNCE
epochs of batch 128) takes 7.5 min on one H200 and about 12 h on a 2-core CPU, where one epoch
(``eval/cpu/wn_nce_e1.yaml``) takes 1 h 44 min; the 16-epoch margin setting took ~6 min on one H200.

Part (c), ``--part c`` — uniform vs LEMON negatives on the same model and budget: an inductive
split (``--c-data``, default WordNet's), the bag-of-words encoder (``text: both``) + TransE +
margin loss, ``--c-epochs`` epochs of batch 256 with ``--c-negatives`` negatives per positive at
``--c-lr``, one validation at the end, test with all entities as candidates, for each of
``--c-seeds``; LEMON = 15 k-means clusters of frozen MiniLM vectors, the 3 nearest to the kept
entity, known triples filtered (as in LEMON). Both trained through
``kgprobe.linkpred.run_training`` (the pipeline's code path) into ``--work-dir`` (re-running
resumes). To say *why* one wins, it also scores 2,000 training triples' negatives from both
samplers under both trained models: the mean margin ``s(pos) - s(neg)`` and the share of
negatives inside the loss margin (the ones that still teach something); ``reading`` says it in
a sentence. The section is ``uniform_vs_lemon_<label>``.

    python eval/bench_linkpred.py --part a            # writes eval/results/linkpred.json
    python eval/bench_linkpred.py --part a --quick    # fewer steps, small scaling run
    python eval/bench_linkpred.py --part b            # the pipeline runs' figures
    python eval/bench_linkpred.py --part c --c-label wordnet      # uniform vs lemon, ~30 min on 2 CPU cores
    python eval/bench_linkpred.py --part c --c-data runs/umls_split --work-dir runs/bench_linkpred_c_umls \
        --c-epochs 30 --c-lr 1e-2 --c-seeds 0 1 2 3 4 --c-label umls           # 5 seeds, ~10 min
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kgprobe.atomic import write_json  # noqa: E402
from kgprobe.kg.datasets.pykeen_tsv import load_splits  # noqa: E402
from kgprobe.linkpred import evaluate_model, get_loss, get_scorer  # noqa: E402
from kgprobe.models.device import resolve_device  # noqa: E402
from kgprobe.seeding import seed_everything  # noqa: E402
from machine import machine_info  # noqa: E402  (eval/machine.py, beside this script)
from trainer_speed import VARIANTS, part_d  # noqa: E402  (part d: eval/trainer_speed.py)

DEFAULT_OUT = ROOT / "eval" / "results" / "linkpred.json"
# what part (a) compares: realistic MRR and Hits@1/3/10, each side
COMPARED = [f"{side}.realistic.{m}" for side in ("head", "tail", "both")
            for m in ("inverse_harmonic_mean_rank", "hits_at_1", "hits_at_3", "hits_at_10")]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine(device: torch.device) -> dict:
    try:
        import pykeen

        version = pykeen.get_version() if hasattr(pykeen, "get_version") else pykeen.__version__
    except ImportError:
        version = None
    return machine_info(device) | {"pykeen": version}


def interleaved_best_of(fns: dict, repeats: int, device: torch.device) -> tuple[dict, dict]:
    """Run each function ``repeats`` times, alternating between them (so a burst of load on a
    shared machine hits both alike); the last results and ``{times_s, best_s}`` per function."""
    times: dict = {name: [] for name in fns}
    results: dict = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            results[name] = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - t0)
    stats = {name: {"times_s": [round(t, 5) for t in ts], "best_s": round(min(ts), 5)} for name, ts in times.items()}
    return results, stats


# --------------------------------------------------------------------------- training
def train_embeddings(train: torch.Tensor, num_entities: int, num_relations: int, *, scorer_name: str, dim: int,
                     steps: int, seed: int, batch_size: int = 256, num_negatives: int = 32,
                     lr: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """A plain embedding-table model trained with uniform negatives (head or tail, 50/50).

    DistMult: softplus loss; TransE: margin ranking loss (margin 1). Seeded; returns the
    entity and relation tables and the loss every 50 steps."""
    gen = torch.Generator().manual_seed(seed)
    seed_everything(seed)  # the initialisation below draws from torch's global generator
    scorer = get_scorer(scorer_name)
    ent = torch.nn.Parameter(torch.empty(num_entities, dim))
    rel = torch.nn.Parameter(torch.empty(num_relations, scorer.relation_dim(dim)))
    torch.nn.init.xavier_uniform_(ent)
    torch.nn.init.xavier_uniform_(rel)
    loss_fn = get_loss("softplus") if scorer_name == "distmult" else get_loss("margin", margin=1.0)
    opt = torch.optim.Adam([ent, rel], lr=lr)
    n = train.shape[0]
    curve = []
    for step in range(steps):
        idx = torch.randint(n, (batch_size,), generator=gen)
        h, r, t = train[idx, 0], train[idx, 1], train[idx, 2]
        corrupt = torch.randint(num_entities, (batch_size, num_negatives), generator=gen)
        head_side = torch.rand(batch_size, num_negatives, generator=gen) < 0.5
        nh = torch.where(head_side, corrupt, h[:, None])
        nt = torch.where(head_side, t[:, None], corrupt)
        pos = scorer.score(ent[h], rel[r], ent[t])
        neg = scorer.score(ent[nh], rel[r][:, None, :], ent[nt])
        loss = loss_fn(pos, neg)
        if scorer_name == "distmult":  # a light L2 term keeps the bilinear scores bounded
            loss = loss + 1e-4 * (ent[h].pow(2).sum() + ent[t].pow(2).sum() + rel[r].pow(2).sum()) / batch_size
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            curve.append(round(loss.item(), 5))
    return ent.detach().clone(), rel.detach().clone(), curve


# --------------------------------------------------------------------------- pykeen side
def pykeen_model(scorer_name: str, graph, ent: torch.Tensor, rel: torch.Tensor):
    """A pykeen model on the same integer triples whose scoring equals kgprobe's exactly."""
    from pykeen.models import DistMult, TransE
    from pykeen.triples import TriplesFactory

    factory = TriplesFactory(
        mapped_triples=graph.triples,
        entity_to_id={e: i for i, e in enumerate(graph.entity_ids)},
        relation_to_id={r: i for i, r in enumerate(graph.relation_ids)},
    )
    if scorer_name == "distmult":
        model = DistMult(triples_factory=factory, embedding_dim=ent.shape[1], entity_constrainer=None,
                         regularizer=None, random_seed=0)
    elif scorer_name == "transe":
        model = TransE(triples_factory=factory, embedding_dim=ent.shape[1], scoring_fct_norm=1, power_norm=False,
                       entity_constrainer=None, relation_constrainer=None, regularizer=None, random_seed=0)
    else:  # pragma: no cover
        raise ValueError(scorer_name)
    with torch.no_grad():
        model.entity_representations[0]._embeddings.weight.copy_(ent)
        model.relation_representations[0]._embeddings.weight.copy_(rel)
    model.eval()
    return model


def check_same_scores(model, scorer_name: str, ent, rel, triples: torch.Tensor) -> float:
    """Largest |pykeen score - kgprobe score| over the given triples (aligned scoring)."""
    with torch.no_grad():
        theirs = model.score_hrt(triples).reshape(-1)
        ours = get_scorer(scorer_name).score(ent[triples[:, 0]], rel[triples[:, 1]], ent[triples[:, 2]])
    return float((theirs - ours).abs().max())


def compare_dataset(name: str, scorer_name: str, args, device: torch.device) -> dict:
    from pykeen.evaluation import RankBasedEvaluator as PykeenEvaluator

    splits = load_splits(name)
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    n_e, n_r = train.num_entities, train.num_relations
    t0 = time.perf_counter()
    ent, rel, curve = train_embeddings(train.triples, n_e, n_r, scorer_name=scorer_name, dim=args.dim,
                                       steps=args.steps, seed=args.seed)
    train_s = time.perf_counter() - t0
    model = pykeen_model(scorer_name, train, ent, rel).to(device)
    score_diff = check_same_scores(model.cpu(), scorer_name, ent, rel, test.triples)
    model = model.to(device)

    def ours():
        return evaluate_model(ent, rel, scorer_name, test.triples, filter_triples=[train.triples, valid.triples],
                              device=device)

    def theirs():
        evaluator = PykeenEvaluator(filtered=True)
        return evaluator.evaluate(model, test.triples.to(device),
                                  additional_filter_triples=[train.triples.to(device), valid.triples.to(device)],
                                  batch_size=len(test.triples), use_tqdm=False, device=device).to_flat_dict()

    ours()  # warm-up (first-call allocations), not timed; likewise for pykeen
    theirs()
    results, stats = interleaved_best_of({"kgprobe": ours, "pykeen": theirs}, args.repeats, device)
    mine, ref = results["kgprobe"], results["pykeen"]
    t_ours, t_theirs = stats["kgprobe"], stats["pykeen"]
    compared = {k: {"kgprobe": mine[k], "pykeen": ref[k], "abs_diff": abs(mine[k] - ref[k])} for k in COMPARED}
    shared = [k for k in ref if k in mine]
    all_diff = max(abs(mine[k] - ref[k]) for k in shared)
    rank_keys = [k for k in shared if ".optimistic." in k or ".pessimistic." in k]
    max_diff = max(v["abs_diff"] for v in compared.values())
    row = {
        "dataset": name, "scorer": scorer_name, "entities": n_e, "relations": n_r,
        "train_triples": train.num_triples, "valid_triples": valid.num_triples, "test_triples": test.num_triples,
        "dim": args.dim, "train_steps": args.steps, "train_s": round(train_s, 3), "loss_curve": curve,
        "max_abs_aligned_score_diff": score_diff,
        "kgprobe": t_ours, "pykeen": t_theirs,
        "speedup_pykeen_over_kgprobe": round(t_theirs["best_s"] / t_ours["best_s"], 2),
        "max_abs_diff_realistic_mrr_hits_1_3_10": max_diff,
        "max_abs_diff_all_shared_metrics": all_diff,
        "shared_metric_keys": len(shared),
        "max_abs_diff_optimistic_pessimistic_metrics": max(abs(mine[k] - ref[k]) for k in rank_keys),
        "metrics": compared,
        "meets_target_1e-6": max_diff <= 1e-6,
        "meets_target_10x": t_theirs["best_s"] >= 10 * t_ours["best_s"],
    }
    log(f"{name}/{scorer_name}: MRR {mine['both.realistic.mrr']:.4f} kgprobe {t_ours['best_s'] * 1e3:.2f} ms, "
        f"pykeen {t_theirs['best_s'] * 1e3:.2f} ms, x{row['speedup_pykeen_over_kgprobe']}, max diff {max_diff:.2e}")
    return row


# --------------------------------------------------------------------------- scaling
def _memory_mb() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process, MiB (Linux)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        out["VmHWM"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def _reset_peak_memory() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def scaling_worker(args) -> dict:
    """Runs in a fresh process: synthetic data, one timed evaluation, peak RSS."""
    device = resolve_device(args.device)
    seed_everything(args.seed)
    n_e, n_t, dim, n_r, n_known = args.scale_entities, args.scale_triples, args.scale_dim, 100, args.scale_known
    gen = torch.Generator().manual_seed(args.seed)
    ent = torch.randn(n_e, dim, generator=gen) / dim ** 0.5
    rel = torch.randn(n_r, dim, generator=gen)
    known = torch.stack([torch.randint(n_e, (n_known,), generator=gen), torch.randint(n_r, (n_known,), generator=gen),
                         torch.randint(n_e, (n_known,), generator=gen)], dim=1)
    test = known[torch.randperm(n_known, generator=gen)[:n_t]]
    peak_reset = _reset_peak_memory()
    before = _memory_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    metrics = evaluate_model(ent, rel, "distmult", test, filter_triples=known, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    after = _memory_mb()
    out = {
        "entities": n_e, "test_triples": n_t, "dim": dim, "relations": n_r, "known_triples": n_known,
        "scorer": "distmult", "device": str(device), "wall_s": round(wall, 2),
        "queries_per_s": round(2 * n_t / wall, 1),
        "scores_computed": 2 * n_t * n_e,
        "full_score_matrix_gb": round(2 * n_t * n_e * 4 / 1e9, 1),
        "inputs_mb": round((ent.numel() + rel.numel() + 2 * known.numel()) * 4 / 1e6, 1),
        "rss_mb_before_eval": before.get("VmRSS"),
        "peak_rss_mb_during_eval": after.get("VmHWM"),
        "peak_rss_growth_mb": (round(after["VmHWM"] - before["VmRSS"], 1)
                               if peak_reset and "VmRSS" in before else None),
        "both_realistic_mrr": metrics["both.realistic.mrr"],
    }
    if device.type == "cuda":
        out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def scaling(args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", "scale-worker", "--device", args.device,
           "--seed", str(args.seed), "--scale-entities", str(args.scale_entities),
           "--scale-triples", str(args.scale_triples), "--scale-dim", str(args.scale_dim),
           "--scale-known", str(args.scale_known)]
    log("scaling run: " + " ".join(cmd[2:]))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"scaling worker failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    log(f"scaling: {result}")
    return result


# --------------------------------------------------------------------------- parts
def part_a(args) -> dict:
    device = resolve_device(args.device)
    rows = [compare_dataset(name, scorer, args, device) for name in ("nations", "umls")
            for scorer in ("distmult", "transe")]
    section = {
        "what": ("kgprobe.linkpred.evaluate_model vs pykeen RankBasedEvaluator, same embeddings, filtered "
                 "(train+valid+test), test split; times are best of repeats (the two alternating) and "
                 "include the filter build"),
        "config": {"dim": args.dim, "train_steps": args.steps, "repeats": args.repeats, "seed": args.seed,
                   "pykeen_batch_size": "all test triples in one batch", "quick": args.quick},
        "machine": machine(device),
        "datasets": rows,
        "summary": {
            "max_abs_diff_realistic_mrr_hits_1_3_10": max(r["max_abs_diff_realistic_mrr_hits_1_3_10"] for r in rows),
            "min_speedup": min(r["speedup_pykeen_over_kgprobe"] for r in rows),
            "all_meet_1e-6": all(r["meets_target_1e-6"] for r in rows),
            "all_meet_10x": all(r["meets_target_10x"] for r in rows),
        },
    }
    out = {"evaluator_vs_pykeen": section}
    if not args.no_scale:
        out["evaluator_scaling"] = scaling(args)
    if hasattr(os, "getloadavg"):
        section["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


WN_RUNS = ROOT / "eval" / "results" / "wordnet_inductive"
BLP_WN18RR_TRANSE_MRR = 0.285
KEYS = ("both.realistic.mrr", "both.realistic.hits_at_1", "both.realistic.hits_at_3",
        "both.realistic.hits_at_10", "head.realistic.mrr", "tail.realistic.mrr", "both.realistic.mr")


def _step_config(step: dict) -> dict:
    """The settings of a pipeline's ``linkpred_train`` step that part (b) reports (older runs: [CLS])."""
    step = {"pooling": "cls", "sampler_options": {}, **step}
    return {k: step.get(k) for k in ("encoder", "model", "text", "pooling", "scorer", "loss", "sampler",
                                     "sampler_options", "dim", "max_length", "batch_size", "lr", "epochs",
                                     "warmup", "num_negatives")}


def _valid_mrr_by_epoch(history: list[dict]) -> dict:
    """``{"epoch": validation MRR}`` for the epochs that were validated (``eval_every``)."""
    return {str(r["epoch"]): round(float(r["metric"]), 5) for r in history if r.get("metric") is not None}


def _validation_only_run(folder: Path) -> dict:
    """A run whose test evaluation never happened: ``pipeline.yaml`` + ``metrics.jsonl`` + ``device.txt``."""
    import yaml

    step = next(s for s in yaml.safe_load((folder / "pipeline.yaml").read_text())["steps"]
                if s["type"] == "linkpred_train")
    history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "folder": str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder),
        "device": (folder / "device.txt").read_text().strip(),
        "config": _step_config(step),
        "test": None,
        "valid_mrr_by_epoch": _valid_mrr_by_epoch(history),
        "epochs_run": len(history),
    }


def _pipeline_run(folder: Path) -> dict:
    """One finished ``linkpred_wordnet`` pipeline output folder, summarised."""
    if not (folder / "run.json").is_file() and (folder / "pipeline.yaml").is_file():
        return _validation_only_run(folder)
    record = json.loads((folder / "run.json").read_text())
    step = next(s for s in record["config"]["steps"] if s["type"] == "linkpred_train")
    run = folder / step["out"] if (folder / step["out"]).is_dir() else folder
    test = json.loads((run / "test_metrics.json").read_text())
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    note = folder / "device.txt"  # the fuller word (versions, interruptions); run.json's name otherwise
    where = note.read_text().strip() if note.is_file() else record.get("device_name") or record.get("device")
    train_step = next(t for t in record["timings"] if t["type"] == "linkpred_train")
    return {
        "folder": str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder),
        "device": where,
        "config": _step_config(step),
        "test": {k: round(float(test[k]), 5) for k in KEYS},
        "best_epoch": test["best_epoch"],
        "valid_mrr_by_epoch": _valid_mrr_by_epoch(history),
        "train_seconds_per_epoch": round(sum(r["train_seconds"] for r in history) / max(len(history), 1), 2),
        "train_and_validation_seconds": round(sum(r["seconds"] for r in history), 1),
        "linkpred_step_seconds": train_step["seconds"],
        "meets_blp_wn18rr_0.285": float(test["both.realistic.mrr"]) >= BLP_WN18RR_TRANSE_MRR,
        **_candidate_scaling(folder),
    }


def _candidate_scaling(folder: Path) -> dict:
    """Test MRR by candidate set, when eval/bench_candidates.py left a candidates.json in ``folder``."""
    path = folder / "candidates.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())["candidates"]
    return {"test_mrr_by_candidates (eval/bench_candidates.py)": {
        name: {"candidates": r["candidates"], "mrr": r["mrr"]} for name, r in rows.items() if "_seed" not in name}}


def part_b(args) -> dict:
    folders = [Path(f) for f in args.run_dirs] if args.run_dirs else sorted(p for p in WN_RUNS.iterdir() if p.is_dir())
    runs = [_pipeline_run(f) for f in folders]
    best = max((r for r in runs if r["test"] is not None), key=lambda r: r["test"]["both.realistic.mrr"])
    return {"wordnet_inductive": {
        "what": ("kgprobe run pipelines/linkpred_wordnet.yaml: BLP (MiniLM-L6 over 'name: gloss', TransE, "
                 "in-batch negatives) on the seeded inductive WordNet split; test = unseen entities, "
                 "candidates = all 117,659 entities, filtered by train+valid+test"),
        "reference": {"BLP-TransE WN18RR(ind) MRR": BLP_WN18RR_TRANSE_MRR,
                      "note": ("WN18RR(ind) ranks against its ~41k entities; this split keeps all of "
                               "WordNet 3.0 (117,659 synsets, 175,086 training triples), so every test "
                               "query has about 3x as many candidates")},
        "runs": runs,
        "best": {"folder": best["folder"], "test_mrr": best["test"]["both.realistic.mrr"],
                 "meets_0.285": best["meets_blp_wn18rr_0.285"]},
    }}


def _score_negatives(run_dir: Path, triples: torch.Tensor, negatives: dict, margin: float) -> dict:
    """Mean ``s(pos) - s(neg)`` and the share of negatives within ``margin`` under a trained model."""
    from kgprobe.linkpred.negative_stats import margin_stats
    from kgprobe.linkpred.run import load_trained

    model = load_trained(run_dir, device="cpu").model
    out = {}
    for name, neg in negatives.items():
        stats = margin_stats(triples, neg, margin, model=model)
        out[name] = {"mean_margin": round(stats["mean_gap"], 4),
                     "share_within_margin": round(stats["share_inside_margin"], 4)}
    return out


def _mean_sd(values: list[float]) -> dict:
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": round(float(t.mean()), 5), "sd": round(float(t.std()), 5) if len(values) > 1 else 0.0}


def part_c(args) -> dict:
    from kgprobe.linkpred.run import LinkPredConfig, load_split_data, run_training
    from kgprobe.linkpred.samplers import build_sampler

    data = Path(args.c_data)
    work = Path(args.work_dir)
    label = args.c_label or data.name
    common = dict(data=data, encoder="bow", text="both", scorer="transe", loss="margin", dim=128, max_length=32,
                  epochs=args.c_epochs, batch_size=256, lr=args.c_lr, warmup=0.0, num_negatives=args.c_negatives,
                  eval_every=args.c_epochs, eval_batch_size=1024, device=args.device)
    arms = {"uniform": {}, "lemon": {"sampler_options": {"n_clusters": 15, "n_nearest": 3}}}
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    for seed in args.c_seeds:
        for name, extra in arms.items():
            log(f"part c: {label}, seed {seed}, {name} negatives")
            t0 = time.perf_counter()
            out = work / f"{name}_seed{seed}"
            summary = run_training(LinkPredConfig(**common, seed=seed, sampler=name, out=out, **extra),
                                   progress=False, echo=log)
            history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
            runs[name].append({"seed": seed, "test": {k: round(float(summary[k]), 5) for k in KEYS},
                               "valid_mrr": round(float(summary["best_valid_metric"]), 5),
                               "train_seconds": round(sum(r["train_seconds"] for r in history), 1),
                               "wall_seconds_this_call": round(time.perf_counter() - t0, 1)})
    # why: how hard are each sampler's negatives for each trained model (first seed)?
    seed = args.c_seeds[0]
    split = load_split_data(data)
    train = split.triples["train"]
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:2000]
    triples = train[pick]
    gen = torch.Generator().manual_seed(seed)
    negatives = {}
    for name, extra in arms.items():
        sampler = build_sampler(name, split, extra.get("sampler_options", {}))  # as run_training builds it
        negatives[name] = sampler.sample_negatives(triples, args.c_negatives, generator=gen).triples
    hardness = {f"model_trained_with_{m}": _score_negatives(work / f"{m}_seed{seed}", triples, negatives, 1.0)
                for m in arms}
    mrr = {name: [r["test"]["both.realistic.mrr"] for r in rows] for name, rows in runs.items()}
    diffs = [lemon - uniform for uniform, lemon in zip(mrr["uniform"], mrr["lemon"])]
    u = _mean_sd(mrr["uniform"])["mean"]
    diff = _mean_sd(diffs)
    inside = {m: hardness["model_trained_with_uniform"][m]["share_within_margin"] for m in arms}
    reading = (f"LEMON {'beats' if diff['mean'] > 0 else 'does not beat'} uniform negatives here: "
               f"{diff['mean']:+.4f} test MRR ("
               + (f"sd {diff['sd']:.4f} over {len(diffs)} seeds, better in {sum(d > 0 for d in diffs)}"
                  if len(diffs) > 1 else "one seed") + "). "
               f"Under the uniform-trained model {inside['lemon']:.1%} of LEMON's "
               f"negatives vs {inside['uniform']:.1%} of uniform ones lie inside the loss margin (the only ones "
               "that still teach anything): LEMON replaces an entity by one resembling the entity that is "
               "kept, not the one replaced, which is hard only when a relation links similar entities.")
    return {f"uniform_vs_lemon_{label}": {
        "reading": reading,
        "what": ("same model (bag-of-words encoder over 'name: gloss' + TransE, margin loss), same budget "
                 f"({args.c_epochs} epochs x {len(train):,} triples, batch 256, {args.c_negatives} negatives "
                 f"each, lr {args.c_lr}), inductive split {label}, test candidates = all "
                 f"{split.graph.num_entities:,} entities; only the negative sampler differs; seeds "
                 f"{list(args.c_seeds)}"),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in common.items()},
        "machine": machine(resolve_device(args.device)),
        "uniform": runs["uniform"], "lemon": runs["lemon"],
        "test_mrr": {name: _mean_sd(values) for name, values in mrr.items()},
        "lemon_minus_uniform_test_mrr": {**_mean_sd(diffs), "per_seed": [round(d, 5) for d in diffs],
                                         "lemon_better_in": sum(d > 0 for d in diffs)},
        "lemon_relative_change": round(sum(diffs) / len(diffs) / u, 4) if u else None,
        "negatives_hardness": hardness,
    }}


PARTS = {"a": part_a, "b": part_b, "c": part_c, "d": part_d}
#: sections holding one entry per machine ("cpu", "gpu:NAME"): a run updates its own entry
PER_MACHINE = ("trainer_vs_blp",)


def write_sections(path: Path, sections: dict) -> None:
    """Update ``path`` with ``sections``, keeping the sections other parts wrote."""
    data = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    for name, value in sections.items():
        if name in PER_MACHINE and isinstance(data.get(name), dict):
            data[name].update(value)
        else:
            data[name] = value
    write_json(path, data, indent=2)
    log(f"wrote {path}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="a", choices=[*PARTS, "scale-worker"])
    ap.add_argument("--device", default="cpu", help="auto, cpu or cuda[:N] (default cpu)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--steps", type=int, default=None, help="training steps (default 400; quick 100)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="fewer steps and a small scaling run (smoke test)")
    ap.add_argument("--no-scale", action="store_true", help="skip the synthetic scaling run")
    ap.add_argument("--scale-entities", type=int, default=None)
    ap.add_argument("--scale-triples", type=int, default=None)
    ap.add_argument("--scale-dim", type=int, default=128)
    ap.add_argument("--scale-known", type=int, default=None, help="known (filter) triples, default 1M")
    ap.add_argument("--run-dirs", nargs="*", default=None,
                    help="part b: pipeline output folders (default: eval/results/wordnet_inductive/*)")
    ap.add_argument("--c-data", default=str(ROOT / "runs" / "linkpred_wordnet" / "wordnet_split"),
                    help="part c: the inductive split directory (kgprobe data build wordnet --inductive)")
    ap.add_argument("--work-dir", default=str(ROOT / "runs" / "bench_linkpred_c"), help="part c: run folders")
    ap.add_argument("--c-epochs", type=int, default=2)
    ap.add_argument("--c-negatives", type=int, default=32)
    ap.add_argument("--c-lr", type=float, default=1e-3)
    ap.add_argument("--c-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--c-label", default=None, help="part c: name of the split in the results (default: folder name)")
    ap.add_argument("--d-triples", type=int, default=None, help="part d: WordNet triples (default 3,200)")
    ap.add_argument("--d-batch", type=int, default=64, help="part d: batch size (BLP's 64)")
    ap.add_argument("--d-threads", type=int, default=None,
                    help="part d: torch threads (default: torch's, one per core); the result is keyed by them")
    ap.add_argument("--d-variants", nargs="+", default=["default", "fast", "fast_dropout"],
                    choices=list(VARIANTS), help="part d: kgprobe settings, each paired with BLP's loop")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output (default eval/results/linkpred.json; quick: linkpred_quick.json)")
    args = ap.parse_args(argv)
    args.steps = args.steps or (100 if args.quick else 400)
    args.scale_entities = args.scale_entities or (20_000 if args.quick else 200_000)
    args.scale_triples = args.scale_triples or (2_000 if args.quick else 20_000)
    args.scale_known = args.scale_known or (100_000 if args.quick else 1_000_000)
    if args.part == "scale-worker":
        result = scaling_worker(args)
        print(json.dumps(result))
        return result
    out = args.out or DEFAULT_OUT.with_name("linkpred_quick.json" if args.quick else "linkpred.json")
    sections = PARTS[args.part](args)
    write_sections(out, sections)
    return sections


if __name__ == "__main__":
    main()
