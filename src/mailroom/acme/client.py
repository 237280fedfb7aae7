"""One certificate issuance through certbot's ``acme`` library (RFC 8555). Blocking: it runs in the
certificate worker process (worker.py), or in a daemon thread of the server where no child can run.

Flow: account (key kept in data_dir, 0600; an existing account is found again by its key), new order
for every name, one challenge per authorization in the configured preference order, poll, finalize
with a CSR for a fresh P-256 key, download the full chain. A challenge type that fails is retried
once with the next type on a fresh order (a failed challenge makes the whole order invalid).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.b64 import b64encode
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from mailroom import __version__
from mailroom.acme.challenges import CHALLENGE_TYPES, Publisher
from mailroom.acme.issued import Issued, IssueError, write_private

log = logging.getLogger("mailroom.acme")


class _TLSALPN01Response(challenges.ChallengeResponse):
    """The empty ``{}`` that tells the CA a tls-alpn-01 challenge is ready (RFC 8555 §7.5.1).
    acme 5 no longer models tls-alpn-01; its challenge arrives as UnrecognizedChallenge."""

    typ = "tls-alpn-01"

    def __bool__(self) -> bool:
        # an object with no fields is falsy, and ClientNetwork would then send an empty payload
        # (a POST-as-GET, which does not start validation) instead of "{}"
        return True


def load_account_key(path: Path) -> JWKEC:
    """The account key (P-256) in ``path``, made on first use."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IssueError(f"{path}: the ACME account key must be an EC key")
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return JWKEC(key=key)
    key = ec.generate_private_key(ec.SECP256R1())
    write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    log.info("made a new ACME account key: %s", path)
    return JWKEC(key=key)


def _problem(exc: BaseException) -> str:
    """The CA's error in one line."""
    if isinstance(exc, errors.ValidationError):
        parts = []
        for authzr in exc.failed_authzrs:
            for challb in authzr.body.challenges:
                if challb.error is not None:
                    parts.append(f"{authzr.body.identifier.value}: {_typ(challb)}: {_one_line(challb.error)}")
        return "; ".join(parts) or "validation failed"
    if isinstance(exc, messages.Error):
        return _one_line(exc)
    if isinstance(exc, errors.TimeoutError):
        return "timed out waiting for the ACME server"
    if isinstance(exc, OSError | errors.Error):
        return _one_line(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {_one_line(exc)}"


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _typ(challb: messages.ChallengeBody) -> str:
    chall = challb.chall
    if isinstance(chall, challenges.UnrecognizedChallenge):
        return str(chall.jobj.get("type", "?"))
    return str(chall.typ)


class ACMEIssuer:
    """Everything one issuance needs; ``issue`` blocks (network I/O, key generation)."""

    def __init__(
        self,
        directory_url: str,
        email: str,
        account_key_path: Path,
        responder: Publisher,
        *,
        ca_file: str = "",
        timeout: float = 90.0,
        available: Callable[[str], bool] = lambda typ: True,
    ) -> None:
        self.directory_url = directory_url
        self.email = email
        self.account_key_path = account_key_path
        self.responder = responder
        self.ca_file = ca_file
        self.timeout = timeout
        self.available = available  # whether the listener a challenge type needs is configured

    def _client(self) -> tuple[client.ClientV2, JWKEC]:
        key = load_account_key(self.account_key_path)
        verify: Any = self.ca_file or True  # requests takes a CA bundle path here too
        net = client.ClientNetwork(
            key, alg=ES256, verify_ssl=verify, user_agent=f"mailroom/{__version__}", timeout=30
        )
        directory = client.ClientV2.get_directory(self.directory_url, net)
        acme = client.ClientV2(directory, net)
        registration = messages.NewRegistration.from_data(
            email=self.email or None, terms_of_service_agreed=True
        )
        try:
            acme.new_account(registration)
        except errors.ConflictError as exc:  # RFC 8555 §7.3.1: this key already has an account
            net.account = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
        self._save_account(net)
        return acme, key

    def _save_account(self, net: client.ClientNetwork) -> None:
        uri = net.account.uri if net.account is not None else ""
        record = {"directory": self.directory_url, "account": uri, "email": self.email}
        path = self.account_key_path.with_name("account.json")
        try:
            if not path.exists() or json.loads(path.read_text()) != record:
                path.write_text(json.dumps(record, indent=1) + "\n")
        except (OSError, ValueError):
            pass

    def issue(self, names: Sequence[str], preference: Sequence[str]) -> Issued:
        """Get a certificate for ``names`` (the first is the subject), trying challenge types in order."""
        usable = [typ for typ in preference if typ in CHALLENGE_TYPES and self.available(typ)]
        if not usable:
            raise IssueError(
                "no usable challenge: http-01 needs a [listeners] http address, tls-alpn-01 an https one"
            )
        try:
            acme, account_key = self._client()
        except IssueError:
            raise
        except Exception as exc:
            raise IssueError(f"cannot reach or register with {self.directory_url}: {_problem(exc)}") from None
        failures = []
        for typ in usable:
            try:
                return self._issue_with(acme, account_key, list(names), typ)
            except IssueError as exc:
                failures.append(f"{typ}: {exc}")
                log.warning("acme: %s did not work: %s", typ, exc)
        raise IssueError(" / ".join(failures))

    def _issue_with(self, acme: client.ClientV2, account_key: JWK, names: list[str], typ: str) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        csr_pem = crypto_util.make_csr(key_pem, names)
        cleanup: list[Callable[[], None]] = []
        answered = "reused"
        try:
            order = acme.new_order(csr_pem)
            for authzr in order.authorizations:
                if authzr.body.status == messages.STATUS_VALID:
                    continue  # the CA still holds a valid authorization for this name
                name = authzr.body.identifier.value
                challb = next((c for c in authzr.body.challenges if _typ(c) == typ), None)
                if challb is None:
                    raise IssueError(f"the CA offers no {typ} challenge for {name}")
                response = self._publish(challb, typ, name, account_key, cleanup)
                log.info("acme: answering %s for %s", typ, name)
                acme.answer_challenge(challb, response)
                answered = typ
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=self.timeout)
            order = acme.poll_and_finalize(order, deadline=deadline)
        except IssueError:
            raise
        except Exception as exc:
            raise IssueError(_problem(exc)) from None
        finally:
            for undo in cleanup:
                undo()
        return Issued(order.fullchain_pem.encode("ascii"), key_pem, answered)

    def _publish(
        self,
        challb: messages.ChallengeBody,
        typ: str,
        name: str,
        account_key: JWK,
        cleanup: list[Callable[[], None]],
    ) -> Any:
        if typ == "http-01":
            response, validation = challb.response_and_validation(account_key)
            token = challb.chall.encode("token")
            self.responder.add_http01(token, validation)
            cleanup.append(lambda: self.responder.remove_http01(token))
            return response
        # tls-alpn-01: key authorization = token "." base64url(JWK thumbprint), RFC 8555 §8.1
        token = str(challb.chall.jobj["token"])
        thumbprint = b64encode(account_key.public_key().thumbprint(hash_function=hashes.SHA256)).decode()
        self.responder.add_tls_alpn01(name, f"{token}.{thumbprint}")
        cleanup.append(lambda: self.responder.remove_tls_alpn01(name))
        return _TLSALPN01Response()


def fingerprint(cert_der: bytes) -> str:
    return hashlib.sha256(cert_der).hexdigest()[:16]
