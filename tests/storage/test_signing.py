"""The recording signing key and the mask key: made once per data directory, whoever asks
first, and never seen half-written."""

from __future__ import annotations

import threading
from pathlib import Path

from storage.signing import key_id, load_or_create_mask_key, load_or_create_signing_key


def _all_at_once(count: int, work: object) -> list[object]:
    barrier = threading.Barrier(count)
    results: list[object] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(work())  # type: ignore[operator]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def test_sessions_starting_together_on_a_new_data_dir_share_one_signing_key(
    tmp_path: Path,
) -> None:
    for round_ in range(20):
        data = tmp_path / f"data{round_}"
        keys = _all_at_once(8, lambda data=data: load_or_create_signing_key(data))
        ids = {key_id(key.public_key()) for key in keys}  # type: ignore[attr-defined]
        assert len(ids) == 1
        on_disk = load_or_create_signing_key(data)
        assert ids == {key_id(on_disk.public_key())}
        assert (data / "recording_key").stat().st_mode & 0o777 == 0o600
        assert sorted(path.name for path in data.iterdir()) == [
            "recording_key",
            "recording_key.pub",
        ]


def test_a_replaced_signing_key_file_is_read_again(tmp_path: Path) -> None:
    first = load_or_create_signing_key(tmp_path)
    (tmp_path / "recording_key").unlink()
    (tmp_path / "recording_key.pub").unlink()
    second = load_or_create_signing_key(tmp_path)
    assert key_id(second.public_key()) != key_id(first.public_key())
    assert key_id(load_or_create_signing_key(tmp_path).public_key()) == key_id(second.public_key())


def test_the_mask_key_is_made_once_whoever_asks_first(tmp_path: Path) -> None:
    keys = _all_at_once(8, lambda: load_or_create_mask_key(tmp_path))
    assert len(set(keys)) == 1 and len(keys[0]) == 32  # type: ignore[arg-type]
