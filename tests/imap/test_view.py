"""Sequence numbers and UIDs of a selected mailbox (RFC 9051 §2.3.1)."""

from __future__ import annotations

import pytest

from mailroom.imap.view import InvalidSequence, MailboxView
from mailroom.wire.imap.sequence import SequenceSet


def view(uids: list[int]) -> MailboxView:
    return MailboxView(1, "INBOX", 7, uids, (uids[-1] + 1) if uids else 1, 1, False)


def test_sequence_numbers_and_uids() -> None:
    v = view([3, 5, 9, 10, 20])
    assert v.uid_list(v.select_seqs(SequenceSet.parse("2:4"))) == [5, 9, 10]
    assert v.uid_list(v.select_seqs(SequenceSet.parse("*"))) == [20]
    assert v.uid_list(v.select_seqs(SequenceSet.parse("4:*,1"))) == [3, 10, 20]
    with pytest.raises(InvalidSequence):
        v.select_seqs(SequenceSet.parse("6"))
    assert v.uid_list(v.select_uids(SequenceSet.parse("4:10"))) == [5, 9, 10]
    assert v.uid_list(v.select_uids(SequenceSet.parse("21:*"))) == [20]  # RFC 9051: n:* covers the largest
    assert v.uid_list(v.select_uids(SequenceSet.parse("100"))) == []
    assert v.uid_ranges(v.select_uids(SequenceSet.parse("1:*"))) == [(3, 20)]
    assert v.seq_of(9) == 3 and v.seq_of(4) is None and v.uid_at(5) == 20


def test_empty_mailbox_and_numbers_past_the_end() -> None:
    v = view([])
    assert not v.select_uids(SequenceSet.parse("1:*"))  # UIDs: simply nothing
    for text in ("1", "1:*", "*"):  # sequence numbers: BAD, as Dovecot answers
        with pytest.raises(InvalidSequence):
            v.select_seqs(SequenceSet.parse(text))
    with pytest.raises(InvalidSequence):
        view([4]).select_seqs(SequenceSet.parse("5:*"))


def test_expunge_announces_each_number_as_it_stands() -> None:
    v = view([1, 2, 3, 4, 5, 6])
    v.recent = {2, 4}
    # RFC 9051 §7.5.1: each EXPUNGE renumbers the ones after it
    assert v.expunge([2, 4, 5, 99]) == [2, 3, 3]
    assert list(v.uids) == [1, 3, 6] and v.recent == set()
    v.add([7, 8])
    assert list(v.uids) == [1, 3, 6, 7, 8] and v.uidnext == 9
    many = view(list(range(1, 1001)))
    assert many.expunge(range(1, 1001, 2)) == list(range(1, 501))
    assert list(many.uids) == list(range(2, 1001, 2))


def test_saved_result() -> None:
    v = view([3, 5, 9])
    v.saved = [9, 3, 4]
    assert v.uid_list(v.select_seqs(SequenceSet.parse("$"))) == [3, 9]
    assert v.uid_list(v.select_uids(SequenceSet.parse("$"))) == [3, 9]
