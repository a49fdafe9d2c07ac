"""The Optuna storage: opened and checked before a search writes anything, errors as one clear line."""

from __future__ import annotations

import optuna
import sqlalchemy.exc

from search.core.layout import StoreError, first_line

# What opening or using an RDB storage raises for a bad URL, a missing driver, an unwritable file or a server
# that does not answer (Optuna wraps some SQLAlchemy errors in StorageInternalError).
STORAGE_ERRORS = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, ImportError, OSError)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage at `url` (created when new), or a StoreError that names it and says what to check."""
    # SQLite: wait for a lock held by a dashboard or another reader instead of failing at once. A server: test each
    # pooled connection before use, so a database restarted during a long search costs a reconnect, not the search.
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except STORAGE_ERRORS as exc:
        raise StoreError(f"cannot open the Optuna storage {url} ({first_line(exc)}); check that the path exists and "
                         "is writable, that the URL is right (sqlite:////abs/path.db, postgresql://user@host/db), "
                         "that its driver is installed and its server runs") from None
