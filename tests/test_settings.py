"""Settings: defaults, every validation, *_FILE variants, and the exit line at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import Secret, Settings, SettingsError

BASE = {
    "CHARGEPILOT_BASE_URL": "https://chargepilot-api.tmh.energy/rest/v1/",
    "CHARGEPILOT_API_KEY": "key-1234",
    "CHARGEPILOT_API_SECRET": "secret-5678",
}


def test_defaults_match_the_contract() -> None:
    settings = Settings.from_env(BASE)
    assert settings.base_url == "https://chargepilot-api.tmh.energy/rest/v1"
    assert settings.sign_path == "full"
    assert settings.redis_url is None
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 8080, 1)
    assert settings.metrics_port is None
    assert settings.cache_ttl == 300 and settings.cache_stale == 86400
    assert settings.negative_ttl == 30 and settings.upstream_timeout == 10
    assert settings.upstream_rps == 5
    assert settings.client_tokens == {} and settings.admin_token is None


def test_every_setting_is_read() -> None:
    env = dict(
        BASE,
        CHARGEPILOT_SIGN_PATH="relative",
        REDIS_URL="redis+sentinel://s1:26379,s2:26379/mymaster/0",
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT="9000",
        GATEWAY_WORKERS="3",
        GATEWAY_METRICS_PORT="9100",
        GATEWAY_CACHE_TTL="1.5",
        GATEWAY_CACHE_STALE="0",
        GATEWAY_NEGATIVE_TTL="2",
        GATEWAY_UPSTREAM_TIMEOUT="0.5",
        GATEWAY_UPSTREAM_RPS="2.5",
        GATEWAY_CLIENT_TOKENS="aaa, bbb",
        GATEWAY_ADMIN_TOKEN="adm",
        GATEWAY_LOG_LEVEL="debug",
    )
    settings = Settings.from_env(env)
    assert settings.sign_path == "relative"
    assert settings.redis_url == "redis+sentinel://s1:26379,s2:26379/mymaster/0"
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 9000, 3)
    assert settings.metrics_port == 9100
    assert (settings.cache_ttl, settings.cache_stale, settings.negative_ttl) == (1.5, 0, 2)
    assert (settings.upstream_timeout, settings.upstream_rps) == (0.5, 2.5)
    assert settings.client_tokens == {"client-1": Secret("aaa"), "client-2": Secret("bbb")}
    assert settings.admin_token == Secret("adm")
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHARGEPILOT_BASE_URL", "ftp://example.com"),
        ("CHARGEPILOT_BASE_URL", "not a url"),
        ("CHARGEPILOT_BASE_URL", "https://host:99999/rest/v1"),
        ("CHARGEPILOT_BASE_URL", "https://host/rest/v1?x=1"),
        ("CHARGEPILOT_SIGN_PATH", "half"),
        ("REDIS_URL", "http://localhost:6379"),
        ("REDIS_URL", "redis://"),
        ("GATEWAY_PORT", "http"),
        ("GATEWAY_PORT", "70000"),
        ("GATEWAY_WORKERS", "0"),
        ("GATEWAY_METRICS_PORT", "-1"),
        ("GATEWAY_CACHE_TTL", "-1"),
        ("GATEWAY_CACHE_STALE", "soon"),
        ("GATEWAY_NEGATIVE_TTL", "nan"),
        ("GATEWAY_UPSTREAM_TIMEOUT", "0"),
        ("GATEWAY_UPSTREAM_RPS", "-5"),
        ("GATEWAY_CLIENT_TOKENS", "a,,b"),
        ("GATEWAY_LOG_LEVEL", "chatty"),
        ("GATEWAY_REFRESH_AHEAD", "1.5"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(dict(BASE, **{variable: value}))
    assert caught.value.variable == variable
    assert str(caught.value).startswith(variable)


@pytest.mark.parametrize(
    "missing", ["CHARGEPILOT_BASE_URL", "CHARGEPILOT_API_KEY", "CHARGEPILOT_API_SECRET"]
)
def test_required_unless_demo(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == missing
    assert Settings.from_env(env, demo=True).demo


def test_metrics_port_must_differ() -> None:
    with pytest.raises(SettingsError, match="GATEWAY_METRICS_PORT"):
        Settings.from_env(dict(BASE, GATEWAY_PORT="9000", GATEWAY_METRICS_PORT="9000"))


def test_credentials_and_tokens_from_files(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("file-key\n")
    (tmp_path / "secret").write_text("file-secret\n")
    (tmp_path / "tokens").write_text("# clients\ndashboards:tok-1\n\nscripts: tok-2\n")
    env = {
        "CHARGEPILOT_BASE_URL": BASE["CHARGEPILOT_BASE_URL"],
        "CHARGEPILOT_API_KEY_FILE": str(tmp_path / "key"),
        "CHARGEPILOT_API_SECRET_FILE": str(tmp_path / "secret"),
        "GATEWAY_CLIENT_TOKENS_FILE": str(tmp_path / "tokens"),
    }
    settings = Settings.from_env(env)
    assert settings.api_key.reveal() == "file-key"
    assert settings.api_secret.reveal() == "file-secret"
    assert settings.client_tokens == {"dashboards": Secret("tok-1"), "scripts": Secret("tok-2")}


def test_bad_files_name_the_variable(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "tokens").write_text("no-colon-here\n")
    cases = {
        "CHARGEPILOT_API_KEY_FILE": str(tmp_path / "missing"),
        "CHARGEPILOT_API_SECRET_FILE": str(tmp_path / "empty"),
        "GATEWAY_CLIENT_TOKENS_FILE": str(tmp_path / "tokens"),
    }
    for variable, path in cases.items():
        env = dict(BASE, **{variable: path})
        env.pop(variable.removesuffix("_FILE"), None)
        with pytest.raises(SettingsError) as caught:
            Settings.from_env(env)
        assert caught.value.variable == variable
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env(dict(BASE, CHARGEPILOT_API_KEY_FILE=str(tmp_path / "empty")))


def test_every_variable_read_is_listed() -> None:
    from gateway.settings import ENVIRONMENT_VARIABLES

    class Recording(dict[str, str]):
        def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
            read.add(key)
            return super().get(key, default)

    read: set[str] = set()
    Settings.from_env(Recording(BASE))
    assert read == set(ENVIRONMENT_VARIABLES)


def test_secrets_never_show_in_repr() -> None:
    settings = Settings.from_env(dict(BASE, GATEWAY_ADMIN_TOKEN="admin-token-xyz"))
    text = repr(settings) + str(settings)
    for secret in ("key-1234", "secret-5678", "admin-token-xyz"):
        assert secret not in text


def test_bad_setting_exits_non_zero_with_one_line_naming_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARGEPILOT_", "GATEWAY_"))}
    env.update(BASE, GATEWAY_CACHE_TTL="-3")
    result = subprocess.run(
        [sys.executable, "-m", "gateway"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "GATEWAY_CACHE_TTL" in lines[0]
    env.pop("CHARGEPILOT_API_KEY")
    env.pop("GATEWAY_CACHE_TTL")
    result = subprocess.run(
        [sys.executable, "-m", "gateway"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "CHARGEPILOT_API_KEY" in result.stderr


def test_every_shown_default_is_the_applied_default() -> None:
    from gateway.settings_specs import SPECS

    settings = Settings.from_env(BASE)
    checked = 0
    for spec in SPECS:
        if spec.attribute is None:
            continue
        value = getattr(settings, spec.attribute)
        shown = spec.default.split(" ")[0]
        if isinstance(value, bool) or value is None or value == () or isinstance(value, str):
            continue
        assert float(shown) == float(value), spec.variable
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_NAMESPACE", "a b"),
        ("GATEWAY_NAMESPACE", "x" * 65),
        ("GATEWAY_HEADER_TIMEOUT", "0"),
        ("GATEWAY_KEEPALIVE_TIMEOUT", "-1"),
        ("GATEWAY_MAX_CONNECTIONS", "0"),
        ("GATEWAY_SHUTDOWN_DELAY", "-1"),
        ("GATEWAY_REFRESH_SHARE", "1.01"),
        ("GATEWAY_CHANGES_RETENTION", "0"),
        ("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8, not-an-ip"),
        ("GATEWAY_MEMORY_CACHE_ENTRIES", "0"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://collector:4317"),
    ],
)
def test_new_settings_are_validated(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(dict(BASE, **{variable: value}))
    assert caught.value.variable == variable


def test_namespace_is_derived_per_account_unless_set() -> None:
    one = Settings.from_env(BASE).accounts[0]
    other_key = Settings.from_env(dict(BASE, CHARGEPILOT_API_KEY="another")).accounts[0]
    assert one.namespace != other_key.namespace and len(one.namespace) == 16
    assert "key-1234" not in one.namespace
    named = Settings.from_env(dict(BASE, GATEWAY_NAMESPACE="team-a")).accounts[0]
    assert named.namespace == "team-a"
    proxies = Settings.from_env(dict(BASE, GATEWAY_TRUSTED_PROXIES="10.0.0.1, 192.168.0.0/16"))
    assert proxies.trusted_proxies == ("10.0.0.1/32", "192.168.0.0/16")
    assert Settings.from_env(dict(BASE, OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318")).tracing


def test_accounts_file(tmp_path: Path) -> None:
    (tmp_path / "us.secret").write_text("us-secret\n")
    path = tmp_path / "accounts.json"
    path.write_text(
        '[{"name": "eu", "base_url": "https://eu.example/rest/v1", "api_key": "k1",'
        ' "api_secret": "s1"},'
        ' {"name": "us", "base_url": "https://us.example/rest/v1/", "api_key": "k2",'
        f' "api_secret_file": "{tmp_path / "us.secret"}", "rps": 2}}]'
    )
    settings = Settings.from_env({"CHARGEPILOT_ACCOUNTS_FILE": str(path)})
    eu, us = settings.accounts
    assert settings.multi_account
    assert (eu.name, eu.rps, us.rps, us.base_url) == ("eu", 5.0, 2.0, "https://us.example/rest/v1")
    assert us.api_secret.reveal() == "us-secret" and eu.namespace != us.namespace
    named = Settings.from_env({"CHARGEPILOT_ACCOUNTS_FILE": str(path), "GATEWAY_NAMESPACE": "t"})
    assert [account.namespace for account in named.accounts] == ["t-eu", "t-us"]


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        '{"name": "eu"}',
        '[{"name": "EU!", "base_url": "https://a/rest/v1", "api_key": "k", "api_secret": "s"}]',
        '[{"name": "eu", "base_url": "ftp://a", "api_key": "k", "api_secret": "s"}]',
        '[{"name": "eu", "base_url": "https://a/rest/v1", "api_secret": "s"}]',
        '[{"name": "eu", "base_url": "https://a/rest/v1", "api_key": "k", "api_secret": "s",'
        ' "rps": 0}]',
        '[{"name": "eu", "base_url": "https://a/rest/v1", "api_key": "k", "api_secret": "s",'
        ' "colour": "red"}]',
        '[{"name": "eu", "base_url": "https://a/rest/v1", "api_key": "k", "api_secret": "s"},'
        ' {"name": "eu", "base_url": "https://b/rest/v1", "api_key": "k", "api_secret": "s"}]',
    ],
)
def test_bad_accounts_file_names_the_variable(tmp_path: Path, content: str) -> None:
    path = tmp_path / "accounts.json"
    path.write_text(content)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CHARGEPILOT_ACCOUNTS_FILE": str(path)})
    assert caught.value.variable == "CHARGEPILOT_ACCOUNTS_FILE"
    with pytest.raises(SettingsError) as missing:
        Settings.from_env({"CHARGEPILOT_ACCOUNTS_FILE": str(tmp_path / "nope.json")})
    assert missing.value.variable == "CHARGEPILOT_ACCOUNTS_FILE"


def test_help_lists_every_setting_and_version_prints() -> None:
    from gateway import __version__
    from gateway.settings_specs import SPECS

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARGEPILOT_", "GATEWAY_"))}
    shown = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"], env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0
    for spec in SPECS:
        assert spec.variable in shown.stdout and spec.default in shown.stdout
    version = subprocess.run(
        [sys.executable, "-m", "gateway", "--version"], env=env, capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.strip().endswith(__version__)
