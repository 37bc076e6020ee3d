"""Import numbagrad before torch or SciPy so its thread-pool settings apply to the whole run,
and make the sibling helper modules of each test folder importable by name (tests/ is not a
package: pytest runs with --import-mode=importlib)."""

import sys
from pathlib import Path

import numbagrad  # noqa: F401

for _folder in ("backends", "distributed", "engine", "graph", "interop", "library", "models"):
    sys.path.insert(0, str(Path(__file__).parent / _folder))
