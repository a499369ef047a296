"""Load a script of benchmarks/ as a module, for the tests of its arithmetic (nothing is run or timed).

The scripts are not a package: each imports ``_protocol`` as its neighbour, so their folder goes
on ``sys.path`` first; the module is registered in ``sys.modules`` under its own name, as an
import would do (dataclasses and pickling-free JSON writers look their module up there).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load_bench(name: str):
    """``benchmarks/<name>.py`` as a module."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
