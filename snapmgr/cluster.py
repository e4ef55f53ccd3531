"""A throwaway PostgreSQL cluster in a temp directory, for the demo and the tests.

It runs on a private Unix socket directory and a free loopback port, so it
never collides with a server already on the machine. ``initdb`` refuses to
run as root, so when we are root the cluster is owned and run by the
``postgres`` system user (through ``runuser``), in a directory that user can
reach (not under a root-only temp dir).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from snapmgr.errors import SnapmgrError


def server_bin_dir() -> Path:
    """The directory holding initdb/pg_ctl, newest major version first."""
    for candidate in ("initdb",):
        found = shutil.which(candidate)
        if found:
            return Path(os.path.realpath(found)).parent
    try:
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if (Path(out) / "initdb").exists():
            return Path(out)
    except (OSError, subprocess.CalledProcessError):
        pass
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
        reverse=True,
    )
    if versions:
        return Path(versions[0]).parent
    raise SnapmgrError(
        "PostgreSQL server binaries (initdb, pg_ctl) are not installed; "
        "install them, e.g. apt-get install postgresql"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TempCluster:
    """initdb + pg_ctl start in a fresh directory; ``stop`` removes everything."""

    base_dir: Path | None = None
    port: int = 0
    user_name: str = "postgres"
    password: str = "snapmgr-demo-pw"  # noqa: S105 - a throwaway local cluster's password
    #: Extra server settings (``-c name=value``), e.g. a small lock table for a test.
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._run_as: str | None = "postgres" if os.geteuid() == 0 else None
        self._bin = server_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="snapmgr-pg-", dir=self._pick_base()))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        if not self.port:
            self.port = _free_port()
        self.started = False

    def _pick_base(self) -> str:
        if self.base_dir is not None:
            return str(self.base_dir)
        # /tmp is world-traversable; pytest's and root's temp dirs may not be.
        return "/tmp" if self._run_as else tempfile.gettempdir()  # noqa: S108

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self._run_as, "--", *args] if self._run_as else list(args)

    def _run(self, *args: str) -> None:
        result = subprocess.run(self._cmd(*args), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise SnapmgrError(f"{Path(args[0]).name} failed: {' / '.join(detail)}")

    def start(self) -> TempCluster:
        """Create and start the cluster; the superuser ``user_name`` has ``password``."""
        self.socket_dir.mkdir()
        if self._run_as:
            pw = pwd.getpwnam(self._run_as)
            os.chmod(self.root, 0o755)  # noqa: S103 - the postgres user must traverse it
            for path in (self.root, self.socket_dir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            os.chown(pwfile, pwd.getpwnam(self._run_as).pw_uid, -1)
        pwfile.chmod(0o600)
        self._run(
            str(self._bin / "initdb"), "-D", str(self.data_dir), "-U", self.user_name,
            "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8",
            "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.socket_dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-l",
            str(self.root / "server.log"), "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        self.started = True
        return self

    def url(self, database: str = "postgres", *, password: bool = True) -> str:
        """A libpq URL for ``database`` over TCP on loopback."""
        secret = f":{self.password}" if password else ""
        return f"postgresql://{self.user_name}{secret}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server (fast) and delete its directory."""
        if self.started:
            with contextlib.suppress(SnapmgrError):
                self._run(str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate",
                          "-w", "stop")  # fmt: skip
            self.started = False
        for _ in range(3):
            shutil.rmtree(self.root, ignore_errors=True)
            if not self.root.exists():
                break
            time.sleep(0.2)

    def __enter__(self) -> TempCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
