"""mailroom: a complete, self-contained mail server in one process, one SQLite file, one TOML file."""

__version__ = "0.1.0"
