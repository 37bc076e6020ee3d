"""Import numbagrad before torch or SciPy so its thread-pool settings apply to the whole run."""

import numbagrad  # noqa: F401
