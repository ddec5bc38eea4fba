"""Helpers shared by the test modules."""

from __future__ import annotations

import os


def processes_mentioning(s: str) -> list[str]:
    """Command lines of live processes that mention s (e.g. a state directory)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if s in cmd:
            out.append(f"{pid}: {cmd}")
    return out
