"""YAML (and JSON) config files validated by pydantic, with errors that point at a line.

``read_yaml(path)`` returns the data and its node tree; ``validate(model, data, path, root, loc)``
turns the first pydantic error into ``file:line: where.in.config: message``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from kgprobe.errors import KgprobeError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str | Path) -> tuple[Any, yaml.Node | None]:
    """Parse a YAML (or JSON, a subset of YAML) file; syntax errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise KgprobeError("no such file", path=path)
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise KgprobeError(f"invalid YAML: {problem}", path=path,
                           line=None if mark is None else mark.line + 1) from None


def yaml_line(node: yaml.Node | None, loc: tuple) -> int | None:
    """1-based line of the node at ``loc`` (or of the deepest existing parent)."""
    line = None if node is None else node.start_mark.line + 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == key]
            if not match:
                return line
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def format_loc(loc: tuple) -> str:
    """``("steps", 1, "model")`` -> ``steps[1].model``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def config_error(message: str, path: Path, root: yaml.Node | None, loc: tuple) -> KgprobeError:
    where = f"{format_loc(loc)}: " if loc else ""
    return KgprobeError(f"{where}{message}", path=path, line=yaml_line(root, loc))


def validate(model: type[M], data: Any, path: Path, root: yaml.Node | None, loc: tuple = ()) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        msg = "unknown option" if first["type"] == "extra_forbidden" else first["msg"]
        raise config_error(msg, path, root, loc + tuple(first["loc"])) from None
