"""The portal's local HTTP API: the WSGI application, its waitress server, its data sources and
the Prometheus metrics."""
