"""The one registry pattern of every kind of extension (methods, model sources, loggers, launcher rules,
metric columns): a mapping from a name to what was registered under it, filled by a decorator."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

T = TypeVar("T")


class Registry(dict):
    """``name -> entry`` for one kind of extension. ``@registry.register("name")`` adds a class or function
    (a class also gets ``name`` as its ``name`` attribute); a name registered twice is an error."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def wrap(entry: T) -> T:
            if name in self and self[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if isinstance(entry, type):
                entry.name = name
            self[name] = entry
            return entry

        return wrap

    def get_entry(self, name: Any, key: str) -> Any:
        """The entry ``name``, or a ``ValueError`` naming the config key and the allowed values."""
        if name not in self:
            raise ValueError(f"{key}={name!r}: allowed values are {sorted(self)}")
        return self[name]
