"""The portal read contract (docs/portal-contract.md): the document matches the schema, and a real
PHP client (Debian's php-cli with pdo_sqlite) reads the cache through the documented examples,
including while the daemon mirrors a changing CRM.

Nothing here prints personal data: the PHP scripts report counts, run numbers and CRM IDs only.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from syncd.core.entities import CANONICAL_FIELDS
from syncd.mappings.loader import FieldRule, load_mapping_set
from syncd.state.db import close, connect
from syncd.state.migrations import current_version, latest_version
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "portal-contract.md"
PHP_DIR = ROOT / "tests" / "php"
READ_CACHE = PHP_DIR / "read_cache.php"
EXAMPLES = PHP_DIR / "portal_examples.php"
MIRRORED = ("companies", "contacts", "devices")
MAPPINGS = load_mapping_set("bitrix24")


# -- the document -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DocColumn:
    type: str
    nullable: bool


def documented_tables() -> dict[str, dict[str, DocColumn]]:
    """``### Table `name``` headings and the ``| `column` | TYPE | no/yes | ...`` rows below."""
    tables: dict[str, dict[str, DocColumn]] = {}
    current: dict[str, DocColumn] | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"### Table `(\w+)`", line.strip())
        if heading:
            current = tables.setdefault(heading.group(1), {})
            continue
        if line.startswith("#"):
            current = None
            continue
        row = re.match(r"\| `(\w+)` \| (TEXT|INTEGER|REAL|BLOB) \| (no|yes) \|", line)
        if row and current is not None:
            assert row.group(1) not in current, f"{row.group(1)} documented twice"
            current[row.group(1)] = DocColumn(row.group(2), row.group(3) == "yes")
    return tables


def internal_table_patterns() -> list[str]:
    """The bullet list of section 7, "Not part of the contract"."""
    text = DOC.read_text(encoding="utf-8")
    section = re.search(r"^## \d+\. Not part of the contract$(.*?)^## ", text, re.S | re.M)
    assert section, "section 'Not part of the contract' not found"
    return re.findall(r"^- `([\w*]+)`$", section.group(1), re.M)


def documented_schema_version() -> int:
    match = re.search(r"The current schema version is \*\*(\d+)\*\*", DOC.read_text("utf-8"))
    assert match, "the document does not state the current schema version"
    return int(match.group(1))


def php_blocks() -> list[str]:
    return re.findall(r"^```php\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.S | re.M)


@pytest.fixture
def fresh_cache(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(tmp_path / "c.sqlite3")
    yield conn
    conn.close()


def table_info(conn: sqlite3.Connection, table: str) -> dict[str, tuple[str, bool, bool]]:
    """column -> (declared type, NOT NULL, part of the primary key), read with sqlite-utils's
    introspection."""
    return {
        column.name: (column.type.upper(), bool(column.notnull), bool(column.is_pk))
        for column in sqlite_utils.Database(conn)[table].columns
    }


def test_documented_columns_exist_with_their_type_and_nullability(
    fresh_cache: sqlite3.Connection,
) -> None:
    tables = documented_tables()
    assert set(MIRRORED) | {"cursors", "sync_runs"} <= set(tables)
    for table, columns in tables.items():
        actual = table_info(fresh_cache, table)
        assert actual, f"documented table {table} does not exist"
        for name, doc in columns.items():
            assert name in actual, f"documented column {table}.{name} does not exist"
            declared, not_null, primary = actual[name]
            assert doc.type == declared, f"{table}.{name}: documented {doc.type}, is {declared}"
            if doc.nullable:
                assert not (not_null or primary), f"{table}.{name} is documented as nullable"
            else:
                assert not_null or primary, f"{table}.{name} is documented NOT NULL but is not"


def test_every_column_of_the_readable_tables_is_documented(
    fresh_cache: sqlite3.Connection,
) -> None:
    tables = documented_tables()
    for table, columns in tables.items():
        undocumented = set(table_info(fresh_cache, table)) - set(columns)
        assert not undocumented, f"{table} has undocumented columns {sorted(undocumented)}"


def test_every_table_is_either_readable_or_declared_internal(
    fresh_cache: sqlite3.Connection,
) -> None:
    readable = set(documented_tables())
    internal = internal_table_patterns()
    assert "stage_*" in internal and "quarantine" in internal
    names = [n for n in sqlite_utils.Database(fresh_cache).table_names()
             if not n.startswith("sqlite_")]
    for name in names:
        is_internal = any(fnmatch.fnmatchcase(name, pattern) for pattern in internal)
        assert (name in readable) != is_internal, (
            f"table {name} must be either documented as readable or listed in "
            "'Not part of the contract' of docs/portal-contract.md"
        )


def test_documented_schema_version_is_the_latest(fresh_cache: sqlite3.Connection) -> None:
    assert documented_schema_version() == latest_version() == current_version(fresh_cache)
    text = DOC.read_text(encoding="utf-8")
    assert re.search(rf"^\| {latest_version()} \| ", text, re.M), "no changelog row"
    assert f"SYNCD_KNOWN_SCHEMA_VERSIONS = [{latest_version()}]" in text


def test_documented_json_columns_are_the_canonical_json_fields() -> None:
    text = DOC.read_text(encoding="utf-8")
    constant = re.search(r"const SYNCD_JSON_COLUMNS = \[(.*?)\];", text, re.S)
    assert constant
    documented = {
        table: re.findall(r"'(\w+)'", columns)
        for table, columns in re.findall(r"'(\w+)' => \[([^\]]*)\]", constant.group(1))
    }
    canonical = {
        table: [f.name for f in fields if f.kind == "json"]
        for table, fields in CANONICAL_FIELDS.items()
    }
    assert documented == canonical


def test_php_examples_file_is_the_documents_php_code() -> None:
    blocks = php_blocks()
    assert len(blocks) >= 5
    assert EXAMPLES.read_text(encoding="utf-8") == "\n".join(blocks), (
        "tests/php/portal_examples.php must be the PHP blocks of docs/portal-contract.md, "
        "concatenated in order"
    )


# -- PHP --------------------------------------------------------------------------------------


def _php_or_skip() -> str:
    php = shutil.which("php")
    if php is None:
        pytest.skip("php-cli is not installed (.ci/run installs php-cli and php-sqlite3)")
    modules = subprocess.run([php, "-m"], capture_output=True, text=True, timeout=30).stdout
    if "pdo_sqlite" not in modules.lower().split():
        pytest.skip("PHP's pdo_sqlite is not installed (.ci/run installs php-sqlite3)")
    return php


@pytest.fixture(scope="module")
def php() -> str:
    return _php_or_skip()


# Every PHP notice, warning or deprecation goes to stderr, which the tests require to be empty.
STRICT = ("-d", "display_errors=stderr", "-d", "error_reporting=-1", "-d", "log_errors=0")


def run_php(
    php: str, *args: str, stdin: str | None = None, timeout: float = 60
) -> tuple[int, list[dict[str, Any]]]:
    """Run a PHP script; returns its exit status and its stdout's JSON lines."""
    done = subprocess.run(
        [php, *STRICT, *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )
    assert not done.stderr.strip(), f"PHP wrote to stderr: {done.stderr[-2000:]}"
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def read_only(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=5)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _direct_rules(entity: str) -> list[FieldRule]:
    """The mapped fields read straight from a record (not from the requisites and addresses the
    adapter attaches), in mapping order."""
    return [rule for rule in MAPPINGS[entity].rules if not rule.path[0].startswith("_")]


def fake_state(fake: Any, entity: str) -> dict[str, str]:
    """crm_id -> the stored values the cache should hold for each of the fake's records."""
    rules = _direct_rules(entity)
    return {
        str(key): json.dumps([rule.apply(raw) for rule in rules], sort_keys=True)
        for key, raw in fake.records(entity).items()
    }


def cache_state(conn: sqlite3.Connection, entity: str) -> dict[str, str]:
    """crm_id -> the stored values of every row, comparable with :func:`fake_state`."""
    rules = _direct_rules(entity)
    json_columns = {f.name for f in CANONICAL_FIELDS[entity] if f.kind == "json"}
    columns = ", ".join(rule.target for rule in rules)
    return {
        crm_id: json.dumps(
            [
                json.loads(value) if rule.target in json_columns else value
                for rule, value in zip(rules, values, strict=True)
            ],
            sort_keys=True,
        )
        for crm_id, *values in conn.execute(f"SELECT crm_id, {columns} FROM {entity}")
    }


def write_config(directory: Path, fake: Any, **mirror: float) -> Path:
    token = directory / "token"
    token.write_text(fake.token, encoding="utf-8")
    settings = {
        "interval_seconds": 60,
        "jitter_seconds": 0,
        "sweep_interval_seconds": 3600,
        "full_resync_interval_hours": 0,
        **mirror,
    }
    config = directory / "syncd.toml"
    config.write_text(
        "[crm]\n"
        "requests_per_second = 0\n"
        "[crm.bitrix24]\n"
        f"url = {json.dumps(fake.base_url)}\n"
        f"webhook_token_file = {json.dumps(str(token))}\n"
        "[mirror]\n"
        + "".join(f"{key} = {value}\n" for key, value in settings.items())
        + f"[state]\ndirectory = {json.dumps(str(directory / 'state'))}\n"
        '[log]\nlevel = "INFO"\n'
        '[api]\nlisten = "127.0.0.1:0"\n[omniva]\nenabled = false\n',
        encoding="utf-8",
    )
    return config


def mirror_once(config: Path) -> Path:
    """One mirror cycle with the real engine, in process; returns the cache path."""
    from syncd.config import load_settings
    from syncd.runtime import build_engine, open_cache

    settings = load_settings(config)
    conn = open_cache(settings)
    engine = build_engine(settings, conn)
    try:
        engine.run_cycle()
    finally:
        engine.adapter.close()
        conn.close()
    return settings.state.cache_path


@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """A cache filled by the real engine from the fake Bitrix24: a full sync, some changes, an
    incremental cycle. Yields the cache path and the (still running) fake."""
    from syncd.connectors.crm.bitrix24.fake import FakeBitrix24

    directory = tmp_path_factory.mktemp("engine-cache")
    with FakeBitrix24(seed=11, companies=40, contacts=250, devices=150, token="t0ken") as fake:
        config = write_config(directory, fake)
        path = mirror_once(config)
        fake.mutate_random(creates=10, updates=30, deletes=0, seed=12)
        mirror_once(config)
        yield path, fake


def test_read_cache_accepts_a_cache_written_by_the_engine(
    php: str, engine_cache: tuple[Path, Any]
) -> None:
    path, fake = engine_cache
    status, lines = run_php(php, str(READ_CACHE), str(path))
    assert status == 0, lines
    [line] = lines
    assert line["ok"] is True
    assert line["version"] == latest_version()
    assert line["checks"] > 1000
    with closing(read_only(path)) as conn:
        for entity in MIRRORED:
            assert line["counts"][entity] == len(fake.records(entity)) > 0
            assert cache_state(conn, entity) == fake_state(fake, entity)
        cursors = {
            entity: conn.execute(
                "SELECT strftime('%Y-%m-%dT%H:%M:%SZ', value) FROM cursors WHERE entity = ?",
                (entity,),
            ).fetchone()[0]
            for entity in MIRRORED
        }
        last_run = conn.execute("SELECT max(id) FROM sync_runs").fetchone()[0]
    assert line["data_as_of"] == cursors
    assert line["oldest"] == min(cursors.values())
    assert line["last_run"] == last_run == 2
    assert line["company_page"]["devices"] >= 1


def test_read_cache_refuses_an_unknown_schema_version(
    php: str, engine_cache: tuple[Path, Any]
) -> None:
    path, _fake = engine_cache
    newer = str(latest_version() + 1)
    status, lines = run_php(php, str(READ_CACHE), str(path), "--expect-version", newer)
    assert status == 1
    assert lines == [{"ok": False, "error": lines[0]["error"]}]
    assert "schema version" in lines[0]["error"]


def test_read_cache_refuses_a_missing_cache_without_creating_it(php: str, tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.sqlite3"
    status, lines = run_php(php, str(READ_CACHE), str(missing))
    assert status == 1 and lines[0]["ok"] is False
    assert not missing.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            'UPDATE contacts SET emails = \'{"type": "work"}\' WHERE crm_id = :id',
            "emails is a JSON object",
        ),
        (
            'UPDATE contacts SET phones = \'[{"type": "pager", "value": "1"}]\' WHERE crm_id = :id',
            "undocumented type",
        ),
        ("UPDATE contacts SET birth_date = '14.03.1985' WHERE crm_id = :id", "birth_date"),
        ("UPDATE devices SET company_id = 'gone' WHERE company_id IS NOT NULL", "dangles"),
    ],
)
def test_read_cache_reports_a_violation_by_id_only(
    php: str, engine_cache: tuple[Path, Any], tmp_path: Path, damage: str, message: str
) -> None:
    """The checker is not vacuous: damage that syncd never writes is caught, and reported with
    the record's ID but none of its data."""
    path, _fake = engine_cache
    copy = tmp_path / "damaged.sqlite3"
    with closing(read_only(path)) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)
        victim = target.execute("SELECT min(crm_id) FROM contacts").fetchone()[0]
        target.execute(damage, {"id": victim})  # foreign keys are off on this connection
        target.commit()
    status, lines = run_php(php, str(READ_CACHE), str(copy))
    assert status == 1
    assert lines[0]["ok"] is False and message in lines[0]["error"]
    with closing(sqlite3.connect(copy)) as conn:
        first, last, emails = conn.execute(
            "SELECT first_name, last_name, emails FROM contacts WHERE crm_id = ?", (victim,)
        ).fetchone()
    for value in (first, last, *re.findall(r'"value": ?"([^"]+)"', emails)):
        assert not value or value not in lines[0]["error"]


EXAMPLES_HARNESS = """<?php
declare(strict_types=1);
require $argv[1];
$in = json_decode(stream_get_contents(STDIN), true, 512, JSON_THROW_ON_ERROR);
$db = syncd_open($in['path']);
$out = syncd_read($db, function (PDO $db) use ($in): array {
    $page = syncd_company_page($db, $in['company']);
    return [
        'page' => [
            'company' => $page['company']['crm_id'],
            'company_json' => array_map('gettype', array_intersect_key(
                $page['company'], array_flip(SYNCD_JSON_COLUMNS['companies']))),
            'contacts' => array_column($page['contacts'], 'crm_id'),
            'devices' => array_column($page['devices'], 'crm_id'),
            'handpieces' => array_map(fn ($d) => count($d['handpieces']), $page['devices']),
        ],
        'missing' => syncd_company_page($db, 'no-such-id'),
        'email' => array_column(syncd_find_contacts_by_email($db, $in['email']), 'crm_id'),
        'email_upper' => array_column(
            syncd_find_contacts_by_email($db, strtoupper($in['email'])), 'crm_id'),
        'as_of' => syncd_data_as_of($db),
    ];
});
echo json_encode($out), "\\n";
"""


def test_documented_examples_return_what_the_cache_holds(
    php: str, engine_cache: tuple[Path, Any], tmp_path: Path
) -> None:
    """Each example of section 9 answers what an independent query in Python answers."""
    path, _fake = engine_cache
    with closing(read_only(path)) as conn:
        company = conn.execute(
            "SELECT company_id FROM devices WHERE company_id IS NOT NULL "
            "GROUP BY company_id ORDER BY count(*) DESC, company_id LIMIT 1"
        ).fetchone()[0]
        contacts = [
            r[0]
            for r in conn.execute(
                "SELECT crm_id FROM contacts WHERE company_id = ? "
                "ORDER BY last_name, first_name, crm_id",
                (company,),
            )
        ]
        devices = conn.execute(
            "SELECT crm_id, handpieces FROM devices WHERE company_id = ? "
            "ORDER BY brand, model, serial_number, crm_id",
            (company,),
        ).fetchall()
        emails: dict[str, set[str]] = {}
        for crm_id, raw in conn.execute("SELECT crm_id, emails FROM contacts"):
            for item in json.loads(raw):
                emails.setdefault(item["value"].lower(), set()).add(crm_id)
        # an address shared by several contacts if there is one, else any
        email = max(sorted(emails), key=lambda e: len(emails[e]))
        cursors = dict(conn.execute("SELECT entity, value FROM cursors").fetchall())
        last = conn.execute(
            "SELECT id, kind, finished_at FROM sync_runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
    harness = tmp_path / "harness.php"
    harness.write_text(EXAMPLES_HARNESS, encoding="utf-8")
    request = json.dumps({"path": str(path), "company": company, "email": email})
    status, [out] = run_php(php, str(harness), str(EXAMPLES), stdin=request)
    assert status == 0
    assert out["page"]["company"] == company
    assert out["page"]["company_json"] == {
        "addresses": "array",
        "phones": "array",
        "emails": "array",
    }
    assert out["page"]["contacts"] == contacts
    assert out["page"]["devices"] == [d[0] for d in devices]
    assert out["page"]["handpieces"] == [len(json.loads(d[1])) for d in devices]
    assert out["missing"] is None
    expected = sorted(emails[email])
    assert sorted(out["email"]) == expected and out["email"] == sorted(out["email"])
    if email.isascii():
        assert sorted(out["email_upper"]) == expected
    as_of = {entity: _utc(value) for entity, value in cursors.items()}
    assert out["as_of"]["entities"] == as_of
    assert out["as_of"]["oldest"] == min(as_of.values())
    assert out["as_of"]["last_cycle"] == dict(zip(("id", "kind", "finished_at"), last, strict=True))


def _utc(iso_value: str) -> str:
    """An ISO 8601 timestamp with any offset, as UTC ``...Z`` (how the contract shows it)."""
    return datetime.fromisoformat(iso_value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_documented_sql_queries_answer_data_as_of(engine_cache: tuple[Path, Any]) -> None:
    """The ``sql`` blocks of section 5 convert the CRM's offsets to UTC and find the last run."""
    path, _fake = engine_cache
    text = DOC.read_text(encoding="utf-8")
    statements = [
        statement.strip()
        for block in re.findall(r"^```sql\n(.*?)^```$", text, re.S | re.M)
        for statement in block.split(";")
        if statement.strip()
    ]
    assert len(statements) == 3
    with closing(read_only(path)) as conn:
        cursors = dict(conn.execute("SELECT entity, value FROM cursors").fetchall())
        assert any(not value.endswith(("Z", "+00:00")) for value in cursors.values())
        per_entity, oldest, last_run = (conn.execute(s).fetchall() for s in statements)
        newest = conn.execute(
            "SELECT id, kind, finished_at FROM sync_runs WHERE id = (SELECT max(id) FROM sync_runs)"
        ).fetchall()
    expected = {entity: _utc(value) for entity, value in cursors.items()}
    assert dict(per_entity) == expected and len(expected) == len(MIRRORED)
    assert oldest == [(min(expected.values()),)]
    assert last_run == newest


# -- the real client while syncd runs ---------------------------------------------------------


def _daemon_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SYNCD_")}
    for name in (
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "CREDENTIALS_DIRECTORY",
        "STATE_DIRECTORY",
    ):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _last_run(path: Path) -> int:
    """The newest committed sync_runs id, 0 while the cache or its first cycle is missing."""
    if not path.exists():
        return 0
    try:
        with closing(read_only(path)) as conn:
            return int(conn.execute("SELECT coalesce(max(id), 0) FROM sync_runs").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is being created
        return 0


def _snapshot(path: Path) -> dict[str, Any]:
    """One consistent observation of the cache: the last committed run, the counts, "data as
    of" per entity and the stored values of every record."""
    with closing(read_only(path)) as conn:
        conn.execute("BEGIN")
        state = {entity: cache_state(conn, entity) for entity in MIRRORED}
        observation = {
            "last_run": conn.execute("SELECT max(id) FROM sync_runs").fetchone()[0],
            "counts": {entity: len(rows) for entity, rows in state.items()},
            "data_as_of": dict(
                conn.execute(
                    "SELECT entity, strftime('%Y-%m-%dT%H:%M:%SZ', value) FROM cursors"
                ).fetchall()
            ),
        }
        conn.execute("COMMIT")
    return {"state": state, **observation}


def test_php_reads_consistent_snapshots_while_the_daemon_mirrors(php: str, tmp_path: Path) -> None:
    """The spec's real client: PHP reads through the contract throughout incremental cycles, a
    full resync handed to the running daemon and a deletion sweep; every read sees every
    invariant, reads of the same committed cycle agree, and the cache converges to the CRM."""
    from syncd.connectors.crm.bitrix24.fake import FakeBitrix24

    observed: list[dict[str, Any]] = []  # Python's own snapshots, without the record values

    def cache_holds(expected: dict[str, dict[str, str]], *, exactly: bool) -> bool:
        snapshot = _snapshot(cache)
        observed.append({k: v for k, v in snapshot.items() if k != "state"})
        if exactly:
            return snapshot["state"] == expected
        return all(expected[e].items() <= snapshot["state"][e].items() for e in MIRRORED)

    with FakeBitrix24(seed=1, companies=300, contacts=2000, devices=1000, token="t0ken") as fake:
        config = write_config(
            tmp_path, fake, interval_seconds=1, jitter_seconds=0, sweep_interval_seconds=10
        )
        cache = tmp_path / "state" / "cache.sqlite3"
        stop = str(tmp_path / "stop-reading")
        log = (tmp_path / "daemon.log").open("wb")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "syncd", "--config", str(config), "run"],
            cwd=ROOT,
            env=_daemon_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        reader: subprocess.Popen[str] | None = None
        try:
            wait_for(
                lambda: _last_run(cache) > 0 or daemon.poll() is not None,
                30,
                "the daemon's first cycle",
            )
            assert daemon.poll() is None, _tail(tmp_path / "daemon.log")
            reader = subprocess.Popen(
                [php, *STRICT, str(READ_CACHE), str(cache), "--loop", "90", "--stop-file", stop],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            # Round 0 deletes a few records (under the delete guard): the cache holds them until
            # the sweep (every 10 s) finds them gone. Until then, wait for creates and updates.
            fake.mutate_random(creates=5, updates=40, deletes=3, seed=100)
            expected = {e: fake_state(fake, e) for e in MIRRORED}
            wait_for(lambda: cache_holds(expected, exactly=False), 20, "round 0 to be mirrored")
            resync = subprocess.run(
                [sys.executable, "-m", "syncd", "--config", str(config), "--resync", "all"],
                cwd=ROOT,
                env=_daemon_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert resync.returncode == 0, resync.stderr[-2000:]
            for round_no in range(1, 4):
                fake.mutate_random(creates=10, updates=60, deletes=0, seed=100 + round_no)
                expected = {e: fake_state(fake, e) for e in MIRRORED}
                wait_for(
                    lambda want=expected: cache_holds(want, exactly=False),
                    20,
                    f"round {round_no} to be mirrored",
                )
            wait_for(
                lambda: cache_holds(expected, exactly=True),
                30,
                "the cache to converge to the fake CRM (deletions wait for the sweep)",
            )
            Path(stop).touch()  # the reader finishes its current read and exits
            stdout, stderr = reader.communicate(timeout=30)
            assert not stderr.strip(), stderr[-2000:]
            lines = [json.loads(line) for line in stdout.splitlines()]
            assert reader.returncode == 0, [line for line in lines if not line["ok"]][:3]

            status, [final] = run_php(php, str(READ_CACHE), str(cache))
            assert status == 0 and final["ok"] is True
            assert final["counts"] == {e: len(fake.records(e)) for e in MIRRORED}
        finally:
            if reader is not None and reader.poll() is None:
                reader.kill()
                reader.wait(timeout=10)
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            try:
                code = daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=10)
                raise
            finally:
                log.close()
        assert code == 0, _tail(tmp_path / "daemon.log")

    assert len(lines) >= 20, f"only {len(lines)} PHP reads"
    assert [line["iterations"] for line in lines] == list(range(1, len(lines) + 1))
    # Reads of the same committed cycle see the same data, whoever reads and whenever: no read
    # saw a cycle half applied.
    by_run: dict[int, tuple[dict[str, int], dict[str, str]]] = {}
    for seen in [*lines, *observed]:
        view = (seen["counts"], seen["data_as_of"])
        assert by_run.setdefault(seen["last_run"], view) == view, (
            f"run {seen['last_run']} was read two ways"
        )
    kinds = _run_kinds(cache)
    read_by_php = {line["last_run"] for line in lines}
    assert len(read_by_php) >= 4, f"PHP saw only cycles {sorted(read_by_php)}"
    assert {"incremental", "full"} <= {kinds[run] for run in read_by_php}, kinds
    assert "sweep" in kinds.values()


def _run_kinds(path: Path) -> dict[int, str]:
    with closing(read_only(path)) as conn:
        return dict(conn.execute("SELECT id, kind FROM sync_runs").fetchall())


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- file permissions: the portal as a member of group syncd ----------------------------------

PORTAL_USER = "www-data"


@dataclass(frozen=True)
class PortalSide:
    cache: Path
    script: Path


def _as_portal_user(php: str, side: PortalSide) -> tuple[int, list[dict[str, Any]]]:
    done = subprocess.run(
        [
            "setpriv",
            "--reuid",
            PORTAL_USER,
            "--regid",
            PORTAL_USER,
            "--init-groups",
            php,
            *STRICT,
            str(side.script),
            str(side.cache),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert not done.stderr.strip(), done.stderr[-2000:]
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture
def portal_side(php: str, engine_cache: tuple[Path, Any]) -> Iterator[PortalSide]:
    """A state directory laid out as systemd and the unit's UMask=0027 lay it out: directory
    0750, files 0640, group = the portal user's group (standing in for group ``syncd``, which
    the portal user joins). The PHP scripts are copied where the portal user can read them."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as the portal's user")
    import grp
    import pwd
    import tempfile

    try:
        pwd.getpwnam(PORTAL_USER)
        group = grp.getgrnam(PORTAL_USER).gr_gid
    except KeyError:
        pytest.skip(f"there is no user {PORTAL_USER} to act as the portal")
    base = Path(tempfile.mkdtemp(prefix="syncd-portal-"))  # pytest's own tmp is 0700
    old_umask = os.umask(0o027)
    try:
        base.chmod(0o755)
        for script in (READ_CACHE, EXAMPLES):
            shutil.copy(script, base / script.name)
        state = base / "state"
        state.mkdir()
        os.chown(state, 0, group)
        state.chmod(0o2750)  # setgid: new files get the directory's group
        source, _fake = engine_cache
        target = state / "cache.sqlite3"
        with closing(read_only(source)) as src, closing(sqlite3.connect(target)) as dst:
            src.backup(dst)
        yield PortalSide(state / "cache.sqlite3", base / READ_CACHE.name)
    finally:
        os.umask(old_umask)
        shutil.rmtree(base, ignore_errors=True)


def test_the_portal_user_reads_while_syncd_has_the_cache_open(
    php: str, portal_side: PortalSide
) -> None:
    writer = connect(portal_side.cache)  # syncd's own connection settings: WAL
    try:
        writer.execute("INSERT INTO audit_log (at, actor, action) VALUES ('t', 'test', 'x')")
        assert oct(portal_side.cache.stat().st_mode & 0o777) == "0o640"
        status, lines = _as_portal_user(php, portal_side)
        assert status == 0 and lines[0]["ok"] is True, lines
        assert lines[0]["counts"]["contacts"] > 0
    finally:
        writer.close()


def test_the_portal_user_reads_while_syncd_is_stopped(php: str, portal_side: PortalSide) -> None:
    writer = connect(portal_side.cache)
    writer.execute("INSERT INTO audit_log (at, actor, action) VALUES ('t', 'test', 'x')")
    close(writer)  # what a clean daemon stop does
    assert not Path(f"{portal_side.cache}-wal").exists()
    status, lines = _as_portal_user(php, portal_side)
    assert status == 0 and lines[0]["ok"] is True, lines
