"""LIST / LSUB pattern matching and attributes (RFC 9051 §6.3.9, RFC 5258, RFC 6154)."""

from __future__ import annotations

from mailroom.imap.listing import list_mailboxes, lsub, pattern_regex

BOXES = [("INBOX", None), ("Sent", "\\Sent"), ("a/b/c", None), ("a/x", None), ("INBOX/sub", None)]


def names(items: list) -> list[tuple[str, list[str]]]:  # type: ignore[type-arg]
    return [(i.name, i.attributes) for i in items]


def test_patterns() -> None:
    assert pattern_regex("", "*").fullmatch("a/b/c")
    assert not pattern_regex("", "%").fullmatch("a/b")
    assert pattern_regex("a/", "%").fullmatch("a/x")
    assert pattern_regex("a", "%").fullmatch("a/x")  # reference without its delimiter
    assert pattern_regex("", "inbox").fullmatch("INBOX")  # INBOX is case-insensitive
    assert pattern_regex("", "Inbox/%").fullmatch("INBOX/sub")
    assert not pattern_regex("", "sent").fullmatch("Sent")  # other names are not
    assert pattern_regex("", "a.b").fullmatch("a.b") and not pattern_regex("", "a.b").fullmatch("axb")


def test_holes_children_and_special_use() -> None:
    assert names(list_mailboxes(BOXES, set(), "", ["%"])) == [
        ("INBOX", ["\\HasChildren"]),
        ("Sent", ["\\HasNoChildren", "\\Sent"]),
        ("a", ["\\Noselect", "\\HasChildren"]),
    ]
    assert names(list_mailboxes(BOXES, set(), "", ["%"], extended=True))[2] == (
        "a",
        ["\\NonExistent", "\\HasChildren"],
    )
    # with "*" the hole is not listed: its children are
    listed = [n for n, _ in names(list_mailboxes(BOXES, set(), "", ["*"]))]
    assert "a" not in listed and "a/b" not in listed and "a/b/c" in listed
    assert names(list_mailboxes(BOXES, set(), "", ["*"], select_options=["SPECIAL-USE"])) == [
        ("Sent", ["\\HasNoChildren", "\\Sent"])
    ]


def test_subscribed_selection() -> None:
    subscribed = {"Sent", "gone", "a/b/c"}
    items = list_mailboxes(BOXES, subscribed, "", ["*"], select_options=["SUBSCRIBED"], extended=True)
    assert names(items) == [
        ("Sent", ["\\Subscribed", "\\HasNoChildren", "\\Sent"]),
        ("a/b/c", ["\\Subscribed", "\\HasNoChildren"]),
        ("gone", ["\\NonExistent", "\\Subscribed"]),
    ]
    items = list_mailboxes(
        BOXES, subscribed, "", ["%"], select_options=["SUBSCRIBED", "RECURSIVEMATCH"], extended=True
    )
    assert [(i.name, i.child_info) for i in items] == [("Sent", []), ("a", ["SUBSCRIBED"]), ("gone", [])]


def test_lsub() -> None:
    subscribed = {"a/b/c", "Sent"}
    existing = {"a/b/c", "Sent"}
    assert names(lsub(subscribed, existing, "", "*")) == [("Sent", []), ("a/b/c", [])]
    assert names(lsub(subscribed, existing, "", "%")) == [("Sent", []), ("a", ["\\Noselect"])]
