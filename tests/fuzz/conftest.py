"""Hypothesis profiles of the fuzz tests: a bounded, reproducible budget unless told otherwise.

- ci (the default): 200 examples a test, derandomized, so a failure in CI fails again on a
  laptop with the same example. The whole package stays under a minute on two cores.
- deep (HYPOTHESIS_PROFILE=deep): 5,000 random examples a test, for hunting locally.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "deep",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
