"""Crash-test worker for the documents mirror: brings every configured SharePoint library up to
date through the Graph connector and reports each committed page.

    python -m tests.documents_crash_worker CONFIG MODE   (MODE: delta | full)

``delta`` runs each library as the daemon's lane does (resuming an enumeration a killed
predecessor left staged); ``full`` enumerates each library again (``syncd --resync documents``).
Prints ``page <library> <pages>`` after every committed page and ``done`` at the end, so the
test can SIGKILL it at a chosen point.
"""

from __future__ import annotations

import sys
from pathlib import Path

from syncd.config import load_settings
from syncd.engines.documents import DocumentMirror
from syncd.runtime import build_document_source, open_cache


def main(config: str, mode: str) -> None:
    settings = load_settings(Path(config))
    conn = open_cache(settings)
    source = build_document_source(settings)

    def progress(library: str, pages: int, _items: int) -> None:
        print(f"page {library} {pages}", flush=True)

    mirror = DocumentMirror(conn, source, settings.sharepoint, progress=progress)
    mirror.configure()
    for name in mirror.names():
        mirror.run(name, full=mode == "full")
    source.close()
    conn.close()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
