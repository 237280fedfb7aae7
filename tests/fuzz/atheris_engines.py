"""Coverage-guided fuzzing of the pure engines with atheris (libFuzzer), outside pytest.

    pip install atheris            # into any Python 3.11 venv; wire/ and message/ need only the stdlib
    PYTHONPATH=src:. python tests/fuzz/atheris_engines.py smtp -max_total_time=600 [corpus_dir]

Targets: smtp, imap, pop3, sasl, mime. The first bytes of each input choose how the rest is split
into pieces and which decisions the fake session takes; anything but the engine's own protocol
answers (an exception escaping, a hang, a crash) is a finding. The same invariants as the
Hypothesis properties beside this file, with libFuzzer steering towards new code paths.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from mailroom.message.imap_structure import body_structure, envelope
from mailroom.message.mime import parse_message
from mailroom.message.sections import SectionSpec, binary_section, section_bytes
from mailroom.wire import pop3, sasl
from mailroom.wire.errors import LocalProtocolError
from mailroom.wire.imap import commands as imap_commands
from mailroom.wire.imap import events as imap_events
from mailroom.wire.imap.engine import IMAPServerConfig, IMAPServerEngine
from mailroom.wire.imap.responses import Tagged
from mailroom.wire.smtp import events as smtp_events
from mailroom.wire.smtp.replies import reply
from mailroom.wire.smtp.server import ServerConfig, SMTPServerEngine


def pieces(data: bytes) -> tuple[list[bytes], int]:
    """(the input cut where its first byte says, a byte of decision bits)."""
    if len(data) < 2:
        return [data], 0
    step, choices, body = data[0] % 16 + 1, data[1], data[2:]
    return [body[i : i + step] for i in range(0, len(body), step)], choices


def smtp(data: bytes) -> None:
    chunks, choices = pieces(data)
    eng = SMTPServerEngine(
        ServerConfig(
            "mx.example", max_message_size=500, tls_active=bool(choices & 1), auth_mechanisms=("PLAIN",)
        )
    )
    eng.greeting()
    for chunk in [*chunks, b""]:
        eng.receive_data(chunk)
        for _ in range(100_000):
            ev = eng.next_event()
            if ev is smtp_events.NEED_DATA or isinstance(ev, smtp_events.ConnectionClosed):
                break
            if ev is smtp_events.PAUSED:
                eng.tls_started()
                continue
            if isinstance(ev, smtp_events.AuthStart | smtp_events.AuthResponse) and choices & 2:
                eng.auth_challenge(b"")
            elif isinstance(
                ev,
                smtp_events.Hello
                | smtp_events.MailFrom
                | smtp_events.RcptTo
                | smtp_events.BodyEnd
                | smtp_events.StartTLS
                | smtp_events.AuthStart
                | smtp_events.AuthResponse,
            ):
                eng.reject(reply(550, "5.7.1", "no")) if choices & 4 else eng.accept()
        eng.data_to_send()
        if eng.closed:
            return


def imap(data: bytes) -> None:
    chunks, choices = pieces(data)
    eng = IMAPServerEngine(IMAPServerConfig(tls_active=True, starttls_available=False, append_limit=1000))
    if choices & 1:
        eng.logged_in()
    for chunk in [*chunks, b""]:
        eng.receive_data(chunk)
        while True:
            ev = eng.next_event()
            if ev is imap_events.NEED_DATA or ev is imap_events.PAUSED:
                break
            if isinstance(ev, imap_events.ConnectionClosed):
                return
            if isinstance(ev, imap_events.AppendEnd) and ev.last:
                eng.send(Tagged(ev.tag, "OK", "done"))
            elif isinstance(ev, imap_commands.Idle):
                eng.accept_idle()
            elif isinstance(ev, imap_commands.Authenticate):
                eng.auth_challenge(b"")
            elif isinstance(ev, imap_commands.Command | imap_events.AuthResponse | imap_events.IdleDone):
                eng.send(Tagged(ev.tag, "NO" if choices & 2 else "OK", "done"))
        eng.data_to_send()


DROP = (pop3.DropEntry(30, "a"), pop3.DropEntry(5, "b"))
MESSAGES = (b"Subject: x\r\n\r\n.dotted\r\nline\r\n", b"x\r\n.\r\n")


def pop3_target(data: bytes) -> None:
    chunks, choices = pieces(data)
    eng = pop3.POP3ServerEngine(pop3.POP3Config(tls_active=True, stls_available=False))
    eng.greeting()
    mech: sasl.Mechanism | None = None
    for chunk in [*chunks, b""]:
        eng.receive_data(chunk)
        while True:
            ev = eng.next_event()
            if ev is pop3.NEED_DATA or ev is pop3.PAUSED or isinstance(ev, pop3.ConnectionClosed):
                break
            if isinstance(ev, pop3.UserPass):
                eng.login_succeeded(DROP) if choices & 1 else eng.reject("no", "AUTH")
            elif isinstance(ev, pop3.AuthStart):
                mech = sasl.new_mechanism(ev.mechanism)
                if mech is None:
                    eng.reject("no")
                else:
                    drive_sasl(eng, mech, mech.start(ev.initial), choices)
            elif isinstance(ev, pop3.AuthResponse) and mech is not None:
                drive_sasl(eng, mech, mech.step(ev.data), choices)
            elif isinstance(ev, pop3.Retrieve):
                eng.begin_message()
                eng.message_data(MESSAGES[ev.index])
                eng.end_message()
            elif isinstance(ev, pop3.Update):
                eng.accept()
        eng.data_to_send()


def drive_sasl(eng: pop3.POP3ServerEngine, mech: sasl.Mechanism, result: sasl.Result, choices: int) -> None:
    while True:
        match result:
            case sasl.Challenge(data=challenge):
                eng.auth_challenge(challenge)
                return
            case sasl.CheckPassword():
                result = mech.password_result(bool(choices & 2))
            case sasl.NeedScramCredentials():
                result = mech.scram_credentials(None)
            case sasl.Success(final_data=final) if final is not None:
                eng.auth_challenge(final)
                return
            case sasl.Success():
                eng.login_succeeded(DROP)
                return
            case _:
                eng.reject("no", "AUTH")
                return


def sasl_target(data: bytes) -> None:
    chunks, choices = pieces(data)
    mech = sasl.new_mechanism(sasl.MECHANISMS[choices % 3])
    assert mech is not None
    result = mech.start(chunks[0] if chunks and choices & 4 else None)
    for chunk in chunks[1:]:
        match result:
            case sasl.Challenge():
                result = mech.step(chunk)
            case sasl.CheckPassword():
                result = mech.password_result(bool(chunk[:1] == b"y"))
            case sasl.NeedScramCredentials():
                result = mech.scram_credentials(None)
            case sasl.Success(final_data=final) if final is not None:
                raise AssertionError("random input produced a valid SCRAM proof")
            case _:
                return
    try:
        mech.step(b"")
    except LocalProtocolError:
        pass


def mime(data: bytes) -> None:
    root = parse_message(data)
    body_structure(root, True)
    body_structure(root, False)
    envelope(root)
    for numbers in ((1,), (2,), (1, 1), (2, 1), (1, 2, 1)):
        section_bytes(data, root, SectionSpec(numbers))
        section_bytes(data, root, SectionSpec(numbers, "MIME"))
        binary_section(data, root, numbers)
    section_bytes(data, root, SectionSpec((), "HEADER.FIELDS", (b"From", b"To")))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "smtp": smtp,
    "imap": imap,
    "pop3": pop3_target,
    "sasl": sasl_target,
    "mime": mime,
}


def main() -> None:
    import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]

    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv[1]]
    atheris.instrument_all()  # coverage feedback from every module loaded above (mailroom's included)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
