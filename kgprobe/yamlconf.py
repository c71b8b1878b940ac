"""YAML (and JSON) config files validated by pydantic, with errors that point at a line.

``read_yaml(path)`` returns the data and its node tree; ``validate(model, data, path, root, loc)``
turns the first pydantic error into ``file:line: where.in.config: message``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from kgprobe.errors import KgprobeError

M = TypeVar("M", bound=BaseModel)


class _DuplicateKey(yaml.YAMLError):
    """A mapping key given twice: ``yaml.safe_load`` would silently keep the last value."""

    def __init__(self, message: str, line: int):
        super().__init__(message)
        self.message, self.line = message, line


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that rejects a key given twice and reports a bad typed scalar (``2024-13-45``,
    ``!!int x``) as a YAML error at its line, where PyYAML raises a bare ValueError."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            self._check_duplicates(node)
        return super().construct_mapping(node, deep=deep)

    def _check_duplicates(self, node: yaml.MappingNode) -> None:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # keys merged in with ``<<: *base`` may be overridden: that is the point
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                if key in first:
                    raise _DuplicateKey(f"key {key!r} is given twice (first on line {first[key]})", line)
                first[key] = line
            except TypeError:
                continue  # an unhashable key: construct_mapping reports it with its line

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, AttributeError, OverflowError) as err:
            what = f" {node.value!r}" if isinstance(node, yaml.ScalarNode) else ""
            why = f" ({err})" if isinstance(err, (ValueError, OverflowError)) else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"not a valid {node.tag.rsplit(':', 1)[-1]}{what}{why}", node.start_mark) from None


def _decode(path: Path) -> str:
    """The file's text; bytes that are not UTF-8 are an error at their line, not replaced silently."""
    if path.is_dir():
        raise KgprobeError("is a directory, expected a YAML file", path=path)
    if not path.exists():
        raise KgprobeError("no such file", path=path)
    if not path.is_file():
        raise KgprobeError("not a regular file, expected a YAML file", path=path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise KgprobeError(f"cannot read: {err.strerror or err}", path=path) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # worded as the KG readers word it (kgprobe.kg.formats.tsv), plus the offending byte
        line = data[: err.start].count(b"\n") + 1
        raise KgprobeError(f"not valid UTF-8 text (byte 0x{data[err.start]:02x}: {err.reason})",
                           path=path, line=line) from None


def read_yaml(path: str | Path) -> tuple[Any, yaml.Node | None]:
    """Parse a YAML (or JSON, a subset of YAML) file once: the data and its node tree (for lines).

    Syntax errors, keys given twice and unreadable values are one ``KgprobeError`` naming the line.
    """
    path = Path(path)
    text = _decode(path)
    loader = None
    try:
        loader = _Loader(text)  # checks for control characters already
        root = loader.get_single_node()
        return (None if root is None else loader.construct_document(root)), root
    except _DuplicateKey as err:
        raise KgprobeError(err.message, path=path, line=err.line) from None
    except yaml.reader.ReaderError as err:  # a control character: only a character offset is known
        line = text[: err.position].count("\n") + 1
        raise KgprobeError(f"invalid YAML: {str(err).splitlines()[0]}", path=path, line=line) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise KgprobeError(f"invalid YAML: {problem}", path=path,
                           line=None if mark is None else mark.line + 1) from None
    except RecursionError:
        raise KgprobeError("invalid YAML: nested too deeply", path=path) from None
    finally:
        if loader is not None:
            loader.dispose()


def yaml_line(node: yaml.Node | None, loc: tuple) -> int | None:
    """1-based line of the node at ``loc`` (or of the deepest existing parent)."""
    line = None if node is None else node.start_mark.line + 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            # YAML ``1:`` is an int key whose node value is the text "1"
            match = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(key)]
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


#: pydantic's range errors, said shortly: ``must be >= 1, got -5``
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}


def _is_union_tag(part) -> bool:
    """A part of a pydantic error location that names a member of a union type, not a key of the
    file (``constrained-int``, ``literal['auto']``, ``int``)."""
    return isinstance(part, str) and (not part.isidentifier() or part in ("int", "float", "str", "bool", "none"))


def _short(error: dict) -> str:
    """One error's message, said shortly (range errors as ``must be >= 1, got -5``)."""
    if error["type"] == "extra_forbidden":
        return "unknown option"
    if error["type"] in _BOUNDS:
        op, key = _BOUNDS[error["type"]]
        return f"must be {op} {error.get('ctx', {}).get(key)}, got {error['input']!r}"
    return error["msg"]


def _message(errors: list[dict]) -> tuple[str, tuple]:
    """The message and location of the first problem; a value that fits no member of a union type
    (``batch_size: Annotated[int, Field(ge=1)] | Literal["auto"]``) is said once, at its own key:
    the range it missed, or every form it could take."""
    first = errors[0]
    # (an unknown key's own name is the last part of its location, whatever it looks like)
    cut = None if first["type"] == "extra_forbidden" else \
        next((i for i, part in enumerate(first["loc"]) if _is_union_tag(part)), None)
    if cut is None:
        return _short(first), tuple(first["loc"])
    where = tuple(first["loc"][:cut])
    members = [e for e in errors if tuple(e["loc"][:cut]) == where and len(e["loc"]) > cut
               and _is_union_tag(e["loc"][cut])]
    bounds = [e for e in members if e["type"] in _BOUNDS]
    if bounds:  # the right kind of value, out of range
        return _short(bounds[0]), where
    forms = dict.fromkeys(re.split(r", (?:unable|got) ", e["msg"].removeprefix("Input should be "))[0]
                          for e in members)
    return f"should be {' or '.join(forms)}, got {first['input']!r}", where


def validate(model: type[M], data: Any, path: Path, root: yaml.Node | None, loc: tuple = ()) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        msg, where = _message(err.errors())
        raise config_error(msg, path, root, loc + where) from None
