"""Starting the fake Bitrix24 in its own process for benchmarks (so its CPU does not compete
with syncd's for the interpreter lock)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_fake(
    *, companies: int, contacts: int, devices: int, token: str, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m syncd.connectors.crm.bitrix24.fake`` seeded with 1; returns the process and
    the webhook URL it printed on its ``READY`` line."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syncd.connectors.crm.bitrix24.fake",
            "--seed",
            "1",
            "--companies",
            str(companies),
            "--contacts",
            str(contacts),
            "--devices",
            str(devices),
            "--token",
            token,
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("READY "):
        process.kill()
        raise SystemExit(f"the fake CRM did not start: {line!r}")
    return process, line.split(" ", 1)[1]
