"""TLS material for the HTTPS server.

Owns the local certificate authority and server certificate that ``customerkey serve`` creates on
first start, reissues when the names it must cover change or it nears expiry, and the checks on a
certificate an operator brings instead. Layout of the TLS folder (0700):

====================  ================================================================
``ca.pem``            the local CA certificate: the file clients trust (``verify=...``)
``ca-key.pem``        the CA private key (0600); only used to sign server certificates
``server.pem``        the server certificate, signed by the CA
``server-key.pem``    the server private key (0600)
====================  ================================================================

Keys are ECDSA P-256, which Python's ``ssl``, httpx and the requests transport of the Azure SDK
all accept. The CA is constrained to ``pathlen 0`` so it can sign only end-entity certificates.

The server certificate lasts a year. ``renew_server_certificate`` (``customerkey tls renew``)
issues a new one under the same CA at any time, so clients that trust ``ca.pem`` go on trusting
the server; ``expiry_warning`` is what ``serve`` says when the certificate it serves (its own or
an operator's) expires within ``RENEW_BEFORE``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from customerkey.clock import Clock
from customerkey.home import write_private_file

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=365)
RENEW_BEFORE = timedelta(days=30)
# Certificates start a little in the past so a client whose clock lags ours still accepts them.
BACKDATE = timedelta(hours=1)

_IssuerKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_HostName = x509.DNSName | x509.IPAddress


@dataclass(frozen=True)
class TlsFiles:
    """Where the server's TLS material lives. ``ca_cert`` is what clients should trust."""

    ca_cert: Path
    cert: Path
    key: Path


def ensure_server_certificate(
    tls_dir: Path,
    domain: str,
    *,
    clock: Clock,
    extra_hosts: Sequence[str] = (),
) -> tuple[TlsFiles, bool]:
    """Make sure ``tls_dir`` holds a local CA and a current server certificate for ``domain``.

    The server certificate names ``localhost``, ``127.0.0.1``, ``::1``, ``domain``, ``*.domain``
    and every entry of ``extra_hosts`` (host names or IP addresses). Existing files are reused;
    the server certificate is reissued by the same CA when those names changed, when it expires
    within 30 days, or when it or its key is missing or damaged. A new CA is made only when the
    CA itself is missing, damaged or about to expire. Returns the files and whether anything was
    written by this call.
    """
    if _is_ip(domain):
        raise ValueError(f"domain {domain!r} must be a DNS name; pass IP addresses in extra_hosts")
    base = _dns_name(domain, allow_wildcard=False).value
    names = _server_names(base, extra_hosts)
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    files = _files(tls_dir)
    with _locked(tls_dir):
        now = clock.now()
        created = False
        ca = _load_ca(tls_dir, now)
        if ca is None:
            ca = _create_ca(now)
            write_private_file(tls_dir / CA_KEY_FILE, _private_pem(ca[1]))
            # The certificates are public: clients read the CA file to trust the server.
            ca_pem = ca[0].public_bytes(serialization.Encoding.PEM)
            write_private_file(files.ca_cert, ca_pem, mode=0o644)
            created = True
        ca_cert, ca_key = ca
        if created or not _server_is_current(files, ca_cert, names, now):
            _write_server(files, ca_cert, ca_key, domain=base, names=names, now=now)
            created = True
    return files, created


def renew_server_certificate(
    tls_dir: Path, domain: str, *, clock: Clock, extra_hosts: Sequence[str] = ()
) -> TlsFiles:
    """Issue a new server certificate and key under the existing local CA, whatever the state of
    the current one. Raises ``ValueError`` when there is no usable CA (``serve`` makes one on
    first start; a CA near its own expiry is replaced there, which clients must trust anew)."""
    base = _dns_name(domain, allow_wildcard=False).value
    names = _server_names(base, extra_hosts)
    files = _files(tls_dir)
    if not tls_dir.is_dir():
        raise ValueError(f"There is no local CA in {tls_dir}; 'customerkey serve' makes one.")
    with _locked(tls_dir):
        now = clock.now()
        ca = _load_ca(tls_dir, now)
        if ca is None:
            raise ValueError(
                f"The local CA in {tls_dir} is missing, damaged or expires within "
                f"{RENEW_BEFORE.days} days; 'customerkey serve' makes a new one."
            )
        _write_server(files, ca[0], ca[1], domain=base, names=names, now=now)
    return files


def _files(tls_dir: Path) -> TlsFiles:
    return TlsFiles(
        ca_cert=tls_dir / CA_CERT_FILE,
        cert=tls_dir / SERVER_CERT_FILE,
        key=tls_dir / SERVER_KEY_FILE,
    )


def _write_server(
    files: TlsFiles,
    ca_cert: x509.Certificate,
    ca_key: _IssuerKey,
    *,
    domain: str,
    names: list[_HostName],
    now: datetime,
) -> None:
    """Issue a server certificate under the CA and write it (public) and its key (0600)."""
    cert, key = _issue_server(ca_cert, ca_key, domain=domain, names=names, now=now)
    write_private_file(files.key, _private_pem(key))
    # The certificate is public: clients may read it.
    write_private_file(files.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


@dataclass(frozen=True)
class CertificateInfo:
    path: Path
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    names: tuple[str, ...]


def describe_certificate(path: Path) -> CertificateInfo:
    """The first certificate of a PEM file; ``ValueError`` when there is none to read."""
    cert = _read_certificates(path, what="certificate")[0]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(getattr(name, "value", name)) for name in san)
    except x509.ExtensionNotFound:
        names = ()
    return CertificateInfo(
        path=path,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        names=names,
    )


def expiry_warning(cert: Path, now: datetime) -> str | None:
    """A warning when the certificate in ``cert`` has expired or expires within
    ``RENEW_BEFORE``, else None."""
    try:
        info = describe_certificate(cert)
    except ValueError:
        return None
    left = info.not_after - now
    if left > RENEW_BEFORE:
        return None
    when = info.not_after.isoformat(timespec="seconds")
    status = "expired on" if left <= timedelta(0) else f"expires in {left.days} days, on"
    return (
        f"The server certificate {cert} {status} {when}. Renew it ('customerkey tls renew' for "
        "the local CA's, or your CA's process for your own) and restart the server."
    )


def load_operator_certificate(
    cert: Path,
    key: Path,
    *,
    ca_cert: Path | None = None,
    clock: Clock | None = None,
) -> TlsFiles:
    """Check an operator-supplied PEM certificate (chain) and unencrypted PEM key, and use them.

    Raises ``ValueError`` saying what is wrong when a file is missing or unreadable, the key is
    encrypted, the key does not belong to the certificate, or (when ``clock`` is given) the
    certificate is outside its validity period. ``ca_cert`` names the file clients should trust;
    without it that is the certificate file itself (right for a self-signed certificate; with a
    publicly trusted one clients need nothing).
    """
    leaf = _read_certificates(cert, what="TLS certificate")[0]
    private_key = _read_private_key(key)
    if _spki(leaf.public_key()) != _spki(private_key.public_key()):
        raise ValueError(f"TLS key {key} does not belong to the certificate {cert}")
    if ca_cert is not None:
        _read_certificates(ca_cert, what="CA certificate")
    if clock is not None:
        now = clock.now()
        if now < leaf.not_valid_before_utc:
            starts = leaf.not_valid_before_utc.isoformat()
            raise ValueError(f"TLS certificate {cert} is not valid before {starts}")
        if now >= leaf.not_valid_after_utc:
            raise ValueError(
                f"TLS certificate {cert} expired on {leaf.not_valid_after_utc.isoformat()}"
            )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ValueError(f"TLS certificate {cert} and key {key} are not usable: {exc}") from exc
    return TlsFiles(ca_cert=ca_cert or cert, cert=cert, key=key)


def _server_names(base: str, extra_hosts: Sequence[str]) -> list[_HostName]:
    wanted: list[_HostName] = [
        x509.DNSName(base),
        x509.DNSName("*." + base),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    for host in extra_hosts:
        wanted.append(_host_name(host))
    unique: list[_HostName] = []
    for name in wanted:
        if name not in unique:
            unique.append(name)
    return unique


def _host_name(host: str) -> _HostName:
    text = host.strip().strip("[]")
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        return _dns_name(text, allow_wildcard=True)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return False
    return True


def _dns_name(name: str, *, allow_wildcard: bool) -> x509.DNSName:
    text = name.strip().rstrip(".").lower()
    try:
        text = text.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{name!r} is not a valid host name") from exc
    labels = text.split(".")
    if allow_wildcard and labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    for label in labels:
        if not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label):
            raise ValueError(f"{name!r} is not a valid host name")
    return x509.DNSName(text)


def _load_ca(tls_dir: Path, now: datetime) -> tuple[x509.Certificate, _IssuerKey] | None:
    try:
        cert = x509.load_pem_x509_certificate((tls_dir / CA_CERT_FILE).read_bytes())
        key = serialization.load_pem_private_key(
            (tls_dir / CA_KEY_FILE).read_bytes(), password=None
        )
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, _IssuerKey) or _spki(cert.public_key()) != _spki(key.public_key()):
        return None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
    if not constraints.ca or now < cert.not_valid_before_utc:
        return None
    if cert.not_valid_after_utc - now <= RENEW_BEFORE:
        return None
    return cert, key


def _server_is_current(
    files: TlsFiles, ca_cert: x509.Certificate, names: list[_HostName], now: datetime
) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    if _spki(cert.public_key()) != _spki(key.public_key()):
        return False
    if set(san) != set(names):
        return False
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - now > RENEW_BEFORE


def _create_ca(now: datetime) -> tuple[x509.Certificate, _IssuerKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "customerkey"),
            # The key id in the name tells installations' CAs apart in a trust store.
            x509.NameAttribute(NameOID.COMMON_NAME, f"customerkey local CA {ski.digest[:4].hex()}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue_server(
    ca_cert: x509.Certificate,
    ca_key: _IssuerKey,
    *,
    domain: str,
    names: list[_HostName],
    now: datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    # A CN is limited to 64 characters; clients match on the SANs anyway.
    common_name = domain if len(domain) <= 64 else "customerkey"
    not_after = min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _read_certificates(path: Path, *, what: str) -> list[x509.Certificate]:
    if not path.is_file():
        raise ValueError(f"{what} file {path} does not exist")
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"{what} file {path} cannot be read: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{what} file {path} is not a PEM certificate") from exc
    return certs


def _read_private_key(path: Path) -> PrivateKeyTypes:
    if not path.is_file():
        raise ValueError(f"TLS key file {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"TLS key file {path} cannot be read: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise ValueError(
            f"TLS key file {path} is encrypted; customerkey needs an unencrypted key"
        ) from exc
    except ValueError as exc:
        raise ValueError(f"TLS key file {path} is not a PEM private key") from exc
    return key


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _private_pem(key: _IssuerKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@contextlib.contextmanager
def _locked(tls_dir: Path) -> Iterator[None]:
    # Two processes starting at once must not both mint a CA.
    fd = os.open(tls_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
