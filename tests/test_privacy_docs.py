"""docs/privacy.md's retention table, checked against the code: every window setting is in it,
every setting it names exists with the default it states, and every table of the schema is
classified (in the table of stores, or in the list of tables that hold no personal data or are
bounded otherwise), so a migration adding a table fails here until the page says how it is
bounded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from syncd.config import RetentionSettings
from syncd.state.db import connect

DOC = Path(__file__).parents[1] / "docs" / "privacy.md"
STORE_HEADER = (
    "store", "what it holds", "legal basis (privacy policy)", "default retention", "setting",
    "enforcing job",
)
OTHER_HEADER = ("table", "what it holds", "bound")


def retention_section() -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"^## Retention\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "docs/privacy.md has no '## Retention' section"
    return match.group(1)


def tables(section: str) -> dict[tuple[str, ...], list[tuple[str, ...]]]:
    """Every markdown table of the section: header -> rows, cells stripped."""
    found: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for block in re.findall(r"(?:^\|.*\|\n)+", section, re.M):
        header, rule, *rows = block.splitlines()
        assert set(rule) <= set("|-: "), rule
        found[_cells(header)] = [_cells(row) for row in rows]
    return found


def _cells(line: str) -> tuple[str, ...]:
    return tuple(cell.strip() for cell in line.strip().strip("|").split("|"))


def backticked(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


@pytest.fixture(scope="module")
def stores() -> list[dict[str, str]]:
    rows = tables(retention_section()).get(STORE_HEADER)
    assert rows, f"no table with the columns {' | '.join(STORE_HEADER)}"
    return [dict(zip(STORE_HEADER, row, strict=True)) for row in rows]


@pytest.fixture(scope="module")
def others() -> list[dict[str, str]]:
    rows = tables(retention_section()).get(OTHER_HEADER)
    assert rows, f"no table with the columns {' | '.join(OTHER_HEADER)}"
    return [dict(zip(OTHER_HEADER, row, strict=True)) for row in rows]


def named_settings(stores: list[dict[str, str]]) -> set[str]:
    return {
        match
        for row in stores
        for match in re.findall(r"`retention\.(\w+)`", row["setting"])
    }


def test_every_window_setting_is_in_the_table(stores: list[dict[str, str]]) -> None:
    windows = set(RetentionSettings.window_fields().values())
    assert windows - named_settings(stores) == set()


def test_every_setting_the_table_names_exists(stores: list[dict[str, str]]) -> None:
    assert named_settings(stores) - set(RetentionSettings.model_fields) == set()


def test_each_window_row_states_the_default(stores: list[dict[str, str]]) -> None:
    defaults = RetentionSettings()
    for row in stores:
        for name in re.findall(r"`retention\.(\w+)`", row["setting"]):
            unit = name.rsplit("_", 1)[1]
            stated = f"{getattr(defaults, name):g} {unit}"
            assert stated in row["default retention"], (name, stated, row["default retention"])


def test_every_table_of_the_schema_is_classified(
    tmp_path: Path, stores: list[dict[str, str]], others: list[dict[str, str]]
) -> None:
    conn = connect(tmp_path / "cache.sqlite3")
    try:
        schema = {
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%'"
            )
        }
    finally:
        conn.close()
    in_stores = set().union(*(backticked(row["store"]) for row in stores))
    in_others = set().union(*(backticked(row["table"]) for row in others))
    assert in_stores & in_others == set(), "a table is in both lists"
    unclassified = schema - in_stores - in_others
    assert unclassified == set(), (
        f"tables not classified in docs/privacy.md (## Retention): {sorted(unclassified)}"
    )
    assert (in_stores | in_others) - schema <= {"outbox.spool_directory"}, "no such table"


def test_every_row_names_its_legal_basis_and_its_job(stores: list[dict[str, str]]) -> None:
    for row in stores:
        assert row["legal basis (privacy policy)"], row["store"]
        assert row["enforcing job"], row["store"]
        assert row["default retention"], row["store"]
