"""Shared pytest configuration for the Python tests."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "models: whole torchvision classifiers against PyTorch (slow on the ref backend)",
    )
