"""ADB RSA authentication, device side: parse host public keys and check token signatures.

An ADB host signs a 20-byte random token with PKCS#1 v1.5 as if it were a SHA-1
digest, and offers its public key in Android's own encoding (base64 of a struct of
little-endian uint32: word count, n0inv, modulus words, R^2 words, exponent) followed
by " user@host". ``KeyStore`` is the loopback device's ``adb_keys`` file. Not for the
host side (adbutils / adb-shell own their keys; ``adbshell_transport`` loads them).
"""

from __future__ import annotations

import base64
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HostPublicKey", "parse_android_public_key", "verify_token_signature", "KeyStore", "TOKEN_SIZE"]

TOKEN_SIZE = 20


@dataclass(frozen=True)
class HostPublicKey:
    modulus: int
    exponent: int
    encoded: str    # the base64 blob, as written in adb_keys
    comment: str    # "user@host"


def parse_android_public_key(text: bytes | str) -> HostPublicKey:
    """Android's "base64 user@host" key line -> HostPublicKey; ValueError when malformed."""
    if isinstance(text, bytes):
        text = text.rstrip(b"\0").decode("ascii", "replace")
    blob, _, comment = text.strip().partition(" ")
    try:
        raw = base64.b64decode(blob, validate=True)
    except ValueError:
        raise ValueError("public key is not base64") from None
    if len(raw) < 12:
        raise ValueError("public key too short")
    (words,) = struct.unpack_from("<I", raw, 0)
    expected = 4 + 4 + 4 * words + 4 * words + 4
    if words == 0 or words > 1024 or len(raw) != expected:
        raise ValueError(f"public key of {len(raw)} bytes does not match {words} modulus words")
    modulus = int.from_bytes(raw[8:8 + 4 * words], "little")
    (exponent,) = struct.unpack_from("<I", raw, 8 + 8 * words)
    return HostPublicKey(modulus, exponent, blob, comment.strip())


def verify_token_signature(key: HostPublicKey, token: bytes, signature: bytes) -> bool:
    # Imported here: the CLI imports this package for --help, which must stay fast.
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

    public = rsa.RSAPublicNumbers(key.exponent, key.modulus).public_key()
    try:
        # The token stands in for a SHA-1 digest: that is how adb hosts sign it.
        public.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
        return True
    except (InvalidSignature, ValueError):
        return False


class KeyStore:
    """Authorized host keys, one "base64 user@host" line each (adbd's adb_keys format).
    ``path`` None keeps them in memory only."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._lock = threading.Lock()
        self._keys: dict[str, HostPublicKey] = {}
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    try:
                        key = parse_android_public_key(line)
                    except ValueError:
                        continue
                    self._keys[key.encoded] = key

    def keys(self) -> list[HostPublicKey]:
        with self._lock:
            return list(self._keys.values())

    def add(self, key: HostPublicKey) -> None:
        with self._lock:
            if key.encoded in self._keys:
                return
            self._keys[key.encoded] = key
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a") as stream:
                    stream.write(f"{key.encoded} {key.comment}\n")

    def find_signer(self, token: bytes, signature: bytes) -> HostPublicKey | None:
        for key in self.keys():
            if verify_token_signature(key, token, signature):
                return key
        return None
