"""Plain option values without pydantic: typer's own coercion, minus its cost.

typer (0.2x) coerces every option value through a pydantic ``TypeAdapter``
that it builds, per parameter, the first time the parameter is parsed. For
snapmgr's options (strings, lists of strings, integers, decimal numbers, flags)
that is the identity, ``list()``, ``int()`` or ``float()``; but it imports
pydantic and builds a schema per option, about 0.2 s of CPU, a quarter of a
small snapshot's time.

:func:`install` gives typer's parameters a coercer that handles exactly those
plain cases: a ``str`` or ``bool`` that is one, a ``list[str]`` of strings, an
``int`` that is an int or a plain decimal numeral, a ``float`` that is a float,
an int or a plain decimal number (``30``, ``2.5``), none of them with a custom
parser, a click type or bounds. Anything else (another annotation, a value of
another shape, which may well be an error) goes to typer's own coercion,
built only then, so every result and every error message stays typer's.

It hooks an internal of typer (``_TyperParameter.get_runtime_param``), so it
is installed only on the typer minor versions it was checked against
(:data:`CHECKED_TYPER`, the one ``constraints.txt`` locks); any other typer
is left as it is, only slower to start.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

#: typer (major, minor) versions whose internals this was checked against.
CHECKED_TYPER = ((0, 29),)
_NUMERAL = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")  # ASCII, no sign games, fits int64
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,15})?")  # exact enough for float
_MISS = object()


class PlainCoercion:
    """Coerces one parameter's plain values; hands the rest to typer's coercion."""

    def __init__(self, kind: type, fallback: Callable[[], Any]) -> None:
        self.kind = kind
        self._build_fallback = fallback
        self._fallback: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:  # what typer's RuntimeParam.coerce answers for a missing value
            return () if (param.multiple or param.nargs == -1) else None
        result = self.plain(value)
        if result is not _MISS:
            return result
        if self._fallback is None:
            self._fallback = self._build_fallback()
        return self._fallback.coerce(value, param=param, ctx=ctx)

    def plain(self, value: Any) -> Any:
        """The coerced value, or ``_MISS`` when typer's coercion must decide."""
        if self.kind in (str, bool):
            return value if type(value) is self.kind else _MISS
        if self.kind is int:
            if type(value) is int:
                return value
            if type(value) is str and _NUMERAL.fullmatch(value):
                return int(value)
            return _MISS
        if self.kind is float:
            if type(value) is float:
                return value
            if type(value) is int:
                return float(value)
            if type(value) is str and _DECIMAL.fullmatch(value):
                return float(value)
            return _MISS
        if self.kind is list:
            if type(value) in (list, tuple) and all(type(item) is str for item in value):
                return list(value)
            return _MISS
        return _MISS


def plain_kind(descriptor: Any) -> type | None:
    """``str``, ``bool``, ``int``, ``float`` or ``list`` (of str) when a parameter is
    that plain, else ``None``."""
    info = descriptor.parameter_info
    if descriptor.file_annotation is not None or getattr(info, "parser", None) is not None:
        return None
    if getattr(info, "click_type", None) is not None:
        return None
    annotation = descriptor.annotation
    if annotation in (str, bool):
        return annotation  # type: ignore[no-any-return]
    if annotation == list[str]:
        return list
    if annotation in (int, float) and info.min is None and info.max is None and not info.clamp:
        return annotation  # type: ignore[no-any-return]
    return None


def install() -> None:
    """Make typer's parameters coerce plain values without pydantic (see the module doc)."""
    try:
        import typer
        from typer._coercion import build_runtime_param  # noqa: F401 - the fallback's
        from typer.core import _TyperParameter
    except ImportError:
        return
    if typer_version(typer.__version__) not in CHECKED_TYPER:
        return
    original = getattr(_TyperParameter, "get_runtime_param", None)
    if original is None or getattr(original, "snapmgr_plain", False):
        return

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            descriptor = getattr(self, "type_descriptor", None)
            kind = None if descriptor is None else plain_kind(descriptor)
            if kind is None:
                return original(self)
            self._runtime_param = PlainCoercion(kind, lambda: _typer_coercion(descriptor))
        return self._runtime_param

    get_runtime_param.snapmgr_plain = True  # type: ignore[attr-defined]
    _TyperParameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign]


def typer_version(text: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a version string such as ``0.29.2``, or ``None``."""
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


def _typer_coercion(descriptor: Any) -> Any:
    from typer._coercion import build_runtime_param

    return build_runtime_param(descriptor)
