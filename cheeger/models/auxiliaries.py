"""A head's auxiliaries: a mapping whose costly entries are computed on first read.

A head returns its logits with a mapping of auxiliaries (graph, eigenpairs, noise
statistics, ...) that losses, metrics and panels may read. Some are costly and read by
few consumers (the noise-floor share needs a projection of every eigenvector on the
features): :class:`Auxiliaries` stores those as thunks, evaluated once when some
consumer asks for them, so a forward pass pays only for what is read. Keys of lazy
entries are present (``key in aux`` is True) before they are computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any


class Auxiliaries(MutableMapping):
    """dict-like; ``lazy(key, thunk)`` adds an entry computed by ``thunk()`` on first read."""

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        self._values: dict[str, Any] = dict(values or {})
        self._thunks: dict[str, Callable[[], Any]] = {}

    def lazy(self, key: str, thunk: Callable[[], Any]) -> None:
        self._values.pop(key, None)
        self._thunks[key] = thunk

    def is_computed(self, key: str) -> bool:
        return key in self._values

    def __getitem__(self, key: str) -> Any:
        if key in self._values:
            return self._values[key]
        if key in self._thunks:
            self._values[key] = self._thunks.pop(key)()
            return self._values[key]
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._thunks.pop(key, None)
        self._values[key] = value

    def __delitem__(self, key: str) -> None:
        if key in self._values:
            del self._values[key]
        elif key in self._thunks:
            del self._thunks[key]
        else:
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        yield from self._values
        yield from (key for key in self._thunks if key not in self._values)

    def __len__(self) -> int:
        return len(self._values) + len(self._thunks)

    def __contains__(self, key: object) -> bool:
        return key in self._values or key in self._thunks

    def __repr__(self) -> str:
        pending = ", ".join(sorted(self._thunks))
        return f"Auxiliaries({sorted(self._values)}, lazy=[{pending}])"
