"""The core's settings table and error codes, seen from Python: one table behind the variables the
code reads, `doctor`'s listing, the README's reference, the server's settings and the client's
keywords. Fast: no server, no network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import mlflow_descope_auth as mda
from mlflow_descope_auth import DescopeClient, clients
from mlflow_descope_auth._core import ERROR_CODES, SETTINGS, check_setting
from mlflow_descope_auth.cli.doctor import configuration_lines
from mlflow_descope_auth.server.settings import ServerSettings, is_local_path
from mlflow_descope_auth.variables import BY_NAME, MARKDOWN_BEGIN, MARKDOWN_END, markdown_table

ROOT = Path(__file__).resolve().parents[2]
TABLE_SOURCES = {ROOT / "src" / "settings.rs", ROOT / "python" / "mlflow_descope_auth" / "variables.py"}


def read_by_the_code() -> set[str]:
    names: set[str] = set()
    for path in [*ROOT.joinpath("src").rglob("*.rs"), *ROOT.joinpath("python").rglob("*.py")]:
        if path not in TABLE_SOURCES:
            names |= set(re.findall(r"\"((?:DESCOPE|MLFLOW)_[A-Z_]+)\"", path.read_text()))
    # A default may be built from another variable (`{NAME}` in the table): read through the table.
    for s in SETTINGS:
        names |= set(re.findall(r"\{([A-Z_]+)\}", s.default or ""))
    return names


def test_the_table_lists_exactly_the_variables_the_code_reads() -> None:
    listed = {s.name for s in SETTINGS}
    assert len(listed) == len(SETTINGS), "a name twice"
    in_code = read_by_the_code()
    assert sorted(in_code - listed) == [], "read by the code but not in the table (src/settings.rs)"
    assert sorted(listed - in_code) == [], "in the table but read nowhere"


def test_the_readme_reference_is_the_generated_table() -> None:
    readme = ROOT.joinpath("README.md").read_text()
    between = readme.split(MARKDOWN_BEGIN + "\n", 1)[1].split(MARKDOWN_END, 1)[0]
    assert between == markdown_table(), "run: python -m mlflow_descope_auth.variables --markdown"
    for s in SETTINGS:
        assert f"| `{s.name}` | {s.side} |" in between


def test_the_readme_lists_every_error_code() -> None:
    readme = ROOT.joinpath("README.md").read_text()
    documented = re.findall(r"^\| `([a-z_]+)` \| `[A-Za-z]+Error` \|", readme, flags=re.MULTILINE)
    assert documented == list(ERROR_CODES)
    stub = ROOT.joinpath("python", "mlflow_descope_auth", "_core.pyi").read_text()
    assert re.findall(r"^#   ([a-z_]+) ", stub, flags=re.MULTILINE) == list(ERROR_CODES)


def test_doctor_lists_every_row_with_its_value_or_default_and_masks_secrets() -> None:
    env = {
        "DESCOPE_ACCESS_KEY": "K2supersecretaccesskey000000000000",
        "DESCOPE_AUTH_DB_URI": "postgresql://mlflow:hunter2@db/auth",
        "DESCOPE_JWT_LEEWAY": "7",
    }
    lines = configuration_lines(env)
    assert [line.split()[0] for line in lines] == [s.name for s in SETTINGS]
    text = "\n".join(lines)
    assert "supersecret" not in text and "hunter2" not in text
    assert re.search(r"DESCOPE_JWT_LEEWAY +7$", text, flags=re.MULTILINE)
    for s in SETTINGS:
        if s.name not in env:
            assert re.search(
                rf"{s.name} +\(default\) {re.escape(s.default_shown)}$", text, flags=re.MULTILINE
            )
    assert BY_NAME["DESCOPE_KEY_TTL"].default_shown == "600"


def test_client_keywords_are_the_rows_with_a_keyword() -> None:
    keywords = {s.keyword for s in SETTINGS if s.keyword is not None}
    assert keywords == set(DescopeClient("P2x").settings()) - {"max_token_bytes"}
    assert set(clients.CLIENT_VARIABLES) == {s.name for s in SETTINGS if s.keyword is not None}


def test_defaults_come_from_the_table() -> None:
    effective = DescopeClient("P2x").settings()
    for s in SETTINGS:
        if s.keyword is not None and s.default is not None:
            assert check_setting(s.name) == effective[s.keyword], s.name


@pytest.mark.parametrize(
    ("keywords", "variable", "keyword"),
    [
        ({"leeway": 1e6}, "DESCOPE_JWT_LEEWAY", "leeway"),
        ({"leeway": -1}, "DESCOPE_JWT_LEEWAY", "leeway"),
        ({"http_timeout": 0}, "DESCOPE_HTTP_TIMEOUT", "http_timeout"),
        ({"key_ttl": 0}, "DESCOPE_KEY_TTL", "key_ttl"),
        ({"key_refetch_interval": float("nan")}, "DESCOPE_KEY_REFETCH_INTERVAL", "key_refetch_interval"),
        ({"token_cache_size": -1}, "DESCOPE_TOKEN_CACHE_SIZE", "token_cache_size"),
        ({"base_url": "api.descope.com"}, "DESCOPE_BASE_URI", "base_url"),
        ({"default_permission": "ROOT"}, "DESCOPE_DEFAULT_PERMISSION", "default_permission"),
        ({"role_permissions": "editor:EDIT"}, "DESCOPE_ROLE_PERMISSIONS", "role_permissions"),
        ({"username_claim": " "}, "DESCOPE_USERNAME_CLAIM", "username_claim"),
        ({"audience": []}, "DESCOPE_AUDIENCE", "audience"),
    ],
)
def test_keywords_are_checked_like_their_variable(
    keywords: dict[str, object], variable: str, keyword: str
) -> None:
    with pytest.raises(mda.ConfigurationError) as info:
        DescopeClient("P2x", **keywords)  # type: ignore[arg-type]
    assert (info.value.code, info.value.variable, info.value.keyword) == ("config_invalid", variable, keyword)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("DESCOPE_JWT_LEEWAY", "1000000"),
        ("DESCOPE_JWT_LEEWAY", "-1"),
        ("DESCOPE_HTTP_TIMEOUT", "0"),
        ("DESCOPE_KEY_TTL", "0"),
        ("DESCOPE_KEY_REFETCH_INTERVAL", "nan"),
        ("DESCOPE_TOKEN_CACHE_SIZE", "-1"),
        ("DESCOPE_BASE_URI", "api.descope.com"),
        ("DESCOPE_DEFAULT_PERMISSION", "ROOT"),
        ("DESCOPE_ROLE_PERMISSIONS", "editor:EDIT"),
    ],
)
def test_the_environment_refuses_the_same_values(variable: str, raw: str) -> None:
    with pytest.raises(mda.ConfigurationError) as info:
        check_setting(variable, raw)
    assert (info.value.code, info.value.variable, info.value.keyword) == ("config_invalid", variable, None)
    with pytest.raises(mda.ConfigurationError) as info:
        DescopeClient.from_env({"DESCOPE_PROJECT_ID": "P2x", variable: raw})
    assert (info.value.code, info.value.variable, info.value.keyword) == ("config_invalid", variable, None)


def test_configuration_errors_say_missing_or_invalid() -> None:
    with pytest.raises(mda.ConfigurationError) as info:
        DescopeClient.from_env({})
    assert (info.value.code, info.value.variable, info.value.keyword) == (
        "config_missing",
        "DESCOPE_PROJECT_ID",
        None,
    )
    with pytest.raises(mda.ConfigurationError) as info:
        DescopeClient("")
    assert (info.value.code, info.value.keyword) == ("config_missing", "project_id")
    with pytest.raises(mda.ConfigurationError) as info:
        ServerSettings.from_env({})
    assert (info.value.code, info.value.variable) == ("config_missing", "DESCOPE_PROJECT_ID")
    with pytest.raises(mda.ConfigurationError) as info:
        ServerSettings.from_env({"DESCOPE_PROJECT_ID": "P2x", "DESCOPE_REDIRECT_URL": "https://evil.example"})
    assert (info.value.code, info.value.variable) == ("config_invalid", "DESCOPE_REDIRECT_URL")


def test_check_setting_normalises_and_fills_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_setting("DESCOPE_JWT_LEEWAY", " 2.5 ") == 2.5
    assert check_setting("DESCOPE_TOKEN_CACHE_SIZE", "0") == 0
    assert check_setting("DESCOPE_COOKIE_SECURE", " TRUE ") == "true"
    assert check_setting("DESCOPE_AUDIENCE", "a, ,b") == ["a", "b"]
    assert check_setting("DESCOPE_ADMIN_ROLES", "") == []
    assert check_setting("DESCOPE_ROLE_PERMISSIONS", "editor=edit") == [("editor", "EDIT")]
    assert check_setting("DESCOPE_ROLE_PERMISSIONS", " ") is None
    assert check_setting("DESCOPE_AUTH_STATE_DIR") == str(tmp_path / ".mlflow-descope")
    assert check_setting("DESCOPE_AUTH_DB_URI") == f"sqlite:///{tmp_path / 'descope_auth.db'}"
    url = check_setting("DESCOPE_WEB_COMPONENT_URL", environ={"DESCOPE_WEB_COMPONENT_VERSION": "9.9.9"})
    assert url == "https://unpkg.com/@descope/web-component@9.9.9/dist/index.js"
    settings = ServerSettings.from_env(
        {"DESCOPE_PROJECT_ID": "P2x", "DESCOPE_WEB_COMPONENT_VERSION": "1.0.0"}
    )
    assert settings.web_component_url == "https://unpkg.com/@descope/web-component@1.0.0/dist/index.js"
    assert (settings.flow_id, settings.redirect_url, settings.cookie_secure) == ("sign-up-or-in", "/", "auto")
    assert settings.state_dir == tmp_path / ".mlflow-descope"
    with pytest.raises(KeyError):
        check_setting("DESCOPE_NOT_A_SETTING", "x")


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/#/experiments",
        "/a/b?c=d",
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "x",
        "/a\tb",
    ],
)
def test_the_redirect_setting_and_the_next_check_agree(target: str) -> None:
    try:
        accepted = check_setting("DESCOPE_REDIRECT_URL", target) == target
    except mda.ConfigurationError:
        accepted = False
    assert accepted == is_local_path(target)


def test_token_errors_carry_their_code_without_a_network() -> None:
    client = DescopeClient("P2x", base_url="http://127.0.0.1:9")
    cases = {
        "": "token_malformed",
        "a.b": "token_malformed",
        "eyJhbGciOiJub25lIiwia2lkIjoiayJ9.e30.c2ln": "token_algorithm",  # {"alg":"none","kid":"k"}
        "eyJhbGciOiJSUzI1NiJ9.e30.c2ln": "token_malformed",  # no kid
        "a." * 20_000 + "b": "token_too_long",
    }
    for token, code in cases.items():
        with pytest.raises(mda.InvalidTokenError) as info:
            client.validate_session(token)
        assert info.value.code == code, token[:40]
    assert set(cases.values()) <= set(ERROR_CODES)


def test_exceptions_raised_in_python_have_the_class_defaults() -> None:
    assert mda.ConfigurationError("x").code == "config_invalid"
    assert mda.ConfigurationError("x").variable is None
    assert mda.ExpiredTokenError("x").code == "token_expired"
    assert mda.RefreshFailedError("x").code == "refresh_failed"
    assert mda.DescopeAuthError("x").code == "descope_auth_error"
