"""The architecture, checked: what may import what, and what the wheel installs.

* the neutral core (``syncd/core``) imports nothing else of syncd;
* no module outside a vendor's own folder imports a concrete CRM vendor
  (``syncd.connectors.crm.<vendor>``): the engines, state, the daemon, the CLI, the API and the
  demo reach vendors only through the registry, by name;
* ``state/`` imports nothing from ``connectors/``, ``mappings/``, the engines, the daemon, the
  CLI or the API;
* nothing imports the source folders by their top-level names (``state``, ``connectors``,
  ``mappings``): installed, they are ``syncd.state``, ``syncd.connectors``, ``syncd.mappings``;
* the wheel puts one import package, ``syncd``, into site-packages, with the mapping files,
  migrations and fake data it needs.

Imports under ``if TYPE_CHECKING:`` count: a type is a dependency too.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from syncd.connectors.crm import registry

ROOT = Path(__file__).parents[1]
# The real folders (syncd/ holds links to the other three: walk each once, by its own name).
SOURCES = {"syncd": ROOT / "syncd", "syncd.connectors": ROOT / "connectors",
           "syncd.mappings": ROOT / "mappings", "syncd.state": ROOT / "state"}
VENDOR_PACKAGES = tuple(f"syncd.connectors.crm.{name}" for name in registry.names())


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder)
            if relative.parts[0] in ("connectors", "mappings", "state") and package == "syncd":
                continue  # the links
            parts = [*package.split("."), *relative.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


IMPORTS = {module: _imports(module, path) for module, path in MODULES.items()}


def _violations(importers: str | set[str], forbidden: tuple[str, ...],
                allowed: tuple[str, ...] = ()) -> list[str]:
    """``importers``: a package (its modules) or a set of module names."""
    found = []
    for module, names in IMPORTS.items():
        if module not in importers if isinstance(importers, set) else not _within(
            module, (importers,)
        ):
            continue
        for name in sorted(names):
            if _within(name, forbidden) and not _within(name, allowed):
                found.append(f"{module} imports {name}")
    return found


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_walk_sees_every_layer() -> None:
    for module in ("syncd.core.errors", "syncd.engines.mirror", "syncd.state.outbox",
                   "syncd.connectors.crm.bitrix24.adapter", "syncd.mappings.loader",
                   "syncd.daemon.service", "syncd.cli.main", "syncd.api.app"):
        assert module in MODULES, module
    # TYPE_CHECKING and function-level imports are seen too
    vendor_imports = IMPORTS["syncd.connectors.crm.bitrix24.vendor"]
    assert "syncd.connectors.crm.bitrix24.adapter" in vendor_imports


def test_the_core_imports_nothing_else_of_syncd() -> None:
    assert _violations("syncd.core", ("syncd",), allowed=("syncd.core",)) == []


def test_nothing_outside_a_vendor_imports_a_vendor() -> None:
    outside = {m for m in MODULES if not _within(m, VENDOR_PACKAGES)}
    assert outside >= {"syncd.runtime", "syncd.config", "syncd.engines.mirror"}
    assert _violations(outside, VENDOR_PACKAGES) == []


def test_state_imports_no_connector_and_no_layer_above_it() -> None:
    assert _violations("syncd.state", (
        "syncd.connectors", "syncd.mappings", "syncd.engines", "syncd.daemon", "syncd.cli",
        "syncd.api", "syncd.demo", "syncd.runtime", "syncd.config",
    )) == []


def test_the_engines_reach_no_daemon_cli_or_api() -> None:
    assert _violations("syncd.engines", (
        "syncd.daemon", "syncd.cli", "syncd.api", "syncd.demo", "syncd.runtime",
    )) == []


def test_the_source_folders_are_imported_only_under_syncd() -> None:
    everything = tuple(MODULES)
    tests = {f"tests.{p.stem}": p for p in (ROOT / "tests").glob("*.py")}
    benches = {f"bench.{p.stem}": p for p in (ROOT / "bench").glob("*.py")}
    bad = []
    for module, path in {**MODULES, **tests, **benches}.items():
        names = IMPORTS.get(module) or _imports(module, path)
        bad += [f"{module} imports {n}" for n in sorted(names)
                if _within(n, ("state", "connectors", "mappings"))]
    assert everything and bad == []


@pytest.mark.slow
def test_the_wheel_installs_only_syncd(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".*_cache", ".hypothesis", "build", "*.egg-info",
        "demo-data", "results", "tests"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("syncd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"syncd"}
    for needed in ("syncd/py.typed", "syncd/state/migrations/001_initial.sql",
                   "syncd/mappings/bitrix24/contacts.toml", "syncd/mappings/memory/devices.toml",
                   "syncd/connectors/vies/checkVatService.wsdl",
                   "syncd/connectors/crm/bitrix24/vendor.py", "syncd/core/errors.py"):
        assert needed in names, needed
    # every module of the source tree is in the wheel, under syncd
    assert {f"{m.replace('.', '/')}" for m in MODULES} <= {
        n.removesuffix("/__init__.py").removesuffix(".py") for n in names
    }
