"""Password users of the chat: ``driftpilot users add NAME --role ROLE``.

A user's name is a principal under the one identity rule (``Ann`` and `` ann `` are one user)
and their role is one of the API key roles. Only a salted scrypt hash of the password is kept
(a fresh 16-byte salt per password, n=2**14, r=8, p=1), and passwords are compared in
constant time; an unknown name costs the same hashing as a wrong password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from driftpilot.core.errors import ConfigError, InvalidPrincipal, NotFound
from driftpilot.core.identity import ROLES, normalize_principal
from driftpilot.store import AuditStore
from driftpilot.store.audit import now
from driftpilot.store.models import User

MIN_PASSWORD = 8
MAX_PASSWORD = 1024
_N, _R, _P = 2**14, 8, 1
_DUMMY = f"scrypt${_N}${_R}${_P}${'00' * 16}${'00' * 32}"


@dataclass(frozen=True)
class UserView:
    """A password user as shown to people (never the hash)."""

    name: str
    role: str
    created_at: str
    disabled: bool


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` of ``password`` (hex), with a new random salt by default."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a stored ``hash_password`` value (constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(digest) // 2,
        )
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def _check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ConfigError(f"a password has at most {MAX_PASSWORD} characters")


def _view(row: User) -> UserView:
    return UserView(
        name=row.name, role=row.role, created_at=row.created_at, disabled=bool(row.disabled_at)
    )


def add_user(store: AuditStore, name: str, role: str, password: str) -> UserView:
    """Create a password user.

    Raises:
        InvalidPrincipal: the name is empty, blank or has invisible characters.
        ConfigError: unknown role, a password too short or too long, or the user exists.
    """
    principal = normalize_principal(name)
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    _check_new_password(password)
    try:
        store.get(User, principal)
    except NotFound:
        pass
    else:
        raise ConfigError(f"user {principal!r} already exists")
    stamp = now()
    row = store.add(
        User(
            name=principal,
            role=role,
            password_hash=hash_password(password),
            created_at=stamp,
            updated_at=stamp,
            disabled_at=None,
        )
    )
    return _view(row)


def list_users(store: AuditStore) -> list[UserView]:
    """Every live password user, by name."""
    return [_view(r) for r in store.list_rows(User, order=User.name) if not r.disabled_at]


def get_user(store: AuditStore, name: str) -> UserView | None:
    """The live user of this name (None: unknown, disabled or an invalid name)."""
    try:
        row = store.get(User, normalize_principal(name))
    except (NotFound, InvalidPrincipal):
        return None
    return None if row.disabled_at else _view(row)


def verify_user(store: AuditStore, name: str, password: str) -> UserView | None:
    """The live user whose name and password these are (None otherwise)."""
    try:
        row: User | None = store.get(User, normalize_principal(name))
    except (NotFound, InvalidPrincipal):
        row = None
    ok = check_password(password[:MAX_PASSWORD], row.password_hash if row else _DUMMY)
    if row is None or not ok or row.disabled_at:
        return None
    return _view(row)
