"""``@model_class``: a dataclass without the import-time code generation.

``@dataclass`` compiles an ``__init__``, ``__repr__`` and ``__eq__`` from source text for every class;
for the ~35 classes of the OCI model that was 30 ms of import time, paid by every ``styrolite`` CLI call
(the whole command is budgeted at ~30 ms). Here the dataclass machinery still records the fields
(``dataclasses.fields``, ``replace``, ``asdict`` and ``match`` keep working) but the three methods are
shared, generic functions. Construction is a little slower, which does not matter at config-file scale.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    specs = cls.__model_init_fields__
    if len(args) > len(specs):
        raise TypeError(f"{cls.__name__}() takes {len(specs)} positional arguments but {len(args)} were given")
    for index, (name, default, factory) in enumerate(specs):
        if index < len(args):
            if name in kwargs:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
            value = args[index]
        elif name in kwargs:
            value = kwargs.pop(name)
        elif default is not _MISSING:
            value = default
        elif factory is not _MISSING:
            value = factory()
        else:
            raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
        object.__setattr__(self, name, value)
    if kwargs:  # every known name was popped above
        raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {next(iter(kwargs))!r}")


def _values(obj: Any) -> tuple[Any, ...]:
    return tuple(getattr(obj, name) for name in type(obj).__model_field_names__)


def _eq(self: Any, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _repr(self: Any) -> str:
    fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in type(self).__model_field_names__)
    return f"{type(self).__qualname__}({fields})"


def model_class(cls: type[T]) -> type[T]:
    """Like ``@dataclass`` (init, repr, eq; mutable, unhashable) for the spec model's classes."""
    if cls.__doc__ is None:
        cls.__doc__ = cls.__name__  # else dataclass computes a signature for the docstring
    cls = dataclasses.dataclass(init=False, repr=False, eq=False)(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    cls.__model_init_fields__ = tuple((f.name, f.default, f.default_factory) for f in fields if f.init)  # type: ignore[attr-defined]
    cls.__model_field_names__ = tuple(f.name for f in fields if f.compare)  # type: ignore[attr-defined]
    cls.__init__ = _init  # type: ignore[misc]
    cls.__repr__ = _repr  # type: ignore[assignment,method-assign]
    cls.__eq__ = _eq  # type: ignore[assignment,method-assign]
    cls.__hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass with eq=True
    return cls
