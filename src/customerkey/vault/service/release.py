"""Secure key release: exportable key versions, their release policies, and ``release_key``,
which hands an exportable key to an environment whose attestation token satisfies its policy,
wrapped so that only that environment can open it.

Rules, as Azure Key Vault and Managed HSM have them:

- Only HSM key types (RSA-HSM, EC-HSM, oct-HSM) may be exportable, and an exportable version
  needs a release policy (``vault.release_policy``; its grammar is checked when it is set). A
  version that is not exportable takes no policy.
- ``exportable`` is fixed when a version is made (created, imported, or rotated from an
  exportable newest version, which passes on its policy); an update that would change it is
  refused, so a key that is not exportable never becomes exportable.
- An update may replace the policy, unless it is ``immutable``: an immutable policy never
  changes again (sending the same one is not a change).
- ``exportable`` and the policy are bound to the master key by the release tag
  (``crypto.release_tag``): a version whose stored settings do not match it is refused
  (``KeyIntegrityFailure``) before any release, update or rotation uses them.

``release_key`` needs the ``release`` permission. In one read-only transaction it checks the
permission, the key version (it must be exportable, have a policy, be enabled and within its
validity period, and its public half and release settings must match their tags), verifies the
attestation token against the trusted authorities (``vault.attestation``), evaluates the policy
on the token's claims and picks the token's runtime key; every refusal there that is a 403 is
audited as ``denied``. Outside any transaction it wraps the key material for the runtime key
(``crypto.rsa_aes_wrap``, with ``enc``) and signs the result; the release is audited with the
authority, the export algorithm and the runtime key's ``kid``.

The result is Key Vault's: a JWS (RS256, ``crypto.jws``) signed by the installation's release
signing key, whose header names the key's self-signed certificate (``x5c``, ``x5t#S256``) and
whose payload is::

    {"request": {"api-version", "enc", "kid", "nonce"?},
     "response": {"key": {"key": {<public JWK>, "key_hsm": base64url(transfer blob)},
                          "attributes", "tags", "release_policy"}}}

with the transfer blob ``{"schema_version": "1.0", "header": {"kid": <runtime key kid>,
"alg": "dir", "enc": <enc>}, "ciphertext": base64url(wrapped key material), "generator"}``.
The release signing key (RSA-2048) is made on the first release and kept sealed under the
master key in ``release_signing_keys``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.x509 import load_der_x509_certificate
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from customerkey.crypto.aead import open_sealed, seal
from customerkey.crypto.jws import certificate_thumbprint, self_signed_certificate, sign_rs256
from customerkey.crypto.jws import x5c_entry as x5c_of
from customerkey.crypto.key_material import PrivateMaterial, material_to_bytes
from customerkey.crypto.release_tag import derive_release_tag_key, release_tag, release_tag_matches
from customerkey.crypto.rsa import (
    b64url_decode,
    b64url_encode,
    generate_rsa_key,
    private_key_from_der,
    private_key_to_der,
)
from customerkey.crypto.rsa_aes_wrap import (
    AES_KEY_BYTES,
    RsaAesWrapAlgorithm,
    parse_rsa_aes_wrap_algorithm,
    rsa_aes_wrap,
)
from customerkey.errors import BadParameter, Forbidden, KeyIntegrityFailure, KeyNotUsable
from customerkey.storage.models import KeyRow, KeyVersionRow, ReleaseSigningKeyRow, VaultRow
from customerkey.storage.repositories import KeyRepository
from customerkey.vault.attestation import TrustedAuthorities, runtime_encryption_key
from customerkey.vault.binding import integrity_message
from customerkey.vault.hsm import TokenKey
from customerkey.vault.key_documents import key_attributes_json, key_json, release_policy_json
from customerkey.vault.models import Actor, KeyBundle, KeyReleasePolicy
from customerkey.vault.release_policy import canonical_content_type, evaluate, parse_policy
from customerkey.vault.service.base import ServiceBase

__all__ = [
    "DEFAULT_EXPORT_ALGORITHM",
    "EXPORTABLE_KTYS",
    "ReleaseMixin",
    "ReleasePolicyNotSatisfied",
    "policy_from_stored",
]

EXPORTABLE_KTYS = ("RSA-HSM", "EC-HSM", "oct-HSM")
DEFAULT_EXPORT_ALGORITHM = RsaAesWrapAlgorithm.CKM_RSA_AES_KEY_WRAP
MAX_NONCE_LENGTH = 1024
SIGNING_KEY_ID = "release-signing-1"
SIGNING_CERT_NAME = "customerkey secure key release"
SIGNING_CERT_LIFETIME = timedelta(days=3650)
TRANSFER_GENERATOR = "customerkey secure key release"


class ReleasePolicyNotSatisfied(Forbidden):
    """The attestation token is trusted but its claims do not satisfy the key's policy."""


@dataclass(frozen=True)
class _Signer:
    private_key: RSAPrivateKey
    header: Mapping[str, Any]  # kid, x5t#S256, x5c


@dataclass(frozen=True)
class _Checked:
    vault_scope: tuple[str, str, str]  # name, id, tenant
    version_id: str
    bundle: KeyBundle
    material: PrivateMaterial
    authority: str
    runtime_kid: str | None
    runtime_key: RSAPublicKey


_SIGNER_LOCK = threading.Lock()


def policy_from_stored(stored: Mapping[str, Any] | None) -> KeyReleasePolicy | None:
    """A policy from its stored form (``release_policy_json``'s); ``ValueError``, ``KeyError``
    or ``TypeError`` when it is not one."""
    if stored is None:
        return None
    return KeyReleasePolicy(
        data=b64url_decode(str(stored["data"])),
        content_type=str(stored["contentType"]),
        immutable=bool(stored["immutable"]),
    )


def _tag_policy(policy: KeyReleasePolicy | None) -> tuple[str, bytes, bool] | None:
    return None if policy is None else (policy.content_type, policy.data, policy.immutable)


class ReleaseMixin(ServiceBase):
    """Exportable versions, release policies and ``release_key`` (see the module docstring)."""

    _release_tag_key_value: bytes | None = None
    _release_signer_value: _Signer | None = None

    # ------------------------------------------------------------------ settings of a version

    @property
    def _release_tag_key(self) -> bytes:
        if self._release_tag_key_value is None:
            self._release_tag_key_value = derive_release_tag_key(self._master_key)
        return self._release_tag_key_value

    @staticmethod
    def checked_release_policy(policy: KeyReleasePolicy) -> KeyReleasePolicy:
        """``policy`` with its content type canonical, once its document is known to follow
        the grammar (``BadParameter`` otherwise)."""
        content_type = canonical_content_type(policy.content_type)
        parse_policy(policy.data)
        return KeyReleasePolicy(
            data=bytes(policy.data), content_type=content_type, immutable=bool(policy.immutable)
        )

    def _release_settings(
        self, kty: str, exportable: bool, policy: KeyReleasePolicy | None
    ) -> KeyReleasePolicy | None:
        """The checked policy of a new version (``BadParameter`` for what the rules refuse)."""
        if exportable and kty not in EXPORTABLE_KTYS:
            raise BadParameter(
                f"Key type {kty} cannot be exportable; only HSM keys ("
                + ", ".join(EXPORTABLE_KTYS)
                + ") can."
            )
        if exportable and policy is None:
            raise BadParameter(
                "An exportable key needs a release policy ('release_policy'): the rules under "
                "which it may be released."
            )
        if not exportable and policy is not None:
            raise BadParameter(
                "A release policy applies only to exportable keys; set attributes.exportable "
                "to true to make an exportable key."
            )
        return None if policy is None else self.checked_release_policy(policy)

    def _set_release(
        self,
        row: KeyVersionRow,
        *,
        vault_id: str,
        key_id: str,
        exportable: bool,
        policy: KeyReleasePolicy | None,
    ) -> None:
        """Store a version's release settings and their tag (none when not exportable)."""
        row.exportable = exportable
        row.release_policy = release_policy_json(policy) if policy is not None else None
        row.release_tag = (
            release_tag(
                self._release_tag_key,
                vault_id=vault_id,
                key_id=key_id,
                version=row.version,
                exportable=exportable,
                policy=_tag_policy(policy),
            )
            if exportable
            else None
        )

    def _stored_release_policy(
        self, vault: VaultRow, key: KeyRow, version: KeyVersionRow
    ) -> KeyReleasePolicy | None:
        """The version's policy, once its exportable flag and policy match their tag
        (``KeyIntegrityFailure`` otherwise); None for a version that is not exportable."""
        if not version.exportable and version.release_policy is None:
            return None
        try:
            policy = policy_from_stored(version.release_policy)
        except (KeyError, TypeError, ValueError):
            policy = None
            matches = False
        else:
            matches = release_tag_matches(
                self._release_tag_key,
                version.release_tag,
                vault_id=vault.id,
                key_id=key.id,
                version=version.version,
                exportable=version.exportable,
                policy=_tag_policy(policy),
            )
        if not matches:
            raise KeyIntegrityFailure(
                integrity_message(f"{vault.name}/{key.name}/{version.version}")
                + " (its release settings do not match their tag)"
            )
        return policy

    def _bundle(self, vault: VaultRow, key: KeyRow, version: KeyVersionRow) -> KeyBundle:
        """The key bundle with its release policy; an exportable version's settings are
        checked against their tag first, as its public key is."""
        bundle = super()._bundle(vault, key, version)
        policy = self._stored_release_policy(vault, key, version)
        return bundle if policy is None else replace(bundle, release_policy=policy)

    def _update_release(
        self,
        vault: VaultRow,
        key: KeyRow,
        version: KeyVersionRow,
        *,
        exportable: bool | None,
        policy: KeyReleasePolicy | None,
        changes: dict[str, Any],
    ) -> None:
        """Apply an update's ``exportable`` and release policy to ``version`` (a policy given
        here is already ``checked_release_policy``)."""
        if exportable is not None and exportable != version.exportable:
            if exportable:
                raise BadParameter(
                    f"Key {key.name} version {version.version} is not exportable and cannot "
                    "become exportable; create or import a new exportable key instead."
                )
            raise BadParameter(
                f"Key {key.name} version {version.version} is exportable; that cannot be changed."
            )
        if policy is None:
            return
        if not version.exportable:
            raise BadParameter(
                f"Key {key.name} version {version.version} is not exportable; a release "
                "policy applies only to exportable keys."
            )
        current = self._stored_release_policy(vault, key, version)
        if current == policy:
            return
        if current is not None and current.immutable:
            raise Forbidden(
                f"The release policy of key {key.name} version {version.version} is immutable "
                "and cannot be changed."
            )
        self._set_release(version, vault_id=vault.id, key_id=key.id, exportable=True, policy=policy)
        changes["release_policy"] = {
            "sha256": hashlib.sha256(policy.data).hexdigest(),
            "immutable": policy.immutable,
        }

    # ------------------------------------------------------------------ release

    def release_key(
        self,
        actor: Actor,
        vault: str,
        name: str,
        version: str | None,
        target: str,
        *,
        authorities: TrustedAuthorities,
        vault_url: str,
        api_version: str,
        nonce: str | None = None,
        enc: str | None = None,
    ) -> str:
        """Release an exportable key version to the environment ``target`` attests (see the
        module docstring); returns the signed result (a compact JWS)."""
        try:
            algorithm = (
                DEFAULT_EXPORT_ALGORITHM if enc is None else parse_rsa_aes_wrap_algorithm(enc)
            )
        except ValueError:
            raise BadParameter(
                f"Export algorithm 'enc' {json.dumps(enc)} is not supported; use one of: "
                + ", ".join(alg.value for alg in RsaAesWrapAlgorithm)
                + "."
            ) from None
        if not isinstance(target, str) or not target:
            raise BadParameter("'target' (the target environment's attestation token) is empty.")
        if nonce is not None and len(nonce) > MAX_NONCE_LENGTH:
            raise BadParameter(f"'nonce' is at most {MAX_NONCE_LENGTH} characters.")

        def check(session: Session) -> _Checked:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "release")
            key = self._key_row(session, row, name)
            target_row = self._version_row(session, key, version)
            material = self._private_key(row, key, target_row)
            self._check_public(row, key, target_row)
            label = f"Key {key.name} version {target_row.version}"
            if isinstance(material, TokenKey):
                raise KeyNotUsable(f"{label} is held in the HSM; it cannot be released.")
            if not target_row.exportable:
                raise KeyNotUsable(
                    f"{label} is not exportable; only keys created or imported as exportable, "
                    "with a release policy, can be released."
                )
            policy = self._stored_release_policy(row, key, target_row)
            if policy is None:
                raise KeyNotUsable(f"{label} has no release policy; it cannot be released.")
            self._check_release_window(target_row, label)
            verified = authorities.verify(target, self._clock.now())
            decision = evaluate(parse_policy(policy.data), verified.issuer, verified.claims)
            if not decision.satisfied:
                raise ReleasePolicyNotSatisfied(
                    f"The release policy of {label} is not satisfied by the attestation token: "
                    f"{decision.reason}."
                )
            runtime = runtime_encryption_key(verified.claims)
            return _Checked(
                (row.name, row.id, row.tenant),
                target_row.id,
                self._bundle(row, key, target_row),
                material,
                verified.authority,
                runtime.kid,
                runtime.public_key,
            )

        checked = self._run(
            actor, "KeyRelease", check, vault=vault.lower(), key=name, read_only=True
        )
        kid = f"{vault_url}/keys/{checked.bundle.id.name}/{checked.bundle.id.version}"
        wrapped = rsa_aes_wrap(
            checked.runtime_key,
            material_to_bytes(checked.material),
            algorithm,
            self._rng.token_bytes(AES_KEY_BYTES),
        )
        transfer = {
            "schema_version": "1.0",
            "header": {"kid": checked.runtime_kid or "", "alg": "dir", "enc": algorithm.value},
            "ciphertext": b64url_encode(wrapped),
            "generator": TRANSFER_GENERATOR,
        }
        key_document: dict[str, Any] = {
            "key": {
                **key_json(checked.bundle, kid),
                "key_hsm": b64url_encode(json.dumps(transfer, separators=(",", ":")).encode()),
            },
            "attributes": key_attributes_json(checked.bundle),
            "tags": dict(checked.bundle.tags),
        }
        if checked.bundle.release_policy is not None:
            key_document["release_policy"] = release_policy_json(checked.bundle.release_policy)
        request: dict[str, Any] = {"api-version": api_version, "enc": algorithm.value, "kid": kid}
        if nonce is not None:
            request["nonce"] = nonce
        signer = self._release_signer()
        result = sign_rs256(
            signer.private_key,
            signer.header,
            {"request": request, "response": {"key": key_document}},
        )
        with self.db.transaction() as session:
            KeyRepository(session).count_use(checked.version_id)
            self._record(
                session,
                actor,
                "KeyRelease",
                vault=checked.vault_scope,
                key=checked.bundle.id.name,
                version=checked.bundle.id.version,
                details={
                    "enc": algorithm.value,
                    "authority": checked.authority,
                    "runtime_kid": checked.runtime_kid,
                },
            )
        return result

    def _check_release_window(self, version: KeyVersionRow, label: str) -> None:
        now = self._clock.now()
        if not version.enabled:
            raise KeyNotUsable(f"{label} is disabled; a disabled key cannot be released.")
        if version.not_before is not None and now < version.not_before:
            raise KeyNotUsable(
                f"{label} cannot be released before its not-before time "
                f"({version.not_before.isoformat()})."
            )
        if version.expires is not None and now >= version.expires:
            raise KeyNotUsable(f"{label} has expired; an expired key cannot be released.")

    # ------------------------------------------------------------------ the signing key

    def _release_signer(self) -> _Signer:
        """The installation's release signing key: read (and checked) once, made on first use."""
        if self._release_signer_value is not None:
            return self._release_signer_value
        with _SIGNER_LOCK:
            if self._release_signer_value is None:
                with self.db.read() as session:
                    row = session.get(ReleaseSigningKeyRow, SIGNING_KEY_ID)
                    stored = None if row is None else (row.sealed_private_key, row.certificate)
                if stored is None:
                    stored = self._make_release_signer()
                self._release_signer_value = self._open_release_signer(*stored)
            return self._release_signer_value

    def _signer_context(self) -> dict[str, str]:
        return {"purpose": "release-signing-key", "id": SIGNING_KEY_ID}

    def _make_release_signer(self) -> tuple[bytes, bytes]:
        private_key = generate_rsa_key(2048)
        now = self._clock.now()
        certificate = self_signed_certificate(
            private_key,
            common_name=SIGNING_CERT_NAME,
            serial=int.from_bytes(self._rng.token_bytes(16), "big") >> 1 or 1,
            not_before=now - timedelta(minutes=5),
            not_after=now + SIGNING_CERT_LIFETIME,
        )
        sealed = seal(
            self._master_key,
            private_key_to_der(private_key),
            key_id=self._master_key_id,
            key_version="1",
            context=self._signer_context(),
        )
        try:
            with self.db.transaction() as session:
                session.add(
                    ReleaseSigningKeyRow(
                        id=SIGNING_KEY_ID,
                        created_at=now,
                        sealed_private_key=sealed,
                        certificate=certificate,
                    )
                )
        except IntegrityError:
            pass  # another process made it first: use theirs
        with self.db.read() as session:
            row = session.get(ReleaseSigningKeyRow, SIGNING_KEY_ID)
            assert row is not None
            return row.sealed_private_key, row.certificate

    def _open_release_signer(self, sealed: bytes, certificate: bytes) -> _Signer:
        private_key = private_key_from_der(
            open_sealed(self._master_key, sealed, context=self._signer_context())
        )
        public = load_der_x509_certificate(certificate).public_key()
        if public != private_key.public_key():
            raise KeyIntegrityFailure(
                "The release signing key's certificate does not match its sealed private key; "
                "the release_signing_keys row was changed."
            )
        header = {
            "kid": certificate_thumbprint(certificate),
            "x5t#S256": certificate_thumbprint(certificate),
            "x5c": [x5c_of(certificate)],
        }
        return _Signer(private_key, header)
