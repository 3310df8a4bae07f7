"""Secrets the service must read back (webhook signing secrets), encrypted at rest.

A webhook secret signs every delivery, so unlike a password or an API key it cannot be kept
as a hash. It is encrypted with Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``)
under keys derived from ``STOREKEEPER_SECRET_KEY``: one or more passphrases separated by
commas, the first encrypting, every one decrypting: to change the key, put the new one first
and keep the old one until every endpoint's secret has been rotated (a rotation encrypts
under the first key).

Unset, the key is read from (or, the first time, written to) the file named by
``STOREKEEPER_SECRET_KEY_FILE`` (default ``var/secret-key`` in the project, mode 0600): good for
one machine (``make run``, where the server and its worker share the file), not for several. Set the
variable in production.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from functools import cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from service.config import PROJECT_ROOT

SECRET_KEY_ENV = "STOREKEEPER_SECRET_KEY"
SECRET_KEY_FILE_ENV = "STOREKEEPER_SECRET_KEY_FILE"
DEFAULT_SECRET_KEY_FILE = str(PROJECT_ROOT / "var" / "secret-key")


class SecretKeyError(RuntimeError):
    """A stored secret cannot be decrypted with any configured key."""


def _fernet_key(passphrase: str) -> bytes:
    # Passphrases of any length and alphabet; Fernet wants 32 url-safe base64 bytes.
    return base64.urlsafe_b64encode(hashlib.sha256(passphrase.encode()).digest())


def _passphrases_from_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        passphrase = secrets.token_urlsafe(32)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process wrote it first
            return path.read_text().strip()
        with os.fdopen(descriptor, "w") as file:
            file.write(passphrase + "\n")
        return passphrase


@cache
def _cipher(configured: str | None, key_file: str) -> MultiFernet:
    passphrases = configured or _passphrases_from_file(Path(key_file))
    keys = [Fernet(_fernet_key(p.strip())) for p in passphrases.split(",") if p.strip()]
    if not keys:
        raise SecretKeyError(f"{SECRET_KEY_ENV} names no key")
    return MultiFernet(keys)


def cipher() -> MultiFernet:
    return _cipher(
        os.environ.get(SECRET_KEY_ENV) or None,
        os.environ.get(SECRET_KEY_FILE_ENV) or DEFAULT_SECRET_KEY_FILE,
    )


def encrypt(plaintext: str) -> str:
    return cipher().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return cipher().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise SecretKeyError(
            f"a stored secret does not decrypt with the key(s) in {SECRET_KEY_ENV}"
        ) from exc
