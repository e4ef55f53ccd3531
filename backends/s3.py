"""S3 backend (boto3): streaming multipart uploads that commit whole or not at all.

A store is ``s3://bucket/prefix``. Credentials, region and endpoint come from
boto3's standard chain (environment, ``AWS_ENDPOINT_URL_S3``, profiles,
instance and task roles); the store's config table may override region,
endpoint and profile, and sets storage class, server-side encryption and
boto3's checksum behaviour.

Writes stream: bytes are cut into parts uploaded by a small thread pool while
the dump goes on, with at most ``max_concurrency`` parts in flight, so memory
stays at about ``(max_concurrency + 1) x part size`` whatever the dump's size
and ``write`` blocks when S3 is the slowest stage. The object appears only at
``CompleteMultipartUpload``, sent with ``If-None-Match: *`` so an existing
object is never replaced; any failure aborts the multipart upload so no
parts stay behind (and are billed). A dump smaller than one part is sent
with a single conditional ``PutObject`` instead.

Part sizes: S3 allows 10,000 parts of 5 MiB to 5 GiB (all but the last at
least 5 MiB). The first half of the parts use a base size (8 MiB, or enough
for the estimated dump size to fit in those parts); after that the size
doubles every 1/20 of the parts, so a dump a hundred times larger than
estimated (and, at the defaults, any object up to S3's 5 TiB limit) still
fits. ``max_parts = 1000`` plans the same way for providers that allow fewer
parts.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import re
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

import boto3
import botocore.config
import botocore.exceptions

from snapmgr import validate
from snapmgr.backends.base import (
    IN_PROGRESS_SUFFIX,
    ObjectInfo,
    WriterBase,
    check_options,
    in_progress_name,
    translating_reader,
)
from snapmgr.errors import (
    ConfigError,
    IdTakenError,
    NotFoundError,
    SnapmgrError,
    StorageError,
)
from snapmgr.redact import redact_url

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger("snapmgr")

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part except the last
MAX_PART_SIZE = 5 * GIB
DEFAULT_PART_SIZE = 8 * MIB
MAX_PARTS = 10_000
DEFAULT_CONCURRENCY = 4
DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys
PENDING_MARK = "~"  # never in a snapshot object's name: separates the upload ID
PENDING_SUFFIX = IN_PROGRESS_SUFFIX
CHECKSUM_MODES = ("when_supported", "when_required")
SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
ADDRESSING_STYLES = ("auto", "virtual", "path")
# Objects in these classes cannot be read back at once, so a snapshot could
# never be verified or restored in minutes; use a lifecycle rule instead.
ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
NOT_FOUND_CODES = ("NoSuchKey", "404", "NotFound")
TAKEN_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict")
DENIED_CODES = (
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
)


def parse_size(value: Any, option: str) -> int:
    """A byte count from an integer or a string like ``"64MiB"`` / ``"1 GB"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B?|B)?\s*", value, re.IGNORECASE)
        if match:
            unit = (match.group(2) or "B").upper().rstrip("B").replace("I", "")
            scale = {"": 1, "K": KIB, "M": MIB, "G": GIB}[unit]
            return int(match.group(1)) * scale
    raise ConfigError(f"s3 store option {option}: expected a size like 64MiB, got {value!r}")


@dataclass(frozen=True)
class PartPlan:
    """The size of every part of one upload: ``base`` for the first half of
    ``max_parts``, then doubling every twentieth, never above 5 GiB."""

    base: int
    max_parts: int = MAX_PARTS

    def size(self, number: int) -> int:
        """The size of part ``number`` (1-based)."""
        flat = self.max_parts // 2
        if number <= flat:
            return self.base
        step = max(1, self.max_parts // 20)
        doublings = (number - flat - 1) // step + 1
        return min(self.base << doublings, MAX_PART_SIZE)

    def capacity(self) -> int:
        """The largest object this plan can upload."""
        return sum(self.size(n) for n in range(1, self.max_parts + 1))


def plan_parts(
    size_hint: int | None, part_size: int | None = None, max_parts: int = MAX_PARTS
) -> PartPlan:
    """Choose the base part size: ``part_size`` if configured, else 8 MiB, or
    more when the estimated size would need over half of ``max_parts``."""
    if part_size is not None:
        return PartPlan(part_size, max_parts)
    base = DEFAULT_PART_SIZE
    if size_hint:
        needed = -(-size_hint // (max_parts // 2))
        base = max(base, -(-needed // MIB) * MIB)
    return PartPlan(min(base, MAX_PART_SIZE), max_parts)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def translate(exc: Exception, action: str, where: str) -> SnapmgrError:
    """Turn a boto3/botocore exception into the snapmgr error a user can act on."""
    if isinstance(exc, SnapmgrError):
        return exc
    if isinstance(exc, botocore.exceptions.ClientError):
        code = _code(exc)
        message = str(exc.response.get("Error", {}).get("Message") or code)
        if code in NOT_FOUND_CODES:
            return NotFoundError(f"{where} does not exist")
        if code in TAKEN_CODES:
            return IdTakenError(f"{where} already exists; snapmgr never overwrites")
        if code == "NoSuchBucket":
            return StorageError(
                f"cannot {action} {where}: the bucket does not exist; create it or fix the URL"
            )
        if code in DENIED_CODES:
            return StorageError(
                f"cannot {action} {where}: access denied ({code}); check the credentials "
                "(AWS_PROFILE, AWS_ACCESS_KEY_ID, instance role) and the bucket policy"
            )
        if "checksum" in message.lower() or code in ("BadDigest", "XAmzContentSHA256Mismatch"):
            return StorageError(
                f"cannot {action} {where}: {code}: {message}; if this is an S3-compatible "
                'store, set request_checksum_calculation = "when_required" in its config table'
            )
        if code == "NotImplemented":
            return StorageError(
                f"cannot {action} {where}: the store does not implement this request "
                f"({message}); snapmgr needs conditional writes (If-None-Match) and "
                "multi-object delete"
            )
        return StorageError(f"cannot {action} {where}: {code}: {message}")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return StorageError(
            f"cannot {action} {where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an instance/task role"
        )
    if isinstance(exc, botocore.exceptions.ConnectionError | ConnectionError):
        return StorageError(
            f"cannot {action} {where}: cannot reach the S3 endpoint ({exc}); check "
            "endpoint_url / AWS_ENDPOINT_URL_S3 and the network"
        )
    if isinstance(
        exc, botocore.exceptions.HTTPClientError | botocore.exceptions.IncompleteReadError
    ):
        return StorageError(
            f"cannot {action} {where}: the connection to the S3 endpoint failed ({exc}); "
            "retry, or check the network"
        )
    return StorageError(f"cannot {action} {where}: {type(exc).__name__}: {exc}")


def _text_option(
    options: Mapping[str, Any], name: str, choices: tuple[str, ...] = ()
) -> str | None:
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"s3 store option {name}: expected a non-empty string, got {value!r}")
    value = value.strip()
    if choices and value not in choices:
        raise ConfigError(
            f"s3 store option {name}: expected one of {', '.join(choices)}, got {value!r}"
        )
    return value


def _int_option(options: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"s3 store option {name}: expected a whole number from {low} to {high}, got {value!r}"
        )
    return value


@dataclass(frozen=True)
class S3Settings:
    """A store's validated options."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    request_checksum_calculation: str | None = None
    response_checksum_validation: str | None = None
    part_size: int | None = None
    max_parts: int = MAX_PARTS
    max_concurrency: int = DEFAULT_CONCURRENCY
    addressing_style: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> S3Settings:
        check_options("s3", options, OPTIONS)
        part_size = None
        if options.get("part_size") is not None:
            part_size = parse_size(options["part_size"], "part_size")
            if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
                raise ConfigError(
                    f"s3 store option part_size: must be from 5MiB to 5GiB, got {part_size} bytes"
                )
        storage_class = _text_option(options, "storage_class")
        if storage_class is not None:
            storage_class = storage_class.upper()
            if storage_class in ARCHIVE_CLASSES:
                raise ConfigError(
                    f"s3 store option storage_class: {storage_class} objects cannot be read "
                    "back at once, so snapshots could not be verified or restored; use "
                    "STANDARD_IA or GLACIER_IR, or a lifecycle rule"
                )
        settings = cls(
            region=_text_option(options, "region"),
            endpoint_url=_text_option(options, "endpoint_url"),
            profile=_text_option(options, "profile"),
            storage_class=storage_class,
            sse=_text_option(options, "sse", SSE_MODES),
            sse_kms_key_id=_text_option(options, "sse_kms_key_id"),
            request_checksum_calculation=_text_option(
                options, "request_checksum_calculation", CHECKSUM_MODES
            ),
            response_checksum_validation=_text_option(
                options, "response_checksum_validation", CHECKSUM_MODES
            ),
            part_size=part_size,
            max_parts=_int_option(options, "max_parts", 100, MAX_PARTS) or MAX_PARTS,
            max_concurrency=_int_option(options, "max_concurrency", 1, 64) or DEFAULT_CONCURRENCY,
            addressing_style=_text_option(options, "addressing_style", ADDRESSING_STYLES),
        )
        if settings.sse_kms_key_id and not (settings.sse or "").startswith("aws:kms"):
            raise ConfigError('s3 store option sse_kms_key_id needs sse = "aws:kms"')
        if settings.endpoint_url and not settings.endpoint_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"s3 store option endpoint_url: expected an http(s):// URL, "
                f"got {settings.endpoint_url!r}"
            )
        if settings.endpoint_url:
            try:
                validate.host(urlsplit(settings.endpoint_url).hostname or "")
            except ValueError as exc:
                raise ConfigError(f"s3 store option endpoint_url: {exc}") from None
        return settings

    def write_args(self) -> dict[str, Any]:
        """Extra arguments for PutObject and CreateMultipartUpload."""
        args: dict[str, Any] = {}
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.sse_kms_key_id
        return args

    def client_config(self) -> botocore.config.Config:
        kwargs: dict[str, Any] = {
            # parts in flight plus concurrent reads (verification) share the pool
            "max_pool_connections": max(10, self.max_concurrency + 4),
        }
        if self.addressing_style:
            kwargs["s3"] = {"addressing_style": self.addressing_style}
        if self.request_checksum_calculation:
            kwargs["request_checksum_calculation"] = self.request_checksum_calculation
        if self.response_checksum_validation:
            kwargs["response_checksum_validation"] = self.response_checksum_validation
        return botocore.config.Config(**kwargs)


OPTIONS = frozenset(
    {
        "region",
        "endpoint_url",
        "profile",
        "storage_class",
        "sse",
        "sse_kms_key_id",
        "request_checksum_calculation",
        "response_checksum_validation",
        "part_size",
        "max_parts",
        "max_concurrency",
        "addressing_style",
    }
)


class S3Writer(WriterBase):
    """One exclusive, streaming create of ``key``: buffered into parts, uploaded
    in parallel with bounded memory, completed conditionally or aborted."""

    def __init__(self, backend: S3Backend, key: str, plan: PartPlan) -> None:
        super().__init__(backend.url_for(key))
        self._backend = backend
        self._client = backend.client
        self._bucket = backend.bucket
        self._key = key
        self._where = backend.url_for(key)
        self._plan = plan
        self._concurrency = backend.settings.max_concurrency
        self._buffer = bytearray()
        self._next_part = 1
        self._upload_id: str | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._inflight: deque[concurrent.futures.Future[CompletedPartTypeDef]] = deque()
        self._parts: list[CompletedPartTypeDef] = []
        mode = getattr(self._client.meta.config, "request_checksum_calculation", None)
        self._checksum = mode != "when_required"

    def _write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= (size := self._plan.size(self._next_part)):
            self._wait_for_slot()
            with memoryview(self._buffer) as view:
                part = view[:size].tobytes()
            del self._buffer[:size]
            self._submit(part)

    def _commit(self) -> None:
        try:
            if self._upload_id is None:
                self._put_whole()
            else:
                self._complete()
        except Exception as exc:
            self.abort()
            raise translate(exc, "store", self._where) from exc
        self._shutdown()

    def _abort(self) -> None:
        self._buffer = bytearray()
        for future in self._inflight:
            future.cancel()
        # Parts still uploading must finish before the abort, or they could
        # outlive it and keep being billed.
        concurrent.futures.wait(self._inflight)
        self._inflight.clear()
        self._shutdown()
        if self._upload_id is None:
            return
        try:
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )
        except Exception as exc:
            if not (
                isinstance(exc, botocore.exceptions.ClientError) and _code(exc) == "NoSuchUpload"
            ):
                log.warning(
                    "could not abort the multipart upload %s of %s (%s); its parts stay until "
                    "a lifecycle rule (AbortIncompleteMultipartUpload) removes them",
                    self._upload_id, self._where, translate(exc, "abort", self._where),
                )  # fmt: skip
        self._upload_id = None

    def _put_whole(self) -> None:
        args = self._backend.settings.write_args()
        self._client.put_object(
            Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer), IfNoneMatch="*", **args
        )
        self._buffer = bytearray()

    def _complete(self) -> None:
        if self._buffer:
            self._wait_for_slot()
            part, self._buffer = bytes(self._buffer), bytearray()
            self._submit(part)
        while self._inflight:
            self._reap_oldest()
        assert self._upload_id is not None
        self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": sorted(self._parts, key=lambda p: p["PartNumber"])},
            IfNoneMatch="*",
        )
        self._upload_id = None

    def _start(self) -> None:
        args: dict[str, Any] = dict(self._backend.settings.write_args())
        if self._checksum:
            # Parts carry CRC32 checksums by default (botocore >= 1.36); the
            # upload must announce it or S3 refuses them ("checksum type mismatch").
            args["ChecksumAlgorithm"] = "CRC32"
        try:
            response = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, **args
            )
        except Exception as exc:
            raise translate(exc, "start uploading", self._where) from exc
        self._upload_id = response["UploadId"]
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self._concurrency, thread_name_prefix="s3-upload"
        )

    def _submit(self, body: bytes) -> None:
        if self._upload_id is None:
            self._start()
        number = self._next_part
        if number > self._plan.max_parts:
            raise StorageError(
                f"cannot store {self._where}: the dump needs more than {self._plan.max_parts} "
                f"parts; set a larger part_size for this store"
            )
        self._next_part += 1
        assert self._pool is not None
        self._inflight.append(self._pool.submit(self._upload_part, number, body))

    def _upload_part(self, number: int, body: bytes) -> CompletedPartTypeDef:
        assert self._upload_id is not None
        extra: dict[str, Any] = {"ChecksumAlgorithm": "CRC32"} if self._checksum else {}
        response = self._client.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
            **extra,
        )
        part: CompletedPartTypeDef = {"PartNumber": number, "ETag": response["ETag"]}
        if "ChecksumCRC32" in response:
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        return part

    def _wait_for_slot(self) -> None:
        """Back-pressure: block until fewer than ``max_concurrency`` parts are in
        flight; collect finished parts and raise the first failure."""
        while self._inflight and self._inflight[0].done():
            self._reap_oldest()
        while len(self._inflight) >= self._concurrency:
            self._reap_oldest()

    def _reap_oldest(self) -> None:
        future = self._inflight.popleft()
        try:
            self._parts.append(future.result())
        except Exception as exc:
            raise translate(exc, "upload a part of", self._where) from exc

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class S3Backend:
    """``s3://bucket/prefix`` through boto3."""

    kind = "s3"
    OPTIONS = OPTIONS

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.settings = S3Settings.from_options(options or {})
        self.bucket, self.prefix = self._parse_url(url)
        try:
            session = boto3.session.Session(profile_name=self.settings.profile)
            self.client: S3Client = session.client(
                "s3",
                region_name=self.settings.region,
                endpoint_url=self.settings.endpoint_url,
                config=self.settings.client_config(),
            )
        except botocore.exceptions.ProfileNotFound as exc:
            raise ConfigError(
                f"s3 store option profile: no AWS profile named {self.settings.profile!r}"
            ) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise StorageError(f"cannot set up the S3 client for {url}: {exc}") from exc
        except ValueError as exc:  # botocore's check of the endpoint URL
            raise ConfigError(
                f"the S3 endpoint for {url} is not a valid URL ({str(exc)[:120]}); check "
                "endpoint_url / AWS_ENDPOINT_URL_S3"
            ) from None

    @staticmethod
    def _parse_url(url: str) -> tuple[str, str]:
        parts = urlsplit(url)
        shown = redact_url(url)
        if parts.scheme.lower() != "s3" or not parts.netloc:
            raise ConfigError(f"not an S3 URL: {shown!r} (expected s3://bucket/prefix)")
        if "@" in parts.netloc:
            raise ConfigError(
                f"S3 URL {shown!r} has credentials in it; give them through boto3's chain "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role) instead"
            )
        if parts.query or parts.fragment:
            raise ConfigError(
                f"S3 URL {shown!r} has a query; put options in the store's [stores.NAME] table"
            )
        prefix = parts.path.strip("/")
        return parts.netloc, f"{prefix}/" if prefix else ""

    def key(self, name: str) -> str:
        return self.prefix + name

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def location(self, name: str) -> str:
        return self.url_for(self.key(name))

    def open_writer(self, name: str, size_hint: int | None = None) -> S3Writer:
        # Conditional completion is what guarantees no overwrite; this early
        # check only saves dumping a whole database into a name that is taken.
        try:
            self.stat(name)
        except NotFoundError:
            plan = plan_parts(size_hint, self.settings.part_size, self.settings.max_parts)
            return S3Writer(self, self.key(name), plan)
        raise IdTakenError(f"{self.location(name)} already exists; snapmgr never overwrites")

    def put_bytes(self, name: str, data: bytes, *, overwrite: bool = False) -> None:
        args = self.settings.write_args()
        if not overwrite:
            args["IfNoneMatch"] = "*"
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data, **args)
        except Exception as exc:
            raise translate(exc, "write", self.location(name)) from exc

    def open_reader(self, name: str) -> BinaryIO:
        where = self.location(name)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
        except Exception as exc:
            raise translate(exc, "read", where) from exc
        return translating_reader(response["Body"], lambda exc: translate(exc, "read", where))

    def stat(self, name: str) -> ObjectInfo:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except Exception as exc:
            raise translate(exc, "stat", self.location(name)) from exc
        return ObjectInfo(name, head["ContentLength"], _utc(head["LastModified"]))

    def list_objects(self) -> Iterator[ObjectInfo]:
        """The objects, then every unfinished multipart upload as a temp object
        (``.<name>~<upload id>.partial``, size 0, modified when it started).

        An upload whose writer was killed (SIGKILL, a crash, a lost endpoint)
        is invisible to a plain listing and billed until aborted; listed like a
        local store's leftover temp file, prune aborts it once it is older than
        ``orphan_grace``, and ``delete`` of that name is the abort.
        """
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/")
        uploads = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(self.prefix) :]
                    if name:
                        yield ObjectInfo(name, item["Size"], _utc(item["LastModified"]))
            for upload_page in uploads:
                for upload in upload_page.get("Uploads", []):
                    name = upload["Key"][len(self.prefix) :]
                    if name and PENDING_MARK not in name:
                        pending = in_progress_name(name, upload["UploadId"], PENDING_MARK)
                        yield ObjectInfo(pending, 0, _utc(upload["Initiated"]), in_progress=True)
        except SnapmgrError:
            raise
        except Exception as exc:
            raise translate(exc, "list", self.url_for(self.prefix)) from exc

    def close(self) -> None:
        """Close the boto3 client's connection pool."""
        with contextlib.suppress(Exception):
            self.client.close()

    def _abort_pending(self, name: str) -> None:
        key_name, _, upload_id = name[1 : -len(PENDING_SUFFIX)].partition(PENDING_MARK)
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key(key_name), UploadId=upload_id
            )
        except Exception as exc:
            if isinstance(exc, botocore.exceptions.ClientError) and _code(exc) == "NoSuchUpload":
                return  # completed or aborted meanwhile
            raise translate(exc, "abort the upload of", self.location(key_name)) from exc

    def delete(self, names: list[str]) -> None:
        for name in [n for n in names if _is_pending(n)]:
            self._abort_pending(name)
        names = [n for n in names if not _is_pending(n)]
        for start in range(0, len(names), DELETE_BATCH):
            batch = names[start : start + DELETE_BATCH]
            try:
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self.key(n)} for n in batch], "Quiet": True},
                )
            except Exception as exc:
                raise translate(exc, "delete from", self.url_for(self.prefix)) from exc
            errors = [e for e in response.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                raise StorageError(
                    f"cannot delete {self.url_for(first.get('Key', '?'))}: "
                    f"{first.get('Code')}: {first.get('Message')} "
                    f"({len(errors)} object(s) not deleted)"
                )


def _is_pending(name: str) -> bool:
    """A name ``list_objects`` gave an unfinished multipart upload."""
    return name.startswith(".") and name.endswith(PENDING_SUFFIX) and PENDING_MARK in name


def _utc(when: datetime) -> datetime:
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
