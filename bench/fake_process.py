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


def start_sharepoint_fake(
    *, libraries: int, items: int, seed: int = 1, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[str], dict[str, object]]:
    """Start ``python -m syncd.connectors.sharepoint.fake`` (``libraries`` libraries of ``items``
    files each); returns the process and what it printed: ``graph_url``, the ``key value``
    lines (``login_url``, ``ca_file``, ``tenant_id``, ``client_id``, ``client_secret_file``,
    ``control``, ...) and ``libraries``, a list of ``{site, drive_id, name}``."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syncd.connectors.sharepoint.fake",
            "--seed",
            str(seed),
            "--libraries",
            str(libraries),
            "--items",
            str(items),
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
        raise SystemExit(f"the fake Graph did not start: {line!r}")
    details: dict[str, object] = {"graph_url": line.split(" ", 1)[1]}
    found: list[dict[str, str]] = []
    while len(found) < libraries:
        line = process.stdout.readline()
        if not line:
            process.kill()
            raise SystemExit("the fake Graph ended before listing its libraries")
        key, _, value = line.strip().partition(" ")
        if key == "library":
            site, drive_id, name = value.split(" ", 2)
            found.append({"site": site, "drive_id": drive_id, "name": name})
        else:
            details[key] = value
    details["libraries"] = found
    return process, details
