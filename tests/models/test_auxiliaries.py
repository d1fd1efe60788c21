"""Auxiliaries: lazy entries are computed once, on first read, and only then."""

from __future__ import annotations

import pytest

from cheeger.models.auxiliaries import Auxiliaries


def test_lazy_entry_is_computed_once_on_first_read():
    calls = []
    aux = Auxiliaries({"graph": 1})
    aux.lazy("noise", lambda: calls.append(1) or 42)
    assert "noise" in aux and not aux.is_computed("noise") and calls == []
    assert sorted(aux) == ["graph", "noise"] and len(aux) == 2
    assert aux["noise"] == 42 and aux.get("noise") == 42 and calls == [1]
    assert aux.is_computed("noise")
    aux["noise"] = 7
    assert aux["noise"] == 7 and calls == [1]
    del aux["noise"]
    assert "noise" not in aux
    with pytest.raises(KeyError):
        aux["noise"]
    assert aux.get("missing") is None and dict(aux) == {"graph": 1}
