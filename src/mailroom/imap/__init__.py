"""Mailbox logic for the IMAP server that needs neither sockets nor SQL.

- :mod:`.flags`: system-flag bits and keywords (the store's bitmask and text column)
- :mod:`.view`: a selected mailbox as one session sees it (sequence numbers <-> UIDs)
- :mod:`.structure`: the per-body MIME cache (BODYSTRUCTURE, ENVELOPE, part offsets) and sections
- :mod:`.search`: SEARCH evaluation
- :mod:`.listing`: LIST / LSUB pattern matching and mailbox attributes
"""
