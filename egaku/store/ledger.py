"""Credits: a double-entry ledger plus holds. Functions take a Session already in a write transaction.

Every money change locks the user's account row first (PostgreSQL `SELECT ... FOR UPDATE`; on
SQLite the write transaction itself holds the database lock from `BEGIN IMMEDIATE`), so two
requests for one user run one after the other and a balance read is still true when it is used.

    balance  = sum(user's ledger entries) - sum(user's active holds)
    grant    : grants -amount, user +amount              (one transaction of 2 entries)
    hold     : a row reserving `cost` for a job          (refused if balance < cost)
    settle   : hold -> settled; user -cost, revenue +cost
    release  : hold -> released (a refund: no entries)
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from egaku.store.errors import InsufficientCredits, NotFound
from egaku.store.ids import new_id, utcnow
from egaku.store.schema import Account, AccountKind, Hold, HoldState, LedgerEntry


def user_account(s: Session, user_id: str, *, lock: bool = True) -> Account:
    """The user's account row, locked for the rest of the transaction when `lock`."""
    query = select(Account).where(Account.user_id == user_id)
    if lock:
        query = query.with_for_update()
    account = s.execute(query).scalar_one_or_none()
    if account is None:
        raise NotFound(f"no account for user {user_id}")
    return account


def system_account(s: Session, kind: AccountKind) -> Account:
    return s.execute(select(Account).where(Account.name == kind.value)).scalar_one()


def open_account(s: Session, user_id: str) -> Account:
    account = Account(name=f"user:{user_id}", kind=AccountKind.USER.value, user_id=user_id, created_at=utcnow())
    s.add(account)
    s.flush()
    return account


def posted(s: Session, account_id: int) -> int:
    """Sum of the account's ledger entries."""
    return int(s.execute(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                         .where(LedgerEntry.account_id == account_id)).scalar_one())


def held(s: Session, user_id: str) -> int:
    """Sum of the user's active holds."""
    return int(s.execute(select(func.coalesce(func.sum(Hold.amount), 0))
                         .where(Hold.user_id == user_id, Hold.state == HoldState.ACTIVE.value)).scalar_one())


def balance(s: Session, user_id: str, *, lock: bool = False) -> int:
    """What the user can spend: posted entries minus active holds."""
    account = user_account(s, user_id, lock=lock)
    return posted(s, account.id) - held(s, user_id)


def post(s: Session, legs: list[tuple[int, int]], *, kind: str, job_id: str | None = None, memo: str = "") -> str:
    """Write one balanced transaction: `legs` = [(account_id, amount)], amounts summing to 0."""
    if len(legs) < 2 or sum(amount for _, amount in legs) != 0:
        raise ValueError(f"unbalanced ledger transaction {legs}")
    txn, now = new_id(), utcnow()
    for account_id, amount in legs:
        s.add(LedgerEntry(txn_id=txn, account_id=account_id, amount=int(amount), kind=kind,
                          job_id=job_id, memo=memo, created_at=now))
    s.flush()
    return txn


def grant(s: Session, user_id: str, amount: int, memo: str = "") -> int:
    """Move `amount` credits from the grants account to the user (negative: take back); new balance."""
    account = user_account(s, user_id)
    current = posted(s, account.id) - held(s, user_id)
    if current + amount < 0:
        raise InsufficientCredits(f"cannot take back {-amount} credits: the balance is {current}",
                                  cost=-amount, balance=current)
    post(s, [(system_account(s, AccountKind.GRANTS).id, -amount), (account.id, amount)], kind="grant", memo=memo)
    return current + amount


def hold(s: Session, user_id: str, job_id: str, amount: int) -> int:
    """Reserve `amount` for job `job_id`; raises InsufficientCredits if the balance is short. New balance."""
    account = user_account(s, user_id)
    current = posted(s, account.id) - held(s, user_id)
    if current < amount:
        raise InsufficientCredits(f"this job costs {amount} credits but the balance is {current}",
                                  cost=amount, balance=current)
    now = utcnow()
    s.add(Hold(job_id=job_id, user_id=user_id, amount=int(amount), state=HoldState.ACTIVE.value,
               created_at=now, updated_at=now))
    s.flush()
    return current - amount


def _close_hold(s: Session, job_id: str, state: HoldState) -> Hold | None:
    """Active hold of the job -> `state` (only once, even if two transactions race); the hold or None."""
    found = s.execute(select(Hold).where(Hold.job_id == job_id)).scalar_one_or_none()
    if found is None or found.state != HoldState.ACTIVE.value:
        return None
    user_account(s, found.user_id)  # lock order: the account row, then the hold
    done = s.execute(update(Hold).where(Hold.id == found.id, Hold.state == HoldState.ACTIVE.value)
                     .values(state=state.value, updated_at=utcnow()))
    if done.rowcount != 1:
        return None
    return found


def settle(s: Session, job_id: str) -> int:
    """Charge the job's held credits (user -> revenue); returns the amount charged (0 if no active hold)."""
    found = _close_hold(s, job_id, HoldState.SETTLED)
    if found is None:
        return 0
    account = user_account(s, found.user_id)
    post(s, [(account.id, -found.amount), (system_account(s, AccountKind.REVENUE).id, found.amount)],
         kind="settle", job_id=job_id, memo="job")
    return int(found.amount)


def release(s: Session, job_id: str) -> int:
    """Refund the job's held credits (the hold just ends); returns the amount released."""
    found = _close_hold(s, job_id, HoldState.RELEASED)
    return 0 if found is None else int(found.amount)


def ledger_total(s: Session) -> int:
    """Sum of every ledger entry: always 0 in a consistent ledger."""
    return int(s.execute(select(func.coalesce(func.sum(LedgerEntry.amount), 0))).scalar_one())


def unbalanced_transactions(s: Session) -> list[str]:
    """Transaction ids whose entries do not sum to 0 (empty in a consistent ledger)."""
    rows = s.execute(select(LedgerEntry.txn_id).group_by(LedgerEntry.txn_id)
                     .having(func.sum(LedgerEntry.amount) != 0)).scalars()
    return list(rows)
