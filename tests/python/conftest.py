"""Shared pytest configuration for the Python tests."""

import os
import shutil
import sys
import tempfile

# Autotuning's decisions go to a cache of this test session, neither read
# from nor written to the user's (~/.cache/tessera); subprocesses inherit it.
AUTOTUNE_CACHE_HOME = tempfile.mkdtemp(prefix="tessera-test-cache-")
os.environ["XDG_CACHE_HOME"] = AUTOTUNE_CACHE_HOME

# The tessera package of this checkout (python/tessera), ahead of any installed one.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "python"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "models: whole models and other long cases (slow on the ref backend and under the "
        "sanitizer build): the release pass runs them, the sanitizer pass skips them, its "
        "code paths being covered there by smaller cases",
    )
    config.addinivalue_line(
        "markers",
        "slow: long cases (model zoos, large sizes) run by `make test-slow` (TESSERA_SLOW=1), "
        "skipped by the default test run",
    )


def pytest_collection_modifyitems(config, items):
    if os.environ.get("TESSERA_SLOW") == "1":
        return
    import pytest

    skip = pytest.mark.skip(reason="slow: run with TESSERA_SLOW=1 (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_unconfigure(config):
    shutil.rmtree(AUTOTUNE_CACHE_HOME, ignore_errors=True)
