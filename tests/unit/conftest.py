"""Unit-test setup.

When a hypothesis test fails, hypothesis's pytest plugin imports ``hypothesis.extra._patching``
(and through it libcst, which emits a DeprecationWarning at import). Under this project's
``filterwarnings = error`` that warning turns a clean test failure into an INTERNALERROR that
hides the falsifying example, so the module is imported here once with that warning silenced.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:  # pragma: no cover - libcst not installed: nothing to pre-import
        pass
