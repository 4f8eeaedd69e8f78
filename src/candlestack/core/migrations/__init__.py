"""Numbered SQL migrations, applied in order by :func:`candlestack.core.db.migrate`."""
