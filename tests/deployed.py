"""syncd laid out as ``systemd/syncd.service`` deploys it, for tests that must not run as root.

The daemon runs under its own numeric UID and GID with ``umask 0027``; its state directory and
runtime directory are owned by it with mode 0750 (``StateDirectory=``, ``RuntimeDirectory=``);
the configuration is ``root:<daemon group>`` 0640; the CRM token is a credential file only the
daemon reads, found through ``$CREDENTIALS_DIRECTORY``. The portal is another UID whose one extra
group is the daemon's. No user accounts are needed: ``setpriv`` switches to bare numbers.

The interpreter the test suite runs on may live where other users cannot reach it (pyenv under
``/root``), and so may the checkout: the layout gets its own copy of the project's packages and
their dependencies (hard links where possible, so it costs no disk), run by an interpreter of
the same Python version that the daemon's UID can execute (the suite's own, else Debian's).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).parents[1]
DAEMON_UID = 2741
PORTAL_UID = 2742
PACKAGES = ("syncd",)  # its links to connectors/, mappings/ and state/ are followed
# Not needed by the daemon, and large (msgraph alone is about 400 MB of files).
_SKIPPED = (
    "__editable__", "msgraph", "kiota", "microsoft_kiota", "azure", "mypy", "_pytest", "pytest",
    "hypothesis", "schemathesis", "ruff", "pip", "setuptools", "pygments", "jsonschema_rs",
)
BOOT = (
    "import os, sys; os.umask(0o027); from syncd.cli.main import main; sys.exit(main(sys.argv[1:]))"
)


def missing_prerequisite() -> str | None:
    """Why deployment tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (to create files for other UIDs and switch to them)"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux)"
    if interpreter_for(DAEMON_UID) is None:
        return f"no Python {sys.version_info.major}.{sys.version_info.minor} runnable by UID " \
               f"{DAEMON_UID} (.ci/run installs Debian's python3.11)"
    return None


def as_user(uid: int, *groups: int) -> list[str]:
    """A ``setpriv`` prefix running a command as ``uid`` (its group the same number) with only
    ``groups`` as supplementary groups."""
    prefix = ["setpriv", "--reuid", str(uid), "--regid", str(uid)]
    if groups:
        return [*prefix, "--groups", ",".join(str(g) for g in groups)]
    return [*prefix, "--clear-groups"]


_INTERPRETERS: dict[int, str | None] = {}


def interpreter_for(uid: int) -> str | None:
    """A Python of this version that ``uid`` can run."""
    if uid not in _INTERPRETERS:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        found = None
        for candidate in (os.path.realpath(sys.executable), f"/usr/bin/python{version}"):
            try:
                done = subprocess.run(
                    [*as_user(uid), candidate, "-c",
                     "import sys; print('%d.%d' % sys.version_info[:2])"],
                    capture_output=True, text=True, timeout=30, cwd="/")
            except OSError:
                continue
            if done.returncode == 0 and done.stdout.strip() == version:
                found = candidate
                break
        _INTERPRETERS[uid] = found
    return _INTERPRETERS[uid]


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _site_packages() -> list[Path]:
    return [Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]


def _install_app(app: Path) -> None:
    app.mkdir()
    for package in PACKAGES:
        shutil.copytree(ROOT / package, app / package, copy_function=_link_or_copy)
    for site in _site_packages():
        for entry in site.iterdir():
            if entry.name.startswith(_SKIPPED) or "__mypyc" in entry.name:
                continue
            if (app / entry.name).exists():
                continue
            if entry.is_dir():
                shutil.copytree(entry, app / entry.name, copy_function=_link_or_copy,
                                symlinks=True)
            else:
                _link_or_copy(str(entry), str(app / entry.name))
    for path in [app, *app.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


@dataclass
class Deployment:
    """One deployed syncd: directories, configuration and credentials as the unit makes them."""

    base: Path
    python: str

    @property
    def app(self) -> Path:
        return self.base / "app"

    @property
    def state(self) -> Path:
        return self.base / "var-lib-syncd"

    @property
    def runtime(self) -> Path:
        return self.base / "run-syncd"

    @property
    def socket(self) -> Path:
        return self.runtime / "api.sock"

    @property
    def config(self) -> Path:
        return self.base / "etc-syncd" / "syncd.toml"

    @property
    def credentials(self) -> Path:
        return self.base / "credentials"

    @property
    def cache(self) -> Path:
        return self.state / "cache.sqlite3"

    @property
    def portal_home(self) -> Path:
        """A directory of the portal's own (its uploads' temporary files)."""
        return self.base / "portal"

    def write_config(self, crm_url: str, extra: str = "") -> None:
        self.config.write_text(
            '[crm]\nrequests_per_second = 0\n'
            f'[crm.bitrix24]\nurl = "{crm_url}"\n'
            '[mirror]\ninterval_seconds = 2\njitter_seconds = 0\n'
            f'[api]\nlisten = "unix:{self.socket}"\n'
            '[omniva]\nenabled = false\n'
            # never used by these tests; a closed loopback port, never the real VIES
            '[vies]\nendpoint = "http://127.0.0.1:9/taxation_customs/vies/services/checkVatService"\n'
            "[outbox]\nmin_free_mb = 0\n" + extra
        )
        os.chown(self.config, 0, DAEMON_UID)
        self.config.chmod(0o640)

    def environment(self) -> dict[str, str]:
        """What systemd hands the service (and nothing of the test runner's SYNCD_*)."""
        return {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(self.app),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "STATE_DIRECTORY": str(self.state),
            "RUNTIME_DIRECTORY": str(self.runtime),
            "CREDENTIALS_DIRECTORY": str(self.credentials),
            "HOME": str(self.state),
            "LANG": "C.UTF-8",
        }

    def syncd_command(self, *args: str) -> list[str]:
        """``syncd --config … ARGS`` as the daemon's user with the unit's umask."""
        return [*as_user(DAEMON_UID), self.python, "-s", "-c", BOOT,
                "--config", str(self.config), *args]

    def portal_command(self, *command: str) -> list[str]:
        """A command as the portal's user, a member of the daemon's group."""
        return [*as_user(PORTAL_UID, DAEMON_UID), *command]

    def read_only(self) -> sqlite3.Connection:
        """The cache opened read-only by the test itself (root): never creates or changes it."""
        return sqlite3.connect(f"file:{self.cache}?mode=ro", uri=True, timeout=5)

    @contextmanager
    def daemon(self) -> Iterator[subprocess.Popen[bytes]]:
        """``syncd run`` as deployed, until SIGTERM; its log goes to ``base/daemon.log``."""
        log = (self.base / "daemon.log").open("ab")
        process = subprocess.Popen(self.syncd_command("run"), env=self.environment(),
                                   stdout=log, stderr=subprocess.STDOUT, cwd="/")
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
            log.close()

    def wait_until_mirrored(self, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
        """Until the API answers and the first mirror cycle committed all three entities."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"syncd exited with {process.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and self.cache.exists():
                try:
                    with closing(self.read_only()) as conn:
                        cursors = conn.execute("SELECT count(*) FROM cursors").fetchone()[0]
                except sqlite3.Error:
                    cursors = 0
                if cursors == 3 and self.api_get("/healthz").status_code == 200:
                    return
            time.sleep(0.1)  # polling a file another process writes; nothing to wait on
        raise AssertionError(f"syncd did not mirror within {timeout} s:\n{self.log_tail()}")

    def api_get(self, path: str) -> httpx.Response:
        transport = httpx.HTTPTransport(uds=str(self.socket))
        with httpx.Client(transport=transport, base_url="http://localhost",
                          trust_env=False) as client:
            return client.get(path)

    def log_tail(self, lines: int = 40) -> str:
        path = self.base / "daemon.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def deployment(crm_token: str) -> Iterator[Deployment]:
    """A fresh deployment under ``/tmp`` (pytest's own temporary directories are 0700)."""
    python = interpreter_for(DAEMON_UID)
    assert python is not None
    base = Path(tempfile.mkdtemp(prefix="syncd-deploy-", dir="/tmp"))
    try:
        base.chmod(0o755)
        deployed = Deployment(base, python)
        _install_app(deployed.app)
        for directory in (deployed.state, deployed.runtime):
            directory.mkdir()
            os.chown(directory, DAEMON_UID, DAEMON_UID)
            directory.chmod(0o750)
        deployed.config.parent.mkdir()
        deployed.config.parent.chmod(0o755)
        deployed.credentials.mkdir()
        token = deployed.credentials / "crm_webhook_token"
        token.write_text(crm_token)
        for path, mode in ((token, 0o400), (deployed.credentials, 0o500)):
            os.chown(path, DAEMON_UID, DAEMON_UID)
            path.chmod(mode)
        deployed.portal_home.mkdir()
        os.chown(deployed.portal_home, PORTAL_UID, PORTAL_UID)
        deployed.portal_home.chmod(0o700)
        yield deployed
    finally:
        shutil.rmtree(base, ignore_errors=True)
