"""Frozen value classes for the NFD hook's start path, without importing dataclasses.

NFD runs the hook as a fresh process on every node every minute, and its budget
is 1.5x `python -c pass` (bench/bench_hook.py). The standard library's
dataclasses imports inspect (and with it ast, dis, tokenize): ~8.5 ms of a
hook's ~11 ms budget here, and making each dataclass compiles its methods with
exec. So the classes every hook run builds (kvminfo.model, the KVM facts, the
Hyper-V tables, kvminfo.probe_options.ProbeOptions) use ``record`` instead,
and so do the device plugin's (its start -> Register is budgeted too, README
"Footprint"). Other modules keep dataclasses.

``@record`` gives a class exactly what kvminfo uses of ``@dataclass(frozen=True)``:
``__init__`` taking the annotated fields in order (positionally or by name;
class-level values are defaults; ``field(default_factory=f)`` makes a fresh
default per instance), ``==`` and ``hash`` by field values (same class only),
``repr`` (all three over the declared fields only), and immutability
(assignment raises ``FrozenInstanceError``, an AttributeError as in
dataclasses). ``replace(obj, **changes)`` is ``dataclasses.replace``. A record
cannot inherit from another record (TypeError at class creation: its fields
would be lost); no record does.

For mypy, ``record``, ``field`` and ``replace`` *are* dataclasses'
(``dataclass(frozen=True)``), so every field, constructor call and replace is
type-checked exactly as before; tests/test_record.py checks that both agree.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~3 ms of the NFD hook's start; only mypy needs it
if TYPE_CHECKING:
    from dataclasses import FrozenInstanceError, field, replace
    from typing import TypeVar, dataclass_transform

    T = TypeVar("T")

    @dataclass_transform(frozen_default=True, field_specifiers=(field,))
    def record(cls: type[T]) -> type[T]: ...

else:

    class FrozenInstanceError(AttributeError):
        """Assignment to a field of a record (dataclasses.FrozenInstanceError's role)."""

    class _Factory:
        __slots__ = ("make",)

        def __init__(self, make):
            self.make = make

    def field(*, default_factory):
        """A default made fresh for each instance: ``field(default_factory=list)``."""
        return _Factory(default_factory)

    def _frozen(self, name, value):
        raise FrozenInstanceError(f"cannot assign to field {name!r} of a {type(self).__name__}")

    def _frozen_del(self, name):
        raise FrozenInstanceError(f"cannot delete field {name!r} of a {type(self).__name__}")

    def record(cls):
        """Make ``cls`` a frozen value class of its annotated fields (see the module docstring)."""
        inherited = [base.__name__ for base in cls.__mro__[1:] if hasattr(base, "__record_fields__")]
        if inherited:  # its fields would be silently lost: refuse, as the module docstring says
            raise TypeError(f"{cls.__name__}: a record cannot inherit from a record ({inherited[0]})")
        names = tuple(cls.__dict__.get("__annotations__", {}))
        defaults = {name: cls.__dict__[name] for name in names if name in cls.__dict__}
        first_default = next((i for i, name in enumerate(names) if name in defaults), len(names))
        late = [name for name in names[first_default:] if name not in defaults]
        if late:
            raise TypeError(f"{cls.__name__}: field {late[0]!r} without a default follows one with a default")
        for name in defaults:
            delattr(cls, name)  # the instance holds every field; the class keeps no stale value
        qualname = cls.__name__

        def __init__(self, *args, **kwargs):
            if len(args) > len(names):
                raise TypeError(f"{qualname}() takes {len(names)} arguments, {len(args)} were given")
            values = dict(zip(names, args, strict=False))  # fewer args than fields: the rest by name or default
            for name, value in kwargs.items():
                if name not in names:
                    raise TypeError(f"{qualname}() got an unexpected argument {name!r}")
                if name in values:
                    raise TypeError(f"{qualname}() got two values for {name!r}")
                values[name] = value
            for name in names:
                if name not in values:
                    if name not in defaults:
                        raise TypeError(f"{qualname}() is missing the argument {name!r}")
                    default = defaults[name]
                    values[name] = default.make() if isinstance(default, _Factory) else default
            object.__setattr__(self, "__dict__", {name: values[name] for name in names})

        def values(self):  # the declared fields only, as dataclasses compare, hash and show them
            return tuple(getattr(self, name) for name in names)

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return values(self) == values(other)

        def __hash__(self):
            return hash(values(self))

        def __repr__(self):
            return f"{qualname}({', '.join(f'{n}={v!r}' for n, v in zip(names, values(self), strict=True))})"

        cls.__init__ = __init__
        cls.__eq__ = __eq__
        cls.__hash__ = __hash__
        cls.__repr__ = __repr__
        cls.__setattr__ = _frozen
        cls.__delattr__ = _frozen_del
        cls.__record_fields__ = names
        return cls

    def replace(obj, **changes):
        """A copy of the record ``obj`` with ``changes`` (field name -> value); TypeError names an unknown field."""
        unknown = [name for name in changes if name not in obj.__record_fields__]
        if unknown:
            raise TypeError(f"{type(obj).__name__} has no field {unknown[0]!r}")
        return type(obj)(**{**{name: getattr(obj, name) for name in obj.__record_fields__}, **changes})


__all__ = ["FrozenInstanceError", "field", "record", "replace"]
