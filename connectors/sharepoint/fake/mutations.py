"""Random changes to a library, for benchmarks and soak tests ("change N % of the files")."""

from __future__ import annotations

import random

from .library import Item, Library


def change_files(library: Library, percent: float, *, seed: int = 0) -> dict[str, list[str]]:
    """Change ``percent`` % of the library's live files: of the chosen files half get new
    content, a fifth are renamed, a tenth moved to another folder, a tenth deleted, and for the
    last tenth a new file appears next to them. Deterministic for a given library state and
    ``seed``. The ids touched, by change (``added`` holds the new files' ids)."""
    if not 0.0 <= percent <= 100.0:
        raise ValueError("percent must be between 0 and 100")
    rng = random.Random(f"{seed}/{library.id}/{library.seq}")
    files = [item for item in library.live_items() if not item.is_folder]
    folders = [item for item in library.live_items() if item.is_folder]
    count = min(len(files), round(len(files) * percent / 100.0))
    if percent > 0 and files and count == 0:
        count = 1
    chosen = rng.sample(files, count)
    result: dict[str, list[str]] = {
        "modified": [], "renamed": [], "moved": [], "deleted": [], "added": []
    }
    for index, item in enumerate(chosen):
        share = index / max(1, count)
        if share < 0.5:
            library.modify(item.id)
            result["modified"].append(item.id)
        elif share < 0.7:
            library.rename(item.id, _free_variant(library, item, item.parent_id, "rev"))
            result["renamed"].append(item.id)
        elif share < 0.8:
            target = rng.choice(folders)
            if target.id == item.parent_id or item.name.casefold() in (target.children or {}):
                library.modify(item.id)
                result["modified"].append(item.id)
            else:
                library.move(item.id, target.id)
                result["moved"].append(item.id)
        elif share < 0.9:
            library.delete(item.id)
            result["deleted"].append(item.id)
        else:
            name = _free_variant(library, item, item.parent_id, "update")
            added = library.add_file(name, item.parent_id, kind=item.kind, size=item.size)
            result["added"].append(added.id)
    for item in library.items.values():  # serialise now, so the next delta is fast
        if item.cached is None:
            library.delta_json(item)
    return result


def _free_variant(library: Library, item: Item, folder_id: str | None, word: str) -> str:
    """``<stem> <word> N.<ext>`` not yet used in the folder."""
    stem, dot, extension = item.name.rpartition(".")
    if not dot:
        stem, extension = item.name, ""
    children = library.folder(folder_id).children or {}
    number = 2
    while True:
        name = f"{stem} {word} {number}" + (f".{extension}" if extension else "")
        if name.casefold() not in children:
            return name
        number += 1
