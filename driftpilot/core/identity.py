"""Who is acting: one rule for principals, and for untrusted labels shown to people and LLMs.

A principal (requester, approver, actor) is normalised once, at every entry point: Unicode
NFKC, then casefold, then strip. Names that end up empty, or that carry control, format
(zero-width, bidi) or other invisible characters are refused: ``"ann\\u200b"`` is not a new
person. ``same_person`` is the only answer to "is this the same principal?".
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from driftpilot.core.errors import InvalidPrincipal

MAX_PRINCIPAL = 200
Role = Literal["viewer", "operator", "approver", "admin"]
# Each role includes the ones before it: an approver may also start runs, an admin everything.
ROLES: tuple[Role, ...] = ("viewer", "operator", "approver", "admin")
# Cc control, Cf format (zero-width, bidi marks, BOM), Co private use, Cs surrogates,
# Cn unassigned, Zl/Zp line and paragraph separators.
_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"}


def normalize_principal(name: str | None) -> str:
    """The canonical form of a principal name.

    Raises:
        InvalidPrincipal: empty or blank, longer than 200 characters, or containing control,
            zero-width or other invisible characters.
    """
    if name is None:
        raise InvalidPrincipal("a principal name is required")
    bad = sorted(
        {f"U+{ord(c):04X}" for c in name if unicodedata.category(c) in _FORBIDDEN_CATEGORIES}
    )
    if bad:
        raise InvalidPrincipal(
            f"principal name contains invisible or control characters ({', '.join(bad)})"
        )
    canonical = unicodedata.normalize("NFKC", name).casefold().strip()
    # NFKC can fold a visible character into one of the forbidden kind; check once more.
    if any(_invisible(c) for c in canonical):
        raise InvalidPrincipal("principal name normalises to invisible characters")
    if not canonical:
        raise InvalidPrincipal("principal name is empty or blank")
    if len(canonical) > MAX_PRINCIPAL:
        raise InvalidPrincipal(f"principal name is longer than {MAX_PRINCIPAL} characters")
    return canonical


def _invisible(char: str) -> bool:
    return unicodedata.category(char) in _FORBIDDEN_CATEGORIES


def has_role(role: str, needed: Role) -> bool:
    """Whether a key with ``role`` may do what ``needed`` may (unknown roles may nothing)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def same_person(a: str, b: str) -> bool:
    """Whether two principal names denote the same person under the one identity rule."""
    return normalize_principal(a) == normalize_principal(b)


_UNSAFE = re.compile(r"[^A-Za-z0-9._:+-]+")


def safe_label(text: str, max_len: int = 64) -> str:
    """An untrusted label (a file stem, a batch id, a foreign column name) reduced to
    ``[A-Za-z0-9._:+-]``, runs of anything else become ``_``, cut to ``max_len``.

    Labels end up in file names, audit rows and LLM messages: none of them may carry
    instructions, paths or invisible characters.
    """
    cleaned = _UNSAFE.sub("_", unicodedata.normalize("NFKC", text)).strip("._")
    if len(cleaned) > max_len:
        cleaned = cleaned[: max_len - 9] + "~" + _digest(text)
    return cleaned or "unnamed"


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]
