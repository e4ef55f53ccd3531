"""The backend conformance suite: one class of tests every storage backend passes.

It ships with snapmgr so that a plugin's own tests can run it (it needs
pytest, which snapmgr itself does not): ``from snapmgr.backends.testing import
BackendConformance``. ``examples/dirstore`` is a plugin tested this way.

Modelled on fsspec's ``tests/abstract``: ``BackendFixtures`` declares the
fixtures a backend's test module overrides (``make_backend``, and where it
applies ``leftovers`` and ``seed``), and ``BackendConformance`` holds the
tests. A backend's module is a dozen lines::

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def make_backend(self, tmp_path):
            return lambda sub="": MyBackend(url_for(tmp_path, sub), {})
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from snapmgr.backends.base import Backend, Writer
from snapmgr.errors import IdTakenError, NotFoundError, StorageError

MIB = 1 << 20
MakeBackend = Callable[..., Backend]


class BackendFixtures:
    """Fixtures a backend's test class overrides."""

    @pytest.fixture
    def make_backend(self) -> MakeBackend:
        """``make_backend(sub="")``: the backend for this test's location, or for
        the sub-folder ``sub`` of it. Each test gets a fresh, empty location."""
        raise NotImplementedError("override make_backend in the backend's test class")

    @pytest.fixture
    def leftovers(self) -> Callable[[], list[str]]:
        """What an aborted write could leave outside the listing (S3: unfinished
        multipart uploads). Empty for backends where the listing shows all."""
        return list

    @pytest.fixture
    def seed(self, backend: Backend) -> Callable[[list[str]], None]:
        """Create many small objects quickly (for the pagination test)."""

        def put_all(names: list[str]) -> None:
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda n: backend.put_bytes(n, n.encode()), names))

        return put_all

    @pytest.fixture
    def big_size(self) -> int:
        """Large enough to need several upload parts where the backend has parts."""
        return 11 * MIB

    @pytest.fixture
    def backend(self, make_backend: MakeBackend) -> Backend:
        return make_backend()


def write_all(backend: Backend, name: str, data: bytes, chunk: int = MIB) -> None:
    writer = backend.open_writer(name, size_hint=len(data))
    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])
    writer.commit()


def read_all(backend: Backend, name: str, chunk: int = MIB) -> bytes:
    out = bytearray()
    with backend.open_reader(name) as handle:
        while piece := handle.read(chunk):
            out += piece
    return bytes(out)


def names(backend: Backend) -> list[str]:
    return sorted(info.name for info in backend.list_objects())


class BackendConformance(BackendFixtures):
    """Behaviour every backend must have; see snapmgr.backends.base for the protocol."""

    def test_is_a_backend(self, backend: Backend) -> None:
        assert isinstance(backend, Backend)
        assert isinstance(backend.kind, str) and backend.kind
        writer = backend.open_writer("proto.sql.gz")
        assert isinstance(writer, Writer)
        writer.abort()

    def test_in_progress_objects_are_hidden_or_flagged(
        self, backend: Backend, big_size: int
    ) -> None:
        """Until commit, a write shows in the listing only as ``in_progress`` entries
        (or as its reserved, final name); afterwards no such entry remains."""
        backend.put_bytes("keep.json", b"{}")
        writer = backend.open_writer("staged.sql.gz", size_hint=big_size)
        data = os.urandom(big_size)
        for start in range(0, big_size, MIB):
            writer.write(data[start : start + MIB])
        during = list(backend.list_objects())
        assert {i.name for i in during if not i.in_progress} <= {"keep.json", "staged.sql.gz"}
        writer.commit()
        after = list(backend.list_objects())
        assert not [i.name for i in after if i.in_progress]
        assert sorted(i.name for i in after) == ["keep.json", "staged.sql.gz"]
        writer = backend.open_writer("dropped.sql.gz")
        writer.write(data[:MIB])
        writer.abort()
        assert names(backend) == ["keep.json", "staged.sql.gz"]

    def test_close_is_safe_twice(self, make_backend: MakeBackend) -> None:
        backend = make_backend()
        backend.put_bytes("a.json", b"{}")
        backend.close()
        backend.close()
        assert names(make_backend()) == ["a.json"]

    def test_write_commit_read_round_trip(self, backend: Backend) -> None:
        data = os.urandom(3 * MIB + 123)
        write_all(backend, "snap_20250101_000000.sql.gz", data, chunk=256 * 1024)
        assert read_all(backend, "snap_20250101_000000.sql.gz") == data
        assert "snap_20250101_000000.sql.gz" in backend.location("snap_20250101_000000.sql.gz")

    def test_large_object_round_trip(self, backend: Backend, big_size: int) -> None:
        data = os.urandom(big_size)
        write_all(backend, "big.sql.zst", data)
        assert backend.stat("big.sql.zst").size == big_size
        assert read_all(backend, "big.sql.zst") == data

    def test_empty_object(self, backend: Backend) -> None:
        writer = backend.open_writer("empty.sql")
        writer.commit()
        assert backend.stat("empty.sql").size == 0
        assert read_all(backend, "empty.sql") == b""

    def test_reader_reads_what_was_asked(self, backend: Backend) -> None:
        backend.put_bytes("r.json", b"0123456789" * 10)
        with backend.open_reader("r.json") as handle:
            assert handle.read(10) == b"0123456789"
            assert handle.read() == b"0123456789" * 9
            assert handle.read(10) == b""

    def test_abort_leaves_nothing(
        self, backend: Backend, leftovers: Callable[[], list[str]], big_size: int
    ) -> None:
        writer = backend.open_writer("aborted.sql.gz", size_hint=big_size)
        chunk = os.urandom(MIB)
        for _ in range(big_size // MIB):
            writer.write(chunk)
        writer.abort()
        writer.abort()  # idempotent
        assert names(backend) == []
        assert leftovers() == []
        with pytest.raises(NotFoundError):
            backend.stat("aborted.sql.gz")
        # the name is free again
        write_all(backend, "aborted.sql.gz", b"second try")
        assert read_all(backend, "aborted.sql.gz") == b"second try"

    def test_abort_before_any_write(
        self, backend: Backend, leftovers: Callable[[], list[str]]
    ) -> None:
        backend.open_writer("nothing.sql.gz").abort()
        assert names(backend) == []
        assert leftovers() == []

    def test_use_after_commit_is_refused(self, backend: Backend) -> None:
        writer = backend.open_writer("done.sql")
        writer.write(b"x")
        writer.commit()
        with pytest.raises(StorageError, match="after it was closed"):
            writer.write(b"more")
        with pytest.raises(StorageError, match="after it was closed"):
            writer.commit()
        writer.abort()  # harmless after commit: the object stays
        assert read_all(backend, "done.sql") == b"x"

    def test_open_writer_refuses_an_existing_name(self, backend: Backend) -> None:
        write_all(backend, "taken.sql.gz", b"first")
        with pytest.raises(IdTakenError):
            backend.open_writer("taken.sql.gz")
        assert read_all(backend, "taken.sql.gz") == b"first"

    def test_put_bytes_is_exclusive_unless_overwrite(self, backend: Backend) -> None:
        backend.put_bytes("m.json", b'{"v": 1}')
        with pytest.raises(IdTakenError):
            backend.put_bytes("m.json", b'{"v": 2}')
        assert read_all(backend, "m.json") == b'{"v": 1}'
        backend.put_bytes("m.json", b'{"v": 3}', overwrite=True)
        assert read_all(backend, "m.json") == b'{"v": 3}'
        assert names(backend) == ["m.json"]

    def test_put_bytes_refuses_a_committed_dump(self, backend: Backend) -> None:
        write_all(backend, "d.sql.gz", b"dump")
        with pytest.raises(IdTakenError):
            backend.put_bytes("d.sql.gz", b"other")
        assert read_all(backend, "d.sql.gz") == b"dump"

    def test_two_creators_of_one_name_one_wins(
        self, backend: Backend, leftovers: Callable[[], list[str]]
    ) -> None:
        writer = backend.open_writer("race.json")
        writer.write(b"from the writer")
        losers = []
        try:
            backend.put_bytes("race.json", b"from put_bytes")
        except IdTakenError:
            losers.append("put_bytes")
        try:
            writer.commit()
        except IdTakenError:
            losers.append("writer")
        assert len(losers) == 1, losers
        winner = b"from the writer" if losers == ["put_bytes"] else b"from put_bytes"
        assert read_all(backend, "race.json") == winner
        assert names(backend) == ["race.json"]
        assert leftovers() == []

    def test_list_has_sizes_and_utc_mtimes(self, backend: Backend) -> None:
        before = datetime.now(UTC) - timedelta(seconds=5)
        backend.put_bytes("a.json", b"12345")
        write_all(backend, "a.sql.gz", b"x" * 1000)
        after = datetime.now(UTC) + timedelta(seconds=5)
        listed = {info.name: info for info in backend.list_objects()}
        assert sorted(listed) == ["a.json", "a.sql.gz"]
        assert listed["a.json"].size == 5 and listed["a.sql.gz"].size == 1000
        for info in listed.values():
            assert info.modified.tzinfo is not None
            assert before <= info.modified <= after
        assert backend.stat("a.json") == listed["a.json"]

    def test_list_does_not_recurse(self, make_backend: MakeBackend) -> None:
        outer = make_backend()
        make_backend("sub").put_bytes("inner.json", b"{}")
        outer.put_bytes("outer.json", b"{}")
        assert names(outer) == ["outer.json"]
        assert names(make_backend("sub")) == ["inner.json"]

    def test_missing_location_lists_nothing(self, make_backend: MakeBackend) -> None:
        assert names(make_backend("never-written")) == []

    def test_pagination_and_batched_delete(
        self, backend: Backend, seed: Callable[[list[str]], None]
    ) -> None:
        wanted = [f"s_{i:05d}.json" for i in range(1005)]
        seed(wanted)
        listed = list(backend.list_objects())
        assert sorted(info.name for info in listed) == wanted
        assert all(info.size == len(info.name) for info in listed)
        backend.delete([*wanted, "missing_1.json", "missing_2.sql.gz"])
        assert names(backend) == []

    def test_delete_ignores_missing_and_keeps_others(self, backend: Backend) -> None:
        backend.put_bytes("keep.json", b"k")
        backend.put_bytes("drop.json", b"d")
        backend.delete(["drop.json", "never-there.json"])
        backend.delete([])
        assert names(backend) == ["keep.json"]

    def test_missing_object_is_not_found(self, backend: Backend) -> None:
        with pytest.raises(NotFoundError):
            backend.open_reader("absent.sql.gz")
        with pytest.raises(NotFoundError):
            backend.stat("absent.sql.gz")

    def test_stat(self, backend: Backend) -> None:
        write_all(backend, "s.sql", b"z" * 4321)
        info = backend.stat("s.sql")
        assert (info.name, info.size) == ("s.sql", 4321)
        assert abs(info.modified - datetime.now(UTC)) < timedelta(minutes=1)


class BucketConformance:
    """What every backend whose location lives in a bucket or container (an object
    store) must also do: a location whose bucket does not exist is a
    ``StorageError`` (exit 5) for listing and writing, never an empty store
    ("no committed snapshots", exit 0) or "not found" (exit 7). A store on a
    filesystem has no bucket: its missing directory is an empty store, created
    by the first write (``test_missing_location_lists_nothing``).

    A bucket backend's test class adds this mixin and the fixture::

        class TestMyStore(BackendConformance, BucketConformance):
            @pytest.fixture
            def make_in_missing_bucket(self):
                return lambda: MyBackend("my://no-such-bucket/app", {})
    """

    @pytest.fixture
    def make_in_missing_bucket(self) -> Callable[[], Backend]:
        """The backend for a location in a bucket (or container) that does not exist."""
        raise NotImplementedError("override make_in_missing_bucket in the backend's test class")

    def test_a_missing_bucket_is_a_storage_error(
        self, make_in_missing_bucket: Callable[[], Backend]
    ) -> None:
        backend = make_in_missing_bucket()
        calls: dict[str, Callable[[], object]] = {
            "list": lambda: list(backend.list_objects()),
            "put_bytes": lambda: backend.put_bytes("m.json", b"{}"),
            "open_writer": lambda: write_all(backend, "d.sql.gz", b"dump"),
        }
        for what, call in calls.items():
            with pytest.raises(StorageError, match="does not exist") as caught:
                call()
            assert not isinstance(caught.value, NotFoundError), what
            assert "bucket" in str(caught.value), (what, caught.value)
