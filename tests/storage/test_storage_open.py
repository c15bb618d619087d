"""Choosing the backend from the settings (``EPISODIC_KOOPMAN_DATABASE``)."""

from __future__ import annotations

import pytest

from service.settings import Settings
from service.storage import SqliteStorage, open_storage


def test_empty_database_means_sqlite_in_the_data_dir(tmp_path):
    storage = open_storage(Settings(data_dir=tmp_path))
    assert isinstance(storage, SqliteStorage) and storage.embedded
    assert storage.describe() == str(tmp_path / "observations.sqlite3")


def test_a_postgresql_url_from_the_environment_names_no_password(monkeypatch, tmp_path):
    pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")
    monkeypatch.setenv("EPISODIC_KOOPMAN_DATABASE", "postgresql://me:secret@db.internal:6543/ek")
    storage = open_storage(Settings(data_dir=tmp_path))
    assert not storage.embedded  # no data-dir lock: fencing keeps writers apart
    assert storage.describe() == "postgresql://db.internal:6543/ek"


def test_another_scheme_is_refused(tmp_path):
    with pytest.raises(ValueError, match="postgresql:// URL, not mysql:"):
        open_storage(Settings(data_dir=tmp_path, database="mysql://db/ek"))
