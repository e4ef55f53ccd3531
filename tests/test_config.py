"""Configuration layering, validation and redaction (no database needed)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from snapmgr.config import KEYS, load_config
from snapmgr.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "snapmgr.toml"
    path.write_text(text)
    return str(path)


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = write(tmp_path, 'label = "from_file"\ncompression = "zstd"\n')
    env = {"SNAPMGR_LABEL": "from_env"}
    config = load_config({"label": "from_flag"}, env, path)
    assert config.label == "from_flag"
    assert config.sources["label"] == "flag"
    config = load_config({}, env, path)
    assert (config.label, config.sources["label"]) == ("from_env", "env SNAPMGR_LABEL")
    assert (config.compression, config.sources["compression"]) == ("zstd", f"file {path}")
    assert load_config({}, {}, None).label == "pre_migration"


def test_legacy_variables_and_config_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, 'pointer_file = "/srv/ptr"\n')
    config = load_config(
        {}, {"BACKUP_DIR": "/srv/snaps", "DATABASE_URL": "postgresql://a@b/c",
             "SNAPMGR_CONFIG": path}, None,
    )  # fmt: skip
    assert config.backup_dir == "/srv/snaps"
    assert config.database_url == "postgresql://a@b/c"
    assert config.pointer_file == "/srv/ptr"
    assert config.selected_stores()[0].url == "/srv/snaps"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('compresion = "zstd"\n', "compresion"),
        ("[retention]\nkeep_dayly = 3\n", "retention.keep_dayly"),
        ("keep_daily = 3\n", "keep_daily"),
        ('compression = "lzma"\n', "compression"),
        ("[retention]\nkeep_daily = -5\n", "keep_daily"),
        ('orphan_grace = "soon"\n', "orphan_grace"),
        ('timezone = "Mars/Olympus"\n', "timezone"),
        ('[stores.x]\nbackend = "local"\n', "stores.x.url"),
        ('default_stores = ["nope"]\n', "nope"),
        ("compression_level = 9\n", "compression_level"),
        ('label = "../x"\n', "label"),
        (b'label = "\xff"\n', "is not UTF-8"),
        ("compression_level = inf\n", "compression_level"),
        ("compression_level = 1e400\n", "compression_level"),
        ("compression_level = nan\n", "compression_level"),
        ("compression_level = 2.5\n", "compression_level"),
        ("progress_interval = nan\n", "progress_interval"),
        ("progress_interval = inf\n", "progress_interval"),
        ("progress_interval = 0\n", "progress_interval"),
        ("progress_interval = 1e9\n", "progress_interval"),
        ('backup_dir = ""\n', "backup_dir"),
        ('pointer_file = ""\n', "pointer_file"),
        ('pointer_file = "a\\u0000b"\n', "pointer_file"),
        ('orphan_grace = ""\n', "orphan_grace"),
        ('orphan_grace = "99999999999999999999d"\n', "orphan_grace"),
        ("[retention]\nkeep_daily = 1e400\n", "keep_daily"),
        ("[retention]\nkeep_daily = 99999999999999999999\n", "keep_daily"),
        ('[retention]\nkeep_within = "99999y"\n', "keep_within"),
        ("x = " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
        ("x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n", "nested too deeply"),
        ('[stores.x]\nurl = "file://"\n', "stores.x.url"),
        ('[stores.x]\nurl = "local://"\n', "stores.x.url"),
        (f'[stores.x]\nurl = "s3://{"b" * 300}/p"\n', "stores.x.url"),
        (f'[stores.x]\nurl = "sftp://{"h" * 64}.example/p"\n', "stores.x.url"),
    ],
    ids=lambda value: repr(value)[:40] if isinstance(value, str | bytes) else None,
)
def test_bad_files_name_the_key(tmp_path: Path, text: str | bytes, named: str) -> None:
    path = tmp_path / "snapmgr.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_config({}, {}, str(path))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SNAPMGR_KEEP_DAILY", "many"),
        ("SNAPMGR_KEEP_DAILY", "1e400"),
        ("SNAPMGR_PROGRESS_INTERVAL", "nan"),
        ("SNAPMGR_PROGRESS_INTERVAL", "inf"),
        ("SNAPMGR_PROGRESS_INTERVAL", "-1"),
        ("SNAPMGR_COMPRESSION_LEVEL", "1e400"),
        ("SNAPMGR_ORPHAN_GRACE", "0s"),
        ("SNAPMGR_POINTER_FILE", " "),
    ],
)
def test_bad_env_value_names_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_config({}, {variable: value}, None)


def test_good_edge_values_are_accepted(tmp_path: Path) -> None:
    """The bounds themselves, and forms that mean the same number."""
    text = (
        "progress_interval = 86400\ncompression_level = 3.0\norphan_grace = \"9999y\"\n"
        "[retention]\nkeep_daily = -1\nkeep_last = 2147483647\n"
    )
    config = load_config({}, {}, write(tmp_path, text))
    assert config.progress_interval == 86400
    assert config.compression_level == 3
    assert config.retention.keep_daily == -1 and config.retention.keep_last == 2**31 - 1
    assert str(config.orphan_grace) == "9999y"


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({}, {}, str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config({}, {}, write(tmp_path, "label = \n"))


def test_example_file_is_valid_and_documents_every_key() -> None:
    config = load_config({}, {}, str(EXAMPLE))
    assert config.compression == "gzip"
    text = EXAMPLE.read_text()
    for key in KEYS:
        assert re.search(rf"^#? ?{key} = ", text, re.MULTILINE), f"{key} undocumented"
    parsed = tomllib.loads(text)
    assert set(parsed) <= set(KEYS) | {"retention", "stores"}


def test_redacted_output_hides_passwords_and_secret_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[stores.s3]\nurl = "s3://bucket/p"\naws_secret_access_key = "AKSECRETVALUE"\n'
        'sse_kms_key_id = "arn:kms:key"\n',
    )
    config = load_config({}, {"DATABASE_URL": "postgresql://app:Hunter2pw@db/app"}, path)
    shown = str(config.redacted())
    assert "Hunter2pw" not in shown and "AKSECRETVALUE" not in shown
    assert "app:***@db" in shown
    assert "arn:kms:key" in shown


def test_store_specs_resolve_to_backends(tmp_path: Path) -> None:
    path = write(tmp_path, '[stores.offsite]\nurl = "s3://b/app"\nregion = "eu-west-1"\n')
    config = load_config({}, {}, path)
    kinds = {
        s.name: (s.kind, s.url)
        for s in config.selected_stores(
            ["offsite", "/var/x", "file:///y", "memory://z", "fsspec+s3://b/q", "gcs://g/p"]
        )
    }
    assert kinds == {
        "offsite": ("s3", "s3://b/app"),
        "/var/x": ("local", "/var/x"),
        "file:///y": ("local", "file:///y"),
        "memory://z": ("fsspec", "memory://z"),
        "fsspec+s3://b/q": ("fsspec", "s3://b/q"),
        "gcs://g/p": ("fsspec", "gcs://g/p"),
    }
    assert config.stores["offsite"].options == {"region": "eu-west-1"}


def test_example_store_tables_are_accepted_by_their_backends(tmp_path: Path) -> None:
    """Uncomment the example's store tables: every option they show must be valid."""
    from snapmgr.registry import open_backend

    text = EXAMPLE.read_text()
    _, stores = text.split("# Stores. The table name", 1)
    lines = []
    for line in stores.splitlines():
        body = line[2:] if line.startswith("# ") else line
        # `profile` must name a real AWS profile, which this machine has none of.
        skipped = body.startswith(("backend =", "profile ="))
        if re.match(r"^(\[stores\.\w+\]|\w+ = )", body) and not skipped:
            lines.append(body)
    path = write(tmp_path, "\n".join(lines) + "\n")
    config = load_config({}, {}, path)
    assert {"local", "s3", "gcs"} <= set(config.stores)
    for name in ("local", "s3"):
        store = config.stores[name]
        open_backend(store.kind, store.url, store.options)
    assert config.stores["s3"].options["sse"] == "aws:kms"


def test_two_stores_on_one_location_with_different_settings_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[stores.aws]\nurl = "s3://b/db"\n[stores.r2]\nurl = "s3://b/db"\n'
        'endpoint_url = "https://r2.example"\n',
    )
    config = load_config({}, {}, path)
    with pytest.raises(ConfigError, match="aws and r2"):
        config.selected_stores(["aws", "r2"])
    assert len(config.selected_stores(["/x", "/x"])) == 1


def test_inline_store_names_never_carry_credentials() -> None:
    config = load_config({}, {}, None)
    (store,) = config.selected_stores(["sftp://backup:TopSecretPw@host/snaps"])
    assert "TopSecretPw" not in store.name
    assert "TopSecretPw" in store.url  # the backend still gets what the user gave


def test_compression_level_must_be_a_number(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="compression_level"):
        load_config({}, {}, write(tmp_path, "compression_level = true\n"))
