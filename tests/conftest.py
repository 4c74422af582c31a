"""Shared fixtures: a fake Bitrix24 on loopback, settings pointing at it, and an engine."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.config import Settings, load_settings
from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.engines.mirror import MirrorEngine
from syncd.engines.push import OutboxDelivery
from syncd.runtime import build_engine, build_pusher, open_cache, push_options
from tests import loopback_guard

loopback_guard.install()

ROOT = Path(__file__).parents[1]
# Daemons under test listen on an ephemeral port and never reach for the real Omniva.
LOCAL_ONLY = '[api]\nlisten = "127.0.0.1:0"\n[omniva]\nenabled = false\n'


class RecordingStop(threading.Event):
    """A stop event whose waits return at once and are recorded: retry backoffs become
    assertions instead of real sleeps."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0.0))
        return self.is_set()


@pytest.fixture
def fake() -> Iterator[FakeBitrix24]:
    with FakeBitrix24(seed=3, companies=60, contacts=300, devices=150, token="test-token") as f:
        yield f


def make_settings(
    tmp_path: Path,
    fake: FakeBitrix24,
    *,
    batch_commands: int = 50,
    **mirror: object,
) -> Settings:
    """Settings for a daemon against ``fake``. ``batch_commands`` below 50 makes listings
    smaller chained batches (more pages: resume points for crash tests)."""
    token = tmp_path / "crm_webhook_token"
    token.write_text(fake.token)
    return load_settings(
        None,
        crm={
            "bitrix24": {
                "url": fake.base_url,
                "webhook_token_file": token,
                "batch_commands": batch_commands,
            },
            "max_attempts": 4,
            "requests_per_second": 0,  # the fake has no rate limit; tests stay fast
        },
        state={"directory": tmp_path / "state"},
        mirror=mirror or {},
        api={"listen": "127.0.0.1:0"},
        omniva={"enabled": False},
    )


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, *, interval: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds. For
    state another process or thread changes (a file, a database) that offers nothing to wait
    on; bounded, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def run_and_kill(args: list[str], lines: int | None, jitter: float = 0.0) -> bool:
    """Run a worker that prints a line per step and ``done`` at the end; SIGKILL it ``jitter``
    seconds after ``lines`` lines (None: let it finish). True if it finished."""
    process = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    finished = False
    for seen, line in enumerate(process.stdout, start=1):
        if line.startswith("done"):
            finished = True
            break
        if lines is not None and seen >= lines:
            if jitter:
                time.sleep(jitter)  # a random kill point inside the next step, not a wait
            os.kill(process.pid, signal.SIGKILL)
            break
    process.stdout.close()
    process.wait(timeout=60)
    return finished


def write_config(
    tmp_path: Path, fake: FakeBitrix24, extra: str = "", *, batch_commands: int = 50
) -> Path:
    """A config file for a ``syncd`` subprocess pointing at ``fake`` (token from a file, cache
    under ``tmp_path/state``); ``extra`` adds TOML sections; ``batch_commands`` below 50 makes
    listings smaller chained batches (more pages, so more points to be killed at)."""
    token = tmp_path / "crm_webhook_token"
    token.write_text(fake.token)
    config = tmp_path / "syncd.toml"
    config.write_text(
        "[crm]\nrequests_per_second = 0\n"  # the fake has no rate limit
        f'[crm.bitrix24]\nurl = "{fake.base_url}"\nwebhook_token_file = "{token}"\n'
        f"batch_commands = {batch_commands}\n"
        f'[state]\ndirectory = "{tmp_path / "state"}"\n{LOCAL_ONLY}{extra}'
    )
    return config


@pytest.fixture
def settings(tmp_path: Path, fake: FakeBitrix24) -> Settings:
    return make_settings(tmp_path, fake)


@pytest.fixture
def cache(settings: Settings) -> Iterator[sqlite3.Connection]:
    conn = open_cache(settings)
    yield conn
    conn.close()


@pytest.fixture
def stop() -> RecordingStop:
    return RecordingStop()


@pytest.fixture
def engine(
    settings: Settings, cache: sqlite3.Connection, stop: RecordingStop
) -> Iterator[MirrorEngine]:
    mirror = build_engine(settings, cache, stop=stop)
    yield mirror
    mirror.adapter.close()


def memory_settings(tmp_path: Path, store: str, **seed: int) -> Settings:
    """Settings naming the in-memory vendor, its store ``store`` seeded with ``seed`` (companies,
    contacts, devices), and a cache under ``tmp_path/state``."""
    return load_settings(
        None,
        crm={"vendor": "memory", "memory": {"store": store, **seed}},
        state={"directory": tmp_path / "state"},
        api={"listen": "127.0.0.1:0"},
        omniva={"enabled": False},
    )


@pytest.fixture
def delivery(settings: Settings, cache: sqlite3.Connection,
             engine: MirrorEngine) -> Iterator[OutboxDelivery]:
    """The outbox's delivery over this test's ``settings`` (whichever vendor they name), after
    one mirror cycle so that the requests' devices and contacts are known."""
    engine.run_cycle()
    options = push_options(settings)
    options.spool.mkdir(parents=True, exist_ok=True)
    pusher = build_pusher(settings)
    yield OutboxDelivery(cache, pusher, options, worker_id="test")
    pusher.close()


def spool_file(delivery: OutboxDelivery, relative: str, content: bytes) -> dict[str, object]:
    """Put ``content`` into the spool at ``relative``; the file's outbox row as enqueue takes
    it."""
    path = delivery.options.spool / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return {"path": relative, "original_name": Path(relative).name,
            "declared_type": None, "size": len(content)}


# Plain HTTP only, but httpx builds a TLS context per client (about 50 ms each): share one.
_TLS = ssl.create_default_context()


def make_api_client(address: str, **kwargs: Any) -> httpx.Client:
    """An httpx client for the local API at ``address`` ("127.0.0.1:PORT" or "unix:/path";
    over the socket the API is addressed as localhost, as it requires)."""
    kwargs.setdefault("verify", _TLS)
    if address.startswith("unix:"):
        transport = httpx.HTTPTransport(uds=address.removeprefix("unix:"))
        return httpx.Client(
            transport=transport, base_url="http://localhost", trust_env=False, **kwargs
        )
    return httpx.Client(base_url=f"http://{address}", trust_env=False, **kwargs)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="syncd-", dir="/tmp" if os.path.isdir("/tmp") else None))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- SharePoint document libraries against the fake Microsoft Graph ---------------------------

import typing  # noqa: E402

SHAREPOINT_HOST = "contoso.sharepoint.com"
SHAREPOINT_SITE_PATH = "/sites/Manufacturers"
SHAREPOINT_SITE = f"{SHAREPOINT_HOST}:{SHAREPOINT_SITE_PATH}"

if typing.TYPE_CHECKING:  # the fake and pydantic models load only in the tests that use them
    from syncd.connectors.sharepoint.fake import FakeGraph
    from syncd.connectors.sharepoint.settings import SharepointSettings


def sharepoint_options(
    fake: FakeGraph, *libraries: dict[str, Any], **options: Any
) -> dict[str, Any]:
    """``[sharepoint]`` as a dict pointing at ``fake`` (login over its TLS endpoint, trusting its
    CA), with no request budget; each library is a ``[[sharepoint.libraries]]`` table."""
    return {
        "tenant_id": fake.tenant_id,
        "client_id": fake.client_id,
        "graph_url": fake.graph_url,
        "login_url": fake.login_url,
        "ca_file": fake.ca_file,
        "requests_per_second": 0,
        "libraries": list(libraries),
        **options,
    }


def sharepoint_settings(
    fake: FakeGraph, *libraries: dict[str, Any], **options: Any
) -> SharepointSettings:
    """SharepointSettings pointing at ``fake`` (see :func:`sharepoint_options`)."""
    from syncd.connectors.sharepoint.settings import SharepointSettings

    return SharepointSettings(**sharepoint_options(fake, *libraries, **options))


def document_library(
    name: str, library: str, producers: tuple[str, ...] = (), **extra: Any
) -> dict[str, Any]:
    """One ``[[sharepoint.libraries]]`` entry in the fake's site."""
    return {"name": name, "site": SHAREPOINT_SITE, "library": library,
            "producers": list(producers), "permission": f"docs.{name}", **extra}


def sharepoint_toml(fake: FakeGraph, tmp_path: Path, *libraries: dict[str, Any],
                    interval_seconds: float = 300.0) -> str:
    """``[sharepoint]`` as TOML for a ``syncd`` subprocess pointing at ``fake`` (the client
    secret in a file under ``tmp_path``)."""
    import json

    secret = tmp_path / "sharepoint_client_secret"
    secret.write_text(fake.client_secret)
    secret.chmod(0o600)
    lines = [
        "[sharepoint]",
        f"tenant_id = {json.dumps(fake.tenant_id)}",
        f"client_id = {json.dumps(fake.client_id)}",
        f"client_secret_file = {json.dumps(str(secret))}",
        f"graph_url = {json.dumps(fake.graph_url)}",
        f"login_url = {json.dumps(fake.login_url)}",
        f"ca_file = {json.dumps(str(fake.ca_file))}",
        f"interval_seconds = {interval_seconds}",
        "requests_per_second = 0",
    ]
    for library in libraries:
        lines.append("[[sharepoint.libraries]]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in library.items())
    return "\n".join(lines) + "\n"


def fake_documents(fake: FakeGraph, drive_id: str, folder: str = "") -> dict[str, dict[str, Any]]:
    """The fake's library as the cache should hold it, in the shape of
    :func:`syncd.state.documents.snapshot`: the folder path from the fake's own tree, in scope
    when below ``folder`` ('' = everything), sizes of files only (a folder's changes with what
    is below it, which Graph's delta does not report, so the cache keeps none)."""
    view = {}
    for item_id, entry in fake.snapshot(drive_id).items():
        row = dict(entry)
        path = row.pop("path")
        row["folder_path"] = path
        row["in_scope"] = int(not folder or path == folder or path.startswith(folder + "/"))
        if row["kind"] == "folder":
            row["size"] = None
        view[item_id] = row
    return view


def settled(view: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A documents view without the webUrl, which changes with a renamed or moved ancestor
    that Graph's delta reports alone: a cache kept by delta has the old one until the next full
    enumeration."""
    return {
        item_id: {key: value for key, value in row.items() if key != "web_url"}
        for item_id, row in view.items()
    }
