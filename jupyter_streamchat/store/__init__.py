"""Message stores: where every message, partial replies included, is kept."""

from .base import EVERY_USER, LeaseLost, SearchTooCostly, Store, StoreError, local_user
from .records import Append, ConversationRecord, Exchange, HistoryPage, MessageRecord
from .sqlite import SQLiteStore

#: URL scheme -> store class, for ``StreamChatApp.store_url``.
STORES_BY_SCHEME = {scheme: cls for cls in (SQLiteStore,) for scheme in cls.schemes}

# Stores imported on first use: their drivers are optional dependencies (and slow to import).
_LATER = {"postgresql": "postgres", "postgres": "postgres"}


def _postgres_store() -> type:
    try:
        from .postgres import PostgresStore
    except ImportError as e:
        raise ValueError(
            f"a postgresql:// store needs psycopg 3 and psycopg_pool, which are not installed "
            f'({e}): pip install "jupyter-streamchat[postgres]"'
        ) from None
    for scheme in PostgresStore.schemes:
        STORES_BY_SCHEME[scheme] = PostgresStore
    return PostgresStore


def store_from_url(url: str, **kwargs) -> Store:
    from ..redact import without_password

    scheme = url.split(":", 1)[0].lower()
    cls = STORES_BY_SCHEME.get(scheme)
    if cls is None and _LATER.get(scheme) == "postgres":
        cls = _postgres_store()
    if cls is None:
        known = ", ".join(f"{s}://" for s in {**STORES_BY_SCHEME, **_LATER})
        raise ValueError(f"unsupported store URL {without_password(url)!r}; known schemes: {known}")
    return cls.from_url(url, **kwargs)


__all__ = [
    "EVERY_USER",
    "Append",
    "ConversationRecord",
    "Exchange",
    "HistoryPage",
    "LeaseLost",
    "MessageRecord",
    "SQLiteStore",
    "SearchTooCostly",
    "Store",
    "StoreError",
    "local_user",
    "store_from_url",
]
