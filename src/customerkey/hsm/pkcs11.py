"""The PKCS#11 key protector: RSA-HSM, EC-HSM and oct-HSM keys made and used inside a token
(``vault.hsm.HsmProtector``; the failure contract is written there).

This class is the one way every PKCS#11 call of the process goes (its session pool and its
call lock), with a method per concern; each concern's work on a session lives in a module of
its own (``hsm.byok``, ``hsm.security_domain``, ``hsm.aes``, ``hsm.token_seal``).

``open_pkcs11`` loads the vendor module, finds the token by label, logs in with the user PIN
and asks the token which mechanisms it has (``C_GetMechanismList``), then probes what the list
does not say (which OAEP and PSS parameters it takes), on first need, on a throw-away session
key. Keys are generated as ``CKA_TOKEN``, ``CKA_PRIVATE``, ``CKA_SENSITIVE`` objects with a
random 16-byte ``CKA_ID`` (stored in the key version row) and a ``CKA_LABEL`` naming the vault
key; they are extractable only wrapped under the installation's security domain
(``CKA_WRAP_WITH_TRUSTED``, ``hsm.security_domain``) when the token holds one, never otherwise.

How each private operation runs (``describe`` lists what this token got):

- RSA-OAEP (SHA-1): ``CKM_RSA_PKCS_OAEP``. RSA-OAEP-256: ``CKM_RSA_PKCS_OAEP`` with SHA-256
  when the token takes it, else ``CKM_RSA_X_509`` (raw RSA) in the token and the OAEP
  decoding in software (``crypto.rsa_padding``; Debian's SoftHSM 2.6 is such a token).
- RSA1_5: ``CKM_RSA_X_509`` and PKCS#1 v1.5 decoding with implicit rejection in software, so
  that the token's own padding check cannot become an oracle; refused without raw RSA.
- RS256/384/512: ``CKM_RSA_PKCS`` over the ``DigestInfo``; PS256/384/512:
  ``CKM_RSA_PKCS_PSS`` (salt = digest length), refused when the token lacks it;
  ES*: ``CKM_ECDSA`` over the digest (PKCS#11 answers ``r || s``, as Key Vault does).
- oct-HSM (AES): ``CKM_AES_KEY_WRAP``, ``_PAD``, ``CKM_AES_GCM``, ``CKM_AES_CBC``, ``_PAD``
  (``hsm.aes``).

Sessions are pooled (one per concurrent operation); a session that fails is closed and not
reused, so a token that comes back is used again without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import pkcs11
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from customerkey.crypto.ec import curve_name
from customerkey.crypto.key_material import PrivateMaterial
from customerkey.crypto.rsa_padding import digest_info, oaep_decode, pkcs1v15_decode
from customerkey.crypto.signatures import signature_info
from customerkey.errors import BadParameter, DecryptionFailed, HsmNotReady, HsmUnavailable
from customerkey.hsm import aes as _aes
from customerkey.hsm import byok as _byok
from customerkey.hsm import key_import as _import
from customerkey.hsm import keypairs as _pairs
from customerkey.hsm import security_domain as sd
from customerkey.hsm import token_seal as _seal
from customerkey.rng import Rng
from customerkey.vault.hsm import (
    AesKeySize,
    GeneratedKey,
    PublicKey,
    SealedBackup,
    TokenKey,
    TokenOutput,
    TokenSecretKey,
)

__all__ = ["Pkcs11Protector", "open_pkcs11"]

T = TypeVar("T")

_CURVES = {
    "P-256": ("secp256r1", ec.SECP256R1()),
    "P-384": ("secp384r1", ec.SECP384R1()),
    "P-521": ("secp521r1", ec.SECP521R1()),
    "P-256K": ("secp256k1", ec.SECP256K1()),
}
_PSS_HASH = {
    "SHA-256": (Mechanism.SHA256, pkcs11.MGF.SHA256),
    "SHA-384": (Mechanism.SHA384, pkcs11.MGF.SHA384),
    "SHA-512": (Mechanism.SHA512, pkcs11.MGF.SHA512),
}
# Errors that say the input does not decrypt, not that the token failed.
_BAD_CIPHERTEXT = (p11.EncryptedDataInvalid, p11.EncryptedDataLenRange)
_PARAMS_REFUSED = (p11.MechanismParamInvalid, p11.ArgumentsBad, p11.MechanismInvalid)
# python-pkcs11 calls C_Initialize(NULL): the module is then told that no two threads call it
# at once, and SoftHSM 2.6 crashes (heap corruption) when they do. Every call of this process
# goes through this lock; several server workers (processes) give parallelism.
_CALLS = threading.RLock()


def open_pkcs11(
    module: str, token_label: str | None, pin: str, *, rejection_key: bytes, rng: Rng
) -> Pkcs11Protector:
    """The protector for ``token_label`` in ``module``, logged in; ``HsmNotReady`` naming the
    setting at fault (the PIN is never in a message)."""
    try:
        library = pkcs11.lib(module)
    except p11.PKCS11Error:
        raise HsmNotReady(
            f"The PKCS#11 module could not be loaded: check CUSTOMERKEY_PKCS11_MODULE "
            f"({module!r} must be the path of the HSM vendor's PKCS#11 library)."
        ) from None
    if not token_label:
        raise HsmNotReady(
            "CUSTOMERKEY_PKCS11_TOKEN_LABEL is not set: name the token that holds the keys."
        )
    try:
        token = library.get_token(token_label=token_label)
    except (p11.NoSuchToken, p11.MultipleTokensReturned, p11.TokenNotPresent):
        raise HsmNotReady(
            f"No single PKCS#11 token labelled {token_label!r} is present: check "
            "CUSTOMERKEY_PKCS11_TOKEN_LABEL and that the token is initialised and inserted."
        ) from None
    except p11.PKCS11Error as exc:
        raise HsmNotReady(
            f"The PKCS#11 module did not list its tokens ({type(exc).__name__}): check "
            "CUSTOMERKEY_PKCS11_MODULE and the HSM."
        ) from None
    protector = Pkcs11Protector(module, token, pin, rejection_key=rejection_key, rng=rng)
    try:
        protector.start()
    except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange, p11.PinLocked, p11.PinExpired):
        raise HsmNotReady(
            f"The PKCS#11 token {token_label!r} refused the user PIN: check "
            "CUSTOMERKEY_PKCS11_PIN_FILE (or CUSTOMERKEY_PKCS11_PIN)."
        ) from None
    except p11.PKCS11Error as exc:
        raise HsmNotReady(
            f"The PKCS#11 token {token_label!r} could not be used ({type(exc).__name__}): "
            "check the HSM and CUSTOMERKEY_PKCS11_MODULE."
        ) from None
    return protector


class _Pkcs11Key:
    """A token key version (``vault.hsm.TokenKey``)."""

    def __init__(
        self, protector: Pkcs11Protector, object_id: str, kty: str, public: PublicKey
    ) -> None:
        self._protector = protector
        self._object_id = object_id
        self._kty = kty
        self._public = public

    @property
    def object_id(self) -> str:
        return self._object_id

    def public_key(self) -> PublicKey:
        return self._public

    def decrypt(self, ciphertext: bytes, alg: str) -> bytes:
        if not isinstance(self._public, rsa.RSAPublicKey):
            raise BadParameter(f"An {self._kty} key does not decrypt.")
        k = (self._public.key_size + 7) // 8
        if len(ciphertext) != k:
            raise DecryptionFailed()
        return self._protector.rsa_decrypt(self._object_id, bytes(ciphertext), alg, k)

    def sign(self, digest: bytes, alg: str) -> bytes:
        return self._protector.sign(self._object_id, bytes(digest), alg)


class Pkcs11Protector:
    def __init__(
        self, module: str, token: Any, pin: str, *, rejection_key: bytes, rng: Rng
    ) -> None:
        self._module = module  # the vendor library's path, loaded again after a fork
        self._token = token
        self._pin = pin
        self._rejection_key = rejection_key
        self._rng = rng
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._mechanisms: frozenset[Mechanism] = frozenset()
        # (RSA-OAEP-256 natively, RSA-PSS): probed on first need, not at every start (each
        # probe generates a throw-away RSA key; a one-shot CLI command seldom needs it).
        self._rsa_modes: tuple[bool, bool] | None = None

    # ------------------------------------------------------------------ start and sessions

    def start(self) -> None:
        """Log in (a wrong PIN fails here) and read the mechanism list."""
        with _CALLS:
            self._mechanisms = frozenset(self._token.slot.get_mechanisms())
            with self._session():
                pass

    def _modes(self) -> tuple[bool, bool]:
        """Whether the token takes RSA-OAEP with SHA-256, and RSA-PSS (probed once)."""
        with self._lock:
            modes = self._rsa_modes
        if modes is None:
            modes = (False, False)
            if Mechanism.RSA_PKCS_KEY_PAIR_GEN in self._mechanisms:
                modes = self._run("probe", self._probe_rsa)
            with self._lock:
                self._rsa_modes = modes
        return modes

    def _probe_rsa(self, session: Any) -> tuple[bool, bool]:
        public, private = session.generate_keypair(
            KeyType.RSA, 2048, store=False, private_template={Attribute.TOKEN: False}
        )
        key = rsa.RSAPublicNumbers(
            int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
            int.from_bytes(public[Attribute.MODULUS], "big"),
        ).public_key()
        probe = b"customerkey probe"
        sha256 = hashes.SHA256()
        oaep256_native = pss = False
        if Mechanism.RSA_PKCS_OAEP in self._mechanisms:
            ciphertext = key.encrypt(
                probe, padding.OAEP(mgf=padding.MGF1(sha256), algorithm=sha256, label=None)
            )
            try:
                opened = private.decrypt(
                    ciphertext,
                    mechanism=Mechanism.RSA_PKCS_OAEP,
                    mechanism_param=(Mechanism.SHA256, pkcs11.MGF.SHA256, None),
                )
                oaep256_native = opened == probe
            except _PARAMS_REFUSED:
                oaep256_native = False
        if Mechanism.RSA_PKCS_PSS in self._mechanisms:
            try:
                private.sign(
                    bytes(32),
                    mechanism=Mechanism.RSA_PKCS_PSS,
                    mechanism_param=(Mechanism.SHA256, pkcs11.MGF.SHA256, 32),
                )
                pss = True
            except _PARAMS_REFUSED:
                pss = False
        return oaep256_native, pss

    def _open_session(self) -> Any:
        try:
            return self._token.open(rw=True, user_pin=self._pin)
        except p11.UserAlreadyLoggedIn:
            # Login is per application: this process already logged in (another runtime).
            return self._token.open(rw=True)

    @contextmanager
    def _session(self) -> Iterator[Any]:
        with self._lock:
            session = self._idle.pop() if self._idle else None
        if session is None:
            session = self._open_session()
        try:
            yield session
        except BaseException as exc:
            if isinstance(exc, p11.PKCS11Error) and not isinstance(exc, _BAD_CIPHERTEXT):
                # The session may be gone with the token: never reuse it.
                with suppress(p11.PKCS11Error):
                    session.close()
            else:
                with self._lock:
                    self._idle.append(session)
            raise
        with self._lock:
            self._idle.append(session)

    def _run(self, what: str, fn: Callable[[Any], T]) -> T:
        """``fn(session)``, with every token failure as ``HsmUnavailable``."""
        try:
            with _CALLS, self._session() as session:
                return fn(session)
        except _BAD_CIPHERTEXT:
            raise DecryptionFailed() from None
        except p11.NoSuchKey:
            raise HsmUnavailable(
                f"The HSM no longer holds the token object of this key ({what})."
            ) from None
        except p11.PKCS11Error as exc:
            raise HsmUnavailable(
                f"The HSM did not complete the operation ({what}: {type(exc).__name__})."
            ) from None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        with _CALLS:
            for session in idle:
                with suppress(p11.PKCS11Error):
                    session.close()

    # ------------------------------------------------------------------ HsmProtector

    @property
    def serves(self) -> tuple[str, ...]:
        kinds = []
        if {Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS} <= self._mechanisms:
            kinds.append("RSA-HSM")
        if {Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA} <= self._mechanisms:
            kinds.append("EC-HSM")
        if Mechanism.AES_KEY_GEN in self._mechanisms:
            kinds.append("oct-HSM")
        return tuple(kinds)

    def describe(self) -> list[str]:
        info = self._token
        lines = [
            f"PKCS#11 token {info.label!r} ({info.manufacturer_id} {info.model}): "
            + (", ".join(self.serves) or "no key types")
        ]
        if "RSA-HSM" in self.serves:
            raw = Mechanism.RSA_X_509 in self._mechanisms
            oaep256_native, pss = self._modes()
            oaep256 = (
                "CKM_RSA_PKCS_OAEP"
                if oaep256_native
                else "CKM_RSA_X_509 + OAEP decoding in software"
                if raw
                else "refused (no mechanism)"
            )
            lines.append(f"  RSA-OAEP-256: {oaep256}")
            lines.append(
                "  RSA1_5: " + ("CKM_RSA_X_509 + implicit-rejection decoding" if raw else "refused")
            )
            lines.append(
                "  RS*: CKM_RSA_PKCS over DigestInfo; PS*: "
                + ("CKM_RSA_PKCS_PSS" if pss else "refused")
            )
        if "EC-HSM" in self.serves:
            lines.append("  ES*: CKM_ECDSA")
        if "oct-HSM" in self.serves:
            lines.append(_aes.describe(self._mechanisms))
        return lines

    def generate(self, kty: str, shape: int | str, *, label: str) -> GeneratedKey:
        if kty not in self.serves:
            raise BadParameter(f"The HSM token cannot make {kty} keys.")
        if kty == "oct-HSM":
            return self._generate_aes(int(shape), label=label)
        object_id = self._rng.token_bytes(16)
        curve = _CURVES[str(shape)] if kty == "EC-HSM" else None
        public = self._run(
            f"generate {kty}",
            lambda s: _pairs.generate(s, kty, shape, object_id=object_id, label=label, curve=curve),
        )
        return GeneratedKey(object_id=object_id.hex(), public=public)

    def key(self, object_id: str, kty: str, public: PublicKey) -> TokenKey:
        return _Pkcs11Key(self, object_id, kty, public)

    # ------------------------------------------------------------------ operations

    @staticmethod
    def _private(session: Any, object_id: str) -> Any:
        return session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=bytes.fromhex(object_id))

    def rsa_decrypt(self, object_id: str, ciphertext: bytes, alg: str, k: int) -> bytes:
        raw = Mechanism.RSA_X_509 in self._mechanisms
        if alg == "RSA-OAEP" or (alg == "RSA-OAEP-256" and self._modes()[0]):
            hash_mechanism, mgf = (
                (Mechanism.SHA_1, pkcs11.MGF.SHA1)
                if alg == "RSA-OAEP"
                else (Mechanism.SHA256, pkcs11.MGF.SHA256)
            )
            return self._run(
                alg,
                lambda s: bytes(
                    self._private(s, object_id).decrypt(
                        ciphertext,
                        mechanism=Mechanism.RSA_PKCS_OAEP,
                        mechanism_param=(hash_mechanism, mgf, None),
                    )
                ),
            )
        if not raw:
            raise BadParameter(f"The HSM token offers no mechanism for {alg}.")
        em = self._run(
            alg,
            lambda s: bytes(
                self._private(s, object_id).decrypt(ciphertext, mechanism=Mechanism.RSA_X_509)
            ),
        )
        em = em.rjust(k, b"\x00")  # some tokens drop the leading zero byte
        if alg == "RSA-OAEP-256":
            return oaep_decode(em, k, "SHA-256")
        key = hmac.new(self._rejection_key, bytes.fromhex(object_id), hashlib.sha256).digest()
        return pkcs1v15_decode(em, k, rejection_key=key, ciphertext=ciphertext)

    def sign(self, object_id: str, digest: bytes, alg: str) -> bytes:
        info = signature_info(alg)
        if info.scheme == "ECDSA":
            return self._run(
                alg,
                lambda s: bytes(
                    self._private(s, object_id).sign(digest, mechanism=Mechanism.ECDSA)
                ),
            )
        if info.scheme == "RSA-PSS":
            if not self._modes()[1]:
                raise BadParameter(f"The HSM token offers no mechanism for {alg}.")
            hash_mechanism, mgf = _PSS_HASH[info.hash_name]
            return self._run(
                alg,
                lambda s: bytes(
                    self._private(s, object_id).sign(
                        digest,
                        mechanism=Mechanism.RSA_PKCS_PSS,
                        mechanism_param=(hash_mechanism, mgf, info.digest_size),
                    )
                ),
            )
        data = digest_info(info.hash_name, digest)
        return self._run(
            alg,
            lambda s: bytes(self._private(s, object_id).sign(data, mechanism=Mechanism.RSA_PKCS)),
        )

    # ------------------------------------------------------------------ the master-key seal

    def seal_key(self, label: str, *, create: bool) -> bytes | None:
        """The ``CKA_ID`` of the token's AES-256 seal key labelled ``label`` (``hsm.master_seal``);
        with ``create`` one is made when the token has none. None: no such key and not
        ``create``."""
        object_id = self._rng.token_bytes(16)
        return self._run("seal key", lambda s: _seal.seal_key(s, label, object_id, create=create))

    def seal_encrypt(self, object_id: bytes, plaintext: bytes, nonce: bytes, aad: bytes) -> bytes:
        """``CKM_AES_GCM`` (128-bit tag) under the seal key ``object_id``, inside the token."""
        return self._run("seal", lambda s: _seal.encrypt(s, object_id, plaintext, nonce, aad))

    def seal_decrypt(self, object_id: bytes, ciphertext: bytes, nonce: bytes, aad: bytes) -> bytes:
        """The inverse of ``seal_encrypt``; ``DecryptionFailed`` when it does not open."""
        return self._run("unseal", lambda s: _seal.decrypt(s, object_id, ciphertext, nonce, aad))

    # ------------------------------------------------------------------ fork

    def release_before_fork(self) -> None:
        """Close every session and finalise the module: PKCS#11 state must not cross fork()
        (the standard has the child initialise the module itself, ``reopen_after_fork``)."""
        self.close()
        with suppress(p11.PKCS11Error):
            pkcs11.lib(self._module).finalize()

    def reopen_after_fork(self) -> None:
        """In a process forked after ``release_before_fork``: initialise the module, find the
        token again and log in, so this process has sessions of its own."""
        self._lock = threading.Lock()
        self._idle = []
        library = pkcs11.lib(self._module)  # initialises it again
        self._token = library.get_token(token_label=self._token.label)
        self.start()

    # ------------------------------------------------------------------ BYOK (hsm.byok)

    def generate_kek(self, bits: int, *, label: str) -> GeneratedKey:
        _byok.require_byok(self._mechanisms)
        oid = self._rng.token_bytes(16)
        public = self._run("generate KEK", lambda s: _byok.generate_kek(s, oid, bits, label))
        return GeneratedKey(object_id=oid.hex(), public=public)

    def import_wrapped(
        self, kek_object_id: str, kek_bits: int, ciphertext: bytes, kty: str, *, label: str
    ) -> GeneratedKey:
        _byok.require_byok(self._mechanisms, kty)
        oid, kek = self._rng.token_bytes(16), bytes.fromhex(kek_object_id)
        probe = self._rng.token_bytes(32)  # EC-HSM: the digest the recovered point is checked by
        public = self._run(
            f"BYOK import {kty}",
            lambda s: _byok.import_target(s, kek, kek_bits, ciphertext, kty, oid, label, probe),
        )
        return GeneratedKey(object_id=oid.hex(), public=public)

    # ------------------------------------------------------------------ plaintext import

    def import_material(self, kty: str, material: PrivateMaterial, *, label: str) -> GeneratedKey:
        if kty not in self.serves:
            raise BadParameter(f"The HSM token cannot hold {kty} keys.")
        oid = self._rng.token_bytes(16)
        public = _import.public_of(material)
        curve = (
            _CURVES[curve_name(public)][0]
            if isinstance(public, ec.EllipticCurvePublicKey)
            else None
        )
        self._run(
            f"import {kty}",
            lambda s: _import.create_private(s, material, object_id=oid, label=label, curve=curve),
        )
        return GeneratedKey(object_id=oid.hex(), public=public)

    # ------------------------------------------------------------------ security domain

    def security_domain(self) -> str | None:
        def read(session: Any) -> str | None:
            key = sd.find_domain(session)
            return None if key is None else sd.domain_id(session, key)

        return self._run("security domain", read)

    def export_version(self, object_id: str) -> bytes:
        return self._run(
            "backup", lambda s: sd.wrap_version(s, bytes.fromhex(object_id), object_id)
        )

    def import_version(
        self, wrapped: bytes, kty: str, public: PublicKey | AesKeySize, *, label: str
    ) -> str:
        object_id = self._rng.token_bytes(16)
        self._run("restore", lambda s: sd.unwrap_version(s, wrapped, kty, public, object_id, label))
        return object_id.hex()

    def seal_backup(self, plaintext: bytes, aad: bytes) -> SealedBackup:
        nonce = self._rng.token_bytes(12)
        return self._run("backup", lambda s: sd.seal_backup(s, plaintext, aad, nonce))

    def open_backup(self, sealed: SealedBackup, aad: bytes) -> bytes:
        return self._run("restore", lambda s: sd.open_backup(s, sealed, aad))

    def destroy(self, object_id: str) -> None:
        self._run("destroy", lambda s: sd.destroy_objects(s, bytes.fromhex(object_id)))

    # ------------------------------------------------------------------ oct-HSM keys (hsm.aes)

    def _generate_aes(self, bits: int, *, label: str) -> GeneratedKey:
        if bits not in (128, 192, 256):
            raise BadParameter(f"AES key size {bits} is not supported; use 128, 192 or 256.")
        object_id = self._rng.token_bytes(16)
        self._run(
            "generate oct-HSM",
            lambda s: _aes.generate(s, object_id, bits, label, sd.version_attributes(s)),
        )
        return GeneratedKey(object_id=object_id.hex(), public=AesKeySize(bits))

    def secret_key(self, object_id: str, bits: int) -> TokenSecretKey:
        return _aes.TokenAesKey(self, object_id, bits)

    def aes(
        self,
        object_id: str,
        operation: str,
        alg: str,
        value: bytes,
        iv: bytes | None,
        aad: bytes | None,
        tag: bytes | None,
    ) -> TokenOutput:
        """One AES request under the oct-HSM key ``object_id``, in the token (``hsm.aes``)."""
        mechanism = _aes.mechanism_for(alg, self._mechanisms)
        oid = bytes.fromhex(object_id)
        return self._run(
            alg, lambda s: _aes.run(s, oid, operation, alg, mechanism, value, iv, aad, tag)
        )
