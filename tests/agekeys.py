"""age key pairs for tests, made by the real ``age-keygen`` (Debian package ``age``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pyrage import x25519


class Key:
    """An age key pair in an identity file: its path, private key text and public key."""

    def __init__(self, path: Path) -> None:
        subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
        self.path = path
        self.secret = next(
            line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-")
        )
        self.public = str(x25519.Identity.from_str(self.secret).to_public())
