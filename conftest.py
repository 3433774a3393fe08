"""Hypothesis profiles shared by the three suites (parity_tests, reference_tests, torch_tests).

Profiles: "ci" (the default: derandomized, bounded, no example database) and "thorough" (many more
examples, longer sequences, larger widths), chosen by `--profile` (parity_tests) or LRNN_PROFILE.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=20, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile(    # 5 × ci, the factor parity_tests.strategies.examples() applies to explicit counts
    "thorough", deadline=None, max_examples=100, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("LRNN_PROFILE", "ci"))
