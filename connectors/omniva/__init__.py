"""Omniva's public parcel-machine and post-office list (``locations.json``): a conditional-GET
client (:mod:`.client`), the parser and validator (:mod:`.locations`) and a fake (:mod:`.fake`)."""
