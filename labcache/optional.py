"""What the course extra (`pip install 'labcache[lab]'`) adds to the library, when installed.

The caches need only redis, cachetools and python-dotenv. Tables (`to_dataframe()`) need pandas
and warming shows a progress bar with tqdm; both are imported on first use, so a service that
installs the core alone never loads them.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

EXTRA_HINT = "pip install 'labcache[lab]'"


def pandas() -> ModuleType:
    """The pandas module, or an ImportError that says how to get it."""
    try:
        return importlib.import_module("pandas")
    except ImportError as e:
        raise ImportError(f"tables need pandas, left out of the core install: {EXTRA_HINT}") from e


class _NoBar:
    """Stands in for a progress bar: shows nothing."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


def progress_bar(total: int, desc: str, *, enabled: bool = True) -> Any:
    """A `tqdm.auto` bar over `total` keys where tqdm is installed and a bar is wanted."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # a core install: the work goes on without a bar
            return _NoBar()
        return tqdm(total=total, desc=desc, unit="key")
    return _NoBar()
