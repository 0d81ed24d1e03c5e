"""How often a token signer looks at its key folder (``api.tokens``): verifying a token of a
known key does no file system call within ``REFRESH_SECONDS`` of injected monotonic time; a
token naming an unknown key, issuing and the JWKS always look."""

from __future__ import annotations

from pathlib import Path

import pytest

from customerkey.api import tokens
from customerkey.api.tokens import REFRESH_SECONDS, TokenSigner
from customerkey.clock import FrozenClock
from customerkey.rng import SeededRng

AUDIENCE = "https://vault.localhost:8443"


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_known_key_is_trusted_for_the_refresh_interval_then_rechecked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FrozenClock()
    ticks = Ticks()
    folder = tmp_path / "token-keys"
    one = TokenSigner.open(folder, clock=clock, rng=SeededRng(1))
    two = TokenSigner.open(folder, clock=clock, rng=SeededRng(2), monotonic=ticks)
    token = one.issue(subject="a", tenant="t", audience=AUDIENCE).access_token
    looks: list[Path] = []
    real_stamp = tokens._stamp

    def counting_stamp(path: Path) -> tuple[int, int, int] | None:
        looks.append(path)
        return real_stamp(path)

    monkeypatch.setattr(tokens, "_stamp", counting_stamp)
    two.verify(token, audience=AUDIENCE)
    looks.clear()
    for _ in range(5):
        assert two.verify(token, audience=AUDIENCE).subject == "a"
    assert looks == []
    rotated = one.rotate()
    looks.clear()  # the rotating signer's own looks
    # Within the interval the rotation is not looked for on the verify path...
    two.verify(token, audience=AUDIENCE)
    assert looks == [] and two._set.active != rotated
    # ...and once it has passed, the next verify rereads the manifest.
    ticks.now += REFRESH_SECONDS
    two.verify(token, audience=AUDIENCE)
    assert looks and two._set.active == rotated


def test_a_token_of_an_unknown_key_and_issuing_always_look(tmp_path: Path) -> None:
    clock = FrozenClock()
    folder = tmp_path / "token-keys"
    one = TokenSigner.open(folder, clock=clock, rng=SeededRng(3))
    two = TokenSigner.open(folder, clock=clock, rng=SeededRng(4), monotonic=lambda: 5.0)
    two.verify(
        one.issue(subject="a", tenant="t", audience=AUDIENCE).access_token, audience=AUDIENCE
    )
    rotated = one.rotate()
    fresh = one.issue(subject="b", tenant="t", audience=AUDIENCE).access_token
    assert two.verify(fresh, audience=AUDIENCE).subject == "b"
    assert two.issue(subject="c", tenant="t", audience=AUDIENCE).kid == rotated
