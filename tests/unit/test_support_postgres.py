"""The throwaway PostgreSQL cluster works, as root in CI too, through SQLAlchemy + psycopg 3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support import postgres as pg


@pytest.mark.postgres
def test_fresh_database_accepts_sql_over_the_unix_socket(
    pg_cluster: pg.PostgresCluster, pg_database: str
) -> None:
    url = pg_cluster.url(pg_database)
    assert url.startswith(f"postgresql+psycopg://{pg_cluster.superuser}@/{pg_database}?host=/")

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
            conn.execute(sa.text("create table t (id integer primary key, name text not null)"))
            conn.execute(sa.text("insert into t (id, name) values (1, 'a'), (2, 'b')"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("select count(*) from t")).scalar_one() == 2
            settings = dict(
                conn.execute(
                    sa.text(
                        "select name, setting from pg_settings where name in "
                        "('listen_addresses', 'fsync', 'max_connections', 'server_version_num')"
                    )
                ).all()
            )
    finally:
        engine.dispose()

    assert settings["listen_addresses"] == ""  # Unix socket only: no port to collide on
    assert settings["fsync"] == "off"
    assert settings["max_connections"] == "200"
    assert int(settings["server_version_num"]) >= 150000


@pytest.mark.postgres
def test_each_database_is_separate(pg_cluster: pg.PostgresCluster, pg_database: str) -> None:
    other = pg_cluster.create_database()
    try:
        assert other != pg_database
        engine = sa.create_engine(pg_cluster.url(other))
        try:
            with engine.connect() as conn:
                tables = conn.execute(
                    sa.text("select count(*) from pg_tables where schemaname = 'public'")
                ).scalar_one()
        finally:
            engine.dispose()
        assert tables == 0
    finally:
        pg_cluster.drop_database(other)


@pytest.mark.postgres
def test_server_runs_unprivileged_in_its_own_folder(pg_cluster: pg.PostgresCluster) -> None:
    data_dir = pg_cluster.data_dir
    assert data_dir.is_dir()
    assert Path(str(pg_cluster.socket_dir)).parent == Path(pg.DEFAULT_BASE_DIR)
    owner = data_dir.stat().st_uid
    if os.geteuid() == 0:
        assert owner != 0, "PostgreSQL must not run as root"
    pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    assert os.stat(f"/proc/{pid}").st_uid == owner


def test_db_url_gives_a_usable_database(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (id integer primary key)"))
            conn.execute(sa.text("insert into t (id) values (1)"))
            assert conn.execute(sa.text("select count(*) from t")).scalar_one() == 1
    finally:
        engine.dispose()
