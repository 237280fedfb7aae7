"""LIST and LSUB (RFC 9051 §6.3.9, RFC 5258 LIST-EXTENDED, RFC 3348 CHILDREN, RFC 6154
SPECIAL-USE): which names match a pattern and which attributes each one carries.

Patterns: ``*`` matches anything, ``%`` anything but the hierarchy delimiter. The reference is
prefixed to the pattern (RFC 9051 §6.3.9: "canonical form"). A name that has descendants but no
mailbox of its own is listed with ``\\NonExistent`` (LIST-EXTENDED) or ``\\Noselect``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["ListItem", "list_mailboxes", "lsub", "pattern_regex"]

DELIMITER = "/"


@dataclass
class ListItem:
    name: str
    attributes: list[str] = field(default_factory=list)
    child_info: list[str] = field(default_factory=list)
    exists: bool = True


def pattern_regex(reference: str, pattern: str) -> re.Pattern[str]:
    """The canonical pattern as a regex. INBOX (as the first level) matches case-insensitively."""
    if pattern.startswith(DELIMITER) or not reference:
        full = pattern
    elif reference.endswith(DELIMITER):
        full = reference + pattern
    else:
        full = reference + DELIMITER + pattern
    out = []
    for ch in full:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    body = "".join(out)
    if full[:5].upper() == "INBOX" and (len(full) == 5 or full[5] in "/*%"):
        body = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(body, re.DOTALL)


def _ancestors(name: str) -> list[str]:
    levels = name.split(DELIMITER)
    return [DELIMITER.join(levels[:i]) for i in range(1, len(levels))]


def list_mailboxes(
    mailboxes: Sequence[tuple[str, str | None]],
    subscribed: set[str],
    reference: str,
    patterns: Sequence[str],
    select_options: Iterable[str] = (),
    return_options: Iterable[str] = (),
    extended: bool = False,
) -> list[ListItem]:
    """``mailboxes``: (name, special use) of every mailbox of the account."""
    select = {o.upper() for o in select_options}
    returns = {o.upper() for o in return_options}
    regexes = [pattern_regex(reference, p) for p in patterns]
    existing = {name: use for name, use in mailboxes}
    # every name in the hierarchy: mailboxes, their ancestors, and subscribed names
    names: set[str] = set(existing)
    for name in list(existing):
        names.update(_ancestors(name))
    has_children = {a for n in names for a in _ancestors(n)}
    if "SUBSCRIBED" in select:
        names.update(subscribed)
        for s in subscribed:
            names.update(_ancestors(s))
    sub_children = {a for s in subscribed for a in _ancestors(s)}

    def matches(name: str) -> bool:
        return any(r.fullmatch(name) for r in regexes)

    out: list[ListItem] = []
    for name in sorted(names, key=lambda n: (n != "INBOX", n)):
        exists = name in existing
        if "SUBSCRIBED" in select:
            if name in subscribed:
                pass
            elif "RECURSIVEMATCH" in select and name in sub_children:
                if not matches(name):
                    continue
                item = ListItem(name, [], ["SUBSCRIBED"], exists)
                item.attributes = _attributes(
                    name, exists, existing, has_children, subscribed, returns, extended
                )
                if name not in subscribed and "\\Subscribed" in item.attributes:
                    item.attributes.remove("\\Subscribed")
                out.append(item)
                continue
            else:
                continue
        elif not exists and any(matches(n) for n in names if n.startswith(name + DELIMITER)):
            # a hole in the hierarchy: shown when the pattern stops at its level ("%"), not when
            # it reaches the mailboxes below it anyway ("*")
            continue
        if not matches(name):
            continue
        if "SPECIAL-USE" in select and not existing.get(name):
            continue
        attrs = _attributes(name, exists, existing, has_children, subscribed, returns | select, extended)
        out.append(ListItem(name, attrs, [], exists))
    return out


def _attributes(
    name: str,
    exists: bool,
    existing: dict[str, str | None],
    has_children: set[str],
    subscribed: set[str],
    options: set[str],
    extended: bool,
) -> list[str]:
    attrs: list[str] = []
    if not exists:
        attrs.append("\\NonExistent" if extended else "\\Noselect")
    if "SUBSCRIBED" in options and name in subscribed:
        attrs.append("\\Subscribed")
    if exists or name in has_children:
        attrs.append("\\HasChildren" if name in has_children else "\\HasNoChildren")
    use = existing.get(name)
    if use:
        attrs.append(use)
    return attrs


def lsub(subscribed: set[str], existing: set[str], reference: str, pattern: str) -> list[ListItem]:
    """LSUB (RFC 3501 §6.3.9): subscribed names; with ``%``, a subscribed descendant makes its
    unsubscribed ancestor appear with \\Noselect."""
    regex = pattern_regex(reference, pattern)
    out: dict[str, ListItem] = {}
    for name in sorted(subscribed):
        if regex.fullmatch(name):
            out[name] = ListItem(name, [] if name in existing else ["\\Noselect"], [], name in existing)
            continue
        for ancestor in _ancestors(name):
            if ancestor not in out and ancestor not in subscribed and regex.fullmatch(ancestor):
                out[ancestor] = ListItem(ancestor, ["\\Noselect"], [], ancestor in existing)
    return sorted(out.values(), key=lambda i: (i.name != "INBOX", i.name))
