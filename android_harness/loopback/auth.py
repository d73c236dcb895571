"""ADB RSA authentication, device side: parse host public keys and check token signatures.

An ADB host signs a 20-byte random token with PKCS#1 v1.5 as if it were a SHA-1
digest, and offers its public key in Android's own encoding (base64 of a struct of
little-endian uint32: word count, n0inv, modulus words, R^2 words, exponent) followed
by " user@host". ``KeyStore`` is the loopback device's ``adb_keys`` file;
``user_public_keys`` reads the keys of the user who started the device (the ones adb
and adb-shell sign with: ``~/.android/adbkey`` and ``$ADB_VENDOR_KEYS``) each time a
client authenticates, so a key adb creates after the device started is trusted too.
Not for the host side (adbutils / adb-shell own their keys; ``adbshell_transport``
loads them).
"""

from __future__ import annotations

import base64
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HostPublicKey", "parse_android_public_key", "encode_android_public_key", "verify_token_signature",
           "KeyStore", "TOKEN_SIZE", "user_key_files", "user_public_keys"]

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


def encode_android_public_key(modulus: int, exponent: int, comment: str = "") -> HostPublicKey:
    """The Android encoding of an RSA public key (what adb writes to adbkey.pub)."""
    words = (modulus.bit_length() + 31) // 32
    n0inv = (-pow(modulus, -1, 1 << 32)) % (1 << 32)
    rr = pow(1 << (32 * words), 2, modulus)
    raw = (struct.pack("<II", words, n0inv) + modulus.to_bytes(4 * words, "little")
           + rr.to_bytes(4 * words, "little") + struct.pack("<I", exponent))
    return HostPublicKey(modulus, exponent, base64.b64encode(raw).decode(), comment)


def _public_key_of_private_file(path: Path) -> HostPublicKey:
    """A host's private key file (PEM, as adb and adb-shell write it) -> its public half."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    numbers = load_pem_private_key(path.read_bytes(), password=None).public_key().public_numbers()
    return encode_android_public_key(numbers.n, numbers.e, path.name)


def user_key_files(environ: dict[str, str] | None = None) -> list[Path]:
    """The private key files adb signs with for this user: every file in ``$ADB_VENDOR_KEYS``
    (colon-separated files, or folders whose ``*.adb_key`` files count), then ``~/.android/adbkey``."""
    environ = os.environ if environ is None else environ
    found: list[Path] = []
    for entry in filter(None, environ.get("ADB_VENDOR_KEYS", "").split(":")):
        path = Path(entry).expanduser()
        if path.is_dir():
            found.extend(sorted(path.glob("*.adb_key")))
        elif path.is_file():
            found.append(path)
    home = environ.get("ANDROID_USER_HOME") or os.path.join(environ.get("HOME") or os.path.expanduser("~"),
                                                             ".android")
    found.append(Path(home) / "adbkey")
    return found


_KEY_CACHE: dict[tuple[str, int, int], HostPublicKey | None] = {}
_KEY_CACHE_LOCK = threading.Lock()


def _public_key_for(private: Path) -> HostPublicKey | None:
    """The public half of ``private``: its ``.pub`` file when there is one, else derived from the
    private key; None when neither can be read. Cached by path, size and mtime."""
    for source, derive in ((Path(str(private) + ".pub"), False), (private, True)):
        try:
            st = source.stat()
        except OSError:
            continue
        cache_key = (str(source), st.st_mtime_ns, st.st_size)
        with _KEY_CACHE_LOCK:
            if cache_key in _KEY_CACHE:
                return _KEY_CACHE[cache_key]
        try:
            key = _public_key_of_private_file(source) if derive else parse_android_public_key(source.read_bytes())
        except (OSError, ValueError, TypeError):
            key = None
        with _KEY_CACHE_LOCK:
            _KEY_CACHE[cache_key] = key
        if key is not None:
            return key
    return None


def user_public_keys(environ: dict[str, str] | None = None) -> list[HostPublicKey]:
    """The public keys of ``user_key_files``, read now (not when the device started)."""
    keys = [_public_key_for(path) for path in user_key_files(environ)]
    return [key for key in keys if key is not None]


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

    def find_signer(self, token: bytes, signature: bytes,
                    extra: list[HostPublicKey] = ()) -> HostPublicKey | None:
        """The trusted key (this store's, then ``extra``) that made ``signature`` over ``token``."""
        for key in [*self.keys(), *extra]:
            if verify_token_signature(key, token, signature):
                return key
        return None
