"""Encryption of OAuth tokens at rest, with a key from the configuration."""
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app


def _fernet() -> MultiFernet:
    # Several comma-separated keys allow rotation: the first encrypts, all decrypt.
    keys = [k.strip() for k in current_app.config["TOKEN_ENCRYPTION_KEY"].split(",") if k.strip()]
    return MultiFernet([Fernet(k) for k in keys])


def encrypt(value: str | None) -> str | None:
    if value is None:
        return None
    return _fernet().encrypt(value.encode()).decode()


def decrypt(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return _fernet().decrypt(value.encode()).decode()
    except InvalidToken as exc:
        raise RuntimeError("A stored token could not be decrypted: is TOKEN_ENCRYPTION_KEY the key it was stored with?") from exc
