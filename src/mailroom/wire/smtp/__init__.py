"""Sans-I/O SMTP: replies, events, grammar, the state table and the server engine."""
