"""Access tokens: issue, verify and the failure modes, key rotation and its grace period."""

from __future__ import annotations

import base64
import json
import stat
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from customerkey.api.tokens import MANIFEST_FILE, TokenSigner
from customerkey.clock import FrozenClock
from customerkey.errors import Unauthorized
from customerkey.rng import SeededRng

AUDIENCE = "https://vault.localhost:8443"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / "token-keys"


@pytest.fixture
def signer(keys_dir: Path, clock: FrozenClock) -> TokenSigner:
    return TokenSigner.open(keys_dir, clock=clock, rng=SeededRng(7))


def _segments(token: str) -> list[str]:
    return token.split(".")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_roundtrip_carries_every_claim(signer: TokenSigner, clock: FrozenClock) -> None:
    issued = signer.issue(
        subject="app-1", tenant="contoso", audience=AUDIENCE, roles=["keys.wrap", "keys.get"]
    )
    claims = signer.verify(issued.access_token, audience=AUDIENCE)
    assert claims.subject == "app-1"
    assert claims.tenant == "contoso"
    assert claims.audience == AUDIENCE
    assert claims.roles == ("keys.wrap", "keys.get")
    assert claims.expires_on == clock.now() + timedelta(hours=1) == issued.expires_on
    assert len(claims.token_id) == 32
    assert issued.kid == signer.active_kid

    header = jwt.get_unverified_header(issued.access_token)
    assert header == {"alg": "ES256", "kid": issued.kid, "typ": "JWT"}
    raw = json.loads(_unb64(_segments(issued.access_token)[1]))
    assert set(raw) == {"iss", "sub", "tid", "aud", "roles", "iat", "nbf", "exp", "jti", "ck_gen"}
    assert raw["ck_gen"] == 0 and claims.generation == 0
    assert raw["iss"] == f"{signer.issuer}/contoso/v2.0"
    assert raw["exp"] - raw["iat"] == 3600
    assert raw["nbf"] == raw["iat"]


def test_each_token_gets_its_own_id(signer: TokenSigner) -> None:
    first = signer.issue(subject="a", tenant="t", audience=AUDIENCE)
    second = signer.issue(subject="a", tenant="t", audience=AUDIENCE)
    assert first.access_token != second.access_token
    ids = {signer.verify(t.access_token, audience=AUDIENCE).token_id for t in (first, second)}
    assert len(ids) == 2


def test_audience_may_be_one_of_several_and_ignores_trailing_slash(signer: TokenSigner) -> None:
    token = signer.issue(subject="a", tenant="t", audience=AUDIENCE + "/").access_token
    assert signer.verify(token, audience=["https://other", AUDIENCE]).audience == AUDIENCE + "/"


def test_wrong_audience(signer: TokenSigner) -> None:
    token = signer.issue(subject="a", tenant="t", audience=AUDIENCE).access_token
    with pytest.raises(Unauthorized, match="audience"):
        signer.verify(token, audience="https://elsewhere.localhost")


def test_expired_by_the_injected_clock(signer: TokenSigner, clock: FrozenClock) -> None:
    token = signer.issue(
        subject="a", tenant="t", audience=AUDIENCE, lifetime=timedelta(minutes=10)
    ).access_token
    clock.advance(timedelta(minutes=10) - timedelta(seconds=1))
    signer.verify(token, audience=AUDIENCE)
    clock.advance(1)
    with pytest.raises(Unauthorized, match="expired"):
        signer.verify(token, audience=AUDIENCE)


def test_not_yet_valid(keys_dir: Path, clock: FrozenClock) -> None:
    # A second signer on the same folder whose clock runs ahead issues a token from the future.
    ahead = FrozenClock(clock.now() + timedelta(minutes=5))
    issuer = TokenSigner.open(keys_dir, clock=ahead, rng=SeededRng(1))
    checker = TokenSigner.open(keys_dir, clock=clock, rng=SeededRng(2))
    token = issuer.issue(subject="a", tenant="t", audience=AUDIENCE).access_token
    with pytest.raises(Unauthorized, match="not valid before"):
        checker.verify(token, audience=AUDIENCE)
    clock.advance(timedelta(minutes=5))
    assert checker.verify(token, audience=AUDIENCE).subject == "a"


def test_tampered_payload_fails_the_signature(signer: TokenSigner) -> None:
    token = signer.issue(subject="reader", tenant="t", audience=AUDIENCE).access_token
    header, payload, signature = _segments(token)
    claims = json.loads(_unb64(payload))
    claims["roles"] = ["admin"]
    forged = ".".join((header, _b64(json.dumps(claims).encode()), signature))
    with pytest.raises(Unauthorized, match="signature"):
        signer.verify(forged, audience=AUDIENCE)


def test_tampered_signature(signer: TokenSigner) -> None:
    token = signer.issue(subject="a", tenant="t", audience=AUDIENCE).access_token
    header, payload, signature = _segments(token)
    raw = bytearray(_unb64(signature))
    raw[5] ^= 0x01
    with pytest.raises(Unauthorized, match="signature"):
        signer.verify(".".join((header, payload, _b64(bytes(raw)))), audience=AUDIENCE)


def test_token_signed_by_a_stranger_key_with_our_kid(signer: TokenSigner) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    claims = jwt.decode(
        signer.issue(subject="a", tenant="t", audience=AUDIENCE).access_token,
        options={"verify_signature": False},
    )
    forged = jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": signer.active_kid})
    with pytest.raises(Unauthorized, match="signature"):
        signer.verify(forged, audience=AUDIENCE)


def test_unknown_kid(signer: TokenSigner) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode({"sub": "a"}, stranger, algorithm="ES256", headers={"kid": "f" * 32})
    with pytest.raises(Unauthorized, match="unknown"):
        signer.verify(forged, audience=AUDIENCE)


def test_wrong_issuer(keys_dir: Path, clock: FrozenClock) -> None:
    other = TokenSigner.open(keys_dir, clock=clock, rng=SeededRng(3), issuer="https://evil")
    ours = TokenSigner.open(keys_dir, clock=clock, rng=SeededRng(4))
    token = other.issue(subject="a", tenant="t", audience=AUDIENCE).access_token
    with pytest.raises(Unauthorized, match="not issued by this service"):
        ours.verify(token, audience=AUDIENCE)


def test_the_issuer_names_the_tokens_own_tenant(signer: TokenSigner) -> None:
    # As Entra ID's: the issuer of the tenant's OpenID configuration, v2.0 or v1.
    v2 = signer.issue(subject="a", tenant="contoso", audience=AUDIENCE).access_token
    v1 = signer.issue(subject="a", tenant="contoso", audience=AUDIENCE, v1=True).access_token
    raw = json.loads(_unb64(_segments(v2)[1]))
    assert raw["iss"] == f"{signer.issuer}/contoso/v2.0"
    assert json.loads(_unb64(_segments(v1)[1]))["iss"] == f"{signer.issuer}/contoso/"
    assert signer.verify(v1, audience=AUDIENCE).tenant == "contoso"
    # Signed with our own key, but naming another tenant's issuer than its tid: refused.
    key = signer._active_key_locked()
    for iss in (f"{signer.issuer}/fabrikam/v2.0", signer.issuer, f"{signer.issuer}/contoso"):
        forged = jwt.encode(
            {**raw, "iss": iss}, key.private_key, algorithm="ES256", headers={"kid": key.kid}
        )
        with pytest.raises(Unauthorized, match="not issued by this service"):
            signer.verify(forged, audience=AUDIENCE)


@pytest.mark.parametrize(
    "token",
    ["", "not-a-jwt", "a.b.c", "eyJhbGciOiJFUzI1NiJ9.e30.", "....."],
)
def test_malformed(signer: TokenSigner, token: str) -> None:
    with pytest.raises(Unauthorized):
        signer.verify(token, audience=AUDIENCE)


def test_other_algorithms_are_refused(signer: TokenSigner) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": signer.active_kid}
    payload = json.dumps({"sub": "a"}).encode()
    unsigned = f"{_b64(json.dumps(header).encode())}.{_b64(payload)}."
    with pytest.raises(Unauthorized, match="ES256"):
        signer.verify(unsigned, audience=AUDIENCE)
    hmac_token = jwt.encode(
        {"sub": "a"}, "k" * 32, algorithm="HS256", headers={"kid": signer.active_kid}
    )
    with pytest.raises(Unauthorized, match="ES256"):
        signer.verify(hmac_token, audience=AUDIENCE)


def test_rotation_keeps_old_tokens_valid_for_the_grace_period(
    signer: TokenSigner, keys_dir: Path, clock: FrozenClock
) -> None:
    old_kid = signer.active_kid
    clock.advance(timedelta(minutes=30))
    old = signer.issue(
        subject="a", tenant="t", audience=AUDIENCE, lifetime=timedelta(minutes=59)
    ).access_token
    new_kid = signer.rotate()
    assert new_kid != old_kid == jwt.get_unverified_header(old)["kid"]
    new = signer.issue(subject="b", tenant="t", audience=AUDIENCE).access_token
    assert jwt.get_unverified_header(new)["kid"] == new_kid

    assert signer.verify(old, audience=AUDIENCE).subject == "a"
    assert signer.verify(new, audience=AUDIENCE).subject == "b"
    assert {key["kid"] for key in signer.jwks()["keys"]} == {old_kid, new_kid}
    assert signer.prune() == []

    clock.advance(timedelta(hours=1))
    # The grace period is over: the old key is refused even before it is pruned.
    with pytest.raises(Unauthorized, match="unknown or retired key"):
        signer.verify(old, audience=AUDIENCE)
    assert (keys_dir / f"{old_kid}.pem").exists()
    assert signer.prune() == [old_kid]
    assert not (keys_dir / f"{old_kid}.pem").exists()
    assert [key["kid"] for key in signer.jwks()["keys"]] == [new_kid]


def test_rotate_prunes_keys_past_their_grace(keys_dir: Path, clock: FrozenClock) -> None:
    signer = TokenSigner.open(keys_dir, clock=clock, rng=SeededRng(11))
    first = signer.active_kid
    second = signer.rotate()
    clock.advance(timedelta(hours=2))
    third = signer.rotate()
    assert {p.stem for p in keys_dir.glob("*.pem")} == {second, third}
    assert first not in {key["kid"] for key in signer.jwks()["keys"]}


def test_a_signer_sees_keys_rotated_by_another_process(keys_dir: Path, clock: FrozenClock) -> None:
    one = TokenSigner.open(keys_dir, clock=clock, rng=SeededRng(5))
    two = TokenSigner.open(keys_dir, clock=clock, rng=SeededRng(6))
    assert one.active_kid == two.active_kid
    rotated = one.rotate()
    token = one.issue(subject="a", tenant="t", audience=AUDIENCE).access_token
    assert two.verify(token, audience=AUDIENCE).subject == "a"
    assert two.issue(subject="b", tenant="t", audience=AUDIENCE).kid == rotated


def test_keys_persist_and_files_are_private(keys_dir: Path, clock: FrozenClock) -> None:
    first = TokenSigner.open(keys_dir, clock=clock, rng=SeededRng(8))
    token = first.issue(subject="a", tenant="t", audience=AUDIENCE).access_token
    again = TokenSigner.open(keys_dir, clock=clock, rng=SeededRng(9))
    assert again.active_kid == first.active_kid
    assert again.verify(token, audience=AUDIENCE).subject == "a"
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    for path in [*keys_dir.glob("*.pem"), keys_dir / MANIFEST_FILE]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_open_refuses_a_damaged_manifest(keys_dir: Path, clock: FrozenClock) -> None:
    TokenSigner.open(keys_dir, clock=clock, rng=SeededRng(10))
    (keys_dir / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="manifest"):
        TokenSigner.open(keys_dir, clock=clock, rng=SeededRng(10))


def test_jwks_verifies_tokens_with_a_plain_jwt_library(signer: TokenSigner) -> None:
    issued = signer.issue(subject="a", tenant="t", audience=AUDIENCE)
    (jwk,) = signer.jwks()["keys"]
    assert jwk["kid"] == issued.kid and jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    public = jwt.PyJWK.from_dict(jwk).key
    claims = jwt.decode(
        issued.access_token,
        public,
        algorithms=["ES256"],
        audience=AUDIENCE,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"] == "a"


def test_issue_checks_its_arguments(signer: TokenSigner) -> None:
    with pytest.raises(ValueError, match="lifetime"):
        signer.issue(subject="a", tenant="t", audience=AUDIENCE, lifetime=timedelta(hours=2))
    with pytest.raises(ValueError, match="lifetime"):
        signer.issue(subject="a", tenant="t", audience=AUDIENCE, lifetime=timedelta(0))
    with pytest.raises(ValueError, match="subject"):
        signer.issue(subject="", tenant="t", audience=AUDIENCE)
    with pytest.raises(TypeError):
        signer.issue(subject="a", tenant="t", audience=AUDIENCE, roles="admin")


def test_extra_claims_and_the_token_generation_travel(signer: TokenSigner) -> None:
    issued = signer.issue(
        subject="oid-1",
        tenant="contoso",
        audience=AUDIENCE,
        extra={"oid": "oid-1", "appid": "app-1", "sub": "forged"},
        generation=7,
    )
    raw = json.loads(_unb64(_segments(issued.access_token)[1]))
    assert (raw["oid"], raw["appid"], raw["sub"], raw["ck_gen"]) == ("oid-1", "app-1", "oid-1", 7)
    assert signer.verify(issued.access_token, audience=AUDIENCE).generation == 7
