"""The case database's schema versions (Alembic); applied by ``bmc cases init`` / ``upgrade``."""
