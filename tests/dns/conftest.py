from tests.dns.knot import knot

__all__ = ["knot"]
