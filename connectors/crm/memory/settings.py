"""``[crm.memory]``: the in-process CRM's store and its seed data."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MemorySettings"]


class MemorySettings(BaseModel):
    """``[crm.memory]``: which in-process store (every lane of one process shares it) and how
    many made-up records it starts with."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    store: str = Field(default="default", min_length=1)
    seed: int = 1
    companies: int = Field(default=0, ge=0)
    contacts: int = Field(default=0, ge=0)
    devices: int = Field(default=0, ge=0)
