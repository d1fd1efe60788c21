"""Hypothesis profiles of the property-based tests in tests/ops/test_fuzz.py.

``fuzz-fast`` runs in ``make test``: a few examples, drawn in a fixed order
(derandomized) so that the suite is reproducible and its time predictable.
``fuzz-extended`` runs in ``make test-slow`` (the tests marked ``slow``): many
random examples, new ones every run.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("fuzz-fast", max_examples=10, deadline=None, derandomize=True)
settings.register_profile(
    "fuzz-extended",
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
