"""Admin operations of the Service (the CLI's `egaku users add`, `keys create`, `credits grant`)."""

from __future__ import annotations

from egaku.store import Store
from egaku.store.ids import iso
from egaku.store.store import KEY_PREFIX


class AdminMixin:
    store: Store

    def add_user(self, name: str, *, admin: bool = False) -> dict:
        user = self.store.add_user(name, is_admin=admin)
        return self._user_dict(user)

    def list_users(self) -> list[dict]:
        return [self._user_dict(u) for u in self.store.list_users()]

    def create_key(self, user_name: str, label: str = "") -> tuple[dict, str]:
        """(key info, plaintext "egk_..."): the plaintext is shown this once and stored only hashed."""
        user = self.store.user_by_name(user_name)
        key, plaintext = self.store.create_key(user.id, label)
        return self._key_dict(key, user.name), plaintext

    def list_keys(self, user_name: str | None = None) -> list[dict]:
        users = {u.id: u.name for u in self.store.list_users()}
        user_id = self.store.user_by_name(user_name).id if user_name else None
        return [self._key_dict(k, users.get(k.user_id, "")) for k in self.store.list_keys(user_id)]

    def revoke_key(self, key_id: str) -> None:
        self.store.revoke_key(key_id)

    def grant_credits(self, user_name: str, amount: int, memo: str = "") -> int:
        """Grant credits (negative: take back); returns the new balance."""
        return self.store.grant(self.store.user_by_name(user_name).id, amount, memo)

    def _user_dict(self, user) -> dict:
        return {"id": user.id, "name": user.name, "is_admin": user.is_admin, "created_at": iso(user.created_at),
                "balance": self.store.balance(user.id)}

    @staticmethod
    def _key_dict(key, user_name: str) -> dict:
        return {"id": key.id, "user": user_name, "label": key.label, "prefix": f"{KEY_PREFIX}{key.prefix}",
                "created_at": iso(key.created_at), "last_used_at": iso(key.last_used_at),
                "revoked_at": iso(key.revoked_at)}
