"""The ``BlobStore`` contract (``storage.blob_store``), run on every store: the local folder and
S3 on a real SeaweedFS server. Each operation, both sides of the part boundary, streaming in
bounded memory, names, failed and killed writes, paged listings and the sweep's hooks."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import pytest

from customerkey.errors import CustomerKeyError
from customerkey.storage.blob_store import BlobStore, BlobStoreUnavailable
from customerkey.storage.s3_blobs import S3_MIN_PART_SIZE, S3BlobStore, make_client
from tests.support.seaweedfs import SECRET_KEY, SeaweedFs

PART = S3_MIN_PART_SIZE  # the S3 store's part size in these tests (8 MiB by default)
GOOD_NAMES = [
    "x",
    "f/ABCDEFGHIJKLMNOPQRSTUVWXYZ/abcdefghijklmnopqrstuvwxyz/0123456789",
    "f/._-/a.b_c-d.0",
    "-/_/..a/a..",
]
BAD_NAMES = ["", "/a", "a/", "a//b", "..", "a/../b", "a/./b", ".", "a b", "a\\b", "ä", "a/b?c"]


def small_parts(store: BlobStore) -> BlobStore:
    if isinstance(store, S3BlobStore):
        store.part_size = PART
    return store


_PATTERN = bytes((7 + i * 31) % 256 for i in range(251))  # 251: no power-of-two period


def payload(size: int, seed: int = 0) -> bytes:
    whole = _PATTERN[seed % 251 :] + _PATTERN * (size // 251 + 1)
    return whole[:size]


def now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------ reading and writing


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 3 * PART + 7])
def test_write_then_read_on_both_sides_of_the_part_size(store: BlobStore, size: int) -> None:
    small_parts(store)
    data = payload(size)
    assert store.write("f/a/blob", lambda handle: handle.write(data)) == size
    assert store.read_bytes("f/a/blob") == data
    assert store.size("f/a/blob") == size
    assert store.exists("f/a/blob")
    with store.open("f/a/blob") as handle:
        pieces = []
        while piece := handle.read(1000):
            pieces.append(piece)
    assert b"".join(pieces) == data


def test_put_bytes_replaces_and_delete_says_whether_there_was_one(store: BlobStore) -> None:
    assert store.put_bytes("m/1/item.1", b"first") == 5
    assert store.put_bytes("m/1/item.1", b"second!") == 7
    assert store.read_bytes("m/1/item.1") == b"second!"
    assert store.delete("m/1/item.1") is True
    assert store.delete("m/1/item.1") is False
    assert not store.exists("m/1/item.1")


def test_a_missing_blob_is_file_not_found(store: BlobStore) -> None:
    with pytest.raises(FileNotFoundError):
        store.read_bytes("m/none")
    with pytest.raises(FileNotFoundError):
        store.size("m/none")
    with pytest.raises(FileNotFoundError), store.open("m/none"):
        pass
    assert store.exists("m/none") is False


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_every_allowed_character_round_trips(store: BlobStore, name: str) -> None:
    store.put_bytes(name, name.encode())
    assert store.read_bytes(name) == name.encode()
    top = name.split("/", 1)[0]
    if "/" in name:
        assert store.list(top) == [name]
        assert [info.name for info in store.iter_blobs(top)] == [name]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_before_the_store_is_touched(store: BlobStore, name: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.put_bytes(name, b"x"),
        lambda: store.write(name, lambda handle: handle.write(b"x")),
        lambda: store.read_bytes(name),
        lambda: store.exists(name),
        lambda: store.size(name),
        lambda: store.delete(name),
        lambda: store.delete_prefix(name),
        lambda: store.list(name),
        lambda: list(store.iter_blobs(name)),
        lambda: list(store.iter_folders(name)),
        lambda: store.delete_unless_newer(name, now()),
        lambda: store.abort_stale_uploads(name, now()),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()


# ------------------------------------------------------------------ streaming


class _Counting:
    """A fill that writes ``total`` bytes in ``piece``-sized writes, made as it goes."""

    def __init__(self, total: int, piece: int) -> None:
        self.total, self.piece, self.writes = total, piece, 0

    def __call__(self, handle: BinaryIO) -> None:
        block = payload(self.piece)
        left = self.total
        while left:
            n = min(left, self.piece)
            handle.write(block[:n])
            self.writes += 1
            left -= n


def test_a_large_write_streams_in_bounded_memory(store: BlobStore) -> None:
    small_parts(store)
    total = 12 * PART  # 60 MiB through 5 MiB parts
    fill = _Counting(total, 256 * 1024)
    tracemalloc.start()
    try:
        size = store.write("f/big/blob", fill)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == total and fill.writes == total // (256 * 1024)
    # A few parts' worth at most (the buffer, the part being sent), never the blob.
    assert peak < 4 * PART, peak
    with store.open("f/big/blob") as handle:
        tracemalloc.start()
        try:
            read = 0
            while piece := handle.read(64 * 1024):
                read += len(piece)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert read == total
    assert peak < 4 * PART, peak


# ------------------------------------------------------------------ failed and killed writes


class Boom(Exception):
    pass


@pytest.mark.parametrize("written", [0, 10, PART, 3 * PART + 1])
def test_a_fill_that_raises_leaves_nothing_visible(
    store: BlobStore, written: int, request: pytest.FixtureRequest
) -> None:
    small_parts(store)

    def fill(handle: BinaryIO) -> None:
        handle.write(payload(written))
        raise Boom

    with pytest.raises(Boom):
        store.write("f/v/new", fill)
    assert not store.exists("f/v/new")
    assert store.list("f") == []
    assert list(store.iter_blobs("f", staging=True)) == []
    if isinstance(store, S3BlobStore):
        server: SeaweedFs = request.getfixturevalue("seaweedfs")
        assert server.uploads(store.root) == []  # aborted, not left for the sweep


def test_a_failed_replace_keeps_the_old_blob(store: BlobStore) -> None:
    small_parts(store)
    store.put_bytes("f/v/blob", b"old")

    def fill(handle: BinaryIO) -> None:
        handle.write(payload(2 * PART + 3))
        raise Boom

    with pytest.raises(Boom):
        store.write("f/v/blob", fill)
    assert store.read_bytes("f/v/blob") == b"old"


def test_a_killed_multipart_upload_is_invisible_until_the_sweep_aborts_it(
    store: BlobStore, store_kind: str, request: pytest.FixtureRequest
) -> None:
    """A writer that dies mid-upload cannot abort; on S3 its upload stays, invisible, and
    ``abort_stale_uploads`` ends it once older than the cutoff (a local store has none)."""
    small_parts(store)
    if store_kind == "local":
        assert store.abort_stale_uploads("f", now() + timedelta(days=1)) == []
        return
    assert isinstance(store, S3BlobStore)
    server: SeaweedFs = request.getfixturevalue("seaweedfs")
    store.put_bytes("f/v/kept", b"kept")
    key = f"{store.root}/f/v/killed"
    client = server.client()
    upload = client.create_multipart_upload(Bucket=server.bucket, Key=key)
    client.upload_part(
        Bucket=server.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 100
    )
    assert not store.exists("f/v/killed")
    assert store.list("f") == ["f/v/kept"]
    assert [info.name for info in store.iter_blobs("f", staging=True)] == ["f/v/kept"]

    assert store.abort_stale_uploads("f", now() - timedelta(hours=1)) == []  # still young
    dry = store.abort_stale_uploads("f", now() + timedelta(minutes=5), dry_run=True)
    assert [(i.name, i.size) for i in dry] == [("f/v/killed", 100)]
    assert len(server.uploads(store.root)) == 1
    done = store.abort_stale_uploads("f", now() + timedelta(minutes=5))
    assert [i.name for i in done] == ["f/v/killed"]
    assert server.uploads(store.root) == []
    assert store.read_bytes("f/v/kept") == b"kept"


def test_one_part_is_one_put_and_one_byte_more_is_multipart(
    s3_store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = s3_store  # parts are the S3 store's
    small_parts(store)
    calls: list[str] = []
    real = store._call

    def spy(operation: str, **kwargs: Any) -> Any:
        calls.append(operation)
        return real(operation, **kwargs)

    monkeypatch.setattr(store, "_call", spy)
    store.put_bytes("f/p/one", payload(PART))
    assert calls == ["put_object"]
    calls.clear()
    store.put_bytes("f/p/over", payload(PART + 1))
    assert calls == [
        "create_multipart_upload",
        "upload_part",
        "upload_part",
        "complete_multipart_upload",
    ]
    assert store.read_bytes("f/p/over") == payload(PART + 1)


# ------------------------------------------------------------------ listing


def _fill_tree(store: BlobStore) -> list[str]:
    names = [f"f/s{s}/v{v}/c.{c}" for s in range(3) for v in range(2) for c in range(2)]
    names += ["f/s0/item.1", "f/s1/item.2", "f/top", "fx/not-under-f", "g/other"]
    for name in names:
        store.put_bytes(name, name.encode())
    return names


def _paged(store: BlobStore, store_kind: str) -> BlobStore:
    if isinstance(store, S3BlobStore):
        store.page_size = 2  # far fewer than the keys: every listing takes several pages
    return store


def test_listings_are_prefix_scoped_and_complete_across_pages(
    store: BlobStore, store_kind: str
) -> None:
    names = _fill_tree(_paged(store, store_kind))
    under_f = sorted(n for n in names if n.startswith("f/"))
    assert store.list("f") == under_f
    assert sorted(i.name for i in store.iter_blobs("f")) == under_f
    assert sorted(store.iter_folders("f")) == ["f/s0", "f/s1", "f/s2"]
    assert sorted(store.iter_folders("f/s0")) == ["f/s0/v0", "f/s0/v1"]
    assert list(store.iter_folders("nothing")) == []
    assert store.list("nothing") == []
    assert store.list("f/s0/v0") == ["f/s0/v0/c.0", "f/s0/v0/c.1"]


def test_iter_blobs_keeps_each_sub_folder_together_with_sizes_and_times(
    store: BlobStore, store_kind: str
) -> None:
    _fill_tree(_paged(store, store_kind))
    before = now() - timedelta(minutes=1)
    infos = list(store.iter_blobs("f/s0"))
    folders = [i.name.rsplit("/", 1)[0] for i in infos]
    seen: list[str] = []
    for folder in folders:  # every folder's blobs contiguous
        if not seen or seen[-1] != folder:
            assert folder not in seen
            seen.append(folder)
    for info in infos:
        assert info.size == len(info.name) and not info.is_staging
        assert before <= info.mtime <= now() + timedelta(minutes=1)
        assert info.mtime.tzinfo is not None


def test_delete_prefix_removes_a_folder_across_pages_and_nothing_else(
    store: BlobStore, store_kind: str
) -> None:
    names = _fill_tree(_paged(store, store_kind))
    store.delete_prefix("f/s0")
    assert store.list("f/s0") == []
    assert store.list("f") == sorted(n for n in names if n.startswith("f/") and "/s0/" not in n)
    store.delete_prefix("f")
    store.delete_prefix("f")  # nothing there: no error
    assert store.list("f") == [] and store.list("fx") == ["fx/not-under-f"]


# ------------------------------------------------------------------ the sweep's hooks


def test_delete_unless_newer(store: BlobStore) -> None:
    store.put_bytes("m/1/item.1", b"12345")
    assert store.delete_unless_newer("m/1/item.1", now() - timedelta(minutes=5)) is None
    assert store.exists("m/1/item.1")
    assert store.delete_unless_newer("m/1/item.1", now() + timedelta(minutes=5)) == 5
    assert not store.exists("m/1/item.1")
    assert store.delete_unless_newer("m/1/item.1", now() + timedelta(minutes=5)) is None


def test_a_blob_rewritten_while_the_sweep_decides_survives(
    s3_store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On S3 the delete is conditional on the ETag the sweep judged: a writer replacing the
    blob between the look and the delete wins (the local store's rename-aside is covered by
    tests/storage/test_blob_store.py)."""
    store = s3_store
    store.put_bytes("m/1/item.1", b"old")
    real = store._call

    def racing(operation: str, **kwargs: Any) -> Any:
        if operation == "delete_object":
            real("put_object", Key=kwargs["Key"], Body=b"rewritten")
        return real(operation, **kwargs)

    monkeypatch.setattr(store, "_call", racing)
    assert store.delete_unless_newer("m/1/item.1", now() + timedelta(minutes=5)) is None
    monkeypatch.undo()
    assert store.read_bytes("m/1/item.1") == b"rewritten"


def test_staging_hooks_remove_nothing_live(store: BlobStore) -> None:
    store.put_bytes("m/1/item.1", b"x")
    staged = [i for i in store.iter_blobs("m", staging=True) if i.is_staging]
    assert store.remove_dead_temp_files(staged, is_alive=lambda pid: True) == []
    assert store.sweep_temp_files("m", is_alive=lambda pid: False) == []
    assert store.read_bytes("m/1/item.1") == b"x"
    store.delete("m/1/item.1")
    assert isinstance(store.remove_empty_folder("m/1"), bool)
    assert store.list("m") == []


# ------------------------------------------------------------------ an unreachable store


def test_an_unreachable_s3_store_is_a_503_without_secrets() -> None:
    from tests.support.servers import free_port

    client = make_client(f"http://127.0.0.1:{free_port()}", "us-east-1")
    client.meta.config.retries = {"max_attempts": 1}
    store = S3BlobStore(client, "customerkey-blobs", prefix="x")
    for call in (lambda: store.put_bytes("a", b"x"), lambda: store.read_bytes("a")):
        with pytest.raises(BlobStoreUnavailable) as caught:
            call()
        assert isinstance(caught.value, CustomerKeyError)
        assert caught.value.status == 503 and caught.value.code == "ServiceUnavailable"


def test_refused_credentials_are_a_503_that_names_no_secret(seaweedfs: SeaweedFs) -> None:
    import boto3
    from botocore.config import Config

    wrong = "not-the-secret-" + SECRET_KEY[::-1]
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=seaweedfs.endpoint,
        region_name="us-east-1",
        aws_access_key_id="customerkey-test-access",
        aws_secret_access_key=wrong,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    store = S3BlobStore(client, seaweedfs.bucket, prefix=seaweedfs.new_prefix())
    with pytest.raises(BlobStoreUnavailable) as caught:
        store.write("a/b", lambda handle: handle.write(io.BytesIO(b"x").read()))
    message = str(caught.value)
    assert wrong not in message and SECRET_KEY not in message
    assert "customerkey-blobs" in message
