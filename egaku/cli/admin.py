"""Accounts from the command line: `egaku users`, `egaku keys`, `egaku credits` (the server's admin CLI).

    egaku users add alice [--admin]
    egaku users list
    egaku keys create alice --label laptop        # prints the key once: it is stored only hashed
    egaku keys list alice
    egaku keys revoke KEY_ID
    egaku credits grant alice 500 --memo "welcome"
    egaku credits balance alice

Every command takes --db URL (default: the SQLite file in $EGAKU_HOME, as `egaku serve` uses).
None of them loads a model or imports torch.
"""

from __future__ import annotations

import argparse

from egaku.cli.common import print_json, print_table


def _db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", help="database URL (default: $EGAKU_HOME/egaku.db)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _group(subparsers, name: str, help_text: str):
    p = subparsers.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(run=None, parser=p)
    return p.add_subparsers(title="commands", dest=f"{name}_command", metavar="COMMAND")


def register(subparsers) -> None:
    users = _group(subparsers, "users", "manage the service's users")
    p = users.add_parser("add", help="add a user")
    p.add_argument("name")
    p.add_argument("--admin", action="store_true", help="an administrator")
    _db(p)
    p.set_defaults(run=users_add)
    p = users.add_parser("list", help="list users with their balances")
    _db(p)
    p.set_defaults(run=users_list)

    keys = _group(subparsers, "keys", "manage API keys")
    p = keys.add_parser("create", help="create an API key for a user (shown once)")
    p.add_argument("user")
    p.add_argument("--label", default="", help="a note to recognise the key by")
    _db(p)
    p.set_defaults(run=keys_create)
    p = keys.add_parser("list", help="list a user's keys (prefixes only)")
    p.add_argument("user")
    _db(p)
    p.set_defaults(run=keys_list)
    p = keys.add_parser("revoke", help="revoke a key by its id")
    p.add_argument("key_id")
    _db(p)
    p.set_defaults(run=keys_revoke)

    credits = _group(subparsers, "credits", "grant credits and show balances")
    p = credits.add_parser("grant", help="grant credits to a user (negative to take back)")
    p.add_argument("user")
    p.add_argument("amount", type=int)
    p.add_argument("--memo", default="", help="why (kept in the ledger)")
    _db(p)
    p.set_defaults(run=credits_grant)
    p = credits.add_parser("balance", help="a user's balance")
    p.add_argument("user")
    _db(p)
    p.set_defaults(run=credits_balance)


def _service(args):
    from egaku.jobs.service import Service

    return Service.create(db_url=args.db, workers=0)


def _user(service, name: str) -> dict:
    from egaku.jobs.types import NotFound

    for user in service.list_users():
        if user["name"] == name:
            return user
    raise NotFound(f"no user named '{name}'")


def users_add(args) -> int:
    user = _service(args).add_user(args.name, admin=args.admin)
    print_json(user) if args.json else print(f"added user {user['name']} (id {user['id']})")
    return 0


def users_list(args) -> int:
    users = _service(args).list_users()
    if args.json:
        print_json(users)
    else:
        print_table([[u["name"], u["id"], "yes" if u["is_admin"] else "", str(u["balance"])] for u in users],
                    ["NAME", "ID", "ADMIN", "BALANCE"])
    return 0


def keys_create(args) -> int:
    info, plaintext = _service(args).create_key(args.user, args.label)
    if args.json:
        print_json({**info, "key": plaintext})
    else:
        print(plaintext)
        from egaku.cli.common import note

        note(f"key {info['id']} for {info['user']}: shown this once; it is stored only as a hash")
    return 0


def keys_list(args) -> int:
    service = _service(args)
    _user(service, args.user)
    keys = service.list_keys(args.user)
    if args.json:
        print_json(keys)
    else:
        print_table([[k["id"], k["prefix"] + "...", k["label"], k["created_at"] or "", k["last_used_at"] or "",
                      "revoked" if k["revoked_at"] else "active"] for k in keys],
                    ["ID", "KEY", "LABEL", "CREATED", "LAST USED", "STATE"])
    return 0


def keys_revoke(args) -> int:
    _service(args).revoke_key(args.key_id)
    print(f"revoked key {args.key_id}")
    return 0


def credits_grant(args) -> int:
    balance = _service(args).grant_credits(args.user, args.amount, args.memo)
    print_json({"user": args.user, "granted": args.amount, "balance": balance}) if args.json else print(
        f"granted {args.amount} credits to {args.user}; balance {balance}")
    return 0


def credits_balance(args) -> int:
    user = _user(_service(args), args.user)
    print_json({"user": user["name"], "balance": user["balance"]}) if args.json else print(user["balance"])
    return 0
