from service.core import passwords


def test_hashes_carry_the_dovecot_scheme_and_verify():
    stored = passwords.hash_password("correct horse", time_cost=1, memory_kib=1024)
    assert stored.startswith("{ARGON2ID}$argon2id$v=19$m=1024,t=1,p=1$")
    assert passwords.verify(stored, "correct horse")
    assert not passwords.verify(stored, "wrong horse")
    assert not passwords.verify(stored.removeprefix("{ARGON2ID}"), "correct horse")


def test_generated_passwords_are_long_and_distinct():
    made = {passwords.generate() for _ in range(100)}
    assert len(made) == 100
    assert all(len(p) == 20 and p.isalnum() for p in made)
