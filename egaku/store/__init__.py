"""egaku's store: SQLAlchemy tables and Alembic migrations (SQLite default, PostgreSQL by URL),
the credits ledger, the job queue in SQL, and content-addressed image files.

    from egaku.store import Store
    store = Store.open()          # $EGAKU_HOME/egaku.db, migrated to head

Knows nothing of the engine or HTTP.
"""

from egaku.store.blobs import BlobStore
from egaku.store.errors import Conflict, InsufficientCredits, LimitReached, NotFound, StoreUnavailable
from egaku.store.schema import HoldState, JobState, WebhookState
from egaku.store.store import Store

__all__ = ["BlobStore", "Conflict", "HoldState", "InsufficientCredits", "JobState", "LimitReached",
           "NotFound", "Store", "StoreUnavailable", "WebhookState"]
