"""`snapmgr demo`: a guided tour on a throwaway cluster (placeholder until written)."""

from __future__ import annotations

import typer

app = typer.Typer()
