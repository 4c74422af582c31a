"""A parcel machine or post office as syncd stores it, whichever list it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["parcel_machine", "post_office"]
MachineState = Literal["normal", "overfilled", "longer_delivery", "prepaid_pickup_only"]
"""What a marker in Omniva's name says about a location now (``normal``: no marker)."""


@dataclass(frozen=True, slots=True)
class ParcelMachine:
    """One validated location; the attributes are the ``parcel_machines`` columns."""

    location_id: str
    country: str
    kind: Kind
    name: str
    longitude: float
    latitude: float
    county: str = ""
    town: str = ""
    village: str = ""
    small_place: str = ""
    street: str = ""
    area: str = ""
    house_number: str = ""
    apartment: str = ""
    service_hours: str = ""
    temp_service_hours: str = ""
    temp_service_hours_until: str = ""
    temp_service_hours_2: str = ""
    temp_service_hours_2_until: str = ""
    comment_et: str = ""
    comment_en: str = ""
    comment_ru: str = ""
    comment_lv: str = ""
    comment_lt: str = ""
    modified_at: str = ""
    state: MachineState = "normal"
    state_note: str = ""  # the marker as Omniva wrote it, without parentheses
