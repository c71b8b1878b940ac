"""Run a validated pipeline step by step and record what happened in ``OUT_DIR/run.json``."""
from __future__ import annotations

import json
import time
from typing import Callable

import torch

from kgprobe.atomic import atomic_path
from kgprobe.models import device_name, resolve_device
from kgprobe.outdir import check_output_dir, open_output_dir
from kgprobe.pipeline.config import Pipeline
from kgprobe.pipeline.registry import RunContext
from kgprobe.pipeline.steps import STEPS
from kgprobe.seeding import seed_everything


def run_pipeline(pipeline: Pipeline, *, echo: Callable[[str], None] = print, overwrite: bool = False) -> RunContext:
    """Run every step in order. ``out_dir`` may be new, empty or an earlier pipeline run (continued);
    anything else is refused unless ``overwrite`` (see :mod:`kgprobe.outdir`)."""
    cfg = pipeline.config
    target = check_output_dir(cfg.out_dir, command="run", overwrite=overwrite, option="--out-dir")
    seed_everything(cfg.seed)
    ctx = RunContext(out_dir=cfg.out_dir, device=resolve_device(cfg.device), seed=cfg.seed, echo=echo)
    open_output_dir(target)
    timings = []
    start = time.perf_counter()
    for i, step in enumerate(pipeline.steps):
        echo(f"[{i + 1}/{len(pipeline.steps)}] {step.type}")
        t0 = time.perf_counter()
        STEPS[step.type].run(step, ctx)
        timings.append({"step": i, "type": step.type, "seconds": round(time.perf_counter() - t0, 3)})
    record = {
        "pipeline": str(pipeline.path),
        "config": json.loads(cfg.model_dump_json())
        | {"steps": [s.model_dump(mode="json", by_alias=True) for s in pipeline.steps]},
        "device": str(ctx.device),
        "device_name": device_name(ctx.device),
        "torch": torch.__version__,
        "timings": timings,
        "total_seconds": round(time.perf_counter() - start, 3),
        "results": ctx.results,
    }
    with atomic_path(cfg.out_dir / "run.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    echo(f"done in {record['total_seconds']:.1f}s; record in {cfg.out_dir / 'run.json'}")
    return ctx
