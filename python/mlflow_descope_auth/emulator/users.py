"""The emulator's users: the built-in demo users, a JSON users file, and the live directory.

Demo users (login id -> roles, email, name, access key), all members of tenant ``T2demo``:

============  ==========  ===================  ==============  =========================================
login id      roles       email                name            access key (demo value, never a secret)
============  ==========  ===================  ==============  =========================================
``admin``     admin       admin@example.com    Ada Admin       ``K2demo-admin-access-key-0000000000``
``editor``    editor      editor@example.com   Eddie Editor    ``K2demo-editor-access-key-0000000000``
``reader``    reader      reader@example.com   Rita Reader     ``K2demo-reader-access-key-0000000000``
============  ==========  ===================  ==============  =========================================

Users file format (JSON; every field but ``login_id`` is optional)::

    {"users": [
      {"login_id": "alice",
       "user_id": "U2alice",                  // default: a random "U2..." id
       "email": "alice@example.com",
       "name": "Alice",
       "roles": ["editor"],
       "permissions": ["read", "edit"],
       "tenants": {"T2acme": {"roles": ["admin"], "permissions": [], "name": "Acme"}},
       "access_keys": ["K2alice-local-key-0001"]}
    ]}

Bad input raises ``ValueError`` naming the offending field, e.g. ``users[1].roles: must be a list of
strings``. Access keys may hold letters, digits, ``-``, ``_`` and ``.`` only: they travel in
``Authorization: Bearer <project>:<key>``, where a ``:`` or a space would split them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import secrets
import string
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEMO_TENANT_ID = "T2demo"
DEMO_TENANT_NAME = "Demo Tenant"

# login id -> access key. Fixed and public so demos and docs can quote them; they only work against
# an emulator, whose tokens no real deployment trusts.
DEMO_ACCESS_KEYS: dict[str, str] = {
    "admin": "K2demo-admin-access-key-0000000000",
    "editor": "K2demo-editor-access-key-0000000000",
    "reader": "K2demo-reader-access-key-0000000000",
}

_ACCESS_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]{8,512}$")
_TENANT_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_USER_FIELDS = ("login_id", "user_id", "email", "name", "roles", "permissions", "tenants", "access_keys")
_TENANT_FIELDS = ("roles", "permissions", "name")


def new_user_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "U2" + "".join(secrets.choice(alphabet) for _ in range(26))


def access_key_id(access_key: str) -> str:
    """The public id of an access key (what Descope calls ``keyId``); derived so it is stable per key."""
    return "K2" + hashlib.sha256(access_key.encode("utf-8")).hexdigest()[:26]


def _text(value: Any, where: str, *, required: bool = False, limit: int = 256) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(f"{where}: must be a {'non-empty ' if required else ''}string")
    if len(value) > limit or any(ord(c) < 32 for c in value):
        raise ValueError(f"{where}: must be at most {limit} printable characters")
    return value


def _names(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{where}: must be a list of non-empty strings")
    return list(dict.fromkeys(value))


def _tenants(value: Any, where: str) -> tuple[dict[str, dict[str, list[str]]], dict[str, str]]:
    if value is None:
        return {}, {}
    if not isinstance(value, Mapping):
        raise ValueError(f'{where}: must be an object like {{"T2acme": {{"roles": ["admin"]}}}}')
    access: dict[str, dict[str, list[str]]] = {}
    names: dict[str, str] = {}  # only the names given explicitly
    for tenant_id, entry in value.items():
        here = f"{where}.{tenant_id}"
        if not isinstance(tenant_id, str) or not _TENANT_ID_RE.match(tenant_id):
            raise ValueError(f"{here}: a tenant id must be letters, digits, '-', '_' or '.'")
        if entry is None:
            entry = {}
        if not isinstance(entry, Mapping):
            raise ValueError(f'{here}: must be an object like {{"roles": [...], "permissions": [...]}}')
        unknown = sorted(set(entry) - set(_TENANT_FIELDS))
        if unknown:
            raise ValueError(f"{here}.{unknown[0]}: unknown field; allowed: {', '.join(_TENANT_FIELDS)}")
        access[tenant_id] = {
            "roles": _names(entry.get("roles"), f"{here}.roles"),
            "permissions": _names(entry.get("permissions"), f"{here}.permissions"),
        }
        name = _text(entry.get("name"), f"{here}.name")
        if name:
            names[tenant_id] = name
    return access, names


def _access_keys(value: Any, where: str) -> list[str]:
    keys = _names(value, where)
    for i, key in enumerate(keys):
        if not _ACCESS_KEY_RE.match(key):
            raise ValueError(f"{where}[{i}]: 8-512 letters, digits, '-', '_' or '.' only (no ':' or spaces)")
    return keys


@dataclass
class User:
    """A user as the emulator's directory holds it; ``tenants`` is ``{tenant_id: {roles, permissions}}``."""

    login_id: str
    email: str = ""
    name: str = ""
    roles: list[str] = field(default_factory=list)
    permissions: list[str] = field(default_factory=list)
    tenants: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    user_id: str = ""
    access_keys: list[str] = field(default_factory=list)
    tenant_names: dict[str, str] = field(default_factory=dict)
    created_time: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.login_id = _text(self.login_id, "login_id", required=True)
        self.email = _text(self.email, "email")
        if self.email and "@" not in self.email:
            raise ValueError("email: must look like name@domain")
        self.name = _text(self.name, "name")
        self.roles = _names(self.roles, "roles")
        self.permissions = _names(self.permissions, "permissions")
        self.tenants, names = _tenants(self.tenants, "tenants")
        self.tenant_names = {t: names.get(t) or self.tenant_names.get(t) or t for t in self.tenants}
        self.user_id = _text(self.user_id, "user_id", limit=128) or new_user_id()
        self.access_keys = _access_keys(self.access_keys, "access_keys")

    def tenant_claims(self) -> dict[str, dict[str, list[str]]]:
        return copy.deepcopy(self.tenants)


def _demo_user(login_id: str, role: str, name: str, permissions: list[str]) -> User:
    # Fixed ids so a demo user keeps its identity (and its MLflow resources) across emulator restarts.
    return User(
        login_id=login_id,
        user_id=f"U2demo{login_id.capitalize()}".ljust(28, "0"),
        email=f"{login_id}@example.com",
        name=name,
        roles=[role],
        permissions=permissions,
        tenants={DEMO_TENANT_ID: {"roles": [role], "permissions": permissions}},
        tenant_names={DEMO_TENANT_ID: DEMO_TENANT_NAME},
        access_keys=[DEMO_ACCESS_KEYS[login_id]],
    )


def demo_users() -> list[User]:
    """Fresh copies of the three demo users (admin, editor, reader)."""
    return [
        _demo_user("admin", "admin", "Ada Admin", ["read", "edit", "manage"]),
        _demo_user("editor", "editor", "Eddie Editor", ["read", "edit"]),
        _demo_user("reader", "reader", "Rita Reader", ["read"]),
    ]


def users_from_document(document: Any, source: str = "users file") -> list[User]:
    """Users from a parsed users-file document; see the module docstring for the format."""
    if not isinstance(document, Mapping) or not isinstance(document.get("users"), list):
        raise ValueError(f'{source}: users: must be a list, as in {{"users": [{{"login_id": "alice"}}]}}')
    users: list[User] = []
    for i, entry in enumerate(document["users"]):
        where = f"{source}: users[{i}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: must be an object with at least a login_id")
        unknown = sorted(set(entry) - set(_USER_FIELDS))
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown field; allowed: {', '.join(_USER_FIELDS)}")
        try:
            users.append(User(**{k: entry[k] for k in _USER_FIELDS if k in entry and entry[k] is not None}))
        except TypeError as exc:  # e.g. login_id missing
            raise ValueError(f"{where}.login_id: required") from exc
        except ValueError as exc:
            raise ValueError(f"{where}.{exc}") from exc
    try:
        UserDirectory(users)  # duplicate login ids, user ids or access keys are file errors too
    except ValueError as exc:
        raise ValueError(f"{source}: users: {exc}") from exc
    return users


def load_users_file(path: str | os.PathLike[str]) -> list[User]:
    source = f"users file {os.fspath(path)}"
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except OSError as exc:
        raise ValueError(f"{source}: cannot be read ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
    return users_from_document(document, source)


class UserDirectory:
    """The live user records; role changes apply to the next token issued. Safe to use from any thread.

    Readers get deep copies, so a caller can never change a record without going through ``update``.
    """

    def __init__(self, users: Iterable[User]) -> None:
        self._lock = threading.Lock()
        self._by_login: dict[str, User] = {}
        self._key_owner: dict[str, str] = {}
        self._revoked_keys: set[str] = set()
        seen_ids: set[str] = set()
        for user in users:
            if user.login_id in self._by_login:
                raise ValueError(f"login_id: {user.login_id!r} appears twice")
            if user.user_id in seen_ids:
                raise ValueError(f"user_id: {user.user_id!r} appears twice")
            for key in user.access_keys:
                if key in self._key_owner:
                    raise ValueError(f"access_keys: a key of {user.login_id!r} is also another user's key")
                self._key_owner[key] = user.login_id
            seen_ids.add(user.user_id)
            self._by_login[user.login_id] = copy.deepcopy(user)

    def all(self) -> list[User]:
        with self._lock:
            return [copy.deepcopy(u) for u in self._by_login.values()]

    def get(self, login_id: str) -> User | None:
        with self._lock:
            user = self._by_login.get(login_id)
            return copy.deepcopy(user) if user else None

    def find(self, login_id_or_email: str) -> User | None:
        with self._lock:
            user = self._by_login.get(login_id_or_email) or next(
                (u for u in self._by_login.values() if u.email and u.email == login_id_or_email), None
            )
            return copy.deepcopy(user) if user else None

    def by_user_id(self, user_id: str) -> User | None:
        with self._lock:
            user = next((u for u in self._by_login.values() if u.user_id == user_id), None)
            return copy.deepcopy(user) if user else None

    def by_access_key(self, access_key: str) -> User | None:
        """The owner of a live (known, unrevoked) access key."""
        with self._lock:
            owner = self._key_owner.get(access_key)
            if owner is None or access_key in self._revoked_keys:
                return None
            return copy.deepcopy(self._by_login[owner])

    def access_key_for(self, login_id: str) -> str | None:
        with self._lock:
            user = self._by_login.get(login_id)
            if user is None:
                return None
            return next((k for k in user.access_keys if k not in self._revoked_keys), None)

    def revoke_access_keys(self, login_id: str) -> int:
        with self._lock:
            user = self._by_login.get(login_id)
            if user is None:
                raise KeyError(login_id)
            fresh = [k for k in user.access_keys if k not in self._revoked_keys]
            self._revoked_keys.update(fresh)
            return len(fresh)

    def revoke_access_key(self, access_key: str) -> bool:
        with self._lock:
            if access_key not in self._key_owner or access_key in self._revoked_keys:
                return False
            self._revoked_keys.add(access_key)
            return True

    def update(
        self,
        login_id: str,
        *,
        roles: list[str] | None = None,
        permissions: list[str] | None = None,
        tenants: Mapping[str, Any] | None = None,
    ) -> User:
        """Replaces the given fields of a user (validated like a users-file entry); KeyError if unknown."""
        new_roles = _names(roles, "roles") if roles is not None else None
        new_permissions = _names(permissions, "permissions") if permissions is not None else None
        new_tenants = _tenants(tenants, "tenants") if tenants is not None else None
        with self._lock:
            user = self._by_login.get(login_id)
            if user is None:
                raise KeyError(login_id)
            if new_roles is not None:
                user.roles = new_roles
            if new_permissions is not None:
                user.permissions = new_permissions
            if new_tenants is not None:
                access, names = new_tenants
                user.tenants = access
                user.tenant_names = {t: names.get(t) or user.tenant_names.get(t) or t for t in access}
            return copy.deepcopy(user)
