"""Option types shared by the commands."""
from __future__ import annotations

import os
from pathlib import Path

import click

from kgprobe.precision import DEVICE_MAP_CHOICES, DTYPE_CHOICES


class OutputPath(click.Path):
    """An output file or directory (``--out``, ``--out-dir``, a convert TARGET).

    An empty value (an unset shell variable: ``--out "$DIR"``) is refused rather than read as the
    current directory; ``.`` and ``..`` become absolute, so that the output has a name to write
    its temporary next to (see :mod:`kgprobe.atomic`).
    """

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("the path is empty", param, ctx)
        path = super().convert(value, param, ctx)
        if Path(path).name in ("", ".", ".."):
            path = Path(os.path.abspath(path))
            if not path.name:
                self.fail(f"{value!r} is the file system root, not an output path", param, ctx)
        return path


#: ``--seed``: what every consumer takes (torch, numpy's legacy seeding below 2**32, faiss k-means a C int)
SEED = click.IntRange(0, 2**31 - 1)

#: a positive count that faiss takes as a C int (index and k-means parameters, batch sizes)
COUNT = click.IntRange(1, 2**31 - 1)

class CountOr(click.ParamType):
    """A positive count, or one word that stands for a choice the library makes (``auto``, ``all``)."""

    def __init__(self, word: str):
        self.word = word
        self.name = f"N|{word}"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or str(value).strip().lower() == self.word:
            return self.word if isinstance(value, str) else value
        try:
            return COUNT.convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value} is not a positive integer or {self.word}", param, ctx)


#: ``--batch-size``: a positive count, or auto (planned from free memory; see kgprobe.models.memory)
BATCH_SIZE = CountOr("auto")
#: ``--alternatives`` of ``probe facts``: k, or all (every other object of the relation)
ALTERNATIVES = CountOr("all")

#: ``--dtype`` of the commands that load a causal or masked LM (kgprobe.models.resolve_dtype)
DTYPE = click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="auto",
                     show_default=True, help="The LM's weights: auto is bf16 on a GPU (fp16 where the GPU has no "
                                             "bf16), fp32 on CPU.")

#: ``--device-map`` of the same commands: none, or auto (accelerate spreads the layers; ``device_map=None`` / "auto")
DEVICE_MAP = click.option("--device-map", type=click.Choice(DEVICE_MAP_CHOICES), default="none", show_default=True,
                          callback=lambda ctx, param, value: None if value == "none" else value,
                          help="auto: spread the LM's layers over the visible GPUs (then CPU memory), for LMs too "
                               "large for one GPU; none: the whole LM on --device.")


def options_model(cls, *, renames: dict[str, str] | None = None, **values):
    """``cls(**values)`` (a pydantic options model), with a rejected value as one ``KgprobeError``
    line naming the command-line option: ``--epochs: Input should be ... (got 0)``. ``renames``
    maps a field to its option where the two are spelled differently."""
    from pydantic import ValidationError

    from kgprobe.errors import KgprobeError

    try:
        return cls(**values)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(x) for x in first["loc"]]
        renamed = (renames or {}).get(loc[0]) if loc else None
        name = renamed or ".".join(loc).replace("_", "-")
        raise KgprobeError(f"--{name}: {first['msg']} (got {first.get('input')!r})") from None


# ------------------------------------------------------------------ options from a pydantic model
def _click_type(annotation):
    """The click type of a field's annotation: int, float, str, a ``Path``, a ``Literal`` (a
    choice); ``X | None`` as ``X``."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _click_type(rest[0])
    if origin is typing.Literal:
        return click.Choice([str(a) for a in args])
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return click.Path(path_type=Path)
    known = {int: click.INT, float: click.FLOAT, str: click.STRING}
    if annotation in known:
        return known[annotation]
    raise TypeError(f"no command-line type for {annotation!r}")


def _is_dict(annotation) -> bool:
    import typing

    return annotation is dict or typing.get_origin(annotation) is dict


def option_names(model, fields) -> dict[str, str]:
    """``{field: option}`` (without the dashes) of the options :func:`model_options` makes: the
    field with dashes for underscores; a dict field's in the singular (``loss_options`` ->
    ``loss-option``). Give it to :func:`options_model` as ``renames``."""
    names = {}
    for name in fields:
        option = name[:-1] if _is_dict(model.model_fields[name].annotation) and name.endswith("s") else name
        names[name] = option.replace("_", "-")
    return names


def model_options(model, fields, *, types: dict | None = None):
    """A decorator adding one click option per field of the pydantic ``model`` named in ``fields``,
    in that order: the name from :func:`option_names`, the field's ``description`` as help, its
    default (shown), required when it has none; the type from the annotation (see
    :func:`_click_type`) unless ``types`` gives one. A bool field is an ``--x/--no-x`` pair; a dict
    field a repeatable ``--x-option KEY=VALUE`` whose strings are the caller's to parse. The command
    function receives every value under the field's name."""
    names = option_names(model, fields)
    decorators = []
    for name in fields:
        info, option = model.model_fields[name], names[name]
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        common = {"help": info.description}
        if _is_dict(info.annotation):
            decorators.append(click.option(f"--{option}", name, multiple=True, metavar="KEY=VALUE", **common))
        elif info.annotation is bool:
            decorators.append(click.option(f"--{option}/--no-{option}", name, default=default, show_default=True,
                                           **common))
        else:
            kind = (types or {}).get(name) or _click_type(info.annotation)
            decorators.append(click.option(f"--{option}", name, type=kind, default=default,
                                           required=info.is_required(), show_default=default is not None, **common))

    def decorate(function):
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return decorate


def settings_option(model, fields, *, option: str = "--set"):
    """A repeatable ``--set KEY=VALUE`` for the fields of ``model`` that have no option of their
    own; its help lists each with its default and description. The command function receives the
    strings as ``settings``; :func:`parse_settings` reads them."""
    described = " ".join(f"{name} ({model.model_fields[name].get_default(call_default_factory=True)}): "
                         f"{model.model_fields[name].description}" for name in fields)
    return click.option(option, "settings", multiple=True, metavar="KEY=VALUE",
                        help=f"Any other setting, repeatable. {described}")


def parse_settings(items, model, fields, *, option: str = "--set") -> dict:
    """``{field: text}`` of ``KEY=VALUE`` strings for the settable ``fields`` of ``model`` (``none``
    or ``null`` is None; the model converts the rest). A key that is not settable is one
    ``KgprobeError`` line: unknown, or a field with an option of its own."""
    from kgprobe.errors import KgprobeError

    values: dict = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise KgprobeError(f"{option} wants KEY=VALUE, got {item!r}")
        if key not in fields:
            if key in model.model_fields:
                raise KgprobeError(f"{option} {key}: it has an option of its own, "
                                   f"--{option_names(model, [key])[key]}")
            raise KgprobeError(f"{option}: unknown setting {key!r}; known: {', '.join(sorted(fields))}")
        values[key] = None if raw.lower() in ("none", "null") else raw
    return values
