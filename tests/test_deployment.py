"""syncd and the portal as deployed: the daemon under its own numeric UID with the unit's
``umask 0027`` and directory modes, the portal's PHP (written from docs/portal-contract.md
alone) under another UID whose one extra group is the daemon's. The portal reads the cache,
cannot write syncd's files, files requests with files through the API, sees them done; the
spool ends empty. Under the design this replaced (the portal inserting outbox rows and writing
the spool), the same script's filing step fails: ``sql_write`` and ``spool_write`` below."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from syncd.connectors.crm.bitrix24.fake import FakeBitrix24
from syncd.core.clock import iso, utc_now
from tests.deployed import BOOT, DAEMON_UID, Deployment, deployment, missing_prerequisite

PHP_DIR = Path(__file__).parent / "php"
REQUESTS = 3


def _php() -> str:
    php = shutil.which("php")
    modules = subprocess.run([php, "-m"], capture_output=True, text=True).stdout if php else ""
    missing = [p for m, p in (("pdo_sqlite", "php-sqlite3"), ("curl", "php-curl"))
               if m not in modules]
    if php is None or missing:
        _unavailable(f"needs php-cli with {', '.join(missing) or 'its modules'}")
    assert php is not None
    return php


def _unavailable(reason: str) -> None:
    # CI installs everything these tests need: there, a missing piece is a failure.
    if os.environ.get("CI"):
        pytest.fail(f"deployment test cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def deployed() -> Iterator[tuple[Deployment, FakeBitrix24]]:
    reason = missing_prerequisite()
    if reason:
        _unavailable(reason)
    with (
        FakeBitrix24(seed=7, companies=20, contacts=80, devices=40, token="deploy-token") as fake,
        deployment(fake.token) as deployed,
    ):
        deployed.write_config(fake.base_url)
        yield deployed, fake


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_portal_files_requests_as_deployed_and_the_spool_ends_empty(
    deployed: tuple[Deployment, FakeBitrix24],
) -> None:
    deployment, fake = deployed
    php = _php()
    scripts = deployment.base / "portal-php"
    scripts.mkdir()
    for script in ("portal_examples.php", "deployed_portal.php"):
        shutil.copy(PHP_DIR / script, scripts / script)
        (scripts / script).chmod(0o644)
    scripts.chmod(0o755)

    with deployment.daemon() as daemon:
        deployment.wait_until_mirrored(daemon)
        # the unit's modes, made by the daemon itself under umask 0027
        assert (deployment.state.stat().st_uid, mode(deployment.state)) == (DAEMON_UID, 0o750)
        assert mode(deployment.cache) == 0o640
        assert mode(deployment.socket) == 0o660
        assert mode(deployment.state / "spool") == 0o750
        assert mode(deployment.state / "tmp") == 0o700  # where upload bodies are buffered

        run = subprocess.run(
            deployment.portal_command(
                php, "-d", "error_reporting=E_ALL", "-d", "display_errors=stderr",
                str(scripts / "deployed_portal.php"), str(deployment.socket),
                str(deployment.cache), str(deployment.portal_home), str(REQUESTS)),
            capture_output=True, text=True, timeout=180, cwd="/")
        assert run.returncode == 0, f"{run.stderr[-3000:]}\n{deployment.log_tail()}"
        assert run.stderr.strip() == "", run.stderr[-3000:]
        seen = json.loads(run.stdout)
        spool_files = [p for p in (deployment.state / "spool").rglob("*") if not p.is_dir()]
        assert daemon.poll() is None, deployment.log_tail()

    assert daemon.returncode == 0, deployment.log_tail()
    assert seen["devices_on_company_page"] >= 1
    # the cache and the spool are read-only for the portal: the withdrawn SQL path fails
    assert (seen["sql_write"], seen["spool_write"]) == ("refused", "refused")
    assert len(seen["requests"]) == REQUESTS
    items = fake.service_requests().values()
    for number, request in enumerate(seen["requests"]):
        assert (request["status"], request["retry_status"]) == (202, 202), request
        assert request["retry_id"] == request["id"]  # the retry got the first answer
        assert request["final"] == "done", (request, deployment.log_tail())
        assert request["cache"] == {"status": "done", "crm_id": request["crm_id"]}
        [item] = [i for i in items if i.get("xmlId") == request["key"]]  # exactly one
        assert str(item["id"]) == request["crm_id"]
        names = sorted(f["name"] for f in item["_disk_files"])  # type: ignore[union-attr]
        assert len(names) == 2, names  # its own files, each once, under the client's names
        assert names[0].endswith(f"-0-handpiece {number}.jpg"), names
        assert names[1].endswith("-1-service log.pdf"), names
    assert spool_files == [], spool_files  # syncd deleted every delivered file


def test_an_erasure_as_deployed_sticks_and_its_key_is_the_daemons_alone(
    deployed: tuple[Deployment, FakeBitrix24],
) -> None:
    """The operator erases a person with the daemon running, as the daemon's user (`sudo -u
    syncd`): the suppression key is the daemon's alone (the portal's user cannot read it), the
    running daemon keeps the person out although the CRM changes them, and root is turned away
    rather than leave a key the daemon could not read."""
    deployment, fake = deployed
    with deployment.daemon() as daemon:
        deployment.wait_until_mirrored(daemon)
        with closing(deployment.read_only()) as conn:
            contact_id = conn.execute(
                "SELECT crm_id FROM contacts ORDER BY CAST(crm_id AS INTEGER) LIMIT 1"
            ).fetchone()[0]
        erase = ["subject", "erase", "--crm-contact", contact_id, "--yes"]
        as_root = subprocess.run(
            [deployment.python, "-s", "-c", BOOT, "--config", str(deployment.config), *erase],
            env=deployment.environment(), capture_output=True, text=True, timeout=60, cwd="/",
        )
        assert as_root.returncode == 77, as_root.stderr  # EX_NOPERM: not the state's owner
        assert not (deployment.state / "suppression.key").exists()

        run = subprocess.run(deployment.syncd_command(*erase), env=deployment.environment(),
                             capture_output=True, text=True, timeout=60, cwd="/")
        assert run.returncode == 0, f"{run.stderr}\n{deployment.log_tail()}"
        assert "delete the record(s) there" in run.stdout
        key = deployment.state / "suppression.key"
        assert (key.stat().st_uid, mode(key)) == (DAEMON_UID, 0o600)
        peek = subprocess.run(deployment.portal_command("/bin/cat", str(key)),
                              capture_output=True, timeout=30, cwd="/")
        assert peek.returncode != 0 and peek.stdout == b""  # the portal cannot read the key

        # The CRM changes the person: the daemon's incremental cycle lists them and must not
        # bring them back. Wait for a cycle that started after the change.
        fake.update("contacts", contact_id, NAME="Changed")
        changed_at = iso(utc_now() + timedelta(seconds=1))
        deadline = time.monotonic() + 60
        while _latest_run_start(deployment) <= changed_at:
            assert daemon.poll() is None and time.monotonic() < deadline, deployment.log_tail()
            time.sleep(0.1)  # the daemon's cycles are another process's commits; poll them
        with closing(deployment.read_only()) as conn:
            held = conn.execute(
                "SELECT count(*) FROM contacts WHERE crm_id = ?", (contact_id,)
            ).fetchone()[0]
            suppressed = conn.execute(
                "SELECT count(*) FROM subject_suppressions WHERE entity = 'contacts' "
                "AND kind = 'crm_id'"
            ).fetchone()[0]
        assert (held, suppressed) == (0, 1), deployment.log_tail()
        assert "fetched 1, changed 0" in deployment.log_tail()  # listed, and kept out
        assert daemon.poll() is None, deployment.log_tail()
    assert daemon.returncode == 0, deployment.log_tail()


def _latest_run_start(deployment: Deployment) -> str:
    with closing(deployment.read_only()) as conn:
        row = conn.execute("SELECT max(started_at) FROM sync_runs").fetchone()
    return str(row[0] or "")
