"""``LocalBlobStore``'s staging-file naming, tree walks and the sweep of dead writers' staging
files, on real files under ``tmp_path``."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from customerkey.storage.blobs import (
    BlobInfo,
    LocalBlobStore,
    parse_temp_name,
    temp_name,
)
from tests.support.crash_harness import dead_pid


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def set_mtime(path: Path, when: datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


@pytest.mark.parametrize(
    ("name", "pid"),
    [
        ("000003", 4242),
        ("5b1e4f0a-8c1d-4d8e-9a51-2f4e6f1c0b7d.12", 1),  # mail: "<item>.<key seq>" has dots
        ("a.b.c", 2**31 - 1),
        ("x_y-z", 7),
    ],
)
def test_temp_name_round_trip(name: str, pid: int) -> None:
    made = temp_name(name, pid)
    assert made.startswith(".") and made.endswith(".tmp")
    assert parse_temp_name(made) == (name, pid)


@pytest.mark.parametrize(
    "filename",
    ["000003", ".000003.tmp", ".000003.12x.tmp", "000003.12.tmp", ".000003.12.tmp.bak", ".."],
)
def test_parse_temp_name_refuses_other_names(filename: str) -> None:
    assert parse_temp_name(filename) is None


def test_temp_name_refuses_unsafe_names() -> None:
    for bad in ("a/b", "", "a b"):
        with pytest.raises(ValueError):
            temp_name(bad, 1)


def test_write_stages_under_the_temp_name(store: LocalBlobStore) -> None:
    seen: list[str] = []

    def fill(handle: object) -> None:
        seen.extend(p.name for p in (store.root / "mail" / "box").iterdir())
        handle.write(b"sealed")  # type: ignore[attr-defined]

    assert store.write("mail/box/item.1", fill) == 6
    assert seen == [temp_name("item.1", os.getpid())]
    assert [p.name for p in (store.root / "mail" / "box").iterdir()] == ["item.1"]


def test_iter_blobs_walks_depth_first_with_sizes_and_times(store: LocalBlobStore) -> None:
    names = {
        "files/s1/f1/v1/000000": b"a" * 10,
        "files/s1/f1/v1/000001": b"b" * 3,
        "files/s1/f2/v9/000000": b"",
        "files/s2/f3/v2/000000": b"c" * 7,
        "mail/m1/i.1": b"d",
    }
    old = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    for name, data in names.items():
        store.put_bytes(name, data)
        set_mtime(store.root / name, old)
    live_tmp = store.root / "files/s1/f1/v1" / temp_name("000002", os.getpid())
    live_tmp.write_bytes(b"half")
    (store.root / "files/s1/f1/v1/.hidden").write_bytes(b"x")  # neither a blob nor staging

    found = list(store.iter_blobs("files"))
    assert {b.name: b.size for b in found} == {n: len(d) for n, d in names.items() if "files" in n}
    assert all(b.mtime == old and b.mtime.tzinfo is not None for b in found)
    assert not any(b.is_staging for b in found)
    # Depth first: each site's (and each version's) blobs come together.
    sites = [b.name.split("/")[1] for b in found]
    assert sites == sorted(sites, key=sites.index) and len(set(sites)) == 2
    assert [b.name.split("/")[1] for b in found].count("s1") == 3

    with_staging = list(store.iter_blobs("files/s1", staging=True))
    staged = [b for b in with_staging if b.is_staging]
    assert staged == [
        BlobInfo(
            name=f"files/s1/f1/v1/{live_tmp.name}",
            size=4,
            mtime=staged[0].mtime,
            writer_pid=os.getpid(),
        )
    ]
    assert list(store.iter_blobs("nothing-here")) == []
    assert sorted(store.iter_folders("files")) == ["files/s1", "files/s2"]
    assert list(store.iter_folders("nothing-here")) == []


def test_sweep_temp_files_removes_dead_writers_only(store: LocalBlobStore) -> None:
    store.put_bytes("mail/m1/item.1", b"sealed")
    folder = store.root / "mail" / "m1"
    dead = dead_pid()
    dead_file = folder / temp_name("item.2", dead)
    own_file = folder / temp_name("other.1", os.getpid())
    parent_file = folder / temp_name("third.1", os.getppid())  # a live process, not us
    nested = store.root / "files/s/f/v" / temp_name("000000", dead)
    nested.parent.mkdir(parents=True)
    for path in (dead_file, own_file, parent_file, nested):
        path.write_bytes(b"half a blob")
    asked: list[int] = []

    def is_alive(pid: int) -> bool:
        asked.append(pid)
        return pid != dead

    would = store.sweep_temp_files("mail", is_alive=is_alive, dry_run=True)
    assert would == [f"mail/m1/{dead_file.name}"] and dead_file.exists()
    removed = store.sweep_temp_files("mail", is_alive=is_alive)
    assert removed == [f"mail/m1/{dead_file.name}"]
    assert not dead_file.exists() and own_file.exists() and parent_file.exists()
    assert nested.exists()  # another prefix
    assert os.getpid() not in asked  # this process's own files are live without asking
    assert store.sweep_temp_files("files", is_alive=is_alive) == [f"files/s/f/v/{nested.name}"]
    assert store.read_bytes("mail/m1/item.1") == b"sealed"
    assert store.sweep_temp_files("nothing-here", is_alive=is_alive) == []


def test_delete_unless_newer(store: LocalBlobStore) -> None:
    now = datetime.now(UTC)
    store.put_bytes("mail/m/old.1", b"12345")
    set_mtime(store.root / "mail/m/old.1", now - timedelta(hours=2))
    store.put_bytes("mail/m/new.1", b"fresh")
    cutoff = now - timedelta(hours=1)
    assert store.delete_unless_newer("mail/m/old.1", cutoff) == 5
    assert not store.exists("mail/m/old.1")
    assert store.delete_unless_newer("mail/m/new.1", cutoff) is None
    assert store.read_bytes("mail/m/new.1") == b"fresh"
    assert store.delete_unless_newer("mail/m/gone.1", cutoff) is None
    # Nothing of the sweep's own is left behind in the folder.
    assert sorted(p.name for p in (store.root / "mail/m").iterdir()) == ["new.1"]


def test_remove_empty_folder(store: LocalBlobStore) -> None:
    store.put_bytes("files/s/f/v/000000", b"x")
    assert not store.remove_empty_folder("files/s/f/v")
    store.delete("files/s/f/v/000000")
    assert store.remove_empty_folder("files/s/f/v")
    assert not (store.root / "files/s/f/v").exists() and (store.root / "files/s/f").is_dir()
    assert not store.remove_empty_folder("files/s/f/v")
