"""One SASL exchange, the same for SMTP AUTH, POP3 AUTH and IMAP AUTHENTICATE.

Drives a ``wire.sasl`` mechanism: fulfils its password checks and SCRAM key look-ups through the
Authenticator, and tells the session what to put on the wire next. Protocol framing (334, "+ ",
tagged OK) stays in each session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mailroom import logs
from mailroom.policy.auth import Authenticator
from mailroom.store.directory import Account
from mailroom.wire import sasl


@dataclass(frozen=True)
class SendChallenge:
    data: bytes


@dataclass(frozen=True)
class Authenticated:
    account: Account


@dataclass(frozen=True)
class Rejected:
    reason: str


Outcome = SendChallenge | Authenticated | Rejected


class SaslExchange:
    def __init__(
        self,
        mechanism: sasl.Mechanism,
        name: str,
        auth: Authenticator,
        service: str,
        ip: str,
        log: logging.Logger | logs.ConnLogger,
    ) -> None:
        self.mechanism = mechanism
        self.name = name
        self.auth = auth
        self.service = service
        self.ip = ip
        self.log = log
        self.account: Account | None = None
        self.username = ""

    @classmethod
    def start_new(
        cls,
        name: str,
        allowed: tuple[str, ...],
        auth: Authenticator,
        service: str,
        ip: str,
        log: logging.Logger | logs.ConnLogger,
    ) -> SaslExchange | None:
        upper = name.upper()
        mechanism = sasl.new_mechanism(upper) if upper in allowed else None
        return None if mechanism is None else cls(mechanism, upper, auth, service, ip, log)

    async def start(self, initial: bytes | None) -> Outcome:
        return await self._drive(self.mechanism.start(initial))

    async def step(self, response: bytes) -> Outcome:
        return await self._drive(self.mechanism.step(response))

    async def _drive(self, result: sasl.Result) -> Outcome:
        while True:
            match result:
                case sasl.Challenge(data=data):
                    return SendChallenge(data)
                case sasl.CheckPassword(username=username, password=password):
                    self.username = username
                    self.account = await self.auth.check_password(
                        self.service, self.ip, username, password, self.log
                    )
                    result = self.mechanism.password_result(self.account is not None)
                case sasl.NeedScramCredentials(username=username):
                    self.username = username
                    found = await self.auth.scram_keys(username)
                    self.account = found[0] if found else None
                    result = self.mechanism.scram_credentials(found[1] if found else None)
                case sasl.Success(final_data=final):
                    if final:
                        # RFC 4954 §4 / RFC 5034 §4: data with success goes in one more challenge,
                        # which the client answers empty; the mechanism then succeeds without data
                        return SendChallenge(final)
                    if self.account is None:
                        return Rejected("no account")
                    self.auth.succeeded(self.ip, self.username)
                    return Authenticated(self.account)
                case sasl.Failure(reason=reason):
                    if not isinstance(self.mechanism, sasl.PlainMechanism | sasl.LoginMechanism):
                        # password mechanisms were counted by check_password already
                        await self.auth.failed(self.service, self.ip, self.username or "-", self.log)
                    self.log.debug("AUTH %s failed: %s", self.name, reason)
                    return Rejected(reason)
