"""A realistic documentation library for aesthetic-laser equipment, generated from a seed.

The tree is ``/<Producer>/<Model>/<Manuals|Service Bulletins|Videos|Images|Parts|Software>``
with service manuals, operator manuals and installation guides in several languages, numbered
service bulletins, training and repair videos, photos and wiring diagrams, spare-parts lists and
firmware release notes. Sizes are log-uniform in a realistic range per kind (PDFs 50 KB–20 MB,
videos 5–300 MB unless ``sizes`` says otherwise); dates fall between 2019 and mid-2024.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Final

from .library import Library, size_range

DEFAULT_PRODUCERS: Final = ("Candela", "Lumenis", "Alma Lasers", "Cutera", "Fotona")
MODELS: Final[dict[str, tuple[str, ...]]] = {
    "Candela": ("GentleMax Pro", "Vbeam Prima", "PicoWay", "Frax Pro", "Nordlys"),
    "Lumenis": ("Stellar M22", "UltraPulse", "Splendor X", "LightSheer Desire"),
    "Alma Lasers": ("Soprano ICE", "Harmony XL Pro", "Opus", "Hybrid"),
    "Cutera": ("excel V+", "truSculpt iD", "xeo", "enlighten III"),
    "Fotona": ("SP Dynamis", "StarWalker MaQX", "TimeWalker", "XP Dynamis"),
    "Cynosure": ("PicoSure Pro", "Elite iQ", "TempSure", "Potenza"),
    "Asclepion": ("MeDioStar NeXT", "Quadro Star PRO", "PicoStar"),
    "Quanta System": ("Discovery Pico", "Thunder MT", "Light EVO"),
    "Sciton": ("Joule X", "BBL HERO", "mJOULE"),
    "Lutronic": ("Clarity II", "PicoPlus", "Genius"),
    "DEKA": ("SmartXide Tetra", "Motus AX", "Again"),
    "InMode": ("Morpheus8", "Lumecca", "Optimas"),
}
LANGUAGES: Final = ("EN", "DE", "FR", "LV", "LT", "ET", "RU", "FI")
_MANUALS: Final = (
    "Service Manual", "Operator Manual", "Installation Guide", "Calibration Procedure",
    "Technical Specifications", "Preventive Maintenance Procedure", "Safety Data Sheet",
    "Troubleshooting Guide",
)
_VIDEOS: Final = (
    "Handpiece Replacement", "Calibration Walkthrough", "Cooling System Flush",
    "Laser Head Alignment", "Fiber Replacement", "Daily Start-up Check", "Training Session",
)
_IMAGES: Final = (
    "Front Panel", "Rear Panel Connections", "Wiring Diagram", "Handpiece Exploded View",
    "Error Screen", "Cooling Circuit", "Power Supply Board",
)
_PARTS: Final = (
    ("Spare Parts List", "xlsx"), ("Maintenance Log", "xlsx"), ("Installation Checklist", "docx"),
    ("Site Requirements", "docx"), ("Service Report Template", "docx"),
)
_START: Final = datetime(2019, 1, 1, tzinfo=UTC)
_END: Final = datetime(2024, 6, 30, tzinfo=UTC)


def seed_library(
    library: Library,
    *,
    files: int,
    producers: tuple[str, ...] | list[str] = DEFAULT_PRODUCERS,
    seed: int = 0,
    video_share: float = 0.1,
    sizes: dict[str, tuple[int, int]] | None = None,
) -> list[str]:
    """Add ``files`` files (and the folders they need) to ``library``; their ids in creation
    order. Deterministic for a given library, ``seed`` and arguments."""
    if files < 0 or not producers:
        raise ValueError("files must be >= 0 and producers not empty")
    if not 0.0 <= video_share <= 1.0:
        raise ValueError("video_share must be between 0 and 1")
    rng = random.Random(f"{seed}/{library.id}")
    ranges = {**{kind: size_range(kind) for kind in ("pdf", "mp4", "jpg", "png", "docx",
                                                      "xlsx", "zip")}, **(sizes or {})}
    folders: dict[tuple[str, ...], str] = {}
    created: list[str] = []
    for index in range(files):
        producer = producers[index % len(producers)]
        models = MODELS.get(producer) or tuple(f"{producer} {n}" for n in ("A1", "B2", "C3"))
        model = rng.choice(models)
        section, stem, kind = _document(rng, model, video_share)
        moment = _START + timedelta(seconds=rng.randrange(int((_END - _START).total_seconds())))
        parent = _folder(library, folders, (producer, model, section), _START)
        name = _free_name(library, parent, stem, kind)
        low, high = ranges[kind]
        size = int(low * (high / low) ** rng.random()) if high > low else low
        item = library.add_file(name, parent, kind=kind, size=size, when=moment, by_app=False)
        item.modified = min(_END, moment + timedelta(seconds=rng.randrange(400 * 86400)))
        created.append(item.id)
    for item in library.live_items():  # serialise once now, so enumerations are fast
        library.delta_json(item)
    return created


def _document(rng: random.Random, model: str, video_share: float) -> tuple[str, str, str]:
    """(section folder, name stem, kind) of one generated document."""
    if rng.random() < video_share:
        title = rng.choice(_VIDEOS)
        if title == "Training Session":
            title += f" {rng.randint(2019, 2024)}-{rng.randint(1, 12):02d}"
        return "Videos", f"{model} {title}", "mp4"
    draw = rng.random()
    if draw < 0.55:
        title = rng.choice(_MANUALS)
        return "Manuals", f"{model} {title} ({rng.choice(LANGUAGES)})", "pdf"
    if draw < 0.70:
        year = rng.randint(2019, 2024)
        return "Service Bulletins", f"SB-{year}-{rng.randint(1, 120):03d} {model}", "pdf"
    if draw < 0.85:
        kind = "jpg" if rng.random() < 0.7 else "png"
        return "Images", f"{model} {rng.choice(_IMAGES)}", kind
    if draw < 0.95:
        title, kind = rng.choice(_PARTS)
        return "Parts", f"{model} {title}", kind
    version = f"v{rng.randint(1, 6)}.{rng.randint(0, 9)}.{rng.randint(0, 30)}"
    if rng.random() < 0.5:
        return "Software", f"{model} Firmware {version} Release Notes", "pdf"
    return "Software", f"{model} Firmware {version}", "zip"


def _folder(
    library: Library, folders: dict[tuple[str, ...], str], path: tuple[str, ...],
    moment: datetime,
) -> str:
    """The id of the folder at ``path`` (created as needed, reusing existing folders)."""
    parent_id = library.root_id
    for depth in range(1, len(path) + 1):
        key = path[:depth]
        known = folders.get(key)
        if known is None:
            parent = library.items[parent_id]
            existing = (parent.children or {}).get(key[-1].casefold())
            if existing is not None and library.items[existing].is_folder:
                known = existing
            else:
                known = library.add_folder(key[-1], parent_id, when=moment, by_app=False).id
            folders[key] = known
        parent_id = known
    return parent_id


def _free_name(library: Library, folder_id: str, stem: str, kind: str) -> str:
    """``stem.ext``, or ``stem (2).ext``, … when the folder already has that name."""
    children = library.items[folder_id].children or {}
    name = f"{stem}.{kind}"
    number = 2
    while name.casefold() in children:
        name = f"{stem} ({number}).{kind}"
        number += 1
    return name
