"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def mini_small_root(tmp_path_factory):
    """A small mini-NSD (seed 0, size "small"), generated once per test session.

    Shared by every test: treat it as read-only (copy it before writing into it).
    """
    from nsdlib.mini import generate

    return generate(tmp_path_factory.mktemp("mini-small") / "mini-nsd", seed=0, size="small", progress=False)
