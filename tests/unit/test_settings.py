"""Settings read from the environment: a yes/no setting reads 1/0, true/false, yes/no,
and anything else stops the command with the setting named."""

import pytest

from service.core.settings import Settings


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("true", True), ("YES", True),
                                            ("0", False), ("false", False), ("no", False)])
def test_a_yes_no_setting(raw, value):
    settings = Settings.from_env({"MAILPROV_WEBHOOK_ALLOW_PRIVATE": raw})
    assert settings.webhook_allow_private is value


def test_a_yes_no_setting_that_is_neither_is_refused():
    with pytest.raises(SystemExit, match="MAILPROV_WEBHOOK_ALLOW_PRIVATE='maybe'"):
        Settings.from_env({"MAILPROV_WEBHOOK_ALLOW_PRIVATE": "maybe"})
