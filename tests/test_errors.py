"""One base exception: every error class labcache defines derives from `LabcacheError`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import labcache
from labcache.errors import LabcacheError


def _error_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a labcache module (not imported into it)."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(labcache.__path__, "labcache."):
        if info.name.startswith(("labcache.bench", "labcache.lab.solutions")):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
            ):
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_labcache_error_derives_from_the_base() -> None:
    classes = _error_classes()
    assert len(classes) >= 12, sorted(classes)  # the walk found the package's errors
    strays = sorted(name for name, cls in classes.items() if not issubclass(cls, LabcacheError))
    assert strays == [], f"not a LabcacheError: {strays}"


def test_each_error_keeps_the_builtin_class_it_refines() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from labcache.aside import ValueTooLarge
    from labcache.breaker import CircuitOpen
    from labcache.connection import RedisUnavailable
    from labcache.serializers import SerializationError

    assert issubclass(ValueTooLarge, ValueError)
    assert issubclass(SerializationError, TypeError)
    assert issubclass(CircuitOpen, RedisConnectionError)
    assert issubclass(RedisUnavailable, ConnectionError)
