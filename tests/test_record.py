"""kvminfo.record behaves as dataclass(frozen=True) does, for everything kvminfo uses of it.

The same class is made both ways and every behaviour is compared with the
standard library's: construction (positional, by name, defaults, fresh
default_factory values, the errors), ==, hash, repr, immutability and replace.
"""

from __future__ import annotations

import dataclasses

import pytest

from kvminfo import record as rec
from kvminfo.model import SourceResult, Status
from kvminfo.probe_options import ProbeOptions


@rec.record
class R:
    name: str
    count: int = 0
    items: list[int] = rec.field(default_factory=list)
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class D:
    name: str
    count: int = 0
    items: list[int] = dataclasses.field(default_factory=list)
    note: str | None = None


CALLS = [((("a",)), {}), (("a", 2), {}), (("a",), {"note": "n"}), ((), {"name": "b", "count": 3, "items": [1]})]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_construction_equality_and_repr_as_a_frozen_dataclass(args, kwargs):
    r, d = R(*args, **kwargs), D(*args, **kwargs)
    assert vars(r) == dataclasses.asdict(d)
    assert r == R(*args, **kwargs) and (d == D(*args, **kwargs))
    assert repr(d).startswith("D(") and repr(r) == "R" + repr(d)[1:]
    assert r != R("other") and (d != D("other"))
    assert r != d and R.__eq__(r, d) is NotImplemented  # another class is never equal, as for dataclasses


def test_fresh_default_per_instance():
    first, second = R("a"), R("a")
    assert first.items == [] and first.items is not second.items
    assert D("a").items is not D("a").items


@pytest.mark.parametrize(("args", "kwargs"), [((), {}), (("a", 1, [], None, "extra"), {}), (("a",), {"name": "b"}),
                                              (("a",), {"colour": "red"})])
def test_wrong_calls_raise_type_error_as_dataclasses_do(args, kwargs):
    with pytest.raises(TypeError):
        D(*args, **kwargs)
    with pytest.raises(TypeError):
        R(*args, **kwargs)


def test_frozen():
    r, d = R("a"), D("a")
    for obj, error in ((r, rec.FrozenInstanceError), (d, dataclasses.FrozenInstanceError)):
        with pytest.raises(error):
            obj.count = 1  # type: ignore[misc]
        with pytest.raises(AttributeError):
            del obj.count  # type: ignore[misc]
    assert issubclass(rec.FrozenInstanceError, AttributeError)


def test_hash_follows_the_values_and_refuses_unhashable_fields():
    assert hash(R("a", 1, ())) == hash(R("a", 1, ())) and len({R("a", 1, ()), R("a", 1, ()), R("b", 1, ())}) == 2
    for obj in (R("a"), D("a")):  # a list field: unhashable, as for dataclasses
        with pytest.raises(TypeError):
            hash(obj)


def test_replace_as_dataclasses_replace():
    r, d = R("a", 1, [1]), D("a", 1, [1])
    assert vars(rec.replace(r, count=5, note="x")) == dataclasses.asdict(dataclasses.replace(d, count=5, note="x"))
    assert r.count == 1  # the original is unchanged
    with pytest.raises(TypeError):
        dataclasses.replace(d, colour="red")
    with pytest.raises(TypeError):
        rec.replace(r, colour="red")


def test_a_field_without_default_after_one_with_is_refused_as_dataclasses_do():
    with pytest.raises(TypeError):
        @rec.record
        class Bad:
            a: int = 0
            b: int


def test_the_hook_path_classes_are_records_usable_as_dict_keys():
    options = ProbeOptions()
    assert {options: 1}[ProbeOptions()] == 1  # the source runner keys its in-flight probes by options
    assert rec.replace(options, use_libvirt=False) != options
    result = SourceResult("kvm", Status.OK)
    assert result.reason == "" and result.facts is None and result.elapsed_ms == 0.0 and result.ok


def test_a_record_inheriting_from_a_record_is_refused_at_once():
    """Its parent's fields would be lost without a word (dataclasses would keep them): refuse."""
    with pytest.raises(TypeError, match="cannot inherit"):
        @rec.record
        class Child(R):
            extra: int = 0


def test_equality_hash_and_repr_see_the_declared_fields_only():
    r = R("a", 1, ())
    object.__setattr__(r, "cache", "something computed later")  # e.g. what functools.cached_property stores
    assert r == R("a", 1, ()) and hash(r) == hash(R("a", 1, ())) and "cache" not in repr(r)
    assert "cache" not in vars(rec.replace(r, count=2))
