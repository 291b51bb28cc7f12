"""One shape for every stats object: `as_dict()` for numbers, `to_dataframe()` for a table.

A stats class is a dataclass of counters that also inherits `Counters`; it lists the properties
computed from them (a hit rate, a total) in `DERIVED`:

    @dataclass
    class AsideStats(Counters):
        DERIVED: ClassVar[tuple[str, ...]] = ("hit_rate",)
        hits: int = 0
        misses: int = 0

`as_dict()` gives the fields in declaration order, then the derived values; a field holding a
collection (the keys that failed, say) counts as its size. `to_dataframe()` is that dict as a
one-row table, a column per name, so the stats of several caches stack with `pandas.concat`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import Field, fields
from typing import TYPE_CHECKING, Any, ClassVar

from labcache.optional import pandas

if TYPE_CHECKING:  # pandas is the course extra's: imported only where a table is asked for
    import pandas as pd


class Counters:
    """Mixin for stats dataclasses: `as_dict()` and a one-row `to_dataframe()`."""

    # Properties computed from the fields, in the order as_dict() lists them after the fields.
    DERIVED: ClassVar[tuple[str, ...]] = ()
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # set by @dataclass on a subclass

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if isinstance(cls.DERIVED, str):  # ("hit_rate") without its comma
            raise TypeError(f"{cls.__name__}.DERIVED must be a tuple of names, not a string")
        missing = [name for name in cls.DERIVED if not hasattr(cls, name)]
        if missing:
            raise TypeError(f"{cls.__name__}.DERIVED names unknown attributes: {missing}")

    def as_dict(self) -> dict[str, float]:
        """Every field, then every derived value: numbers only, keyed by their names."""
        names = [f.name for f in fields(self)] + list(self.DERIVED)
        return {name: self._number(name) for name in names}

    def to_dataframe(self) -> pd.DataFrame:
        """`as_dict()` as a one-row pandas DataFrame (columns in the same order)."""
        pd = pandas()
        return pd.DataFrame([self.as_dict()])

    def _number(self, name: str) -> float:
        value = getattr(self, name)
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, Collection) and not isinstance(value, (str, bytes)):
            return len(value)
        raise TypeError(
            f"{type(self).__name__}.{name} is {type(value).__name__}, not a number or a "
            "collection to count; stats hold numbers"
        )
