"""REDIS_URL's forms: one server, or the master Sentinel names."""

import pytest

from service.core.redisconn import redis_settings, sentinel_target
from service.core.settings import Settings


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database():
    target = sentinel_target("redis+sentinel://:s%40cret@h1:26380,[::1],h3/mymaster/2")
    assert target is not None
    assert target.sentinels == [("h1", 26380), ("::1", 26379), ("h3", 26379)]
    assert (target.service, target.db, target.password, target.ssl) == (
        "mymaster", 2, "s@cret", False)
    settings = redis_settings("redis+sentinel://h1:26379/main", conn_timeout=2)
    assert settings.sentinel and settings.sentinel_master == "main"
    assert settings.host == [("h1", 26379)] and settings.database == 0
    assert settings.conn_timeout == 2


def test_other_urls_are_arqs_own():
    assert sentinel_target("redis://127.0.0.1:6379/3") is None
    settings = redis_settings("rediss://u:p@host:6380/3")
    assert (settings.host, settings.port, settings.database, settings.ssl) == (
        "host", 6380, 3, True)
    assert not settings.sentinel


@pytest.mark.parametrize("url", [
    "redis+sentinel://h1:26379",              # no service
    "redis+sentinel://h1:26379/m/x",          # a database that is no number
    "redis+sentinel://h1:port/m",             # a port that is no number
    "redis+sentinel:///m/0",                  # no sentinel
    "http://127.0.0.1:6379/0",                # no Redis scheme
])
def test_a_malformed_redis_url_stops_every_command_with_the_setting_named(url):
    with pytest.raises(SystemExit, match="REDIS_URL"):
        Settings.from_env({"REDIS_URL": url})
