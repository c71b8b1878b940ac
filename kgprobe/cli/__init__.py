"""``kgprobe`` command line: every user error is one line on stderr and exit code 2."""
from __future__ import annotations

import os
import sys

import click

from kgprobe.errors import KgprobeError
from kgprobe.stopping import Stopped


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="kgprobe")
def cli() -> None:
    """kgprobe: knowledge graphs and the knowledge inside language models.

    \b
    Offline defaults: causal LM `smollm2-135m`, sentence encoder `minilm-l6`.
    Caches live in $KGPROBE_HOME (default ~/.cache/kgprobe).
    """


def _register() -> None:
    from kgprobe.cli import data_cmd, harvest_cmd, index_cmd, kg_cmd, linkpred_cmd, models_cmd, probe_cmd, run_cmd
    from kgprobe.cli.serve_cmd import serve

    for command in (models_cmd.models, data_cmd.data, kg_cmd.kg, run_cmd.run, harvest_cmd.harvest,
                    harvest_cmd.harvest_eval, index_cmd.embed, index_cmd.neighbors, linkpred_cmd.linkpred,
                    probe_cmd.probe, serve):
        cli.add_command(command)


_register()


def _fail(message: str) -> None:
    click.echo(f"kgprobe: error: {message}", err=True)
    sys.exit(2)


def _os_error_line(err: OSError) -> str:
    """``PATH: reason``, naming the path the user gave rather than one of our temporaries."""
    from kgprobe.atomic import temporary_target

    def shown(name) -> str:
        path = str(name)
        target = temporary_target(path)
        return path if target is None else os.path.join(os.path.dirname(path), target)

    reason = err.strerror or str(err) or type(err).__name__
    names = [shown(n) for n in (err.filename, err.filename2) if n is not None]
    return f"cannot write or read {' -> '.join(names)}: {reason}" if names else reason


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        code = cli.main(args=argv, prog_name="kgprobe", standalone_mode=False)
    except KgprobeError as err:
        _fail(str(err))
    except click.exceptions.NoArgsIsHelpError as err:
        click.echo(err.ctx.get_help() if err.ctx else str(err))
        sys.exit(2)
    except click.UsageError as err:
        hint = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
        _fail(err.format_message().replace("\n", " ") + hint)
    except click.ClickException as err:
        _fail(err.format_message().replace("\n", " "))
    except Stopped as stop:
        click.echo(f"kgprobe: {stop}", err=True)
        sys.exit(stop.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("kgprobe: interrupted", err=True)
        sys.exit(130)
    except OSError as err:  # the file system said no (permissions, a full disk, a file where a folder must be)
        _fail(_os_error_line(err))
    sys.exit(code if isinstance(code, int) else 0)
