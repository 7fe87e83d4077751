"""The one redaction function (glamhpc.secrets) case by case, and the URI credential split."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glamhpc.config import load_config, to_dict
from glamhpc.rundir import FROZEN_ON_RESUME
from glamhpc.secrets import (
    is_secret_name,
    redact_config,
    redact_text,
    redacted,
    split_credentials,
    strip_credentials,
)
from glamhpc.tracking.uri import resolve_uri, tracking_uri


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # shell assignments, with or without export, quoted or not
        ("export HF_TOKEN=hf_abc", "export HF_TOKEN=***"),
        ("HF_TOKEN=abc python x.py", "HF_TOKEN=*** python x.py"),
        ('export MLFLOW_TRACKING_PASSWORD="a b;c"', 'export MLFLOW_TRACKING_PASSWORD="***"'),
        ("export DB_PASSWORD='x y' && run", "export DB_PASSWORD='***' && run"),
        ("export API_SECRET=s; export N=1", "export API_SECRET=***; export N=1"),
        ("WANDB_API_KEY=k1 AWS_SECRET_KEY=k2", "WANDB_API_KEY=*** AWS_SECRET_KEY=***"),
        ("export GITHUBTOKEN=t", "export GITHUBTOKEN=***"),
        ("export hf_token=lower", "export hf_token=***"),
        ("MY_CREDENTIALS=c", "MY_CREDENTIALS=***"),
        # YAML / JSON style keys
        ("token: abc", "token: ***"),
        ('{"password": "p"}', '{"password": "***"}'),
        # options
        ("huggingface-cli login --token hf_x --add", "huggingface-cli login --token *** --add"),
        ("tool --password=p1 --user u", "tool --password=*** --user u"),
        ("mysql --api-key 'k k'", "mysql --api-key '***'"),
        # headers
        ("curl -H 'Authorization: Bearer t.t'", "curl -H 'Authorization: ***'"),
        ('curl -H "X-Api-Key: abc" x', 'curl -H "X-Api-Key: ***" x'),
        ("PRIVATE-TOKEN: glx", "PRIVATE-TOKEN: ***"),
        # URL credentials
        ("pip install git+https://u:p@host/r.git", "pip install git+https://***@host/r.git"),
        ("http://tok@host:5000/x", "http://***@host:5000/x"),
        # token formats alone
        ("echo hf_abcdefghijklmnopqrstuvwxyz0", "echo ***"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123 x", "*** x"),
        ("key AKIAABCDEFGHIJKLMNOP", "key ***"),
        # references to where a secret comes from stay: the reader needs them
        ("export HF_TOKEN=$(cat ~/.hf)", "export HF_TOKEN=$(cat ~/.hf)"),
        ('export HF_TOKEN="$VAULT_HF"', 'export HF_TOKEN="$VAULT_HF"'),
        ("export TOKEN=${X}", "export TOKEN=${X}"),
    ],
)  # fmt: skip
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "module load cuda/12.1 && conda activate glam",
        "export PATH=/a:/b PWD=/x OMP_NUM_THREADS=4",
        "http://127.0.0.1:5000",
        "sqlite:////shared/u/mlflow.db",
        "git@github.com:org/repo.git",
        "--max-batch-tokens 512",
        "export KEY_LIST=",
    ],
)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("HF_TOKEN", True),
        ("MLFLOW_TRACKING_TOKEN", True),
        ("password", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("--api-key", True),
        ("SSH_AUTH_SOCK", True),  # over-redacting a socket path costs nothing
        ("max_batch_tokens", False),
        ("PWD", False),
        ("KEYBOARD", False),
        ("MONKEY", False),
        ("", False),
    ],
)
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=80)


@given(TEXT)
def test_redaction_is_idempotent(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once


@given(
    name=st.from_regex(r"[A-Z]{1,6}_(TOKEN|PASSWORD|SECRET|KEY)", fullmatch=True),
    value=st.text(st.characters(whitelist_categories=["L", "N"]), min_size=4, max_size=30),
    prefix=st.sampled_from(["export ", "", "env "]),
)
def test_an_assigned_secret_never_survives(name: str, value: str, prefix: str) -> None:
    for quoted in (value, f'"{value}"', f"'{value}'"):
        out = redact_text(f"{prefix}{name}={quoted} && echo done")
        assert value not in out.replace(name, ""), out
        assert out.endswith("&& echo done")


@pytest.mark.parametrize(
    ("uri", "clean", "user", "password"),
    [
        ("http://u:p@host:5000", "http://host:5000", "u", "p"),
        ("https://us%40er:p%3Ass@h/x?y=1", "https://h/x?y=1", "us@er", "p:ss"),
        ("https://token@h", "https://h", "token", None),
        ("http://u:@h", "http://h", "u", ""),
        ("http://h:5000", "http://h:5000", None, None),
        ("sqlite:////a/b.db", "sqlite:////a/b.db", None, None),
        ("file:///a@b/c", "file:///a@b/c", None, None),
        ("databricks", "databricks", None, None),
    ],
)
def test_split_credentials(uri: str, clean: str, user: str | None, password: str | None) -> None:
    assert split_credentials(uri) == (clean, user, password)
    assert strip_credentials(uri) == clean


def test_resolve_uri_moves_credentials_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    # A check of another environment leaves this process alone.
    assert resolve_uri(None, {"MLFLOW_TRACKING_URI": "http://a:b@h:1"}) == "http://h:1"
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:s%20cret@h:1")
    assert resolve_uri() == "http://h:1"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s cret"
    cfg = load_config(None, ["tracking.uri=http://x:y@h:2", "tracking.enabled=false"])
    assert tracking_uri(cfg) == "http://h:2"


def test_redacted_config_keeps_what_resume_compares_and_what_runs() -> None:
    cfg = load_config(
        None,
        [
            "tracking.uri=http://u:pw@h:5000",
            'launch.setup=["export HF_TOKEN=t0k", "module load cuda"]',
            "model.cache_dir=/shared/hf",
        ],
    )
    stored = redacted(cfg)
    assert stored.tracking.uri == "http://h:5000"
    assert stored.launch.setup == ["export HF_TOKEN=***", "module load cuda"]
    before, after = to_dict(cfg), to_dict(stored)
    for section in FROZEN_ON_RESUME:
        assert before[section] == after[section]
    assert redact_config(to_dict(stored)) == to_dict(stored)  # a stored copy stays as it is
    assert redact_config({"extra": {"api_key": "k", "n": 1}}) == {
        "extra": {"api_key": "***", "n": 1}
    }
