"""The operator's security-domain commands on one token (``customerkey hsm security-domain``):
show, create, request a transfer, export to a transfer request, import. Why each step is done
the way it is (SO-made session objects promoted into private token objects; the trusted
``hop`` key on import) is written in ``hsm.security_domain``."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from customerkey.config import Settings
from customerkey.errors import BadParameter, HsmNotReady
from customerkey.hsm.security_domain import (
    DOMAIN_LABEL,
    NO_USE,
    OAEP_SHA1,
    PROTECTED,
    TRANSFER_LABEL,
    WRAP,
    ArrayMapper,
    domain_id,
    domain_template,
    find_domain,
)

__all__ = ["EXPORT_FORMAT", "DomainAdmin", "DomainInfo", "open_admin"]

EXPORT_FORMAT = "customerkey-security-domain-1"


@dataclass(frozen=True)
class DomainInfo:
    token: str
    domain: str | None  # the key check value, hex
    transfer_key: str | None  # SHA-256 of the pending transfer public key (DER), hex


# What the security officer makes to vouch for a key: only the SO may set CKA_TRUSTED, and
# only when the object is made; the SO cannot make private objects, and a public token object
# would be stored in the clear, so it is a session object.
_SO_TRUSTED = {Attribute.TOKEN: False, Attribute.PRIVATE: False, Attribute.TRUSTED: True}


def _read_so_pin(settings: Settings) -> str:
    if settings.pkcs11_so_pin_file is None:
        raise HsmNotReady(
            "This command needs the token's Security Officer PIN: set "
            "CUSTOMERKEY_PKCS11_SO_PIN_FILE (a file holding it) for this command only."
        )
    try:
        text = settings.pkcs11_so_pin_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise HsmNotReady(
            f"The SO PIN file could not be read: check CUSTOMERKEY_PKCS11_SO_PIN_FILE "
            f"({str(settings.pkcs11_so_pin_file)!r})."
        ) from None
    return text.removesuffix("\n").removesuffix("\r")


def _fingerprint(public: rsa.RSAPublicKey) -> str:
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _rsa_public(key: Any) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(
        int.from_bytes(bytes(key[Attribute.PUBLIC_EXPONENT]), "big"),
        int.from_bytes(bytes(key[Attribute.MODULUS]), "big"),
    ).public_key()


class DomainAdmin:
    """The security-domain commands on one token (a process of their own: PKCS#11 login state
    is per process, and these log the SO in and out)."""

    def __init__(self, token: Any, pin: str, settings: Settings) -> None:
        self._token = token
        self._pin = pin
        self._settings = settings
        self._mapper = ArrayMapper()

    @contextmanager
    def _login(self, *, so: bool = False) -> Iterator[Any]:
        try:
            if so:
                session = self._token.open(
                    rw=True, so_pin=_read_so_pin(self._settings), attribute_mapper=self._mapper
                )
            else:
                session = self._token.open(
                    rw=True, user_pin=self._pin, attribute_mapper=self._mapper
                )
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange, p11.PinLocked):
            which = "CUSTOMERKEY_PKCS11_SO_PIN_FILE" if so else "CUSTOMERKEY_PKCS11_PIN_FILE"
            raise HsmNotReady(
                f"The PKCS#11 token {self._token.label!r} refused the "
                f"{'SO' if so else 'user'} PIN: check {which}."
            ) from None
        try:
            yield session
        finally:
            session.close()  # logs the process out

    @contextmanager
    def _worker(self) -> Iterator[Any]:
        """A session with no login of its own: its session objects outlive logins."""
        session = self._token.open(rw=True, attribute_mapper=self._mapper)
        try:
            yield session
        finally:
            session.close()

    def show(self) -> DomainInfo:
        with self._login() as session:
            domain = find_domain(session)
            transfer = self._transfer_public(session)
            return DomainInfo(
                token=str(self._token.label),
                domain=domain_id(session, domain) if domain is not None else None,
                transfer_key=_fingerprint(_rsa_public(transfer)) if transfer is not None else None,
            )

    def _refuse_existing(self, session: Any) -> None:
        domain = find_domain(session)
        if domain is not None:
            raise BadParameter(
                f"The token {self._token.label!r} already holds security domain "
                f"{domain_id(session, domain)}; a token holds one."
            )

    def _promote(self, worker: Any, key: Any) -> str:
        """Copy a trusted public session key into the token as the private domain key."""
        with self._login() as session:
            self._refuse_existing(session)
            key.copy(
                {
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.LABEL: DOMAIN_LABEL,
                    Attribute.ID: hashlib.sha256(b"customerkey security domain").digest()[:16],
                    Attribute.MODIFIABLE: False,
                }
            )
            made = find_domain(session)
            assert made is not None
            return domain_id(session, made)

    def create(self) -> str:
        """A new security domain; its identifier."""
        with self._login() as session:
            self._refuse_existing(session)
        with self._worker() as worker:
            with self._login(so=True):
                key = worker.generate_key(
                    KeyType.AES,
                    256,
                    store=False,
                    capabilities=0,
                    template={
                        **_SO_TRUSTED,
                        **domain_template(),
                    },
                )
            return self._promote(worker, key)

    def _transfer_public(self, session: Any) -> Any | None:
        found = list(
            session.get_objects(
                {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: TRANSFER_LABEL}
            )
        )
        return found[0] if found else None

    def request(self) -> bytes:
        """A transfer key pair (replacing a pending one); its public key, PEM."""
        with self._login() as session:
            self._refuse_existing(session)
            for stale in list(session.get_objects({Attribute.LABEL: TRANSFER_LABEL})):
                stale.destroy()
            public, _ = session.generate_keypair(
                KeyType.RSA,
                3072,
                label=TRANSFER_LABEL,
                store=True,
                capabilities=0,
                public_template={
                    Attribute.TOKEN: True,
                    Attribute.WRAP: True,
                    Attribute.ENCRYPT: False,
                    Attribute.VERIFY: False,
                },
                private_template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.UNWRAP: True,
                    Attribute.DECRYPT: False,
                    Attribute.SIGN: False,
                    Attribute.UNWRAP_TEMPLATE: PROTECTED,
                },
            )
            return _rsa_public(public).public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )

    def export(self, request_pem: bytes) -> bytes:
        """The domain key wrapped to the recipient's transfer key (the SO trusts it)."""
        try:
            recipient = serialization.load_pem_public_key(request_pem)
        except ValueError:
            raise BadParameter("The transfer request is not a PEM public key.") from None
        if not isinstance(recipient, rsa.RSAPublicKey) or recipient.key_size < 3072:
            raise BadParameter("The transfer request must be an RSA public key of 3072 bits.")
        numbers = recipient.public_numbers()
        with self._login() as session:
            domain = find_domain(session)
            if domain is None:
                raise BadParameter(f"The token {self._token.label!r} holds no security domain.")
            identifier = domain_id(session, domain)
        with self._worker() as worker:
            with self._login(so=True):
                trusted = worker.create_object(
                    {
                        Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                        Attribute.KEY_TYPE: KeyType.RSA,
                        **_SO_TRUSTED,
                        Attribute.WRAP: True,
                        Attribute.ENCRYPT: False,
                        Attribute.VERIFY: False,
                        Attribute.MODULUS: numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8),
                        Attribute.PUBLIC_EXPONENT: numbers.e.to_bytes(
                            (numbers.e.bit_length() + 7) // 8
                        ),
                    }
                )
            with self._login() as session:
                domain = find_domain(session)
                assert domain is not None
                wrapped = bytes(
                    trusted.wrap_key(
                        domain, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=OAEP_SHA1
                    )
                )
        return json.dumps(
            {
                "format": EXPORT_FORMAT,
                "security_domain": identifier,
                "transfer_key": _fingerprint(recipient),
                "mechanism": "CKM_RSA_PKCS_OAEP (SHA-1, MGF1-SHA-1)",
                "wrapped": base64.urlsafe_b64encode(wrapped).decode().rstrip("="),
            },
            indent=2,
        ).encode()

    def import_(self, exported: bytes) -> str:
        """Unwrap an exported domain key with the pending transfer key; its identifier."""
        try:
            body = json.loads(exported)
            assert body["format"] == EXPORT_FORMAT
            identifier, fingerprint = str(body["security_domain"]), str(body["transfer_key"])
            text = str(body["wrapped"])
            wrapped = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (ValueError, KeyError, TypeError, AssertionError):
            raise BadParameter("The file is not an exported security domain.") from None
        with self._worker() as worker:
            with self._login() as session:
                self._refuse_existing(session)
                public = self._transfer_public(session)
                if public is None or _fingerprint(_rsa_public(public)) != fingerprint:
                    raise BadParameter(
                        "The security domain was exported to another transfer key than the one "
                        "this token is waiting with: request a transfer again and export to it."
                    )
            # CKA_TRUSTED is set only when an object is made, by the SO, who cannot use the
            # private transfer key: the key crosses over under a trusted session key ``hop``.
            with self._login(so=True):
                hop = worker.generate_key(
                    KeyType.AES,
                    256,
                    store=False,
                    capabilities=0,
                    template={
                        **_SO_TRUSTED,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.WRAP: True,
                        Attribute.UNWRAP: True,
                        **NO_USE,
                    },
                )
            with self._login():
                transfer = worker.get_key(
                    object_class=ObjectClass.PRIVATE_KEY, label=TRANSFER_LABEL
                )
                try:
                    key = transfer.unwrap_key(
                        ObjectClass.SECRET_KEY,
                        KeyType.AES,
                        wrapped,
                        mechanism=Mechanism.RSA_PKCS_OAEP,
                        mechanism_param=OAEP_SHA1,
                        capabilities=0,
                        template={
                            Attribute.TOKEN: False,
                            **PROTECTED,
                            Attribute.WRAP: True,
                            Attribute.UNWRAP: False,
                            **NO_USE,
                        },
                    )
                except (p11.GeneralError, p11.EncryptedDataInvalid, p11.WrappedKeyInvalid):
                    raise BadParameter("The exported security domain did not unwrap.") from None
                if domain_id(worker, key) != identifier:
                    raise BadParameter("The exported security domain did not unwrap.")
                crossing = bytes(hop.wrap_key(key, mechanism=WRAP))
                key.destroy()
            with self._login(so=True):
                trusted = hop.unwrap_key(
                    ObjectClass.SECRET_KEY,
                    KeyType.AES,
                    crossing,
                    mechanism=WRAP,
                    capabilities=0,
                    template={
                        **_SO_TRUSTED,
                        **domain_template(),
                    },
                )
            identifier = self._promote(worker, trusted)
        with self._login() as session:
            for used in list(session.get_objects({Attribute.LABEL: TRANSFER_LABEL})):
                used.destroy()
        return identifier


def open_admin(settings: Settings) -> DomainAdmin:
    """The security-domain commands on the configured token (``HsmNotReady`` as at start)."""
    from customerkey.hsm import read_pin

    if not settings.pkcs11_module:
        raise HsmNotReady(
            "No HSM is configured: set CUSTOMERKEY_PKCS11_MODULE, "
            "CUSTOMERKEY_PKCS11_TOKEN_LABEL and CUSTOMERKEY_PKCS11_PIN_FILE."
        )
    pin = read_pin(settings)
    try:
        library = pkcs11.lib(settings.pkcs11_module)
        token = library.get_token(token_label=settings.pkcs11_token_label)
    except (p11.NoSuchToken, p11.MultipleTokensReturned, p11.TokenNotPresent):
        raise HsmNotReady(
            f"No single PKCS#11 token labelled {settings.pkcs11_token_label!r} is present: "
            "check CUSTOMERKEY_PKCS11_TOKEN_LABEL."
        ) from None
    except p11.PKCS11Error:
        raise HsmNotReady(
            "The PKCS#11 module could not be loaded: check CUSTOMERKEY_PKCS11_MODULE."
        ) from None
    return DomainAdmin(token, pin, settings)
