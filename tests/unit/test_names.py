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


@pytest.mark.parametrize("bad", [
    "xn--zz.example", "xn--ls8h.example",  # bad punycode; an emoji
    "mail.xn--a.example", "XN--ZZ.example", "xn--bcher-kva.xn--zz",
])
def test_punycode_labels_are_validated_as_idna(bad):
    """Raw `xn--` labels used to be stored without any IDNA check."""
    with pytest.raises(ValueError, match="internationalised"):
        names.domain(bad)


@pytest.mark.parametrize("good", ["xn--bcher-kva.de", "mail.xn--mnchen-3ya.de",
                                  "xn--d1acufc.xn--p1ai"])
def test_valid_punycode_labels_are_kept(good):
    assert names.domain(good) == good


def test_punycode_sub_domain_labels_are_validated():
    assert names.label("xn--bcher-kva") == "xn--bcher-kva"
    for bad in ("xn--zz", "xn--ls8h"):
        with pytest.raises(ValueError, match="internationalised"):
            names.label(bad)
