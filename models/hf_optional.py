"""Import transformers without its optional scipy / scikit-learn integrations (a fresh process ~1.3 s faster).

Whenever scipy and scikit-learn are installed (HybridScope's own probes and the scaling fit need them),
transformers imports ``scipy.optimize`` from ``modeling_utils`` (its object-detection losses) and
``sklearn.metrics`` from ``generation`` (assisted generation's threshold tuning): scipy and
scikit-learn, about 1.3 s of a 2-core CPU's fresh-process start (benchmarks/RESULTS.md,
issue 11). HybridScope uses neither feature. Importing this module, before the first import of
transformers' modeling modules, makes transformers' two availability checks answer False; scipy and
scikit-learn stay importable for code that imports them itself. Importing it later, or after a
transformers release renames the checks, changes nothing else (tests/models/test_hf_optional.py checks
that the CLI's imports stay free of both).
"""

from __future__ import annotations

CHECKS = ("is_scipy_available", "is_sklearn_available")


def _unavailable() -> bool:
    return False


def skip_optional_integrations() -> list[str]:
    """Make transformers' scipy / scikit-learn availability checks answer False; returns the names set."""
    import transformers.utils as tu
    import transformers.utils.import_utils as iu

    done = []
    for name in CHECKS:
        if hasattr(iu, name) and hasattr(tu, name):
            setattr(iu, name, _unavailable)
            setattr(tu, name, _unavailable)
            done.append(name)
    return done


skip_optional_integrations()
