import pytest

from service.core import names


@pytest.mark.parametrize(("given", "expected"), [
    ("Example.COM.", "example.com"),
    (" mail.example.co.uk ", "mail.example.co.uk"),
    ("bücher.de", "xn--bcher-kva.de"),
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("a-b.example", "a-b.example"),
])
def test_domains_are_normalised(given, expected):
    assert names.domain(given) == expected


@pytest.mark.parametrize("bad", [
    "localhost", "1.2.3.4", "[::1]", "-a.com", "a-.com", "a..com", "a_b.com", "example.123",
    "a" * 64 + ".com", ("a" * 63 + ".") * 4 + "com", "exa mple.com", "'; DROP TABLE x;--.com",
    "\u202eevil.com", "",
])
def test_invalid_domains_are_refused(bad):
    with pytest.raises(ValueError):
        names.domain(bad)


@pytest.mark.parametrize("good", ["john", "j.doe", "a+tag", "x_y-z", "a" * 64, "John"])
def test_local_parts(good):
    assert names.local_part(good) == good.lower()


@pytest.mark.parametrize("bad", [".john", "john.", "jo..hn", "a" * 65, "jo hn", "jö", ""])
def test_invalid_local_parts(bad):
    with pytest.raises(ValueError):
        names.local_part(bad)


def test_labels():
    assert names.label("Team") == "team"
    with pytest.raises(ValueError):
        names.label("a.b")
