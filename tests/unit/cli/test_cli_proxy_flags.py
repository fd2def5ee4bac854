"""`tulle proxy`'s typer-free flag parser reads exactly what the typer command reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import tulle.cli.proxy as proxy_cli
from tulle.cli.app import app
from tulle.cli.proxy_flags import FLAGS, build_config, parse
from tulle.proxy.config import ProxyConfig, config_from_json
from tulle.proxy.runner import CONFIG_ENV


def typer_params() -> dict[str, Any]:
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    context = command.make_context("tulle", ["proxy", "--help"], resilient_parsing=True)
    proxy = command.get_command(context, "proxy")
    assert proxy is not None
    return {param.name: param for param in proxy.params if param.name != "help"}


def test_flags_are_the_typer_commands_options() -> None:
    params = typer_params()
    assert [flag.name for flag in FLAGS] == list(params)
    for flag in FLAGS:
        param = params[flag.name]
        assert param.opts == [flag.option], flag.name
        assert param.envvar == flag.envvar, flag.name
        default = list(flag.default) if isinstance(flag.default, tuple) else flag.default
        assert (param.default or []) == default if flag.kind == "list" else param.default == default
        assert (param.default or []) == default if flag.kind == "list" else True
        # typer keeps ranges and the annotated type on the option itself.
        assert getattr(param, "min", None) == flag.min, flag.name
        assert getattr(param, "max", None) == flag.max, flag.name
        assert bool(param.multiple) == (flag.kind == "list"), flag.name
        annotation = param.type_descriptor.annotation
        expected = {"str": str, "int": int, "float": float, "list": list[str]}[flag.kind]
        assert annotation == expected, flag.name


def typer_config(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The config the typer command would exec the runner with (or its error text)."""
    captured: dict[str, str] = {}

    def fake_execve(path: str, argv: list[str], environ: dict[str, str]) -> None:
        captured.update(environ)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", fake_execve)
    result = CliRunner().invoke(app, ["proxy", *args], env=env)
    if CONFIG_ENV not in captured:
        return ("error", result.exit_code)
    return config_from_json(captured[CONFIG_ENV])


CASES: list[tuple[list[str], dict[str, str]]] = [
    ([], {}),
    (["--static-dst", "books=127.0.0.1:9001", "--static-dst=web=127.0.0.1:1,127.0.0.1:2"], {}),
    (["--workers", "4", "--detect-timeout", "0.05", "--idle-timeout=1e2"], {}),
    (["--admin-addr", "127.0.0.1:1", "--admin-addr", "127.0.0.1:2"], {}),  # the last one
    ([], {"TULLE_PROXY_STATIC_DST": "a=127.0.0.1:1  b=127.0.0.1:2", "TULLE_PROXY_WORKERS": "3"}),
    (["--workers", "2"], {"TULLE_PROXY_WORKERS": "3", "TULLE_PROXY_LOG_LEVEL": ""}),
    (["--control-addr", "127.0.0.1:8086", "--workload", "books", "--log-level", "debug"], {}),
    (["--deny-dst", "127.0.0.1:4191,127.0.0.1:9990", "--outbound-raw-addresses", "refuse"], {}),
    (["--identity", "spiffe://t/ns/a/sa/b", "--identity-issuer-dir", "/nonexistent"], {}),
    (
        [
            "--identity",
            "spiffe://t/ns/a/sa/b",
            "--identity-token",
            "x",
            "--identity-addr",
            "127.0.0.1:1,127.0.0.1:2",
        ],
        {},
    ),
]


@pytest.mark.parametrize(("args", "env"), CASES)
def test_same_config_as_typer(
    args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for flag in FLAGS:
        monkeypatch.delenv(flag.envvar, raising=False)
    values = parse(args, env)
    assert values is not None
    fast = build_config(values)
    assert isinstance(fast, ProxyConfig)
    assert fast == typer_config(args, env, monkeypatch)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["-h"],
        ["--no-such-flag", "1"],
        ["extra-argument"],
        ["--workers"],  # no value
        ["--workers", "0"],  # out of range
        ["--workers", "65"],
        ["--workers", "two"],
        ["--workers", " 2"],  # whatever typer makes of it, typer says
        ["--detect-timeout", "-1"],
        ["--connect-timeout", "nan"],
        ["--identity", "--workload", "x"],  # a value that looks like a flag
    ],
)
def test_leaves_anything_unusual_to_typer(args: list[str]) -> None:
    assert parse(args, {}) is None


def test_token_file_and_validation_errors_name_the_flag(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret\n")
    values = parse(
        ["--identity", "spiffe://t/ns/a/sa/b", "--identity-token-file", str(token),
         "--control-addr", "127.0.0.1:8086"], {},
    )  # fmt: skip
    assert values is not None
    assert build_config(values).identity_token == "secret"
    from tulle.cli.proxy_flags import FlagError

    for args, flag in [
        (["--static-dst", "nonsense"], "--static-dst"),
        (["--inbound-addr", "nowhere"], "--inbound-addr"),
        (["--identity", "spiffe://t/ns/a/sa/b"], "--identity"),
        (["--identity-token-file", str(tmp_path / "missing")], "--identity-token-file"),
        (["--outbound-raw-addresses", "maybe"], "--outbound-raw-addresses"),
        (["--deny-dst", "nowhere"], "--deny-dst"),
        (["--trust-anchors", str(tmp_path / "missing")], "--trust-anchors"),
        (["--trust-anchors", str(token)], "--trust-anchors"),  # not PEM
    ]:
        values = parse(args, {})
        assert values is not None
        with pytest.raises(FlagError) as caught:
            build_config(values)
        assert caught.value.flag == flag


def test_trust_anchors_reach_the_config_with_the_control_name(tmp_path: Path) -> None:
    import time

    from tulle.api.control_tls import CONTROL_NAME
    from tulle.identity.store import IssuerMaterial

    anchors = tmp_path / "bundle.pem"
    anchors.write_bytes(IssuerMaterial.generate("cluster.local", now=time.time()).bundle.pem())
    values = parse(["--trust-anchors", str(anchors)], {})
    assert values is not None
    config = build_config(values)
    assert config.control_trust_anchors == str(anchors)
    # The flag's default is the name the control plane's certificate carries.
    assert config.control_name == CONTROL_NAME
    assert config_from_json_roundtrip(config) == config


def config_from_json_roundtrip(config: ProxyConfig) -> ProxyConfig:
    from tulle.proxy.config import config_to_json

    return config_from_json(config_to_json(config))


def test_typer_path_still_reports_errors_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    assert proxy_cli.proxy is not None
    result = CliRunner().invoke(app, ["proxy", "--static-dst", "nonsense"])
    assert result.exit_code == 2
    assert "Invalid value for --static-dst" in " ".join(result.output.split())
