"""The in-process loopback resolver for local vault domains."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from customerkey.azure.localdns import (
    install_loopback_resolver,
    resolve_to_loopback,
    resolves_to_loopback,
    uninstall_loopback_resolver,
)


def _addresses(host: str, family: int = 0) -> set[str]:
    return {str(info[4][0]) for info in socket.getaddrinfo(host, 443, family, socket.SOCK_STREAM)}


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        yield server
    finally:
        server.close()


def test_domain_and_subdomains_resolve_to_loopback() -> None:
    original = socket.getaddrinfo
    with resolve_to_loopback("vault.localhost"):
        assert socket.getaddrinfo is not original
        for host in (
            "vault.localhost",
            "contoso-a1.vault.localhost",
            "a.b.vault.localhost",
            "CONTOSO.Vault.LocalHost",
            "contoso.vault.localhost.",
        ):
            assert _addresses(host) == {"127.0.0.1"}, host
        assert _addresses("x.vault.localhost", socket.AF_INET6) == {"::1"}
        (info,) = socket.getaddrinfo(b"x.vault.localhost", "https", socket.AF_INET, 0, 6)
        assert info[4] == ("127.0.0.1", 443)
    assert socket.getaddrinfo is original


def test_other_names_are_untouched() -> None:
    original = socket.getaddrinfo
    expected = original("127.0.0.2", 80)
    with resolve_to_loopback("vault.localhost"):
        assert socket.getaddrinfo("127.0.0.2", 80) == expected
        assert not resolves_to_loopback("evilvault.localhost")
        assert not resolves_to_loopback("vault.localhost.example")
        assert not resolves_to_loopback(None)
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo("vault.localhost.invalid", 80)


def test_a_real_connection_reaches_the_loopback_listener(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with (
        resolve_to_loopback("vault.localhost"),
        socket.create_connection(("contoso.vault.localhost", port), timeout=5) as client,
    ):
        accepted, _ = listener.accept()
        with accepted:
            client.sendall(b"ping")
            assert accepted.recv(4) == b"ping"


def test_nesting_and_several_domains() -> None:
    original = socket.getaddrinfo
    with resolve_to_loopback("vault.localhost"):
        with resolve_to_loopback("vault.localhost"), resolve_to_loopback("kv.test"):
            assert resolves_to_loopback("a.kv.test")
            assert resolves_to_loopback("a.vault.localhost")
        assert not resolves_to_loopback("a.kv.test")
        assert resolves_to_loopback("a.vault.localhost")
        assert socket.getaddrinfo is not original
    assert not resolves_to_loopback("a.vault.localhost")
    assert socket.getaddrinfo is original


def test_script_style_install_and_uninstall() -> None:
    original = socket.getaddrinfo
    install_loopback_resolver("vault.localhost")
    try:
        assert _addresses("contoso.vault.localhost") == {"127.0.0.1"}
    finally:
        uninstall_loopback_resolver("vault.localhost")
    assert socket.getaddrinfo is original
    with pytest.raises(ValueError, match="no loopback resolver"):
        uninstall_loopback_resolver("vault.localhost")


def test_bad_domains_are_refused() -> None:
    for domain in ("", ".", ".vault.localhost", "a..b"):
        with pytest.raises(ValueError):
            install_loopback_resolver(domain)


def test_patched_over_by_someone_else_stays_a_pass_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = socket.getaddrinfo
    install_loopback_resolver("vault.localhost")
    ours = socket.getaddrinfo
    calls: list[object] = []

    def outer(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return ours(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", outer)
    uninstall_loopback_resolver("vault.localhost")
    assert socket.getaddrinfo is outer
    assert not resolves_to_loopback("contoso.vault.localhost")
    with resolve_to_loopback("vault.localhost"):
        assert _addresses("contoso.vault.localhost") == {"127.0.0.1"}
    assert calls == ["contoso.vault.localhost"]
    # Once the other patch is gone, the next install/uninstall cycle puts the real one back.
    monkeypatch.undo()
    assert socket.getaddrinfo is ours
    with resolve_to_loopback("vault.localhost"):
        pass
    assert socket.getaddrinfo is real


def test_concurrent_install_and_uninstall_is_consistent() -> None:
    original = socket.getaddrinfo
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(index: int) -> None:
        try:
            start.wait()
            for _ in range(200):
                with resolve_to_loopback(f"d{index % 3}.test"):
                    assert resolves_to_loopback(f"x.d{index % 3}.test")
                    socket.getaddrinfo(f"x.d{index % 3}.test", 1)
        except BaseException as exc:  # collected and re-raised on the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert socket.getaddrinfo is original
