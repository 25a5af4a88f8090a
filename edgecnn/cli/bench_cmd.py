"""`edgecnn bench`: being built (see the issue); registers its command(s) on the app."""
from __future__ import annotations

from edgecnn.cli.app import app  # noqa: F401
