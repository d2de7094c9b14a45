"""Signed checkpoints of the audit chain heads, on a real SQLite file and real key files."""

import base64
import hashlib
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from driftpilot.core.errors import ConfigError, IntegrityError
from driftpilot.store import AuditStore
from driftpilot.store.audit import GENESIS, promotion_action
from driftpilot.store.checkpoint import (
    ChainHead,
    SignedCheckpoint,
    append_checkpoint,
    chain_heads,
    checkpoint_body,
    key_hash,
    latest_checkpoint,
    load_or_create_key,
    parse_and_verify,
    public_key_line,
    sign_heads,
    sign_note,
    verify_against_checkpoint,
)

ORIGIN = "driftpilot/test"
WHEN = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    return AuditStore(f"sqlite:///{tmp_path / 'a.db'}")


@pytest.fixture
def key(tmp_path: Path) -> Ed25519PrivateKey:
    return load_or_create_key(tmp_path / "keys" / "audit.key")


def fill(store: AuditStore, decision: str = "approve") -> None:
    for i in range(2):
        store.record_decision(
            "r1", "drift_analyst", "retrain", f"reason {i}", {"share": i}, backend="builtin"
        )
    store.record_tool_call("r1", "retraining", "train.fit", {}, {"ok": 1}, ok=True, latency_ms=1)
    store.request_approval("r1", "alice", {}, promotion_action("m", 2, 1))
    store.decide_approval("r1", "bob", decision, "looked at it")


def tamper(store: AuditStore, trigger: str, sql: str) -> None:
    conn = sqlite3.connect(store.url.removeprefix("sqlite:///"))
    conn.execute(f"DROP TRIGGER {trigger}")  # an attacker with file access can do this
    conn.execute(sql)
    conn.commit()
    conn.close()


def test_sign_and_verify_round_trip(store: AuditStore, key: Ed25519PrivateKey) -> None:
    fill(store)
    text = sign_heads(store, key, ORIGIN, "audit-key", at=WHEN)
    for verifier in (key.public_key(), public_key_line(key, "audit-key")):
        checkpoint = parse_and_verify(text, verifier)
        assert checkpoint.origin == ORIGIN and checkpoint.timestamp == WHEN
        assert checkpoint.heads == chain_heads(store)
        assert verify_against_checkpoint(store, checkpoint) == []
    assert checkpoint.heads["approvals"].size == 2
    assert checkpoint.heads["champion_history"] == ChainHead(0, GENESIS)


def test_body_is_a_tlog_checkpoint_with_one_line_per_table(store: AuditStore) -> None:
    fill(store)
    heads = chain_heads(store)
    lines = checkpoint_body(ORIGIN, heads, WHEN).split("\n")
    table_lines = [f"{name} {h.size} {h.head}" for name, h in heads.items()]
    root = hashlib.sha256("".join(f"{line}\n" for line in table_lines).encode()).digest()
    assert lines[0] == ORIGIN
    assert lines[1] == str(sum(h.size for h in heads.values())) == "5"
    assert base64.b64decode(lines[2]) == root
    assert lines[3:-2] == table_lines
    assert lines[-2:] == ["time 2025-06-01T12:00:00Z", ""]


def test_a_tampered_body_fails_the_signature_check(
    store: AuditStore, key: Ed25519PrivateKey
) -> None:
    fill(store)
    text = sign_heads(store, key, ORIGIN, at=WHEN)
    forged = text.replace("\napprovals 2 ", "\napprovals 1 ")
    assert forged != text
    with pytest.raises(IntegrityError, match="signature is invalid"):
        parse_and_verify(forged, key.public_key())
    with pytest.raises(IntegrityError, match="not signed by the audit key"):
        parse_and_verify(text, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(IntegrityError, match="malformed"):
        parse_and_verify(text.replace("\n\n", "\n"), key.public_key())


def test_a_signed_but_inconsistent_body_is_refused(key: Ed25519PrivateKey) -> None:
    body = checkpoint_body(ORIGIN, {"approvals": ChainHead(2, "a" * 64)}, WHEN)
    lying = body.replace(f"{ORIGIN}\n2\n", f"{ORIGIN}\n3\n")
    with pytest.raises(IntegrityError, match="inconsistent"):
        parse_and_verify(sign_note(lying, key, "k"), key.public_key())


def test_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "home" / "audit.key"
    first = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in path.read_bytes()
    again = load_or_create_key(path)
    assert public_key_line(again, "k") == public_key_line(first, "k")
    assert [p.name for p in path.parent.iterdir()] == ["audit.key"]  # no temporary left


def test_a_group_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"0644.*chmod 600"):
        load_or_create_key(path)
    path.chmod(0o600)
    load_or_create_key(path)


def test_deleted_last_approval_is_caught_by_the_checkpoint_not_by_the_chain(
    store: AuditStore, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    fill(store)
    log = tmp_path / "checkpoints.jsonl"
    append_checkpoint(log, sign_heads(store, key, ORIGIN, at=WHEN))
    tamper(store, "approvals_no_delete", "DELETE FROM approvals WHERE id = 2")

    assert store.verify().ok  # a truncated chain is still a valid chain
    latest = latest_checkpoint(log)
    assert latest is not None
    problems = verify_against_checkpoint(store, latest.verify(key.public_key()))
    assert problems == [
        "table approvals has 1 rows, the checkpoint of 2025-06-01T12:00:00Z recorded 2: "
        "newest rows were deleted"
    ]


def test_rewritten_last_row_is_caught(store: AuditStore, key: Ed25519PrivateKey) -> None:
    fill(store, decision="reject")
    checkpoint = parse_and_verify(sign_heads(store, key, ORIGIN), key.public_key())
    # Replace the rejection with an approval: a valid chain of the same length.
    tamper(store, "approvals_no_delete", "DELETE FROM approvals WHERE id = 2")
    store.decide_approval("r1", "mallory", "approve")

    assert store.verify().ok
    [problem] = verify_against_checkpoint(store, checkpoint)
    assert problem.startswith("table approvals row #2 does not match the checkpoint of")
    assert problem.endswith("the row was rewritten")


def test_a_signed_checkpoint_is_verified_before_it_is_compared(
    store: AuditStore, key: Ed25519PrivateKey
) -> None:
    fill(store)
    signed = SignedCheckpoint(sign_heads(store, key, ORIGIN, at=WHEN))
    assert verify_against_checkpoint(store, signed, key.public_key()) == []
    forged = SignedCheckpoint(signed.text.replace("\napprovals 2 ", "\napprovals 1 "))
    [problem] = verify_against_checkpoint(store, forged, public_key_line(key, ORIGIN))
    assert problem.startswith("the newest checkpoint cannot be trusted: ")
    assert "signature is invalid" in problem


def test_signature_line_follows_signed_note(store: AuditStore, key: Ed25519PrivateKey) -> None:
    text = sign_heads(store, key, ORIGIN, "audit.example/key", at=WHEN)
    body, sig_line = text.split("\n\n")
    dash, name, encoded = sig_line.removesuffix("\n").split(" ")
    assert (dash, name) == ("\u2014", "audit.example/key")
    blob = base64.b64decode(encoded, validate=True)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    expected_hash = hashlib.sha256(name.encode() + b"\x0a" + b"\x01" + public).digest()[:4]
    assert len(blob) == 4 + 64 and blob[:4] == expected_hash == key_hash(name, key)
    key.public_key().verify(blob[4:], (body + "\n").encode())  # signs the body, final LF included
    encoded_key = base64.b64encode(b"\x01" + public).decode()
    vkey = f"{name}+{expected_hash.hex()}+{encoded_key}"
    assert public_key_line(key, name) == vkey


def test_key_hash_fixed_vector() -> None:
    # RFC 8032 section 7.1, TEST 1: a published Ed25519 key pair.
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert public.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    # SHA-256(key name || 0x0A || 0x01 || public key)[:4], evaluated once by hand.
    assert hashlib.sha256(b"driftpilot/test\n\x01" + public).digest()[:4].hex() == "ad5b6837"
    assert key_hash("driftpilot/test", key).hex() == "ad5b6837"


def test_go_sumdb_note_known_answer() -> None:
    # The example key and note of golang.org/x/mod/sumdb/note's documentation.
    seed = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
    key = Ed25519PrivateKey.from_private_bytes(seed[1:])
    text = (
        "If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n"
    )
    assert (
        public_key_line(key, "PeterNeumann")
        == "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    )
    assert sign_note(text, key, "PeterNeumann") == (
        f"{text}\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2"
        "pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
    )


def test_checkpoint_log_appends_and_reads_the_newest(
    store: AuditStore, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "checkpoints.jsonl"
    assert latest_checkpoint(log) is None
    first = sign_heads(store, key, ORIGIN, at=WHEN)
    append_checkpoint(f"file://{log}", first)
    fill(store)
    second = sign_heads(store, key, ORIGIN)
    with log.open("a") as handle:
        handle.write('{"checkpoint": "torn by a cra')  # a crash mid-append
    assert latest_checkpoint(log) == latest_checkpoint(f"file://{log}")
    assert latest_checkpoint(log).text == first  # type: ignore[union-attr]
    append_checkpoint(log, second)
    newest = latest_checkpoint(log)
    assert newest is not None and newest.text == second
    assert len(log.read_text().splitlines()) == 3  # first, the torn line, second
    with pytest.raises(ConfigError, match="only a local path or a file:// URL"):
        append_checkpoint("https://witness.example/add", second)


def test_newest_log_entry_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "checkpoints.jsonl"
    log.write_text('{"checkpoint": "x"}\nnot json\n')
    with pytest.raises(IntegrityError, match="not JSON"):
        latest_checkpoint(log)


def test_a_checkpoint_older_than_the_newest_in_the_log_is_not_appended(
    store: AuditStore, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    log = tmp_path / "checkpoints.jsonl"
    early = sign_heads(store, key, ORIGIN, at=WHEN)  # process A signs first...
    fill(store)
    late = sign_heads(store, key, ORIGIN)  # ...process B signs later, with more rows...
    append_checkpoint(log, late)  # ...and reaches the log first
    append_checkpoint(log, early)
    newest = latest_checkpoint(log)
    assert newest is not None and newest.text == late
    assert len(log.read_text().splitlines()) == 1
