"""Quickstart: ``mailroom init`` (config, database, admin, DKIM keys, the records to publish),
``mailroom check`` (are they published right?) and the MTA-STS policy state."""
