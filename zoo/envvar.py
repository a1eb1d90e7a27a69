"""One environment variable set for the duration of a block (torch-free)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def scoped_env(name: str, value: str) -> Iterator[None]:
    """Set ``os.environ[name] = value`` inside the block; restore the previous value (or its absence)
    on exit, also when the block raises. Child processes started inside the block inherit it."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
