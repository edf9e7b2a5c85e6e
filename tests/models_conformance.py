"""The conformance suite every DOPE model passes: it lives in :mod:`dope.training.conformance` (it is also
``dope models check``); this module keeps the tests' imports short."""

from dope.training.conformance import (
    CHECK_PARAMS,
    CheckFailed,
    Factory,
    check_finite,
    check_model,
    check_no_look_ahead,
    check_one_equals_many,
    check_reproducible,
    check_round_trip,
    fit_without_mutation,
    sample_data,
)

__all__ = ["CHECK_PARAMS", "CheckFailed", "Factory", "check_finite", "check_model", "check_no_look_ahead",
           "check_one_equals_many", "check_reproducible", "check_round_trip", "fit_without_mutation",
           "sample_data"]
