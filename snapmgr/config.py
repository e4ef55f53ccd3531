"""Effective configuration: flags > environment > TOML file > defaults.

Every key is declared once in ``KEYS`` with its parser and default, which
gives the environment variable (``SNAPMGR_<KEY>``, the key without its table),
the validation and ``snapmgr config`` output for free. An unknown key or a bad
value is a ``ConfigError`` naming the key and where it came from, never a
silently ignored setting. ``[stores.NAME]`` tables are passed to their
backend, which refuses options it does not know.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from snapmgr import validate
from snapmgr.durations import Duration, parse_duration
from snapmgr.errors import ConfigError, UsageError
from snapmgr.formats import COMPRESSIONS, DEFAULT_COMPRESSION, check_level
from snapmgr.healthping import parse_ping_url
from snapmgr.manifest import validate_label
from snapmgr.notify import DEFAULT_NOTIFY_ON, parse_rules
from snapmgr.redact import mask_service_url, redact_url, service_url_secrets, url_secrets
from snapmgr.registry import kind_for_url
from snapmgr.retention import POLICY_KEYS, Policy, parse_rule

DEFAULT_BACKUP_DIR = "/tmp/db_snapshots"  # noqa: S108 - documented default, same as the scripts it replaces
DEFAULT_POINTER_FILE = "/tmp/last_snapshot.txt"  # noqa: S108
DEFAULT_ORPHAN_GRACE = parse_duration("24h")
LEGACY_ENV = {"database_url": "DATABASE_URL", "backup_dir": "BACKUP_DIR"}


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _optional_text(value: Any) -> str | None:
    return _text(value) or None


def _path(value: Any) -> str:
    return validate.path(value)


def _optional_path(value: Any) -> str | None:
    return validate.path(value) if _text(value) else None


def _level(value: Any) -> int | None:
    if value in ("", None):
        return None
    return validate.whole(value, low=-(2**31), high=2**31 - 1)  # check_level narrows it


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value).strip().lower()
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return text

    return parse


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError("expected a list of store names")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _object_names(value: Any) -> tuple[str, ...]:
    """Exact schema or ``schema.table`` names (a bare table name is in ``public``)."""
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = [item.strip() for item in value]
    else:
        raise ValueError("expected a list of names")
    for item in items:
        if not item or any(char in item for char in "*?"):
            raise ValueError(f"expected exact names (no wildcards), got {item!r}")
    return tuple(dict.fromkeys(items))


def _timezone(value: Any) -> str:
    text = _text(value).strip() or "UTC"
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {text!r} (use an IANA name like Europe/Berlin)"
        ) from None
    return text


def _label(value: Any) -> str:
    try:
        return validate_label(_text(value))
    except UsageError as exc:
        raise ValueError(str(exc)) from None


def _seconds(value: Any) -> float:
    return validate.number(value, low=0.001, high=validate.MAX_PROGRESS_INTERVAL_S)


def _service_urls(value: Any) -> tuple[str, ...]:
    """Apprise URLs: a list, or (from the environment) a comma/space separated string."""
    if isinstance(value, str):
        urls = value.replace(",", " ").split()
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        urls = [item.strip() for item in value if item.strip()]
    else:
        raise ValueError("expected a list of notification URLs")
    for number, url in enumerate(urls, 1):
        if "://" not in url:
            raise ValueError(
                f"URL {number} is not a URL; expected e.g. slack://…, jsons://host/path, "
                "ntfy://topic (Apprise's syntax)"
            )
    return tuple(urls)


def _recipients(value: Any) -> tuple[str, ...]:
    """age public keys: a list, or (from the environment) a comma/space separated string."""
    from snapmgr.encryption import parse_recipients

    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = value
    else:
        raise ValueError("expected a list of age recipients (age1…)")
    return parse_recipients(items)


def _hidden(value: Any) -> Any:
    return "***"


def _masked_urls(value: Any) -> Any:
    if isinstance(value, str):
        return mask_service_url(value)
    return [mask_service_url(url) for url in value]


@dataclass(frozen=True)
class Key:
    """One configuration key: its table ("" = top level), parser and default."""

    table: str
    parse: Callable[[Any], Any]
    default: Any
    secret: bool = False
    #: How ``config`` shows a set value whose secret is not only a URL's password.
    mask: Callable[[Any], Any] | None = None


def _setting(
    default: Any,
    parse: Callable[[Any], Any],
    *,
    secret: bool = False,
    mask: Callable[[Any], Any] | None = None,
) -> Any:
    """A top-level key, declared as a typed field of :class:`Settings`."""
    return field(default=default, metadata={"key": Key("", parse, default, secret, mask)})


@dataclass(frozen=True)
class Settings:
    """Every top-level key, typed: the one place a key is declared (name, type,
    parser, default, secrecy). ``KEYS``, the ``SNAPMGR_*`` variables and
    ``snapmgr config`` are derived from these fields; the ``[retention]`` keys
    come from :class:`snapmgr.retention.Policy` the same way."""

    database_url: str | None = _setting(None, _optional_text, secret=True)
    backup_dir: str = _setting(DEFAULT_BACKUP_DIR, _path)
    pointer_file: str = _setting(DEFAULT_POINTER_FILE, _path)
    label: str = _setting("pre_migration", _label)
    compression: str = _setting(DEFAULT_COMPRESSION, _choice(*COMPRESSIONS))
    compression_level: int | None = _setting(None, _level)
    default_stores: tuple[str, ...] = _setting((), _names)
    pg_bin_dir: str | None = _setting(None, _optional_path)
    dump_owners: bool = _setting(True, _bool)
    dump_privileges: bool = _setting(True, _bool)
    exclude_schemas: tuple[str, ...] = _setting((), _object_names)
    exclude_tables: tuple[str, ...] = _setting((), _object_names)
    orphan_grace: Duration = _setting(DEFAULT_ORPHAN_GRACE, validate.duration)  # noqa: RUF009 - a field(); Duration is frozen
    timezone: str = _setting("UTC", _timezone)
    progress: str = _setting("auto", _choice("auto", "bar", "log", "off"))
    progress_interval: float = _setting(10.0, _seconds)
    notify_urls: tuple[str, ...] = _setting((), _service_urls, secret=True, mask=_masked_urls)
    notify_on: tuple[str, ...] = _setting(DEFAULT_NOTIFY_ON, parse_rules)
    healthcheck_url: str | None = _setting(None, parse_ping_url, secret=True, mask=_masked_urls)
    encryption_recipients: tuple[str, ...] = _setting((), _recipients)
    encryption_recipients_file: str | None = _setting(None, _optional_text)
    age_identity_file: str | None = _setting(None, _optional_text)
    age_identity: str | None = _setting(None, _optional_text, secret=True, mask=_hidden)


def _retention_key(name: str) -> Key:
    parse = partial(parse_rule, name)
    return Key("retention", lambda raw: None if _blank(raw) else parse(raw), None)


def _blank(value: Any) -> bool:
    return isinstance(value, str) and not value.strip()


KEYS: dict[str, Key] = {
    **{item.name: item.metadata["key"] for item in fields(Settings)},
    **{name: _retention_key(name) for name in POLICY_KEYS},
}
TABLES = {"retention", "stores"}


@dataclass(frozen=True)
class StoreConfig:
    """A store: its name (the URL itself for inline stores), kind, URL and options."""

    name: str
    kind: str
    url: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config(Settings):
    """The effective settings (typed attributes, one per key), where each came
    from, the retention policy and the configured stores."""

    retention: Policy = field(default_factory=Policy)
    #: For every key of ``KEYS``: "default", "file PATH", "env VAR" or "flag".
    sources: Mapping[str, str] = field(default_factory=dict)
    stores: Mapping[str, StoreConfig] = field(default_factory=dict)
    config_file: str | None = None

    def value(self, name: str) -> Any:
        """The parsed value of key ``name`` (a ``[retention]`` key included)."""
        if name in POLICY_KEYS:
            return getattr(self.retention, name)
        if name not in KEYS:
            raise KeyError(name)
        return getattr(self, name)

    def store_config(self, spec: str) -> StoreConfig:
        """A configured store by name, or an inline store from a path or URL."""
        if spec in self.stores:
            return self.stores[spec]
        if not spec.strip():
            raise ConfigError("--store: empty store name or path")
        kind, url = kind_for_url(spec)
        check_store_url(kind, url, "--store")
        # An inline store is named by its URL, shown in output: never with credentials.
        return StoreConfig(name=redact_url(spec), kind=kind, url=url)

    def selected_stores(self, specs: list[str] | tuple[str, ...] = ()) -> list[StoreConfig]:
        """The stores a command uses: ``--store`` values, else ``default_stores``,
        else the local ``backup_dir``."""
        chosen = list(specs) or list(self.default_stores)
        if not chosen:
            return [StoreConfig(name="local", kind="local", url=self.backup_dir)]
        seen: dict[str, StoreConfig] = {}
        for spec in chosen:
            store = self.store_config(spec)
            twin = seen.setdefault(store.url, store)
            if twin is not store and (twin.kind, dict(twin.options)) != (
                store.kind,
                dict(store.options),
            ):
                raise ConfigError(
                    f"stores {twin.name} and {store.name} both use {redact_url(store.url)} "
                    "with different settings; give each store its own location"
                )
        return list(seen.values())

    def secrets(self) -> list[str]:
        """Secret values in the settings (passwords in URLs, secret store options),
        so they can be scrubbed from anything printed."""
        found = url_secrets(self.database_url or "")
        for url in (*self.notify_urls, self.healthcheck_url or ""):
            found += service_url_secrets(url) if url else []
        for store in self.stores.values():
            found += url_secrets(store.url) + _secret_option_values(store.options)
        identity = self.age_identity or ""
        found += [identity.strip()] + [
            line.strip() for line in identity.splitlines() if not line.strip().startswith("#")
        ]
        return found

    def redacted(self) -> dict[str, Any]:
        """Every setting with its source, safe to print (passwords and keys masked)."""
        out: dict[str, Any] = {}
        for name, key in KEYS.items():
            value = self.value(name)
            if isinstance(value, Duration):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            if key.secret and isinstance(value, str):
                value = redact_url(value)
            if key.mask is not None and value:
                value = key.mask(self.value(name))
            out[name] = {"value": value, "source": self.sources[name]}
        out["stores"] = {
            name: {
                "kind": store.kind,
                "url": redact_url(store.url),
                "options": {k: _redact_option(k, v) for k, v in store.options.items()},
            }
            for name, store in self.stores.items()
        }
        out["config_file"] = self.config_file
        return out


SECRET_OPTION_WORDS = (
    "secret",
    "password",
    "passphrase",
    "token",
    "key_id",
    "account_key",
    "private_key",
    "connection_string",
    "session",
    "credential",
)


def _is_secret_option(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_OPTION_WORDS) and "kms" not in lowered


def _redact_option(name: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _redact_option(k, v) for k, v in value.items()}
    return "***" if _is_secret_option(name) else value


def _secret_option_values(options: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for name, value in options.items():
        if isinstance(value, Mapping):
            found += _secret_option_values(value)
        elif _is_secret_option(name) and value is not None:
            found.append(str(value))
    return found


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist (from --config/SNAPMGR_CONFIG)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start}); TOML files must be UTF-8"
        ) from None
    except RecursionError:
        raise ConfigError(
            f"config file {path}: arrays or tables are nested too deeply to be a snapmgr config"
        ) from None


def _flatten_file(data: Mapping[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the file into plain keys and the ``stores`` table, refusing unknown keys."""
    flat: dict[str, Any] = {}
    stores: dict[str, Any] = {}
    for name, value in data.items():
        if name == "stores":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [stores] must be a table of [stores.NAME] tables")
            stores = value
        elif name in TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{name}] must be a table")
            for sub, sub_value in value.items():
                if sub not in KEYS or KEYS[sub].table != name:
                    raise ConfigError(f"{path}: unknown key {name}.{sub}")
                flat[sub] = sub_value
        elif name in KEYS and KEYS[name].table == "":
            flat[name] = value
        else:
            hint = f" (it belongs in [{KEYS[name].table}])" if name in KEYS else ""
            raise ConfigError(f"{path}: unknown key {name!r}{hint}")
    return flat, stores


def _store_tables(stores: Mapping[str, Any], path: Path) -> dict[str, StoreConfig]:
    result: dict[str, StoreConfig] = {}
    for name, table in stores.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: stores.{name} must be a table")
        options = dict(table)
        url = options.pop("url", None)
        if not isinstance(url, str) or not url:
            raise ConfigError(f"{path}: stores.{name}.url is required (a path or URL)")
        forced = options.pop("backend", None)
        kind, url = kind_for_url(url)
        if forced is not None:
            if not isinstance(forced, str):
                raise ConfigError(f"{path}: stores.{name}.backend must be a string")
            kind = forced
        check_store_url(kind, url, f"{path}: stores.{name}.url")
        result[name] = StoreConfig(name=name, kind=kind, url=url, options=options)
    return result


def check_store_url(kind: str, url: str, where: str) -> None:
    """Refuse a store URL that names no place (``file://``, ``local://``) or whose
    host is not a valid name, before any backend is opened; ``where`` is the
    flag or key it came from."""
    scheme, sep, _ = url.partition("://")
    if kind == "local":
        if sep and not urlsplit(url).path:
            raise ConfigError(
                f"{where}: {url!r} names no directory; give a path, e.g. "
                f"{scheme}:///var/backups/db or /var/backups/db"
            )
        return
    if not sep:
        return
    try:
        hostname = urlsplit(url).hostname
        if hostname:
            validate.host(hostname)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def env_name(key: str) -> str:
    """``SNAPMGR_<KEY>``: the variable that sets ``key`` from the environment."""
    return f"SNAPMGR_{key.upper()}"


def load_config(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> Config:
    """Merge the four layers. ``flags`` holds only the flags the user gave."""
    env = os.environ if env is None else env
    flags = flags or {}
    path_text = config_path or env.get("SNAPMGR_CONFIG") or None
    file_values: dict[str, Any] = {}
    stores: dict[str, StoreConfig] = {}
    if path_text:
        path = Path(path_text).expanduser()
        file_values, store_tables = _flatten_file(_read_file(path), path)
        stores = _store_tables(store_tables, path)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, key in KEYS.items():
        raw, source = key.default, "default"
        if name in file_values:
            raw, source = file_values[name], f"file {path_text}"
        for var in (LEGACY_ENV.get(name), env_name(name)):
            if var and env.get(var, "") != "":
                raw, source = env[var], f"env {var}"
        if flags.get(name) is not None:
            raw, source = flags[name], "flag"
        values[name] = _parse(name, key, raw, source) if source != "default" else raw
        sources[name] = source
    try:
        values["compression_level"] = check_level(
            values["compression"], values["compression_level"]
        )
    except ConfigError as exc:
        raise ConfigError(f"{exc} (from {sources['compression_level']})") from None
    for store_name in values["default_stores"]:
        if store_name not in stores:
            raise ConfigError(
                f"default_stores: no store named {store_name!r} "
                f"(define [stores.{store_name}] in the config file)"
            )
    retention = Policy.from_rules({name: values.pop(name) for name in POLICY_KEYS})
    return Config(
        **values, retention=retention, sources=sources, stores=stores, config_file=path_text
    )


def _parse(name: str, key: Key, raw: Any, source: str) -> Any:
    try:
        return key.parse(raw)
    except ValueError as exc:
        shown = "***" if key.secret else repr(raw)
        raise ConfigError(f"{name}: invalid value {shown} from {source}: {exc}") from None
