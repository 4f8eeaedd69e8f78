"""Numbered SQL migrations, applied in order by :func:`candlestack.db.migrate`."""
