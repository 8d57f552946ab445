"""Alembic, driven from the installed package so `optline migrate` works from any folder."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.settings import PROJECT_ROOT

ALEMBIC_DIR = PROJECT_ROOT / "alembic"
VERSION_TABLE = "alembic_version"  # Alembic's default; alembic/env.py does not rename it


def alembic_config(url: str) -> Config:
    """An Alembic config for `url`, with the project's migrations."""
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    # ConfigParser treats % as interpolation; URLs may carry %-escapes.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Migrate the database at `url` to head, creating the SQLite file's folder if needed."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")
    if url.startswith("sqlite"):
        # WAL once, here, while nobody else writes: switching later needs an exclusive lock.
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        finally:
            engine.dispose()


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    """The newest migration shipped with this code (read once: it cannot change under a running process)."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    """The migration the database is at (None when never migrated).

    Read from alembic_version directly: Alembic's MigrationContext logs two INFO lines each
    time it is made, and /readyz asks on every probe.
    """
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
