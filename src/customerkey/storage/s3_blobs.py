"""The S3 blob store: ``S3BlobStore`` keeps blobs as objects of an S3-compatible bucket (AWS S3,
SeaweedFS, MinIO, Ceph RGW), under an optional key prefix, through boto3 (the ``s3`` extra).

It keeps the ``storage.blob_store`` contract on object storage:

- A write is invisible until it is whole. A blob of at most one part (``part_size``, 8 MiB)
  is one PUT; a larger one is a multipart upload of ``part_size`` parts, so a writer holds
  one part in memory, never the blob. An upload whose ``fill`` raises is aborted; one whose
  process dies stays an incomplete multipart upload, which no listing or reader sees and
  which ``abort_stale_uploads`` (the blob sweep, past its grace) aborts.
- There are no staging files and no folders: ``iter_blobs(staging=True)`` yields only blobs,
  ``remove_dead_temp_files`` removes nothing, ``remove_empty_folder`` is a no-op, and a
  folder exists while some object's key is under it.
- Listings page ``page_size`` keys per request (S3's maximum, 1000, unless a test lowers it).
  S3 lists keys in byte order, in which every folder's keys are contiguous, so ``iter_blobs``
  keeps its "one sub-folder at a time" promise.
- ``delete_unless_newer`` judges by the object's ``LastModified`` and deletes with
  ``If-Match`` on the ETag it judged, so a blob a writer replaced meanwhile survives where the
  server honours conditional deletes (AWS S3 and SeaweedFS do; elsewhere the window is one
  round trip).
- Credentials come from the AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
  ``AWS_PROFILE``, instance roles), never from customerkey's settings; errors name the
  operation, the bucket and S3's error code only.
- A bucket out of room (a quota: Ceph RGW's and most providers' ``QuotaExceeded``, MinIO's
  bucket quota and full drives, HTTP 507) raises ``BlobStoreFull``, an ``OSError`` EDQUOT as
  a full disk under the local folder raises ENOSPC: the front ends answer both 503
  ``InsufficientStorage`` with ``Retry-After`` (``storage.exhaustion``), not
  ``BlobStoreUnavailable``.
"""

from __future__ import annotations

import builtins
import errno
import io
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

from botocore.exceptions import BotoCoreError, ClientError

from customerkey.storage.blob_store import PART, BlobInfo, BlobStoreUnavailable, check_name

DEFAULT_PART_SIZE = 8 * 1024 * 1024
# S3 (and SeaweedFS) refuse parts under 5 MiB except the last.
S3_MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PAGE = 1000
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
# S3 error codes that say the bucket (or the server's drives) has no room for the write.
_FULL = frozenset(
    {
        "QuotaExceeded",  # Ceph RGW, and most S3 providers' quotas
        "XMinioAdminBucketQuotaExceeded",  # MinIO bucket quota
        "XMinioStorageFull",  # MinIO: the drives reached their free-space floor
        "InsufficientStorage",
        "StorageFull",
    }
)
_FULL_STATUS = 507  # HTTP Insufficient Storage


class BlobStoreFull(OSError):
    """The bucket refused a write for lack of room (a quota, full drives): ``errno`` EDQUOT,
    so that it is storage full (``storage.exhaustion.is_storage_full``) like a full disk."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EDQUOT, message)


def make_client(endpoint_url: str | None, region: str | None) -> Any:
    """A boto3 S3 client: credentials from the AWS chain, path-style addressing for a custom
    endpoint (most S3-compatible servers have no virtual-host DNS)."""
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {
        "retries": {"max_attempts": 3, "mode": "standard"},
        "connect_timeout": 5,
        "read_timeout": 60,
    }
    if endpoint_url:
        options["s3"] = {"addressing_style": "path"}
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region or "us-east-1",
        config=Config(**options),
    )


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "") or "")


class S3BlobStore:
    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        prefix: str = "",
        part_size: int = DEFAULT_PART_SIZE,
        page_size: int = MAX_PAGE,
    ) -> None:
        if part_size < S3_MIN_PART_SIZE or not 1 <= page_size <= MAX_PAGE:
            raise ValueError("an S3 blob store needs parts of 5 MiB or more, 1..1000 keys a page")
        self.client = client
        self.bucket = bucket
        self.root = check_name(prefix.strip("/")) if prefix.strip("/") else ""
        self.part_size = part_size
        self.page_size = page_size

    # ------------------------------------------------------------------ names and calls

    def _key(self, name: str) -> str:
        check_name(name)
        return f"{self.root}/{name}" if self.root else name

    def _name(self, key: str) -> str:
        return key[len(self.root) + 1 :] if self.root else key

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """One S3 request; a missing object is ``FileNotFoundError``, any other failure
        ``BlobStoreUnavailable`` (no credential or response body in its message)."""
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as error:
            code = _code(error)
            if code in _MISSING:
                raise FileNotFoundError(kwargs.get("Key", "")) from None
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _FULL or status == _FULL_STATUS:
                raise BlobStoreFull(
                    f"The blob store (S3 bucket {self.bucket!r}) has no room for {operation}: "
                    f"{code or status}."
                ) from None
            raise BlobStoreUnavailable(
                f"The blob store (S3 bucket {self.bucket!r}) refused {operation}: {code}."
            ) from None
        except BotoCoreError as error:
            raise BlobStoreUnavailable(
                f"The blob store (S3 bucket {self.bucket!r}) could not be reached for "
                f"{operation}: {type(error).__name__}."
            ) from None

    # ------------------------------------------------------------------ writing

    def write(self, name: str, fill: Callable[[BinaryIO], object]) -> int:
        """Create or replace blob ``name`` with what ``fill`` writes; returns its size."""
        writer = _UploadWriter(self, self._key(name))
        try:
            fill(cast(BinaryIO, writer))
            return writer.finish()
        except BaseException:
            writer.abort()
            raise

    def put_bytes(self, name: str, data: bytes) -> int:
        return self.write(name, lambda handle: handle.write(data))

    # ------------------------------------------------------------------ reading

    @contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        response = self._call("get_object", Key=self._key(name))
        body = response["Body"]
        try:
            yield cast(BinaryIO, io.BufferedReader(_BodyReader(self, body), 64 * 1024))
        finally:
            body.close()

    def read_bytes(self, name: str) -> bytes:
        with self.open(name) as handle:
            return handle.read()

    def _head(self, name: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], self._call("head_object", Key=self._key(name)))
        except FileNotFoundError:
            return None

    def exists(self, name: str) -> bool:
        return self._head(name) is not None

    def size(self, name: str) -> int:
        head = self._head(name)
        if head is None:
            raise FileNotFoundError(name)
        return int(head["ContentLength"])

    # ------------------------------------------------------------------ deleting

    def delete(self, name: str) -> bool:
        if self._head(name) is None:
            return False
        self._call("delete_object", Key=self._key(name))
        return True

    def delete_prefix(self, prefix: str) -> None:
        batch: builtins.list[dict[str, str]] = []
        for key in self._keys(prefix):
            batch.append({"Key": key})
            if len(batch) == self.page_size:
                self._delete_keys(batch)
                batch = []
        if batch:
            self._delete_keys(batch)

    def _delete_keys(self, batch: builtins.list[dict[str, str]]) -> None:
        response = self._call("delete_objects", Delete={"Objects": batch, "Quiet": True})
        errors = response.get("Errors") or []
        if errors:
            raise BlobStoreUnavailable(
                f"The blob store (S3 bucket {self.bucket!r}) refused to delete "
                f"{len(errors)} objects: {errors[0].get('Code', '')}."
            )

    def delete_unless_newer(self, name: str, older_than: datetime) -> int | None:
        head = self._head(name)
        if head is None or _utc(head["LastModified"]) >= older_than:
            return None
        try:
            self._call("delete_object", Key=self._key(name), IfMatch=head["ETag"])
        except BlobStoreUnavailable:
            # PreconditionFailed: replaced since we looked; anything else is a real failure.
            if self._etag(name) not in (None, head["ETag"]):
                return None
            raise
        return int(head["ContentLength"])

    def _etag(self, name: str) -> str | None:
        head = self._head(name)
        return None if head is None else str(head["ETag"])

    def remove_empty_folder(self, prefix: str) -> bool:
        check_name(prefix)
        return False

    # ------------------------------------------------------------------ listing

    def _pages(self, prefix: str, **extra: Any) -> Iterator[dict[str, Any]]:
        """ListObjectsV2 pages of the keys under folder ``prefix``."""
        request: dict[str, Any] = {"Prefix": self._key(prefix) + "/", "MaxKeys": self.page_size}
        request.update(extra)
        while True:
            page = cast(dict[str, Any], self._call("list_objects_v2", **request))
            yield page
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        for page in self._pages(prefix):
            for item in page.get("Contents") or []:
                if check_name_ok(self._name(str(item["Key"]))):
                    yield item

    def _keys(self, prefix: str) -> Iterator[str]:
        for item in self._objects(prefix):
            yield str(item["Key"])

    def list(self, prefix: str) -> builtins.list[str]:
        return sorted(self._name(key) for key in self._keys(prefix))

    def iter_folders(self, prefix: str) -> Iterator[str]:
        for page in self._pages(prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes") or []:
                part = str(common["Prefix"]).rstrip("/").rsplit("/", 1)[-1]
                if PART.match(part):
                    yield f"{prefix}/{part}"

    def iter_blobs(self, prefix: str, *, staging: bool = False) -> Iterator[BlobInfo]:
        for item in self._objects(prefix):
            yield BlobInfo(
                name=self._name(str(item["Key"])),
                size=int(item["Size"]),
                mtime=_utc(item["LastModified"]),
            )

    # ------------------------------------------------------------------ the sweep's hooks

    def sweep_temp_files(
        self, prefix: str, *, is_alive: Callable[[int], bool], dry_run: bool = False
    ) -> builtins.list[str]:
        check_name(prefix)
        return []

    def remove_dead_temp_files(
        self,
        staging: Iterable[BlobInfo],
        *,
        is_alive: Callable[[int], bool],
        dry_run: bool = False,
    ) -> builtins.list[BlobInfo]:
        return []

    def abort_stale_uploads(
        self, prefix: str, older_than: datetime, *, dry_run: bool = False
    ) -> builtins.list[BlobInfo]:
        """Abort the incomplete multipart uploads under ``prefix`` begun before
        ``older_than`` (a writer killed mid-upload, or whose abort failed)."""
        stale: builtins.list[BlobInfo] = []
        request: dict[str, Any] = {
            "Prefix": self._key(prefix) + "/",
            "MaxUploads": self.page_size,
        }
        while True:
            page = self._call("list_multipart_uploads", **request)
            for upload in page.get("Uploads") or []:
                initiated = _utc(upload["Initiated"])
                if initiated >= older_than:
                    continue
                key, upload_id = str(upload["Key"]), str(upload["UploadId"])
                info = BlobInfo(
                    name=self._name(key), size=self._uploaded(key, upload_id), mtime=initiated
                )
                if not dry_run:
                    try:
                        self._call("abort_multipart_upload", Key=key, UploadId=upload_id)
                    except FileNotFoundError:
                        continue  # completed or aborted meanwhile
                    except BlobStoreUnavailable:
                        if self._upload_open(key, upload_id):
                            raise
                        continue
                stale.append(info)
            if not page.get("IsTruncated"):
                return stale
            request["KeyMarker"] = page.get("NextKeyMarker", "")
            request["UploadIdMarker"] = page.get("NextUploadIdMarker", "")

    def _uploaded(self, key: str, upload_id: str) -> int:
        """The bytes of an incomplete upload's parts (0 if it ended meanwhile)."""
        total = 0
        request: dict[str, Any] = {"Key": key, "UploadId": upload_id, "MaxParts": self.page_size}
        while True:
            try:
                page = self._call("list_parts", **request)
            except (FileNotFoundError, BlobStoreUnavailable):
                return total
            total += sum(int(part.get("Size", 0)) for part in page.get("Parts") or [])
            if not page.get("IsTruncated"):
                return total
            request["PartNumberMarker"] = page["NextPartNumberMarker"]

    def _upload_open(self, key: str, upload_id: str) -> bool:
        try:
            self._call("list_parts", Key=key, UploadId=upload_id, MaxParts=1)
        except (FileNotFoundError, BlobStoreUnavailable):
            return False
        return True


def check_name_ok(name: str) -> bool:
    """Whether a listed key names a blob of ours (a key another tool put there is skipped)."""
    try:
        check_name(name)
    except ValueError:
        return False
    return True


class _UploadWriter(io.RawIOBase):
    """The handle ``fill`` writes to: one part buffered; a single PUT at the end if the blob
    fits in one part, else a multipart upload begun when the buffer first exceeds a part."""

    def __init__(self, store: S3BlobStore, key: str) -> None:
        super().__init__()
        self._store = store
        self._key = key
        self._buffer = bytearray()
        self._size = 0
        self._upload_id: str | None = None
        self._parts: builtins.list[dict[str, Any]] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._buffer += view
        self._size += len(view)
        # Strictly more than one part before uploading one: a blob of exactly one part is
        # still a single PUT.
        while len(self._buffer) > self._store.part_size:
            self._upload_part(self._store.part_size)
        return len(view)

    def tell(self) -> int:
        return self._size

    def _upload_part(self, length: int) -> None:
        store = self._store
        if self._upload_id is None:
            started = store._call("create_multipart_upload", Key=self._key)
            self._upload_id = str(started["UploadId"])
        number = len(self._parts) + 1
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        answer = store._call(
            "upload_part", Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def finish(self) -> int:
        store = self._store
        if self._upload_id is None:
            store._call("put_object", Key=self._key, Body=bytes(self._buffer))
        else:
            if self._buffer:
                self._upload_part(len(self._buffer))
            store._call(
                "complete_multipart_upload",
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
            self._upload_id = None
        self._buffer = bytearray()
        return self._size

    def abort(self) -> None:
        """Best effort: an upload left behind is invisible, and the sweep aborts it later."""
        self._buffer = bytearray()
        if self._upload_id is not None:
            with suppress(Exception):
                self._store._call("abort_multipart_upload", Key=self._key, UploadId=self._upload_id)
            self._upload_id = None


class _BodyReader(io.RawIOBase):
    """A streaming GET's body as a raw stream (``open``); a dropped connection is
    ``BlobStoreUnavailable``."""

    def __init__(self, store: S3BlobStore, body: Any) -> None:
        super().__init__()
        self._store = store
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except BotoCoreError as error:
            raise BlobStoreUnavailable(
                f"The blob store (S3 bucket {self._store.bucket!r}) dropped a read: "
                f"{type(error).__name__}."
            ) from None
        view[: len(data)] = data
        return len(data)
