"""``kgprobe run PIPELINE.yaml``: validate the whole config, then run it."""
from __future__ import annotations

from pathlib import Path

import click

from kgprobe.cli.options import OutputPath


@click.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="Only validate the pipeline (no model or data is loaded).")
@click.option("--out-dir", type=OutputPath(), default=None,
              help="Override the pipeline's out_dir.")
@click.option("--device", default=None, help="Override the pipeline's device (auto, cpu, cuda, cuda:N).")
@click.option("--overwrite", is_flag=True,
              help="Replace whatever the out_dir holds (without it, it must be new, empty or an earlier run "
                   "of a pipeline, which is then continued: finished steps are reused).")
def run(pipeline: Path, check: bool, out_dir: Path | None, device: str | None, overwrite: bool) -> None:
    """Run the pipeline described by a YAML file.

    The file is fully validated (options, model names, datasets, references between steps)
    before any step starts; errors name the file and line. See pipelines/ for examples.
    """
    from kgprobe.outdir import check_output_dir
    from kgprobe.pipeline import load_pipeline, run_pipeline

    # a device this machine lacks is a warning when only checking (the file may be meant for a
    # GPU machine), an error when about to run here
    pipe = load_pipeline(pipeline, out_dir=out_dir, device=device, strict_device=not check)
    check_output_dir(pipe.config.out_dir, command="run", overwrite=overwrite, option="--out-dir")
    if check:
        click.echo(f"{pipeline}: OK, {len(pipe.steps)} steps: " + ", ".join(s.type for s in pipe.steps))
        return
    run_pipeline(pipe, echo=click.echo, overwrite=overwrite)
