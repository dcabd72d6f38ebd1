"""DKIM keys (service/core/dkim.py): what the records carry, and a sealed key that opens
only under its own purpose."""

import base64
import re

import pytest
from cryptography.hazmat.primitives import serialization

from service.core import dkim, secrets

SECRET = "k" * 40


@pytest.mark.parametrize(("algorithm", "raw_bytes"), [("rsa", None), ("ed25519", 32)])
def test_a_new_key_has_a_dated_selector_a_record_and_a_sealed_private_half(algorithm, raw_bytes):
    key = dkim.generate(SECRET, algorithm)
    assert re.fullmatch(r"mp\d{8}-[0-9a-f]{4}", key.selector)
    public = base64.b64decode(key.public_key)
    if raw_bytes:  # RFC 8463: the bare key
        assert len(public) == raw_bytes
    else:
        assert serialization.load_der_public_key(public).key_size == dkim.RSA_BITS
    record = dkim.record(key.algorithm, key.public_key)
    assert record == f"v=DKIM1; k={algorithm}; p={key.public_key}"
    assert dkim.tags(record.replace("; p=", "; p = ")) == {"v": "DKIM1", "k": algorithm,
                                                          "p": key.public_key}
    assert "PRIVATE" not in key.private_key_sealed
    pem = dkim.unseal_private_key(SECRET, key.private_key_sealed)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    # a sealed key is not a sealed password, nor the other way round
    with pytest.raises(secrets.Unsealable):
        secrets.unseal(SECRET, key.private_key_sealed)
    with pytest.raises(secrets.Unsealable):
        dkim.unseal_private_key(SECRET, secrets.seal(SECRET, "a password"))


def test_an_unknown_algorithm_is_named():
    with pytest.raises(dkim.UnknownAlgorithm, match="dsa"):
        dkim.generate(SECRET, "dsa")
