"""Where tinythink keeps files it makes or fetches: $TINYTHINK_CACHE, else $XDG_CACHE_HOME/tinythink, else
~/.cache/tinythink."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    root = os.environ.get("TINYTHINK_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
        / "tinythink"
    return Path(root) / kind


def data_dir() -> Path:
    """Where the server keeps what users give it (uploaded files, batch jobs): $TINYTHINK_DATA, else
    $XDG_DATA_HOME/tinythink, else ~/.local/share/tinythink."""
    return Path(os.environ.get("TINYTHINK_DATA") or Path(os.environ.get("XDG_DATA_HOME") or
                                                          Path.home() / ".local" / "share") / "tinythink")
