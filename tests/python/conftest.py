"""Shared pytest configuration for the Python tests."""

import os
import sys

# The tessera package of this checkout (python/tessera), ahead of any installed one.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "python"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "models: whole torchvision classifiers against PyTorch (slow on the ref backend)",
    )
