"""Shared fixtures of the chart tests: the renderer, and the tools they need.

A missing tool fails the test with what to install, unless
REFOP_ALLOW_MISSING_TOOLS=1, in which case the test is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
import sys
import pathlib

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def need(condition: bool, what: str, install: str) -> None:
    if condition:
        return
    if os.environ.get("REFOP_ALLOW_MISSING_TOOLS") == "1":
        print(f"SKIPPED: {what} is missing (REFOP_ALLOW_MISSING_TOOLS=1)")
        pytest.skip(f"SKIPPED: {what} is missing")
    pytest.fail(f"{what} is missing: {install}, or set REFOP_ALLOW_MISSING_TOOLS=1 to skip", pytrace=False)


@pytest.fixture(scope="session")
def helm():
    try:
        import helm_python
    except ImportError:
        helm_python = None
    need(helm_python is not None, "the helm-python-sdk package", "pip install helm-python-sdk")
    return helm_python


@pytest.fixture(scope="session")
def kubernetes_validate():
    path = shutil.which("kubernetes-validate")
    need(path is not None, "kubernetes-validate", "pip install kubernetes-validate")
    return path
