"""CRM vendors behind one interface: the adapter and pusher protocols (``base.py``), what a
vendor plug-in provides (``vendor.py``), the vendors by name (``registry.py``), and one package
per vendor."""
