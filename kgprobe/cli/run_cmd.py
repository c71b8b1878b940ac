"""``kgprobe run PIPELINE.yaml``: validate the whole config, then run it."""
from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="Only validate the pipeline (no model or data is loaded).")
@click.option("--out-dir", type=click.Path(path_type=Path), default=None,
              help="Override the pipeline's out_dir.")
@click.option("--device", default=None, help="Override the pipeline's device (auto, cpu, cuda, cuda:N).")
def run(pipeline: Path, check: bool, out_dir: Path | None, device: str | None) -> None:
    """Run the pipeline described by a YAML file.

    The file is fully validated (options, model names, datasets, references between steps)
    before any step starts; errors name the file and line. See pipelines/ for examples.
    """
    from kgprobe.pipeline import load_pipeline, run_pipeline

    pipe = load_pipeline(pipeline, out_dir=out_dir)
    if device is not None:
        from kgprobe.models import resolve_device

        resolve_device(device)
        pipe.config.device = device
    if check:
        click.echo(f"{pipeline}: OK, {len(pipe.steps)} steps: " + ", ".join(s.type for s in pipe.steps))
        return
    run_pipeline(pipe, echo=click.echo)
