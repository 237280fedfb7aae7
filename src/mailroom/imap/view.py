"""A selected mailbox as one session sees it: the UIDs the client knows, in sequence order.

RFC 9051 §2.3.1.2: message sequence numbers are 1..EXISTS in ascending UID order and change
only when the server tells the client (EXISTS, EXPUNGE). So the view changes only when the
session sends those responses, never behind the client's back.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from mailroom.wire.imap.sequence import SequenceSet

__all__ = ["InvalidSequence", "MailboxView", "Selection"]


class InvalidSequence(ValueError):
    """A message sequence number beyond EXISTS (RFC 9051 §6.4.5: BAD)."""


@dataclass
class Selection:
    """Messages picked by a sequence set: ascending index ranges into the view (half-open)."""

    spans: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(b - a for a, b in self.spans)

    def __bool__(self) -> bool:
        return bool(self.spans)


class MailboxView:
    def __init__(
        self,
        mailbox_id: int,
        name: str,
        uidvalidity: int,
        uids: Iterable[int],
        uidnext: int,
        modseq: int,
        read_only: bool,
        recent: Iterable[int] = (),
    ) -> None:
        self.mailbox_id = mailbox_id
        self.name = name
        self.uidvalidity = uidvalidity
        # an array is shared (the store's mailbox index) until the view changes: copy on write
        self.uids = uids if isinstance(uids, array) else array("L", uids)
        self._shared = isinstance(uids, array)
        self.uidnext = uidnext  # every UID below this that still exists is in the view
        self.modseq = modseq  # flag changes up to this MODSEQ have been reported
        self.read_only = read_only
        self.recent: set[int] = set(recent)
        self.saved: list[int] = []  # SEARCHRES "$" (RFC 5182): UIDs
        self.recent_claim = (0, 0)  # [first, end) UIDs this session took \Recent for at SELECT

    # --- numbers --------------------------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def uid_at(self, seq: int) -> int:
        return self.uids[seq - 1]

    def select_seqs(self, sequence: SequenceSet) -> Selection:
        """Sequence numbers (FETCH 1:*). Numbers beyond EXISTS are an error unless they come from
        ``*``; ``$`` is the saved result."""
        if sequence.saved:
            return self.select_uid_list(self.saved)
        n = len(self.uids)
        if n == 0:
            raise InvalidSequence("the mailbox is empty")
        spans = []
        for a, b in sequence.resolve(n):
            if b > n:
                raise InvalidSequence(f"message {b} does not exist (EXISTS is {n})")
            spans.append((a - 1, b))
        return Selection(spans)

    def select_uids(self, sequence: SequenceSet) -> Selection:
        """UIDs (UID FETCH 1:*): ``*`` is the largest UID in the view; UIDs the view does not
        hold match nothing (RFC 9051 §6.4.9)."""
        if sequence.saved:
            return self.select_uid_list(self.saved)
        largest = self.uids[-1] if self.uids else 0
        spans: list[tuple[int, int]] = []
        for a, b in sequence.resolve(largest):
            i = bisect_left(self.uids, a)
            j = bisect_right(self.uids, b)
            if i < j:
                spans.append((i, j))
        return Selection(_merge(spans))

    def select_uid_list(self, uids: Iterable[int]) -> Selection:
        spans: list[tuple[int, int]] = []
        for uid in sorted(set(uids)):
            i = bisect_left(self.uids, uid)
            if i < len(self.uids) and self.uids[i] == uid:
                if spans and spans[-1][1] == i:
                    spans[-1] = (spans[-1][0], i + 1)
                else:
                    spans.append((i, i + 1))
        return Selection(spans)

    def select(self, sequence: SequenceSet, uid: bool) -> Selection:
        return self.select_uids(sequence) if uid else self.select_seqs(sequence)

    def indexes(self, selection: Selection) -> Iterator[int]:
        for a, b in selection.spans:
            yield from range(a, b)

    def uid_list(self, selection: Selection) -> list[int]:
        out: list[int] = []
        for a, b in selection.spans:
            out.extend(self.uids[a:b])
        return out

    def uid_ranges(self, selection: Selection) -> list[tuple[int, int]]:
        """Inclusive UID ranges covering the selection (for range queries in the store)."""
        return [(self.uids[a], self.uids[b - 1]) for a, b in selection.spans]

    # --- changes --------------------------------------------------------------------------------

    def expunge(self, uids: Iterable[int]) -> list[int]:
        """Drop UIDs; returns the EXPUNGE sequence numbers to announce, in order (each counts
        the ones announced before it: RFC 9051 §7.5.1)."""
        wanted = list(uids)
        gone = sorted({seq for uid in wanted if (seq := self.seq_of(uid)) is not None}, reverse=True)
        if not gone:
            return []
        if len(gone) > 64:
            drop = {self.uids[seq - 1] for seq in gone}
            self.uids = array("L", (u for u in self.uids if u not in drop))
            self._shared = False
        else:
            self._own()
            for seq in gone:
                del self.uids[seq - 1]
        self.recent.difference_update(wanted)
        return [seq - i for i, seq in enumerate(reversed(gone))]

    def add(self, uids: Sequence[int]) -> None:
        """New messages (ascending UIDs, all >= uidnext)."""
        for uid in uids:
            if uid >= self.uidnext:
                self._own()
                self.uids.append(uid)
                self.uidnext = uid + 1

    def _own(self) -> None:
        if self._shared:
            self.uids = self.uids[:]
            self._shared = False


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out
