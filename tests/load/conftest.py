"""Makes this folder's helper module (``_tamper``) importable by name, as tests/conftest.py
does for the other test folders."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
