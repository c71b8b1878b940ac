"""Benchmark: what kgprobe's LM stages cost at 1B and 7B parameters, against the bare compute.

Llama-shaped models are built from a ``LlamaConfig`` on the device itself (random weights, bf16
on a GPU: a random model costs the same per token as a trained one, and no weights travel):

* ``1b``: hidden 2048, 16 layers, 32 heads, 8 kv heads, intermediate 8192;
* ``7b``: hidden 4096, 32 layers, 32 heads (32 kv heads), intermediate 11008;

with the vocabulary of SmolLM2's tokenizer (49152 ids: the config's vocabulary is set to the
tokenizer's length so every id is valid; the parameter counts in the JSON include it).

Parts (``--parts``, default all), each with a time budget, its error recorded instead of raised:

* ``harvest``: efficiency at 1B as eval/bench_harvest.py measures it: tokens/s of
  ``kgprobe harvest capital_of.yaml --top-k 100`` (weighting + search + rescoring) over tokens/s of
  plain batched forward passes (64 x 16) of the same model in the same run (target >= 0.5);
* ``qa``: ``kgprobe.probe.qa.score_qa`` on N synthetic cloze items with the few-shot prefix, at 1B
  and 7B: items/s and tokens/s;
* ``unlearn``: one step of ``kgprobe.probe.unlearn.unlearn`` (gradient ascent, the first of
  ``kgprobe probe``'s default methods; AdamW on all parameters, batch 8) at 1B and 7B: peak
  memory (``torch.cuda.max_memory_allocated``; on a CPU the growth of the peak RSS);
* ``scan``: ``scan_value_vectors`` over every MLP value vector of the 7B shape (32 x 11008 =
  352k vectors x the vocabulary) against ``bare_matmul_seconds`` (target <= 1.5x), the timing
  of eval/bench_probe.py; ``--scan-layers N`` scans the first N layers and scales;
* ``linkpred``: ``kgprobe.linkpred.evaluate_model`` (DistMult, tail side, filtered) of 20k
  queries against 1M and 5M candidates at dim 384 against the matmuls of the same shapes
  alone (query blocks of the evaluator's size x all candidates, no full score matrix; bf16 on a
  GPU, both sides) (target <= 10x).

Results go to ``--out`` (default eval/results/lm_cost.json) under ``runs[MACHINE]`` (``cpu`` or
``gpu:NAME``, as eval/bench_scale.py keys them), rewritten atomically after every part; the other
machines' records and the parts not run now are kept. ``--add FILE`` merges the runs of a result
file written elsewhere (the GPU box's) into ``--out``.

    python eval/bench_lm_cost.py --quick                       # tiny shapes, a CPU smoke run (< 60 s)
    bash eval/gpu/lm_cost.sh                                    # on the GPU box -> $OUT/lm_cost.json
    python eval/bench_lm_cost.py --add /path/to/lm_cost.json    # merge the GPU run here
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

from kgprobe.atomic import write_json  # noqa: E402
from machine import machine_info  # noqa: E402

PARTS = ("harvest", "qa", "scan", "unlearn", "linkpred")  # the order they run in (one model build fewer)
SHAPES = {
    "1b": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
           "intermediate_size": 8192},
    "7b": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
           "intermediate_size": 11008},
}
# --quick: two tiny 2-layer Llamas stand in for 1b and 7b (same code paths, seconds on a CPU)
QUICK_SHAPES = {
    "1b": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "intermediate_size": 256},
    "7b": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
           "intermediate_size": 344},
}
BUDGETS = {"harvest": 150, "qa": 90, "unlearn": 90, "scan": 120, "linkpred": 120}
QUICK_BUDGETS = {**{name: 60 for name in PARTS}, "harvest": 120}
TARGETS = {"harvest": ("efficiency_ratio", ">=", 0.5), "scan": ("ratio_scan_over_matmul", "<=", 1.5),
           "linkpred": ("ratio_eval_over_matmul", "<=", 10.0)}
_START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[lm_cost {time.perf_counter() - _START:6.1f}s] {msg}", flush=True)


def machine_key(machine: dict) -> str:
    """``cpu`` or ``gpu:NAME`` (eval/bench_scale.py's keys)."""
    return "gpu:" + str(machine.get("device_name")) if machine.get("cuda") else "cpu"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ time budgets
class PartTimeout(BaseException):
    """Raised by SIGALRM when a part runs past its budget (a BaseException: no library's
    ``except Exception`` swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Interrupt the block after ``seconds`` (SIGALRM; main thread on Unix, else no limit)."""
    usable = hasattr(signal, "SIGALRM") and seconds > 0
    if not usable:
        yield
        return

    def fire(signum, frame):
        raise PartTimeout(f"time budget of {seconds:.0f} s exceeded")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Clock:
    """The seconds a part has left (its budget and the global deadline, whichever ends first)."""

    def __init__(self, budget: float):
        self.end = time.perf_counter() + budget

    def left(self) -> float:
        return self.end - time.perf_counter()


# ------------------------------------------------------------------ tokenizer and models
def load_tokenizer(path: str | None):
    """SmolLM2's tokenizer (padding on the left, pad = eos), from ``path`` or the installed model.

    Falls back to ``PreTrainedTokenizerFast(tokenizer.json)`` when this transformers cannot read
    the tokenizer_config.json (one written by another major version)."""
    from transformers import AutoTokenizer

    if path is None:
        from kgprobe.models import model_source

        path = model_source("smollm2-135m")
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as err:  # noqa: BLE001 - any failure: try the plain fast tokenizer
        from transformers import PreTrainedTokenizerFast

        log(f"AutoTokenizer failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            "using tokenizer.json directly")
        cfg_file = Path(path) / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
        special = {}
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            value = cfg.get(key)
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str):
                special[key] = value
        tok = PreTrainedTokenizerFast(tokenizer_file=str(Path(path) / "tokenizer.json"), **special)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok, str(path)


class Models:
    """Builds the Llama shapes from their configs, one model held at a time."""

    def __init__(self, shapes: dict, vocab: int, device: torch.device, dtype: torch.dtype):
        self.shapes, self.vocab, self.device, self.dtype = shapes, vocab, device, dtype
        self.size: str | None = None
        self.model = None
        self.info: dict[str, dict] = {}

    def order(self, sizes) -> list[str]:
        """``sizes`` with the one already built first (one build fewer)."""
        return sorted(sizes, key=lambda s: s != self.size)

    def get(self, size: str):
        if self.size == size:
            return self.model
        self.free()
        from transformers import AutoModelForCausalLM, LlamaConfig

        log(f"building the {size} Llama shape on {self.device} ({self.dtype})")
        cfg = LlamaConfig(vocab_size=self.vocab, max_position_embeddings=2048, tie_word_embeddings=False,
                          **self.shapes[size])
        torch.manual_seed(0)
        sync(self.device)
        t0 = time.perf_counter()
        with torch.device(self.device):  # parameters are made (and initialised) on the device
            try:
                model = AutoModelForCausalLM.from_config(cfg, dtype=self.dtype)
            except TypeError:  # older transformers
                model = AutoModelForCausalLM.from_config(cfg, torch_dtype=self.dtype)
        p = next(model.parameters())
        if p.dtype != self.dtype or p.device != self.device:  # a version that ignored the dtype keyword
            model = model.to(self.device, self.dtype)
        model.eval()
        sync(self.device)
        n = sum(p.numel() for p in model.parameters())
        self.info[size] = {"config": {**self.shapes[size], "vocab_size": self.vocab}, "parameters": n,
                           "parameters_billion": round(n / 1e9, 3), "dtype": str(self.dtype).replace("torch.", ""),
                           "weights_gb": round(sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9, 2),
                           "build_s": round(time.perf_counter() - t0, 2)}
        log(f"{size}: {n / 1e9:.3f}B parameters, built in {self.info[size]['build_s']} s")
        self.size, self.model = size, model
        return model

    def free(self) -> None:
        self.model, self.size = None, None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def full_shape_parameters(vocab: int) -> dict:
    """Parameter counts of the 1b and 7b shapes at ``vocab``, from models built on the meta device
    (no memory, no time: recorded by --quick runs too)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    out = {}
    for size, shape in SHAPES.items():
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=vocab, tie_word_embeddings=False, **shape))
        out[size] = sum(p.numel() for p in model.parameters())
    return out


# ------------------------------------------------------------------ synthetic QA items
_NAMES = ("Amber", "Basil", "Cedar", "Delta", "Ember", "Fjord", "Garnet", "Harbor", "Indigo", "Juniper", "Kestrel",
          "Lagoon", "Meadow", "Nimbus", "Orchid", "Pebble", "Quartz", "Raven", "Sierra", "Tundra", "Umber", "Violet",
          "Willow", "Yarrow", "Zephyr")
_TEMPLATES = (("The capital of {x} is", ("Paris", "Lima", "Oslo", "Nairobi", "Canberra", "Ottawa")),
              ("{x} is a town in the country of", ("France", "Peru", "Norway", "Kenya", "Australia", "Canada")),
              ("The official language of the republic of {x} is", ("French", "Spanish", "Norwegian", "Swahili")),
              ("The currency used in the island state of {x} is the", ("euro", "sol", "krone", "shilling", "dollar")),
              ("{x} lies on the continent of", ("Europe", "South America", "Africa", "Oceania", "North America")))


def synthetic_qa(n: int, seed: int = 0) -> list:
    """``n`` cloze items of 6-15 prompt tokens and 1-3 answer tokens (made-up places)."""
    from kgprobe.probe.concepts import QA

    rng = random.Random(seed)
    items = []
    for _ in range(n):
        prompt, answers = rng.choice(_TEMPLATES)
        place = " ".join(rng.choice(_NAMES) for _ in range(rng.randint(1, 3)))
        items.append(QA(prompt=prompt.format(x=place), answer=rng.choice(answers), source="synthetic"))
    return items


# ------------------------------------------------------------------ parts
def _relaxed_relation(path: Path, folder: Path) -> Path:
    """``path`` without the filters that a random model's words never pass (title case, stopwords,
    the LM-typed slot): its search then proposes candidates and the rescoring stage has work."""
    import yaml

    rel = yaml.safe_load(path.read_text(encoding="utf-8"))
    constraints = rel.get("constraints") or {}
    for key in ("capitalization", "stopwords", "types"):
        constraints.pop(key, None)
    constraints["stopwords"] = "none"
    rel["constraints"], rel["name"] = constraints, rel["name"] + "_relaxed"
    out = folder / (path.stem + "_relaxed.yaml")
    out.write_text(yaml.safe_dump(rel, sort_keys=False), encoding="utf-8")
    return out


def _one_harvest(relation: Path, model, tok, options, device, folder: Path) -> dict:
    from kgprobe.harvest.run import harvest

    run_dir = folder / ("run_" + relation.stem)
    start = time.perf_counter()
    rows = harvest(relation, run_dir, options=options, device=str(device), loaded_model=(model, tok),
                   echo=lambda s: None)
    wall = time.perf_counter() - start
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    t = run["timings"]
    lm_wall = t["weighting"] + t["search"] + t["rescore"]
    return {"relation": relation.stem, "harvest_tokens_per_s": round(run["lm"]["tokens"] / lm_wall, 1),
            "lm_share_of_wall": round(run["lm"]["seconds"] / lm_wall, 3),
            "lm_forward_passes": run["lm"]["forward_calls"], "lm_tokens": run["lm"]["tokens"],
            "tuples": len(rows), "candidates": run["candidates"], "timings_s": t, "harvest_wall_s": round(wall, 2),
            **({"batch_size": run["batch_size"]} if "batch_size" in run else {})}


def part_harvest(ctx: dict, clock: Clock) -> dict:
    """eval/bench_harvest.py's efficiency, on the 1b shape.

    A random model's words fail capital_of's filters, so its search can end with no candidates and
    the rescoring stage (most of a real harvest's LM work) would go unmeasured: then the relation
    is harvested again without those filters (``*_relaxed``) and that run's efficiency is the
    headline (both are recorded)."""
    from bench_harvest import raw_tokens_per_second
    from kgprobe.harvest.run import HarvestOptions

    models, quick = ctx["models"], ctx["quick"]
    model, tok = models.get("1b"), ctx["tokenizer"]
    raw = raw_tokens_per_second(model, len(tok))
    log(f"harvest: raw forward {raw:.0f} tokens/s (64 x 16)")
    # --quick: eval/scale_harvest.py's small search (seconds on a CPU); else kgprobe's defaults
    search = {"first_candidates": 16, "first_beam": 32, "branch": 4, "max_entity_tokens": 2} if quick else {}
    options = HarvestOptions(model="llama-1b-random", model_kind="causal-lm", top_k=100, search=search)
    relation = ROOT / "kg_data" / "relations" / "capital_of.yaml"
    out: dict = {"model": "1b", "search": search or "defaults", "top_k": 100,
                 "raw_forward_tokens_per_s": round(raw, 1), "raw_forward_shape": [64, 16], "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        run = _one_harvest(relation, model, tok, options, models.device, Path(tmp))
        run["efficiency_ratio"] = round(run["harvest_tokens_per_s"] / raw, 3)
        out["runs"].append(run)
        log(f"harvest {run['relation']}: {run['candidates']} candidates, efficiency {run['efficiency_ratio']}")
        if run["candidates"] < 20 and clock.left() < 2 * run["harvest_wall_s"]:
            out["relaxed_skipped"] = (f"capital_of gave {run['candidates']} candidates, but {clock.left():.0f} s "
                                      f"of the budget is too little for a second harvest")
        elif run["candidates"] < 20:
            run = _one_harvest(_relaxed_relation(relation, Path(tmp)), model, tok, options, models.device, Path(tmp))
            run["efficiency_ratio"] = round(run["harvest_tokens_per_s"] / raw, 3)
            out["runs"].append(run)
            log(f"harvest {run['relation']}: {run['candidates']} candidates, efficiency {run['efficiency_ratio']}")
    head = out["runs"][-1]
    out.update(relation=head["relation"], harvest_tokens_per_s=head["harvest_tokens_per_s"],
               efficiency_ratio=head["efficiency_ratio"], candidates=head["candidates"],
               note="random weights: the tuples are noise, only the cost is measured; efficiency_ratio is the "
                    "last run's (the relaxed relation's when capital_of left the rescoring without candidates)")
    return out


def part_qa(ctx: dict, clock: Clock) -> dict:
    from kgprobe.probe.concepts import FEW_SHOT
    from kgprobe.probe.qa import score_qa

    models, tok, n = ctx["models"], ctx["tokenizer"], ctx["args"].qa_items
    items = synthetic_qa(n)
    enc = [len(tok(q.prompt, add_special_tokens=False)["input_ids"]) +
           len(tok(" " + q.answer, add_special_tokens=False)["input_ids"]) for q in items]
    out: dict = {"items": n, "tokens": sum(enc), "few_shot_prefix": "kgprobe.probe.concepts.FEW_SHOT (cached once)",
                 "tokens_note": "prompt + answer tokens of the items; the shared few-shot prefix not counted",
                 "models": {}}
    for size in models.order(["1b", "7b"]):
        model = models.get(size)
        rows = []
        for batch in ctx["args"].qa_batch:
            score_qa(model, tok, items[:batch], batch_size=batch, few_shot=FEW_SHOT)  # warm-up
            sync(models.device)
            t0 = time.perf_counter()
            scores = score_qa(model, tok, items, batch_size=batch, few_shot=FEW_SHOT)
            sync(models.device)
            secs = time.perf_counter() - t0
            rows.append({"batch_size": batch, "seconds": round(secs, 3), "items_per_s": round(n / secs, 1),
                         "tokens_per_s": round(sum(enc) / secs, 1),
                         "finite_logprobs": bool(torch.isfinite(scores.logprob).all())})
            log(f"qa {size} batch {batch}: {n / secs:.1f} items/s, {sum(enc) / secs:.0f} tokens/s")
        out["models"][size] = {"runs": rows, "best_items_per_s": max(r["items_per_s"] for r in rows)}
    return out


def _peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def part_unlearn(ctx: dict, clock: Clock) -> dict:
    from kgprobe.probe.concepts import FEW_SHOT
    from kgprobe.probe.unlearn import unlearn

    models, tok, args = ctx["models"], ctx["tokenizer"], ctx["args"]
    items = synthetic_qa(32, seed=1)
    out: dict = {"method": args.unlearn_method, "steps": 1, "batch_size": 8, "optimizer": "adamw", "train": "all",
                 "few_shot_prefix": True, "models": {}}
    cuda = models.device.type == "cuda"
    out["peak_memory_source"] = ("torch.cuda.max_memory_allocated" if cuda else
                                 "peak RSS growth (VmHWM after - VmRSS before; /proc/self/clear_refs)")
    for size in models.order(["1b", "7b"]):
        model = models.get(size)
        if cuda:
            sync(models.device)
            torch.cuda.reset_peak_memory_stats(models.device)
            before = torch.cuda.memory_allocated(models.device)
        else:
            reset = _peak_rss_reset()
            before = (_rss_mb("VmRSS") or 0) * 2**20
        result = unlearn(model, tok, method=args.unlearn_method, forget=items[:16], retain=items[16:], steps=1,
                         batch_size=8, few_shot=FEW_SHOT)
        sync(models.device)
        if cuda:
            peak, peak_total = torch.cuda.max_memory_allocated(models.device) - before, \
                torch.cuda.max_memory_allocated(models.device)
        else:
            hwm = _rss_mb("VmHWM")
            peak = (hwm * 2**20 - before) if (hwm is not None and reset) else None
            peak_total = hwm * 2**20 if hwm is not None else None
        row = {"step_seconds": round(result["seconds"], 3), "n_trainable": result["n_trainable"],
               "loss": result["losses"][0] if result["losses"] else None,
               "memory_before_gb": round(before / 1e9, 3),
               "peak_memory_gb": None if peak_total is None else round(peak_total / 1e9, 3),
               "peak_growth_gb": None if peak is None else round(peak / 1e9, 3)}
        if cuda and size in models.info:
            row["peak_over_weights"] = (round(peak_total / 1e9 / models.info[size]["weights_gb"], 2)
                                        if peak_total and models.info[size]["weights_gb"] else None)
        out["models"][size] = row
        log(f"unlearn {size}: one step {row['step_seconds']} s, peak {row['peak_memory_gb']} GB")
    return out


def part_scan(ctx: dict, clock: Clock) -> dict:
    from bench_probe import time_scan

    models, args = ctx["models"], ctx["args"]
    model = models.get("7b")
    layers = model.model.layers
    total = len(layers)
    n = min(args.scan_layers or total, total)
    try:
        if n < total:  # the first n layers only; put back below
            model.model.layers, model.config.num_hidden_layers = layers[:n], n
        res = time_scan(model, k=args.scan_k, chunk=args.scan_chunk, repeats=2, device=models.device)
    finally:
        model.model.layers, model.config.num_hidden_layers = layers, total
    res = {"model": "7b", "layers_scanned": n, "layers": total, **res}
    scale = total / n
    res["full_scan_seconds"] = round(min(res["scan_seconds"]) * scale, 3)
    res["full_bare_matmul_seconds"] = round(min(res["bare_matmul_seconds"]) * scale, 3)
    res["scaled"] = n < total
    if n < total:
        res["note"] = f"{n} of {total} layers scanned; full-scan seconds scaled by {scale:.2f}"
    log(f"scan: {res['vectors']} vectors, scan {min(res['scan_seconds'])} s vs matmul "
        f"{min(res['bare_matmul_seconds'])} s = {res['ratio_scan_over_matmul']}x")
    return res


def _lp_one(n_cand: int, *, queries: int, dim: int, device: torch.device, dtype: torch.dtype, known_extra: int,
            seed: int = 0) -> dict:
    from kgprobe.linkpred.evaluator import evaluate_model

    n_rel = 100
    gen = torch.Generator(device=device).manual_seed(seed)
    ent = (torch.randn(n_cand, dim, generator=gen, device=device) / dim ** 0.5).to(dtype)
    rel = torch.randn(n_rel, dim, generator=gen, device=device).to(dtype)

    def triples(m: int) -> torch.Tensor:
        return torch.stack([torch.randint(n_cand, (m,), generator=gen, device=device),
                            torch.randint(n_rel, (m,), generator=gen, device=device),
                            torch.randint(n_cand, (m,), generator=gen, device=device)], dim=1)

    test, known = triples(queries), triples(known_extra)
    evaluate_model(ent, rel, "distmult", test[:64], filter_triples=known, sides=("tail",), device=device)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    metrics = evaluate_model(ent, rel, "distmult", test, filter_triples=known, sides=("tail",), device=device)
    sync(device)
    t_eval = time.perf_counter() - t0
    # the same products alone: the evaluator's query blocks (budget // candidates rows, at least 64
    # when the candidates are chunked) times the candidates in chunks of the same budget
    try:  # the evaluator's own block budget (it may plan it from free memory)
        from kgprobe.linkpred.evaluator import _default_budget

        budget = int(_default_budget(device))
    except ImportError:
        budget = (1 << 26) if device.type == "cuda" else (1 << 24)
    if n_cand * 16 <= budget:
        q_batch, chunk = max(1, budget // n_cand), n_cand
    else:
        q_batch, chunk = 64, max(1, budget // 64)
    q_batch = min(q_batch, queries)
    q = (ent[test[:, 0]] * rel[test[:, 1]])
    buf = torch.empty(q_batch, min(chunk, n_cand), device=device, dtype=dtype)

    def products() -> None:
        for i in range(0, queries, q_batch):
            block = q[i:i + q_batch]
            for s in range(0, n_cand, chunk):
                c = ent[s:s + chunk]
                torch.matmul(block, c.T, out=buf[:block.shape[0], :c.shape[0]])

    products()  # warm-up
    times = []
    for _ in range(2):
        sync(device)
        t0 = time.perf_counter()
        products()
        sync(device)
        times.append(time.perf_counter() - t0)
    t_mm = min(times)
    return {"candidates": n_cand, "queries": queries, "dim": dim, "dtype": str(dtype).replace("torch.", ""),
            "filter_triples": known_extra, "eval_seconds": round(t_eval, 4), "matmul_seconds": round(t_mm, 4),
            "ratio_eval_over_matmul": round(t_eval / t_mm, 3), "queries_per_s": round(queries / t_eval, 1),
            "matmul_block": [q_batch, min(chunk, n_cand)], "block_budget_elements": budget,
            "candidate_chunks": math.ceil(n_cand / chunk),
            "tflops_matmul": round(2 * queries * n_cand * dim / t_mm / 1e12, 2),
            "tail_realistic_mrr": metrics.get("tail.realistic.mrr")}


def part_linkpred(ctx: dict, clock: Clock) -> dict:
    args, device = ctx["args"], ctx["device"]
    ctx["models"].free()  # the GPU memory to the candidates
    dtype = ctx["models"].dtype  # the models' (auto: bf16 on a GPU, fp32 on a CPU)
    out: dict = {"scorer": "distmult", "sides": ["tail"], "filtered": True, "runs": {}, "skipped": {},
                 "what": "evaluate_model (filtered ranks) vs the bare query x candidate matmuls, same dtype"}
    last = None
    for n_cand in args.lp_candidates:
        need_gb = n_cand * args.lp_dim * (2 if dtype == torch.bfloat16 else 4) * 3 / 1e9
        if device.type == "cuda":
            free = torch.cuda.mem_get_info(device)[0] / 1e9
            if need_gb > 0.8 * free:
                out["skipped"][str(n_cand)] = f"needs ~{need_gb:.1f} GB, {free:.1f} GB free"
                continue
        if last is not None:  # time grows about linearly in the candidates
            guess = 1.5 * (last["eval_seconds"] * 2 + last["matmul_seconds"] * 4 + 2) * n_cand / last["candidates"]
            if guess > clock.left():
                out["skipped"][str(n_cand)] = f"estimated {guess:.0f} s, {clock.left():.0f} s of the budget left"
                log(f"linkpred: skipping {n_cand} candidates ({out['skipped'][str(n_cand)]})")
                continue
        row = _lp_one(n_cand, queries=args.lp_queries, dim=args.lp_dim, device=device, dtype=dtype,
                      known_extra=args.lp_known)
        out["runs"][str(n_cand)] = row
        last = row
        log(f"linkpred {args.lp_queries} x {n_cand}: eval {row['eval_seconds']} s, matmul {row['matmul_seconds']} s "
            f"= {row['ratio_eval_over_matmul']}x")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if out["runs"]:
        out["ratio_eval_over_matmul"] = max(r["ratio_eval_over_matmul"] for r in out["runs"].values())
    return out


PART_FNS = {"harvest": part_harvest, "qa": part_qa, "unlearn": part_unlearn, "scan": part_scan,
            "linkpred": part_linkpred}


def judge(name: str, result: dict) -> None:
    """Add ``target`` and ``meets_target`` where the part has one."""
    if name not in TARGETS:
        return
    key, op, bound = TARGETS[name]
    value = result.get(key)
    result["target"] = f"{key} {op} {bound}"
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    result["meets_target"] = bool(ok and (value >= bound if op == ">=" else value <= bound))


# ------------------------------------------------------------------ results file
def load_record(path: Path) -> dict:
    if path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(record, dict) and isinstance(record.get("runs"), dict):
                return record
        except ValueError:
            pass
    return {"benchmark": "lm_cost", "script": "eval/bench_lm_cost.py", "runs": {}}


def merge_run(record: dict, key: str, run: dict) -> dict:
    """``run`` into ``record['runs'][key]``: its parts replace those of the same name, others stay."""
    old = record["runs"].get(key) or {}
    parts = {**(old.get("parts") or {}), **(run.get("parts") or {})}
    models = {**(old.get("models") or {}), **(run.get("models") or {})}
    record["runs"][key] = {**old, **run, "parts": parts, "models": models}
    return record


def parse_list(kind):
    def parse(text: str):
        return [kind(float(x)) if kind is int else kind(x) for x in text.split(",") if x.strip()]
    return parse


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=parse_list(str), default=list(PARTS), help=f"comma list of {', '.join(PARTS)}")
    ap.add_argument("--quick", action="store_true", help="tiny 2-layer Llamas, 2k candidates: a CPU smoke run")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on a GPU, fp32 on a CPU), bf16, fp16, fp32")
    ap.add_argument("--tokenizer", default=None, help="folder with tokenizer.json (default: the installed SmolLM2)")
    ap.add_argument("--qa-items", type=int, default=None, help="default 2000 (quick: 48)")
    ap.add_argument("--qa-batch", type=parse_list(int), default=None, help="batch sizes (default 32,128; quick: 16)")
    ap.add_argument("--unlearn-method", default="gradient-ascent")
    ap.add_argument("--scan-layers", type=int, default=None, help="scan the first N layers and scale (default all)")
    ap.add_argument("--scan-k", type=int, default=50)
    ap.add_argument("--scan-chunk", type=int, default=4096)
    ap.add_argument("--lp-queries", type=int, default=None, help="default 20000 (quick: 1000)")
    ap.add_argument("--lp-candidates", type=parse_list(int), default=None, help="default 1e6,5e6 (quick: 2000)")
    ap.add_argument("--lp-dim", type=int, default=384)
    ap.add_argument("--lp-known", type=int, default=None, help="extra known triples to filter (default 100k; quick 5k)")
    ap.add_argument("--budget", action="append", default=[], metavar="PART=SECONDS", help="a part's time budget")
    ap.add_argument("--deadline-s", type=float, default=None, help="stop starting parts after this many seconds")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "lm_cost.json")
    ap.add_argument("--add", type=Path, action="append", default=[], help="merge this result file's runs; run nothing")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.add:
        record = load_record(args.out)
        for file in args.add:
            other = load_record(file)
            for key, run in other["runs"].items():
                record = merge_run(record, key, run)
                log(f"merged {key} from {file}")
        write_json(args.out, record)
        return record

    bad = [p for p in args.parts if p not in PARTS]
    if bad:
        ap.error(f"unknown part(s) {', '.join(bad)}; known: {', '.join(PARTS)}")
    q = args.quick
    args.qa_items = args.qa_items or (48 if q else 2000)
    args.qa_batch = args.qa_batch or ([16] if q else [32, 128])
    args.lp_queries = args.lp_queries or (1000 if q else 20000)
    args.lp_candidates = args.lp_candidates or ([2000] if q else [1_000_000, 5_000_000])
    args.lp_known = args.lp_known if args.lp_known is not None else (5000 if q else 100_000)
    budgets = dict(QUICK_BUDGETS if q else BUDGETS)
    for item in args.budget:
        name, _, secs = item.partition("=")
        if name not in PARTS:
            ap.error(f"--budget wants PART=SECONDS with PART one of {', '.join(PARTS)}")
        budgets[name] = float(secs)

    from kgprobe.models.device import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    machine = machine_info(device)
    key = machine_key(machine)
    tok, tok_path = load_tokenizer(args.tokenizer)
    models = Models(QUICK_SHAPES if q else SHAPES, len(tok), device, dtype)
    log(f"{key}: device {device}, dtype {dtype}, vocabulary {len(tok)} (tokenizer {tok_path}), parts {args.parts}")
    ctx = {"args": args, "device": device, "models": models, "tokenizer": tok, "quick": q}
    run = {"machine": machine, "quick": q, "dtype": str(dtype).replace("torch.", ""), "tokenizer_vocab": len(tok),
           "vocab_note": "config vocab = the SmolLM2 tokenizer's length (49152), so every token id is valid",
           "shapes": {k: v for k, v in (QUICK_SHAPES if q else SHAPES).items()},
           "budgets_s": budgets, "parts": {}, "models": {}}
    try:
        run["full_shape_parameters"] = full_shape_parameters(len(tok))
        log("parameters at this vocabulary: " + ", ".join(f"{k} {v / 1e9:.3f}B"
                                                           for k, v in run["full_shape_parameters"].items()))
    except Exception as err:  # noqa: BLE001 - a count, not a result
        run["full_shape_parameters"] = f"{type(err).__name__}: {err}"
    for name in PARTS:
        if name not in args.parts:
            continue
        budget = budgets[name]
        if args.deadline_s is not None:
            left = args.deadline_s - (time.perf_counter() - _START)
            if left < 10:
                run["parts"][name] = {"ok": False, "quick": q, "error": f"not started: {left:.0f} s left of "
                                      f"--deadline-s {args.deadline_s:.0f}"}
                log(f"{name}: not started (deadline)")
                record = merge_run(load_record(args.out), key, run)
                write_json(args.out, record)
                continue
            budget = min(budget, left)
        log(f"part {name} (budget {budget:.0f} s)")
        t0 = time.perf_counter()
        try:
            with time_limit(budget):
                result = PART_FNS[name](ctx, Clock(budget))
            result = {"ok": True, **result}
        except PartTimeout as err:
            result = {"ok": False, "error": f"PartTimeout: {err}"}
        except Exception as err:  # noqa: BLE001 - record it; the other parts still run
            import traceback

            result = {"ok": False, "error": f"{type(err).__name__}: {err}",
                      "traceback": traceback.format_exc(limit=6)[-2000:]}
        result["seconds"] = round(time.perf_counter() - t0, 2)
        result["budget_s"] = round(budget, 1)
        result["quick"] = q
        judge(name, result)
        run["parts"][name] = result
        run["models"] = dict(models.info)
        if not result["ok"]:
            log(f"part {name} FAILED: {result['error']}")
            models.free()  # a failed part may leave a model in any state
        else:
            log(f"part {name} done in {result['seconds']} s" +
                (f"; meets target: {result['meets_target']}" if "meets_target" in result else ""))
        if device.type == "cuda":
            run["max_memory_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
        record = merge_run(load_record(args.out), key, run)
        write_json(args.out, record)
    models.free()
    log(f"wrote {args.out} (runs[{key!r}])")
    summary = {n: {k: r.get(k) for k in ("ok", "efficiency_ratio", "ratio_scan_over_matmul", "ratio_eval_over_matmul",
                                          "meets_target", "error") if k in r}
               for n, r in run["parts"].items()}
    print(json.dumps(summary, indent=2), flush=True)
    return record


if __name__ == "__main__":
    main()
