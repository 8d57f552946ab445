"""The migrations build exactly the schema app/models.py describes, on both engines."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from app.models import metadata

def test_migrations_make_the_schema_the_models_describe(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diff == [], "app/models.py and alembic/versions disagree: add a migration"
