"""Message stores: where every message, partial replies included, is kept."""

from .base import LeaseLost, SearchTooCostly, Store, StoreError
from .records import Append, ConversationRecord, Exchange, HistoryPage, MessageRecord
from .sqlite import SQLiteStore

#: URL scheme -> store class, for ``StreamChatApp.store_url``.
STORES_BY_SCHEME = {scheme: cls for cls in (SQLiteStore,) for scheme in cls.schemes}


def store_from_url(url: str, **kwargs) -> Store:
    scheme = url.split(":", 1)[0].lower()
    cls = STORES_BY_SCHEME.get(scheme)
    if cls is None:
        known = ", ".join(f"{s}://" for s in STORES_BY_SCHEME)
        raise ValueError(f"unsupported store URL {url!r}; known schemes: {known}")
    return cls.from_url(url, **kwargs)


__all__ = [
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
    "store_from_url",
]
