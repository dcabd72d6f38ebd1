"""Sealing under MAILPROV_SECRET_KEY: only the same key and purpose open a sealed value,
and a fingerprint cannot be recomputed without the key."""

import hashlib
import secrets as random

import pytest

from service.core import secrets

KEY = random.token_urlsafe(32)


def test_a_sealed_password_opens_with_its_key_only():
    token = secrets.seal(KEY, "correct horse battery staple")
    assert "correct" not in token and token.startswith(secrets.VERSION) and token.isascii()
    assert secrets.unseal(KEY, token) == "correct horse battery staple"
    # a fresh nonce each time: two seals of one password do not show they are the same
    assert secrets.seal(KEY, "correct horse battery staple") != token
    with pytest.raises(secrets.Unsealable):
        secrets.unseal(random.token_urlsafe(32), token)
    with pytest.raises(secrets.Unsealable):
        secrets.unseal(KEY, token, purpose="dkim")  # sealed for another use
    # a character in the middle: every bit of it is data (the last ones may be padding bits)
    middle = len(token) // 2
    flipped = token[:middle] + ("A" if token[middle] != "A" else "w") + token[middle + 1:]
    for bad in (flipped, token[:20], "v1.!!!", "plain text", ""):
        with pytest.raises(secrets.Unsealable):
            secrets.unseal(KEY, bad)


def test_fingerprints_need_the_key():
    data = b'POST /api/v1/create/mailbox/single\n{"Params":{"password":"hunter22"}}'
    mine = secrets.fingerprint(KEY, data)
    assert mine == secrets.fingerprint(KEY, data)
    assert mine != secrets.fingerprint(random.token_urlsafe(32), data)
    assert mine != hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("value", ["", "short", "x" * 31])
def test_a_missing_or_short_key_is_refused_with_what_to_do(value):
    with pytest.raises(secrets.SecretKeyMissing, match="token_urlsafe"):
        secrets.check_secret_key(value)
    with pytest.raises(secrets.SecretKeyMissing):
        secrets.seal(value, "a password")
