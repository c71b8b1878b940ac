"""Cost curves: time and peak memory of every pipeline stage against its size (issue #22, 3/4/6).

Each stage runs the library function the CLI runs, on seeded inputs of growing size:

* ``kg_dir``: ``save_kg`` + ``load_kg`` of a KG directory (``kgprobe data build`` / every command
  that reads a KG) of ``synthetic_kg(n)`` (4.5 n triples, labels and descriptions);
* ``ntriples``: the same KG saved and loaded as N-Triples (``.nt``: about 31 RDF triples per entity:
  4 describing it, 4.5 plain triples and 22.5 reifying them);
* ``split``: ``kgprobe.kg.split.inductive_split`` (``kgprobe data build --inductive``), BLP style;
* ``embed``: ``kgprobe.index.embed.embed_kg`` (``kgprobe embed``) over the entity labels with a
  tiny config-built sentence encoder (the real MiniLM-L6 tokenizer, a 2-layer BERT of width 64,
  random weights, mean pooling): the sentence encoder of a real run costs more per text but grows
  the same way; cache off;
* ``index``: ``--index auto``: ``kgprobe.index.knn.plan_index`` + ``VectorIndex`` (as
  ``build_embeddings`` builds it) over n random unit vectors of dim 384, then one search of 1,000
  queries for the top 10;
* ``lp_eval``: ``kgprobe.linkpred.evaluator.evaluate_model`` (filtered, both sides, DistMult) of
  ``--lp-queries`` (2,000) test triples against n candidate entities with random dim-128 vectors,
  filtered by 4.5 n random known triples (a ``FilterIndex``): linear in candidates at fixed queries.

Every (stage, size) is measured in a child process (this script with ``--one``): the time is the
stage alone (the inputs are made before the clock starts), the memory the child's peak resident
set (``ru_maxrss``), which includes its inputs; the growth exponent is fitted to the peak above the
child's resident set after its imports (``baseline_rss_bytes``). A stage's ``time_exponent`` is the
least-squares slope of log(seconds) against log(size); every stage here is expected to be linear,
and one whose exponent exceeds 1.15 is flagged (``superlinear``).

Results are kept per machine (``machines.cpu``, ``machines["gpu:NAME"]``) so a GPU run merges in
(``--merge FILE``); a run of some stages replaces those stages of its machine and keeps the others.

    python eval/bench_scaling.py                         # all stages, eval/results/scaling.json + docs/scaling.png
    python eval/bench_scaling.py --stage index --stage lp_eval
    python eval/bench_scaling.py --quick --out /tmp/s.json   # tiny sizes, seconds (the test)
    python eval/bench_scaling.py --merge /tmp/scaling_gpu.json   # add a GPU run's file, re-plot
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

DEFAULT_OUT = ROOT / "eval" / "results" / "scaling.json"
DEFAULT_PLOT = ROOT / "docs" / "scaling.png"
LINEAR_LIMIT = 1.15  # a stage expected to be linear whose exponent exceeds this is flagged

#: stage -> (unit, full sizes, quick sizes, what is measured)
STAGES: dict[str, dict] = {
    "kg_dir": {"unit": "entities", "sizes": [10_000, 100_000, 300_000, 1_000_000], "quick": [300, 1000, 3000],
               "what": "save_kg + load_kg of a KG directory of synthetic_kg(n) (4.5 n triples)"},
    "ntriples": {"unit": "entities", "sizes": [1_000, 10_000, 30_000, 100_000], "quick": [300, 1000, 3000],
                 "what": "save_kg + load_kg of synthetic_kg(n) as N-Triples (.nt, pyoxigraph reader)"},
    "split": {"unit": "entities", "sizes": [10_000, 100_000, 300_000, 1_000_000], "quick": [300, 1000, 3000],
              "what": "kgprobe.kg.split.inductive_split(synthetic_kg(n)) with the defaults (10 % valid, 10 % test)"},
    "embed": {"unit": "entities", "sizes": [1_000, 10_000, 100_000], "quick": [100, 300, 1000],
              "what": "kgprobe.index.embed.embed_kg(synthetic_kg(n), text='label') with a tiny config-built "
                      "sentence encoder (see 'encoder'), cache off"},
    "index_flat": {"unit": "vectors", "sizes": [10_000, 100_000, 1_000_000], "quick": [500, 1500, 5000],
                   "what": "VectorIndex(kind='flat').add over n random unit vectors (dim 384), then one search of "
                           "1,000 queries, top 10 (--index auto's choice up to 200,000 vectors)"},
    "index_ivf": {"unit": "vectors", "sizes": [10_000, 100_000, 1_000_000], "quick": [500, 1500, 5000],
                  "what": "as index_flat, kind ivf with the plan's nlist = 4 sqrt(n) and nprobe = nlist / 16 "
                          "(k-means on a seeded sample of 64 vectors per cell, at least 65,536)",
                  # below 65,536 vectors every vector trains k-means over 4 sqrt(n) cells: n^1.5 by design
                  "expected": "linear from 65,536 vectors (n^1.5 below: every vector trains)", "linear_from": 65_536},
    "lp_eval": {"unit": "candidates", "sizes": [10_000, 100_000, 1_000_000], "quick": [500, 1500, 5000],
                "what": "kgprobe.linkpred.evaluator.evaluate_model (filtered, head + tail, DistMult, dim 128) of a "
                        "fixed number of test triples against n candidates, 4.5 n random known triples filtered"},
}
TINY_ENCODER = {"tokenizer": "minilm-l6 (sentence-transformers/all-MiniLM-L6-v2's WordPiece)",
                "model": "BertModel(hidden 64, 2 layers, 2 heads, intermediate 128), random weights (seed 0)",
                "pooling": "mean over tokens", "max_tokens": 32, "batch_size": 256, "text": "label"}
INDEX_DIM, INDEX_QUERIES = 384, 1000
LP_DIM, LP_RELATIONS = 128, 50


# --------------------------------------------------------------------------- the child: one measurement
def _cpu() -> float:
    """CPU seconds of this process (user + system, all threads): less sensitive than the wall clock
    to other jobs on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


class TinySentenceEncoder:
    """A sentence-transformers-like ``encode`` over a tiny random BERT (see ``TINY_ENCODER``)."""

    def __init__(self, device):
        import torch
        from transformers import AutoTokenizer, BertConfig, BertModel

        from kgprobe.models import model_source

        self.tokenizer = AutoTokenizer.from_pretrained(model_source("minilm-l6"))
        torch.manual_seed(0)
        config = BertConfig(vocab_size=len(self.tokenizer), hidden_size=64, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=128, max_position_embeddings=64)
        self.model = BertModel(config).eval().to(device)
        self.device = device

    def encode(self, sentences, **kwargs):
        import torch

        enc = self.tokenizer(list(sentences), padding=True, truncation=True,
                             max_length=TINY_ENCODER["max_tokens"], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1)).float().cpu().numpy()


def _unit_vectors(n: int, dim: int, seed: int):
    import numpy as np

    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_one(stage: str, size: int, *, device: str, lp_queries: int, tmp: Path) -> dict:
    """Run ``stage`` at ``size`` in this process; the stage's seconds and extra details."""
    import torch

    from kgprobe.models.device import resolve_device

    dev = resolve_device(device)
    extra: dict = {}
    t_in = time.perf_counter()
    if stage in ("kg_dir", "ntriples", "split", "embed"):
        from kgprobe.kg.datasets.synthetic import synthetic_kg

        kg = synthetic_kg(size, seed=0)
        extra["triples"] = kg.num_triples
    if stage in ("kg_dir", "ntriples"):
        from kgprobe.kg.formats import load_kg, save_kg

        path = tmp / ("kg" if stage == "kg_dir" else "kg.nt")
        inputs_s = time.perf_counter() - t_in
        t0, c0 = time.perf_counter(), _cpu()
        save_kg(kg, path)
        t1 = time.perf_counter()
        back = load_kg(path, progress=False)
        t2, cpu = time.perf_counter(), _cpu() - c0
        files = [path] if path.is_file() else list(path.iterdir())
        extra.update(save_seconds=round(t1 - t0, 4), load_seconds=round(t2 - t1, 4),
                     bytes_on_disk=sum(f.stat().st_size for f in files), same_kg=bool(back.same_as(kg)))
        seconds = t2 - t0
    elif stage == "split":
        from kgprobe.kg.split import inductive_split

        inputs_s = time.perf_counter() - t_in
        t0, c0 = time.perf_counter(), _cpu()
        split = inductive_split(kg, seed=0, progress=False)
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
        stats = split.stats()
        extra.update({k: stats[k] for k in ("dropped_target", "dropped_achieved", "train_triples", "test_triples")})
    elif stage == "embed":
        from kgprobe.index.embed import embed_kg

        encoder = TinySentenceEncoder(dev)
        inputs_s = time.perf_counter() - t_in
        t0, c0 = time.perf_counter(), _cpu()
        emb = embed_kg(kg, model="tiny-config-bert", text="label", encoder=encoder, device=dev, batch_size=256,
                       cache=False, progress=False)
        _sync(dev)
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
        extra.update(dim=emb.dim, unique_texts=emb.meta["unique_texts"])
    elif stage in ("index_flat", "index_ivf"):
        from kgprobe.index.knn import VectorIndex, plan_index
        from kgprobe.index.plan import IndexPlan, auto_nlist, auto_nprobe

        vectors, queries = _unit_vectors(size, INDEX_DIM, 0), _unit_vectors(INDEX_QUERIES, INDEX_DIM, 1)
        inputs_s = time.perf_counter() - t_in
        t0, c0 = time.perf_counter(), _cpu()
        options, plan = plan_index(size, INDEX_DIM)
        if stage == "index_flat":
            options, plan = {"kind": "flat"}, IndexPlan(kind="flat", n=size, dim=INDEX_DIM, reason="fixed")
        elif stage == "index_ivf":
            nlist = auto_nlist(size)
            options = {"kind": "ivf", "nlist": nlist, "nprobe": auto_nprobe(nlist)}
            plan = IndexPlan(kind="ivf", n=size, dim=INDEX_DIM, reason="fixed", nlist=nlist, nprobe=auto_nprobe(nlist))
        index = VectorIndex(INDEX_DIM, metric="ip", device=dev, **options)
        index.add(vectors)
        _sync(dev)
        t1 = time.perf_counter()
        index.search(queries, 10)
        _sync(dev)
        t2, cpu = time.perf_counter(), _cpu() - c0
        seconds = t2 - t0
        extra.update(build_seconds=round(t1 - t0, 4), search_seconds=round(t2 - t1, 4), dim=INDEX_DIM,
                     queries=INDEX_QUERIES, plan={"kind": plan.kind, "nlist": plan.nlist, "nprobe": plan.nprobe,
                                                  "pq_m": plan.pq_m}, backend=index.backend)
    elif stage == "lp_eval":
        from kgprobe.linkpred.evaluator import evaluate_model

        g = torch.Generator().manual_seed(0)
        ent = torch.randn(size, LP_DIM, generator=g)
        rel = torch.randn(LP_RELATIONS, LP_DIM, generator=g)
        m = int(round(4.5 * size))
        known = torch.stack([torch.randint(size, (m,), generator=g), torch.randint(LP_RELATIONS, (m,), generator=g),
                             torch.randint(size, (m,), generator=g)], dim=1)
        q = min(lp_queries, m)
        test = known[torch.randperm(m, generator=g)[:q]]
        inputs_s = time.perf_counter() - t_in
        t0, c0 = time.perf_counter(), _cpu()
        metrics = evaluate_model(ent, rel, "distmult", test, filter_triples=known, device=dev)
        _sync(dev)
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
        extra.update(queries=q, sides=2, dim=LP_DIM, known_triples=m, scorer="distmult",
                     mrr=round(metrics["both.realistic.mrr"], 6))
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return {"size": size, "seconds": round(seconds, 4), "cpu_seconds": round(cpu, 4),
            "inputs_seconds": round(inputs_s, 3), **extra}


def child(stage: str, sizes: list[int], *, device: str, lp_queries: int, repeats: int = 1) -> None:
    """``--one``: measure ``stage`` at each of ``sizes`` in turn, a JSON line per size on stdout
    (with ``repeats`` > 1 the fastest of that many runs, every time kept in ``all_seconds``)."""
    import torch  # noqa: F401  (the imports every stage pays, before the baseline)

    import kgprobe.kg.graph  # noqa: F401

    baseline = _maxrss_bytes()
    for size in sizes:
        runs = []
        for _ in range(max(1, repeats)):
            with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
                runs.append(measure_one(stage, size, device=device, lp_queries=lp_queries, tmp=Path(tmp)))
        point = min(runs, key=lambda r: r["seconds"])
        if len(runs) > 1:
            point.update(all_seconds=[r["seconds"] for r in runs], all_cpu_seconds=[r["cpu_seconds"] for r in runs])
        point.update(peak_rss_bytes=_maxrss_bytes(), baseline_rss_bytes=baseline)
        print("RESULT " + json.dumps(point), flush=True)


# --------------------------------------------------------------------------- the parent
def fit_exponent(sizes: list[float], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(size); None with fewer than 2 usable points."""
    pairs = [(math.log(s), math.log(v)) for s, v in zip(sizes, values) if s > 0 and v > 0]
    if len(pairs) < 2:
        return None
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in pairs) / sxx


def _segments(sizes: list[float], values: list[float]) -> list[float | None]:
    return [round(e, 3) if (e := fit_exponent(sizes[i:i + 2], values[i:i + 2])) is not None else None
            for i in range(len(sizes) - 1)]


def summarize(name: str, points: list[dict], *, isolation: str) -> dict:
    spec = STAGES[name]
    ok = [p for p in points if "seconds" in p]
    sizes = [p["size"] for p in ok]
    seconds = [p["seconds"] for p in ok]
    # the memory the stage needs: the peak above the child's resident set after its imports (>= 1 MiB)
    memory = [max(p["peak_rss_bytes"] - p["baseline_rss_bytes"], 2 ** 20) for p in ok]
    cpu = [p.get("cpu_seconds") for p in ok]
    t_exp, m_exp = fit_exponent(sizes, seconds), fit_exponent(sizes, memory)
    # a stage linear only from some size on is judged on the points from there (at least two)
    start = next((i for i, n in enumerate(sizes) if n >= spec.get("linear_from", 0)), len(sizes))
    judged = fit_exponent(sizes[start:], seconds[start:]) if len(sizes) - start >= 2 else t_exp
    c_exp = fit_exponent(sizes, cpu) if cpu and all(c is not None for c in cpu) else None
    record = {"unit": spec["unit"], "what": spec["what"], "expected": spec.get("expected", "linear"),
              "isolation": isolation,
              "points": points,
              "time_exponent": None if t_exp is None else round(t_exp, 3),
              "memory_exponent": None if m_exp is None else round(m_exp, 3),
              "cpu_time_exponent": None if c_exp is None else round(c_exp, 3),
              "time_segment_exponents": _segments(sizes, seconds),
              "cpu_time_segment_exponents": _segments(sizes, cpu) if c_exp is not None else None,
              "memory_segment_exponents": _segments(sizes, memory),
              "superlinear": bool(judged is not None and judged > LINEAR_LIMIT),
              "memory_superlinear": bool(m_exp is not None and m_exp > LINEAR_LIMIT),
              "cpu_superlinear": bool(c_exp is not None and c_exp > LINEAR_LIMIT)}
    if "linear_from" in spec:
        record["time_exponent_from"] = {"size": spec["linear_from"],
                                        "exponent": None if judged is None else round(judged, 3)}
    if name == "embed":
        record["encoder"] = TINY_ENCODER
    if name == "lp_eval":
        record["note"] = "linear in candidates at a fixed number of queries (the total work is queries x candidates)"
    if len(ok) and ok[-1]["size"] > 0:
        record["seconds_per_unit_at_largest"] = ok[-1]["seconds"] / ok[-1]["size"]
        record["bytes_per_unit_at_largest"] = memory[-1] / ok[-1]["size"]
    return record


def run_stage(name: str, sizes: list[int], *, device: str, lp_queries: int, per_size: bool, timeout: float,
              log, repeats: int = 1) -> list[dict]:
    """Measure ``name`` at ``sizes`` in child processes (one per size, or one for all); the points."""
    groups = [[s] for s in sizes] if per_size else [sizes]
    points: list[dict] = []
    for group in groups:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--sizes", ",".join(map(str, group)),
               "--device", device, "--lp-queries", str(lp_queries), "--repeats", str(repeats)]
        t0 = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "TQDM_DISABLE": "1"})
        except subprocess.TimeoutExpired:
            points.append({"size": group[0], "error": f"timed out after {timeout:.0f} s"})
            log(f"{name} {group}: timed out after {timeout:.0f} s; larger sizes skipped")
            break
        got = [json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        for point in got:
            point["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            log(f"{name} n={point['size']:,}: {point['seconds']:.3f} s, peak RSS "
                f"{point['peak_rss_bytes'] / 2**20:,.0f} MiB (child wall {time.perf_counter() - t0:.1f} s)")
        points.extend(got)
        if done.returncode != 0 or len(got) < len(group):
            tail = (done.stderr or "").strip().splitlines()[-3:]
            points.append({"size": group[len(got)] if len(got) < len(group) else group[-1],
                           "error": f"exit {done.returncode}: " + " | ".join(tail)})
            log(f"{name} {group}: failed (exit {done.returncode}): {' | '.join(tail)}")
            break
    return points


def machine_key(machine: dict, device: str) -> str:
    return "gpu:" + str(machine.get("device_name")) if device.startswith("cuda") else "cpu"


def merge_into(record: dict | None, machines: dict) -> dict:
    """``record`` (None: new) with each machine's stages replaced by those in ``machines``."""
    record = record or {"benchmark": "scaling", "script": "eval/bench_scaling.py", "machines": {}}
    for key, run in machines.items():
        mine = record["machines"].setdefault(key, {"machine": run["machine"], "stages": {}})
        mine["machine"] = run["machine"]
        mine["stages"].update(run["stages"])
        for k, v in run.items():
            if k not in ("machine", "stages"):
                mine[k] = v
        flagged = [n for n, s in mine["stages"].items() if s.get("superlinear")]
        mine["superlinear_stages"] = flagged
    return record


def plot(record: dict, path: Path, title_file: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for key, run in record["machines"].items():
        style = "-" if key == "cpu" else "--"
        for name, stage in run["stages"].items():
            ok = [p for p in stage["points"] if "seconds" in p]
            if not ok:
                continue
            xs = [p["size"] for p in ok]
            mem = [max(p["peak_rss_bytes"] - p["baseline_rss_bytes"], 2 ** 20) / 2 ** 20 for p in ok]
            tag = f"{name} [{key}]" if len(record["machines"]) > 1 else name
            since = stage.get("time_exponent_from")
            growth = f"n^{stage['time_exponent']}" + (
                f" (n^{since['exponent']} from {since['size']:,})" if since else "")
            line, = axes[0].loglog(xs, [p["seconds"] for p in ok], style, marker="o", label=f"{tag}: {growth}")
            axes[1].loglog(xs, mem, style, marker="o", color=line.get_color(),
                           label=f"{tag}: n^{stage['memory_exponent']}")
    axes[0].set_ylabel("seconds (the stage alone)")
    axes[1].set_ylabel("peak RSS above the child's imports (MiB)")
    for ax in axes:
        ax.set_xlabel("size: entities (KG stages, embed), vectors (index), candidates (lp_eval)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("time")
    axes[1].set_title("memory")
    machines = "; ".join(f"{k}: {r['machine'].get('cpu_model')} x{r['machine'].get('cpu_count')}"
                         if k == "cpu" else f"{k}" for k, r in record["machines"].items())
    fig.suptitle(f"{title_file}: cost against size, log-log ({machines})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", action="append", choices=sorted(STAGES), default=[],
                    help="measure this stage (repeatable; default all)")
    ap.add_argument("--sizes", default=None, help="comma-separated sizes (with one --stage, or with --one)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one child per stage: seconds (the test)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, auto: for embed, index and lp_eval")
    ap.add_argument("--lp-queries", type=int, default=2000, help="test triples of lp_eval (default 2000)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per child process (default 900)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs per (stage, size) in its child, the fastest kept (default 1; on a shared machine 3)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--plot", type=Path, default=None,
                    help=f"write the figure here (default {_display(DEFAULT_PLOT)} unless --quick)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--merge", type=Path, action="append", default=[],
                    help="merge another run's result file (e.g. a GPU run) into --out (repeatable)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.one:
        child(args.one, [int(s) for s in args.sizes.split(",")], device=args.device, lp_queries=args.lp_queries,
              repeats=args.repeats)
        return None

    from kgprobe.atomic import write_json
    from machine import machine_info  # eval/machine.py

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    record = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else None
    for file in args.merge:
        other = json.loads(file.read_text(encoding="utf-8"))
        record = merge_into(record, other["machines"] if "machines" in other else
                            {machine_key(other["machine"], other["machine"].get("device", "cpu")): other})
        log(f"merged {file}")
    stages = args.stage or ([] if args.merge else list(STAGES))
    if args.sizes and len(stages) != 1:
        ap.error("--sizes needs exactly one --stage")
    if stages:
        from kgprobe.models.device import resolve_device

        device = resolve_device(args.device)
        machine = machine_info(device)
        run = {"machine": machine, "stages": {}, "quick": args.quick, "lp_queries": args.lp_queries,
               "repeats": args.repeats,
               "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "note": "timings are wall clock on a machine shared with other jobs: see each point's "
                       "load_average_after and machine.load_average_at_start"}
        for name in stages:
            sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes else
                     STAGES[name]["quick" if args.quick else "sizes"])
            t0 = time.perf_counter()
            points = run_stage(name, sizes, device=str(device), lp_queries=min(args.lp_queries, 200) if args.quick
                               else args.lp_queries, per_size=not args.quick, timeout=args.timeout, log=log,
                               repeats=args.repeats)
            isolation = "one child process per stage, sizes in turn (--quick)" if args.quick else \
                "one child process per measurement"
            run["stages"][name] = summarize(name, points, isolation=isolation)
            run["stages"][name]["wall_seconds_with_children"] = round(time.perf_counter() - t0, 1)
            s = run["stages"][name]
            log(f"== {name}: time exponent {s['time_exponent']} (cpu {s['cpu_time_exponent']}), "
                f"memory exponent {s['memory_exponent']}"
                + ("  ** SUPERLINEAR **" if s["superlinear"] else ""))
            # written after every stage, so a run cut short keeps what it finished
            record = merge_into(record, {machine_key(machine, str(device)): run})
            write_json(args.out, record)
    if record is None:
        ap.error("nothing to do")
    write_json(args.out, record)
    if not args.no_plot and (args.plot is not None or not args.quick):
        plot_path = args.plot or DEFAULT_PLOT
        plot(record, plot_path, _display(args.out))
        log(f"wrote {plot_path}")
    log(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
