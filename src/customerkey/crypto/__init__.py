"""Pure, synchronous cryptography for customerkey.

``aead`` owns the envelope (segmented AES-256-GCM with a versioned header and key commitment),
``wrap`` owns key wrapping (AES-KWP, RSA-OAEP) and ``rsa`` owns RSA key generation,
serialization and JWK fields. The vault's other key types and algorithms (issue 16) are in
``ec`` (EC keys and their JWK fields), ``signatures`` (RS*/PS*/ES* over a digest, ECDSA as
``r || s``), ``rsa_encryption`` (RSA1_5 next to RSA-OAEP), ``aes_modes`` (AES-KW, AES-GCM,
AES-CBC/CBCPAD under oct-HSM keys) and ``key_material`` (a version's material by key type).

Everything here is built on pyca/cryptography; nothing here touches storage, the network or
the clock, and the only import of ours is ``customerkey.errors`` (for ``DecryptionFailed``)
and ``customerkey.rng`` (injected randomness).
"""

from customerkey.crypto.aead import (
    DEFAULT_SEGMENT_SIZE,
    MAX_SEGMENT_SIZE,
    MIN_SEGMENT_SIZE,
    EnvelopeHeader,
    encode_context,
    open_sealed,
    open_stream,
    parse_header,
    read_header,
    seal,
    seal_stream,
    sealed_size,
)
from customerkey.crypto.rsa import (
    RSA_KEY_SIZES,
    b64url_decode,
    b64url_encode,
    generate_rsa_key,
    private_jwk_fields,
    private_key_from_der,
    private_key_from_jwk,
    private_key_to_der,
    public_jwk_fields,
    public_key_from_jwk,
)
from customerkey.crypto.wrap import (
    RsaOaepAlgorithm,
    aes_kwp_unwrap,
    aes_kwp_wrap,
    parse_rsa_algorithm,
    rsa_oaep_max_key_length,
    rsa_oaep_unwrap,
    rsa_oaep_wrap,
)

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "MAX_SEGMENT_SIZE",
    "MIN_SEGMENT_SIZE",
    "RSA_KEY_SIZES",
    "EnvelopeHeader",
    "RsaOaepAlgorithm",
    "aes_kwp_unwrap",
    "aes_kwp_wrap",
    "b64url_decode",
    "b64url_encode",
    "encode_context",
    "generate_rsa_key",
    "open_sealed",
    "open_stream",
    "parse_header",
    "parse_rsa_algorithm",
    "private_jwk_fields",
    "private_key_from_der",
    "private_key_from_jwk",
    "private_key_to_der",
    "public_jwk_fields",
    "public_key_from_jwk",
    "read_header",
    "rsa_oaep_max_key_length",
    "rsa_oaep_unwrap",
    "rsa_oaep_wrap",
    "seal",
    "seal_stream",
    "sealed_size",
]
