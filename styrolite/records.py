"""``@record``: typed record classes (the OCI model, the runtime's plans) without ``dataclasses``.

``@dataclass`` compiles an ``__init__``, ``__repr__`` and ``__eq__`` from source text for every class, and
importing ``dataclasses`` brings ``inspect`` (and with it ``ast``, ``dis``, ``tokenize``, ``re``...): for
the ~50 record classes a ``styrolite create`` loads that was a quarter of the call. Here a class body is
read once, cheaply, and three generic methods are shared:

    @record
    class Root:
        path: str
        readonly: bool = False
        options: list[str] = field(default_factory=list, metadata={"json": "opts"})

gives ``Root("r")``, keyword arguments, defaults (a fresh list per object from ``default_factory``),
``repr``, ``==`` by value, unhashable objects (mutable, like a dataclass with ``eq``), ``match`` by position
and ``copy.deepcopy``. ``@record(frozen=True)`` makes immutable, hashable ones. ``fields(cls)``,
``replace(obj, **changes)`` and ``asdict(obj)`` do what the ``dataclasses`` functions of the same names do.
Annotations stay unevaluated strings (``Field.type``); the spec parser resolves them itself.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a ``@record(frozen=True)`` object."""


class Field:
    __slots__ = ("default", "default_factory", "metadata", "name", "type")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING, metadata: dict | None = None) -> None:
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("a field cannot have both a default and a default_factory")
        self.default = default
        self.default_factory = default_factory
        self.metadata = metadata or {}
        self.name = ""
        self.type = ""  # the annotation, unevaluated

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.default_factory is MISSING

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, type={self.type!r}, default={self.default!r})"


def field(*, default: Any = MISSING, default_factory: Any = MISSING, metadata: dict | None = None) -> Any:
    """A field with a default, a factory for mutable defaults, or metadata (e.g. its JSON name)."""
    return Field(default, default_factory, metadata)


def fields(class_or_instance: Any) -> tuple[Field, ...]:
    try:
        return class_or_instance.__record_fields__
    except AttributeError:
        raise TypeError(f"{class_or_instance!r} is not a record class or instance") from None


def is_record(obj: Any) -> bool:
    """A record class or an instance of one."""
    return hasattr(obj, "__record_fields__")


def replace(obj: T, **changes: Any) -> T:
    """A new object with the same field values except ``changes``."""
    values = {f.name: getattr(obj, f.name) for f in fields(obj)}
    values.update(changes)
    return type(obj)(**values)


def asdict(obj: Any) -> Any:
    """Records (recursively, also inside lists, tuples and dicts) as dicts of their field values."""
    if is_record(obj) and not isinstance(obj, type):
        return {f.name: asdict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return type(obj)(asdict(item) for item in obj)
    if isinstance(obj, dict):
        return {key: asdict(value) for key, value in obj.items()}
    return obj


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    specs = cls.__record_fields__
    if len(args) > len(specs):
        raise TypeError(f"{cls.__name__}() takes {len(specs)} positional arguments but {len(args)} were given")
    for index, spec in enumerate(specs):
        name = spec.name
        if index < len(args):
            if name in kwargs:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
            value = args[index]
        elif name in kwargs:
            value = kwargs.pop(name)
        elif spec.default is not MISSING:
            value = spec.default
        elif spec.default_factory is not MISSING:
            value = spec.default_factory()
        else:
            raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
        object.__setattr__(self, name, value)
    if kwargs:  # every known name was popped above
        raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {next(iter(kwargs))!r}")
    post_init = getattr(self, "__post_init__", None)
    if post_init is not None:
        post_init()


def _values(obj: Any) -> tuple[Any, ...]:
    return tuple(getattr(obj, f.name) for f in type(obj).__record_fields__)


def _eq(self: Any, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash(_values(self))


def _repr(self: Any) -> str:
    text = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in type(self).__record_fields__)
    return f"{type(self).__qualname__}({text})"


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")


def record(cls: type[T] | None = None, *, frozen: bool = False) -> Any:
    """Make ``cls`` a record class (see the module docstring); ``@record`` or ``@record(frozen=True)``."""

    def wrap(cls: type[T]) -> type[T]:
        found: dict[str, Field] = {}
        for base in reversed(cls.__mro__[1:]):
            for inherited in getattr(base, "__record_fields__", ()):
                found[inherited.name] = inherited
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063 (no inspect)
            if "ClassVar" in str(annotation):
                continue
            value = cls.__dict__.get(name, MISSING)
            spec = value if isinstance(value, Field) else Field(default=value)
            spec.name, spec.type = name, annotation
            if spec.default is not MISSING:
                setattr(cls, name, spec.default)
            elif name in cls.__dict__:
                delattr(cls, name)
            found[name] = spec
        specs = tuple(found.values())
        seen_default = False
        for spec in specs:
            if not spec.required:
                seen_default = True
            elif seen_default:
                raise TypeError(f"{cls.__name__}: non-default field {spec.name!r} follows a field with a default")
        cls.__record_fields__ = specs  # type: ignore[attr-defined]
        cls.__match_args__ = tuple(spec.name for spec in specs)  # type: ignore[attr-defined]
        cls.__init__ = _init  # type: ignore[misc]
        cls.__repr__ = _repr  # type: ignore[assignment,method-assign]
        cls.__eq__ = _eq  # type: ignore[assignment,method-assign]
        if frozen:
            cls.__hash__ = _hash  # type: ignore[assignment,method-assign]
            cls.__setattr__ = _frozen_setattr  # type: ignore[assignment,method-assign]
            cls.__delattr__ = _frozen_delattr  # type: ignore[assignment,method-assign]
        else:
            cls.__hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass with eq
        return cls

    return wrap if cls is None else wrap(cls)
