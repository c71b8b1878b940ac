"""``kgprobe linkpred train|evaluate|encode``: BLP-style inductive link prediction."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import click

from kgprobe.cli.options import (
    SEED,
    OutputPath,
    model_options,
    option_names,
    options_model,
    parse_settings,
    settings_option,
)
from kgprobe.errors import KgprobeError
from kgprobe.stopping import Stopped


class _LinkpredGroup(click.Group):
    """``kgprobe linkpred``; its ``train`` command is made on first use, from the configuration
    model (which imports pydantic and torch: not something every ``kgprobe`` call should wait for)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "train"])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return _train_command() if name == "train" else super().get_command(ctx, name)


@click.group(cls=_LinkpredGroup)
def linkpred() -> None:
    """Inductive link prediction with text encoders (BLP, LEMON negatives).

    \b
    Make a split:  kgprobe data build wordnet --inductive --out data/wn
    Train:         kgprobe linkpred train --data data/wn --out runs/blp
    Evaluate:      kgprobe linkpred evaluate runs/blp --data data/wn
    New entities:  kgprobe linkpred encode runs/blp new.tsv --out runs/blp/new
    """


def _train_fields() -> tuple[list[str], list[str]]:
    """The fields of the configuration with an option of their own (``--data`` and ``--out``
    first, then the model's order) and those set with ``--set KEY=VALUE``."""
    from kgprobe.linkpred.config import LinkPredConfig

    advanced = list(LinkPredConfig.ADVANCED)
    first = ["data", "out"]
    return first + [f for f in LinkPredConfig.model_fields if f not in first and f not in advanced], advanced


@functools.cache
def _train_command() -> click.Command:
    """``kgprobe linkpred train``: its options made from
    :class:`~kgprobe.linkpred.config.LinkPredConfig`, the one configuration of a training run."""
    from kgprobe.linkpred.config import LinkPredConfig

    flags, advanced = _train_fields()
    options = model_options(LinkPredConfig, flags, types={"data": click.Path(path_type=Path), "out": OutputPath(),
                                                          "seed": SEED})
    return click.command("train", cls=_TrainCommand)(
        options(settings_option(LinkPredConfig, advanced)(_NPROC(_QUIET(_OVERWRITE(train))))))


class _TrainCommand(click.Command):
    """Keeps the arguments as typed (``ctx.meta["argv"]``): ``--nproc`` starts the same command
    again under torchrun."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["argv"] = list(args)
        return super().parse_args(ctx, args)


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


_NPROC = click.option("--nproc", type=click.IntRange(min=1), default=None,
                      help="Train with N processes on this machine, one per GPU (CPU: one per core at most), "
                           "gradients all-reduced and in-batch negatives gathered from all of them; --batch-size "
                           "is each one's. Starts this command again under torchrun (torch.distributed.run "
                           "--standalone). Under torchrun itself, leave it out.")
_QUIET = click.option("--quiet", is_flag=True, help="No progress bars.")
_OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace whatever --out holds (without it, --out must "
                                                            "be new, empty or a run of this command).")


def train(nproc: int | None, quiet: bool, overwrite: bool, settings: tuple[str, ...], **options: Any) -> None:
    """Train a link-prediction model on an inductive split and evaluate it on the test set.

    \b
    Validation ranks against train + valid entities, test against all entities (BLP);
    the best validation epoch (both.realistic.mrr) is kept and its test metrics written
    to OUT/test_metrics.json. Re-running with the same --out resumes.

    \b
    Several GPUs:  kgprobe linkpred train --nproc 4 ...
    or:            torchrun --nproc-per-node 4 -m kgprobe linkpred train ...
    """
    from kgprobe.linkpred import distributed
    from kgprobe.linkpred.config import LinkPredConfig, parse_key_values
    from kgprobe.linkpred.run import check_names, run_training
    from kgprobe.models import resolve_device

    flags, advanced = _train_fields()
    names = option_names(LinkPredConfig, flags)
    check_names(encoder=options["encoder"], scorer=options["scorer"], loss=options["loss"],
                sampler=options["sampler"])
    resolve_device(options["device"])
    # a repeatable option (a dict field: --loss-option KEY=VALUE ...) comes as a tuple of strings
    values = {name: parse_key_values(value, f"--{names[name]}") if isinstance(value, tuple) else value
              for name, value in options.items()}
    values.update(parse_settings(settings, LinkPredConfig, advanced))
    cfg = options_model(LinkPredConfig, renames={**names, **{name: f"set {name}" for name in advanced}}, **values)
    if nproc is not None and (nproc > 1 or distributed.launched()):
        _start_or_join(nproc, cfg, overwrite)
    rank = distributed.launched_rank()
    try:
        summary = run_training(cfg, progress=not quiet, echo=lambda m: click.echo(m, err=True), overwrite=overwrite)
    except (KgprobeError, Stopped) as err:
        if rank > 0:  # rank 0 says it (every rank meets the same error, or the same stop)
            sys.exit(getattr(err, "exit_code", 2))
        raise
    except Exception as err:
        if not (distributed.launched() and distributed.lost_peers(err)):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        click.echo(f"kgprobe: error: process {rank} lost the other processes of the run ({first[:200]})", err=True)
        sys.exit(1)
    if rank == 0:
        click.echo(json.dumps(summary, indent=2))


def _start_or_join(nproc: int, cfg: Any, overwrite: bool) -> None:
    """``--nproc N``: outside torchrun, check everything (nothing is written), then start this
    command under torchrun and exit with its code; under torchrun, N must be what it started."""
    import os

    from kgprobe.linkpred import distributed
    from kgprobe.linkpred.run import preflight

    if distributed.launched():
        started = os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE"))
        if str(nproc) != started:
            raise KgprobeError(f"--nproc {nproc}, but torchrun started {started} processes here: leave --nproc "
                               "out under torchrun")
        return
    from kgprobe.models import resolve_device

    distributed.check_nproc(nproc, resolve_device(cfg.device))
    preflight(cfg, overwrite=overwrite)
    argv = ["linkpred", "train", *_without_nproc(click.get_current_context().meta["argv"])]
    sys.exit(distributed.launch(nproc, argv))


@linkpred.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--data", "data", type=click.Path(path_type=Path), required=True,
              help="The inductive split directory the run was trained on.")
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def evaluate(run_dir: Path, data: Path, split: str, device: str) -> None:
    """Print filtered rank metrics (JSON) of the best model in RUN_DIR on a split.

    Keys look like both.realistic.mrr, head.realistic.hits_at_10, ...
    """
    from kgprobe.linkpred.run import evaluate_run

    click.echo(json.dumps(evaluate_run(run_dir, data, split=split, device=device), indent=2))


@linkpred.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("texts", type=click.Path(path_type=Path))
@click.option("--out", type=OutputPath(), required=True,
              help="Directory to write embeddings.npy and ids.txt to.")
@click.option("--neighbors", "neighbors", type=click.Path(path_type=Path), default=None,
              help="A KG (file or directory): print its entities nearest to every new one.")
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="Neighbours to print.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--overwrite", is_flag=True,
              help="Replace whatever --out holds (without it, --out must be new, empty or an earlier `encode` output).")
def encode(run_dir: Path, texts: Path, out: Path, neighbors: Path | None, k: int, device: str,
           overwrite: bool) -> None:
    """Embed unseen entities from TEXTS (id<TAB>text lines) with the trained encoder of RUN_DIR.

    Writes OUT/embeddings.npy (one row per line, float32) and OUT/ids.txt.
    """
    from kgprobe.linkpred.run import encode_file

    result = encode_file(run_dir, texts, out, device=device, neighbors=neighbors, k=k, overwrite=overwrite)
    click.echo(f"wrote {result['shape'][0]} x {result['shape'][1]} embeddings to {out}", err=True)
    for entity, near in result.get("neighbors", {}).items():
        click.echo(f"{entity}\t" + "\t".join(f"{e} ({s:.3f})" for e, s in near))
