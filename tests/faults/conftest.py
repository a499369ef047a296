"""Fixtures of the fault-injection suite: damaged copies of the small mini-NSD, and the page's table."""

from __future__ import annotations

import shutil

import pytest
from _mini_worlds import write_truth_betas
from _table import FAULTS, write_if_complete

_TESTS: dict[str, str] = {}


@pytest.fixture(scope="session")
def pristine_world(mini_small_root, tmp_path_factory):
    """The small mini-NSD (seed 0) with truth betas for subject 1; read-only: copy before damaging."""
    root = tmp_path_factory.mktemp("pristine") / "mini-nsd-small"
    shutil.copytree(mini_small_root, root)
    write_truth_betas(root, 1)
    return root


@pytest.fixture
def world(pristine_world, tmp_path):
    """A private copy of :func:`pristine_world` to damage."""
    root = tmp_path / "mini-nsd-small"
    shutil.copytree(pristine_world, root)
    return root


def pytest_collection_modifyitems(items):
    for item in items:
        for mark in item.iter_markers("fault"):
            for fault in mark.args:
                _TESTS[fault] = item.nodeid.split("::")[0].rsplit("/", 1)[-1] + "::" + item.originalname


def pytest_configure(config):
    config.addinivalue_line("markers", "fault(*ids): the reliability page's rows this test proves")


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0 and set(_TESTS) >= set(FAULTS):
        write_if_complete(_TESTS)
