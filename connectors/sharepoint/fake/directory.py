"""The fake tenant's sites and document libraries, and how requests find them."""

from __future__ import annotations

from datetime import UTC, datetime

from .library import Library, Site

_SITES_CREATED = datetime(2018, 9, 3, 8, 15, 42, tzinfo=UTC)


def _normal_path(path: str) -> str:
    path = "/" + path.strip().strip("/")
    return path


class Directory:
    """Sites by id and by ``hostname:path``; libraries by drive id. Not thread-safe."""

    def __init__(self) -> None:
        self.sites: dict[str, Site] = {}
        self.libraries: dict[str, Library] = {}
        self._by_address: dict[tuple[str, str], str] = {}

    def add_site(self, hostname: str, path: str, name: str | None = None) -> Site:
        """The site at ``hostname`` + ``path`` (created on first use)."""
        path = _normal_path(path)
        key = (hostname.lower(), path.lower())
        known = self._by_address.get(key)
        if known is not None:
            return self.sites[known]
        short = path.rstrip("/").rsplit("/", 1)[-1] or hostname.split(".", 1)[0]
        site = Site(hostname.lower(), path, short, name or short, _SITES_CREATED)
        self.sites[site.id] = site
        self._by_address[key] = site.id
        return site

    def site_at(self, hostname: str, path: str) -> Site | None:
        """The site at ``hostname`` + server-relative ``path``, if any."""
        site_id = self._by_address.get((hostname.lower(), _normal_path(path).lower()))
        return None if site_id is None else self.sites[site_id]

    def site(self, site_id: str) -> Site | None:
        """The site of a composite id (``hostname,guid,guid``), if any."""
        return self.sites.get(site_id.lower())

    def add_library(self, site: Site, name: str) -> Library:
        """A new document library; ValueError when the site already has one of that name."""
        for drive_id in site.drive_ids:
            if self.libraries[drive_id].name.casefold() == name.casefold():
                raise ValueError(f"site {site.path} already has a library named {name!r}")
        created = _SITES_CREATED.replace(year=2019 + len(self.libraries) % 4)
        library = Library(site, name, created)
        site.drive_ids.append(library.id)
        self.libraries[library.id] = library
        return library

    def library(self, drive_id: str) -> Library:
        """The library of a drive id; KeyError when unknown."""
        try:
            return self.libraries[drive_id]
        except KeyError:
            raise KeyError(f"no drive {drive_id!r}") from None
