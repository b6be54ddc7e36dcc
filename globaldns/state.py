"""Where dev mode leaves what a second terminal needs (URLs, admin token, Valkey pid)."""

from __future__ import annotations

import tempfile
from pathlib import Path

DEFAULT_STATE_FILE = Path(tempfile.gettempdir()) / "globaldns-dev.json"
