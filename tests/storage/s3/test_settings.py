"""`[recordings]`: what a gateway.toml may say about object storage, and what it may not."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import ConfigError, load_config
from storage.objectstore import as_location, parse_size

BASE = '[gateway]\ndata_dir = "data"\n'


def config_with(tmp_path: Path, recordings: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(BASE + recordings)
    return path


def test_without_a_url_recordings_stay_on_the_local_disk(tmp_path):
    assert load_config(config_with(tmp_path, "")).recordings is None
    assert load_config(config_with(tmp_path, "[recordings]\n")).recordings is None


def test_the_settings_are_read_with_paths_relative_to_the_file(tmp_path):
    settings = load_config(
        config_with(
            tmp_path,
            '[recordings]\nurl = "s3://audit-bucket/hoop/"\nendpoint = "https://s3.example"\n'
            'region = "eu-west-1"\naccess_key_env = "K"\nsecret_key_env = "S"\n'
            'spool_dir = "spool"\nspool_limit = "2GiB"\n',
        )
    ).recordings
    assert settings is not None
    assert (settings.bucket, settings.prefix) == ("audit-bucket", "hoop")
    assert settings.spool_dir == (tmp_path / "spool").resolve()
    assert settings.spool_limit == 2 * 1024**3
    url = settings.location_of("ab" * 16, 1_764_000_000_000_000)
    assert url == f"s3://audit-bucket/hoop/2025/11/24/{'ab' * 16}.hrec"
    assert settings.holds(url) and not settings.holds("s3://other/hoop/x.hrec")


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('secret_key = "hunter2"', "recordings.secret_key", "credentials never go in the file"),
        ('access_key = "AKIA"', "recordings.access_key", "credentials never go in the file"),
        ('url = "s3://b/p"\nbukcet = "x"', "recordings.bukcet", "unknown key"),
        ('url = "http://b/p"', "recordings.url", "s3://bucket/prefix"),
        ('url = "s3://B_/p"', "recordings.url", "not a valid bucket name"),
        ('url = "s3://bucket"\nendpoint = "s3.example"', "recordings.endpoint", "http"),
        ('url = "s3://bucket"\nspool_limit = "lots"', "recordings.spool_limit", "a size"),
    ],
)
def test_a_bad_setting_names_its_key(tmp_path, text, key, problem):
    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tmp_path, f"[recordings]\n{text}\n"))
    message = str(caught.value)
    assert key in message and problem in message
    assert "hunter2" not in message  # a credential put in the file is not repeated


def test_sizes_and_folded_urls():
    assert parse_size(1000) == 1000
    assert parse_size("512MiB") == 512 * 1024**2
    assert parse_size("1.5 GB") == 1_500_000_000
    # Path("s3://b/k") folds the slashes; the reader gets the URL back
    assert as_location(Path("s3://b/k/x.hrec")) == "s3://b/k/x.hrec"
    assert as_location(Path("/local/x.hrec")) == "/local/x.hrec"
