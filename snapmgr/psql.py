"""One psql child fed SQL on its stdin, with its answers and errors watched.

psql runs in its own session (``start_new_session``), so a Ctrl-C or a
SIGKILL aimed at snapmgr's process group never reaches it: when snapmgr dies,
psql simply reads EOF, disconnects, and the server rolls back whatever
transaction was open. It runs with ``AUTOCOMMIT off`` and without
``--single-transaction``, so nothing psql does on its own ever commits.

Answers come back on stdout as lines ``SNAPMGR <nonce> <key> <value>``
produced by our own queries; everything else psql prints (the dump's
``setval`` results, large-object calls) is read and dropped, so the pipe
never fills. stderr is read in another thread into a bounded tail; its first
``ERROR`` line is what a failure reports. Secret connection parameters
reach psql only through its environment and a private service file
(:class:`snapmgr.postgres.ChildConnection`), never its argv.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import signal
import subprocess
import threading
import time
from typing import IO

import xxhash

from snapmgr.pipeline import PIPE_SIZE, enlarge_pipe, stdio_blocks
from snapmgr.postgres import ConnInfo, Tool
from snapmgr.redact import scrub

APPLICATION_NAME = "snapmgr restore"
STDERR_LINES = 200
POLL_S = 0.1
CANCEL_WAIT_S = 10.0
STDOUT_BUFFER = 1 << 16


class PsqlGone(Exception):
    """psql exited (or closed its stdin) before it was told to."""


class PsqlSession:
    """A running ``psql`` reading SQL from us; ``send`` it text, ``ask`` it questions."""

    def __init__(self, tool: Tool, conn: ConnInfo, nonce: str) -> None:
        self._conn = conn
        self._prefix = f"SNAPMGR {nonce} "
        self._answers: dict[str, str] = {}
        self._changed = threading.Condition()
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._first_error: str | None = None
        self._error_detailed = False
        # While set, stdout lines that are not answers are query output being fingerprinted.
        self._capture: xxhash.xxh3_128 | None = None
        self._child = conn.for_child()
        self._child.env.setdefault("PGAPPNAME", APPLICATION_NAME)
        try:
            self.proc = subprocess.Popen(
                stdio_blocks([
                    tool.path, "--no-psqlrc", "--no-password", "--quiet", "--no-align",
                    "--tuples-only", "--set=ON_ERROR_STOP=1", "--set=AUTOCOMMIT=off",
                    f"--dbname={self._child.dsn}",
                ], "input", PIPE_SIZE),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,  # nothing held back in memory: what send() returns from is in the pipe
                env=self._child.env,
                start_new_session=True,  # our signals and our death must not reach it
            )  # fmt: skip
        except BaseException:
            self._child.close()
            raise
        assert self.proc.stdin is not None
        enlarge_pipe(self.proc.stdin.fileno())  # with 1 MiB reads: few wake-ups both ways
        self._stdin: IO[bytes] | None = self.proc.stdin
        self._readers = [
            threading.Thread(target=self._read_stdout, name="psql-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name="psql-stderr", daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def send(self, data: bytes | str) -> None:
        """Write to psql's stdin; ``PsqlGone`` if it has exited."""
        if isinstance(data, str):
            data = data.encode()
        if self._stdin is None:
            raise PsqlGone
        view = memoryview(data)
        try:
            while view:
                written = self._stdin.write(view)
                view = view[written or 0 :]
        except (BrokenPipeError, ValueError):
            raise PsqlGone from None

    def ask(self, key: str, sql: str) -> str:
        """Send ``sql`` (which must print ``key``'s marker line) and wait for the answer."""
        self.send(sql)
        return self.wait_for(key)

    def wait_for(self, key: str) -> str:
        """The value psql printed for ``key``; ``PsqlGone`` if it exits first."""
        with self._changed:
            while key not in self._answers:
                if self.proc.poll() is not None and not self._readers[0].is_alive():
                    raise PsqlGone
                self._changed.wait(POLL_S)
            return self._answers[key]

    def answer(self, key: str) -> str | None:
        with self._changed:
            return self._answers.get(key)

    def marker(self, key: str, expression: str) -> str:
        """A query printing ``expression`` as the answer to ``key``."""
        return f"SELECT {_literal(self._prefix + key + ' ')} || ({expression});\n"

    def output_fingerprint_sql(self, key: str, statement: str) -> str:
        """``statement`` (a ``COPY … TO STDOUT``) wrapped so that the xxh3-128 of what
        it prints becomes ``key``'s answer (send it, then ``wait_for(key)``).

        The output is hashed as it is read, between two marker lines whose random
        nonce row data cannot contain (COPY's text format escapes newlines)."""
        return self.marker("capture", "''") + statement + self.marker("captured", _literal(key))

    def finish(self) -> int:
        """Close stdin (psql ends at EOF) and wait for its exit code."""
        self._close_stdin()
        code = self.proc.wait()
        self._child.close()
        for reader in self._readers:
            reader.join()
        return code

    def abort(self) -> None:
        """Stop now without committing: cancel the running statement, end psql.

        SIGINT makes psql send a cancel request to the server, so a long
        statement stops at once instead of running to its end; psql then exits
        (ON_ERROR_STOP) and the server rolls the transaction back. Closing
        stdin covers a psql that was idle; SIGKILL one that does not listen.
        """
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGINT)
        self._close_stdin()
        deadline = time.monotonic() + CANCEL_WAIT_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(POLL_S / 2)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._child.close()
        for reader in self._readers:
            reader.join(5)

    def first_error(self) -> str | None:
        """psql's first ERROR (or FATAL) line, scrubbed, with its DETAIL/HINT if any."""
        return self._first_error

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    def _close_stdin(self) -> None:
        stdin, self._stdin = self._stdin, None
        if stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                stdin.close()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        # The pipe is unbuffered (bufsize=0, for stdin's sake): reading lines from it
        # directly would take one system call per byte of a COPY's output.
        stdout = io.BufferedReader(self.proc.stdout, STDOUT_BUFFER)  # type: ignore[type-var]
        prefix = self._prefix.encode()
        try:
            for raw in stdout:
                if raw.startswith(prefix):
                    key, _, value = raw[len(prefix) :].decode("utf-8", "replace").partition(" ")
                    value = value.rstrip("\n")
                    if key == "capture":
                        self._capture = xxhash.xxh3_128()
                        continue
                    if key == "captured" and self._capture is not None:
                        key, value, self._capture = value, self._capture.hexdigest(), None
                    with self._changed:
                        self._answers[key] = value
                        self._changed.notify_all()
                elif self._capture is not None:
                    self._capture.update(raw)
        finally:
            with self._changed:
                self._changed.notify_all()

    def _read_stderr(self) -> None:
        stderr = self.proc.stderr
        assert stderr is not None
        secrets = self._conn.secrets()
        for raw in stderr:
            line = scrub(raw.decode("utf-8", "replace").rstrip("\n"), secrets)
            self._stderr.append(line)
            self._note_error(line)

    def _note_error(self, line: str) -> None:
        """Keep the first ERROR/FATAL line and the DETAIL or HINT that follows it."""
        text = line.split(": ", 1)[1] if line.startswith("psql:") and ": " in line else line
        kind, _, message = text.partition(":")
        kind = kind.strip().upper()
        message = " ".join(message.split())
        if self._first_error is None:
            if kind in ("ERROR", "FATAL"):
                self._first_error = message
        elif kind in ("DETAIL", "HINT") and not self._error_detailed:
            self._first_error += f" ({kind.lower()}: {message})"
            self._error_detailed = True


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
