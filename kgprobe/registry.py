"""Components resolved by name, PyKEEN style: one lookup and one constructor for every registry.

``Registry("scorer", Scorer, SCORERS).make("transe", p=1)`` returns an instance; an instance is
passed through, a class is constructed, a name is looked up. Unknown names and options are one
``KgprobeError`` line listing what is known.
"""
from __future__ import annotations

import inspect
from typing import Any, Generic, TypeVar

from kgprobe.errors import KgprobeError

T = TypeVar("T")


def accepted_options(cls: type) -> set[str]:
    """Keyword options of ``cls.__init__`` and of every base ``__init__`` it forwards ``**kwargs`` to."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        params = inspect.signature(init).parameters
        names |= {n for n, p in params.items()
                  if n != "self" and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    return names


class Registry(Generic[T]):
    def __init__(self, what: str, base: type[T], classes: dict[str, type[T]], *,
                 aliases: dict[str, str] | None = None, fold: bool = False):
        self.what, self.base, self.classes = what, base, classes
        self.aliases, self.fold = aliases or {}, fold

    def names(self) -> list[str]:
        return sorted(self.classes)

    def _key(self, name: str) -> str:
        key = str(name).strip()
        if self.fold:  # "TransE", "trans-e" and "trans_e" all name transe
            key = key.lower().replace("-", "").replace("_", "")
        return self.aliases.get(key, key)

    def lookup(self, name: str | type[T]) -> type[T]:
        if isinstance(name, type) and issubclass(name, self.base):
            return name
        cls = self.classes.get(self._key(name))
        if cls is None:
            raise KgprobeError(f"unknown {self.what} {name!r}; known: {', '.join(self.names())}")
        return cls

    def make(self, name: str | type[T] | T, **kwargs: Any) -> T:
        if isinstance(name, self.base):
            if kwargs:
                raise KgprobeError(f"{self.what} options {sorted(kwargs)} given together with a built {self.what}")
            return name
        cls = self.check_options(name, kwargs)
        return cls(**kwargs)

    def check_options(self, name: str | type[T], options: dict[str, Any]) -> type[T]:
        """The class ``name`` resolves to, once every key of ``options`` is one it takes."""
        cls = self.lookup(name)
        accepted = accepted_options(cls)
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise KgprobeError(f"the {self.what} {getattr(cls, 'name', cls.__name__)!r} does not take "
                               f"{', '.join(unknown)} (it takes: {', '.join(sorted(accepted)) or 'no options'})")
        return cls
