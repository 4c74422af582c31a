"""syncd: the CRM synchronisation and integration daemon behind the Baltic Lasers client portal."""

__version__ = "0.1.0"
