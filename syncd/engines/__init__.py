"""The vendor-neutral engines: the CRM mirror, the service-request door and push, the VAT
service and the parcel-machine refresh. They speak to upstreams only through connectors'
protocols and to SQLite only through ``syncd.state``."""
