"""Redis settings: both URL forms, the separate Sentinel settings, and one-line errors."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from registry import connection
from registry.connection import SentinelService, Server
from registry.errors import ConfigError
from registry.settings import RegistrySettings
from resolver.settings import ResolverSettings


def test_a_plain_url_is_redis_pys() -> None:
    assert connection.parse("redis://127.0.0.1:6380/2") == Server("redis://127.0.0.1:6380/2")


def test_a_sentinel_url() -> None:
    found = connection.parse(
        "redis+sentinel://reg:p%40ss@s1:26380,s2,[::1]:26381/globaldns/3"
        "?sentinel_username=watch&sentinel_password=w%26x"
    )
    assert found == SentinelService(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        service="globaldns",
        db=3,
        username="reg",
        password="p@ss",
        sentinel_username="watch",
        sentinel_password="w&x",
    )
    assert connection.describe(found) == "redis+sentinel://s1:26380,s2:26379,::1:26381/globaldns/3"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://s1:26379", "no service name"),
        ("redis+sentinel://s1:26379/", "no service name"),
        ("redis+sentinel:///globaldns", "no Sentinel address"),
        ("redis+sentinel://s1:port/globaldns", "is not host:port"),
        ("redis+sentinel://s1:99999/globaldns", "out of range"),
        ("redis+sentinel://s1/globaldns/zero", "is not a number"),
        ("redis+sentinel://s1/globaldns/0/x", "too many path parts"),
        ("redis+sentinel://s1/globaldns?master=x", "unknown option 'master'"),
        ("rediss+sentinel://s1/globaldns", "not supported"),
        ("http://redis:6379", "redis+sentinel://"),
    ],
)
def test_bad_urls_say_which_setting_and_why_in_one_line(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        connection.parse(url)
    message = str(caught.value)
    assert message.startswith("GLOBALDNS_REDIS_URL: ") and why in message
    assert "\n" not in message


def test_passwords_never_appear_in_errors_or_descriptions() -> None:
    with pytest.raises(ConfigError) as caught:
        connection.parse("redis+sentinel://u:secret1@s1/svc?sentinel_password=secret2&x=1")
    assert "secret" not in str(caught.value)
    where = connection.target("redis://u:secret3@h:1/0")
    assert "secret" not in connection.describe(where)


def test_separate_settings_replace_the_url_and_credentials_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GLOBALDNS_REDIS_SENTINELS", "s1:26379, s2:26380")
    monkeypatch.setenv("GLOBALDNS_REDIS_SERVICE", "globaldns")
    monkeypatch.setenv("GLOBALDNS_REDIS_DB", "1")
    monkeypatch.setenv("GLOBALDNS_REDIS_USERNAME", "globaldns-resolver")
    monkeypatch.setenv("GLOBALDNS_REDIS_PASSWORD", "pw")
    monkeypatch.setenv("GLOBALDNS_REDIS_SENTINEL_PASSWORD", "spw")
    monkeypatch.setenv("GLOBALDNS_REDIS_READ_FROM", "replica")
    settings = ResolverSettings()
    assert settings.redis_read_from == "replica"
    assert connection.target(settings.redis_url, settings) == SentinelService(
        sentinels=(("s1", 26379), ("s2", 26380)),
        service="globaldns",
        db=1,
        username="globaldns-resolver",
        password="pw",
        sentinel_password="spw",
    )


def test_credentials_apply_to_a_plain_url_too() -> None:
    settings = RegistrySettings(redis_url="redis://h:1/0", redis_password=SecretStr("pw"))
    assert connection.target(settings.redis_url, settings) == Server("redis://h:1/0", None, "pw")


def test_sentinels_without_a_service_name_the_setting() -> None:
    settings = RegistrySettings(redis_sentinels="s1:26379")
    with pytest.raises(ConfigError, match=r"^GLOBALDNS_REDIS_SERVICE: required"):
        connection.target(settings.redis_url, settings)
