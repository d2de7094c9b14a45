from pathlib import Path

import pytest

from driftpilot.errors import ConfigError, LLMError
from driftpilot.llm import as_tool_call, make_backend, parse_json_object
from driftpilot.settings import Settings


def test_json_is_read_fenced_bare_or_embedded() -> None:
    assert parse_json_object('```json\n{"action": "retrain"}\n```') == {"action": "retrain"}
    assert parse_json_object('{"a": 1}') == {"a": 1}
    assert parse_json_object('I think: {"a": {"b": 2}} done.') == {"a": {"b": 2}}
    with pytest.raises(LLMError, match="no JSON object"):
        parse_json_object("retrain, obviously")
    with pytest.raises(LLMError):
        parse_json_object('{"a": 1,,}')


def test_tool_calls_written_as_json_text() -> None:
    call = as_tool_call({"name": "get_column_drift", "arguments": {"column": "temp"}})
    assert call is not None and call["args"] == {"column": "temp"} and call["type"] == "tool_call"
    assert as_tool_call({"action": "retrain", "rationale": "x"}) is None
    assert as_tool_call({"name": "x", "arguments": "not a dict"}) is None


def test_backends_from_spec(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, llm_base_url="http://127.0.0.1:9/v1")
    assert make_backend("builtin", settings).is_builtin
    openai = make_backend("openai:qwen2.5-coder-0.5b", settings)
    assert openai.name == "openai" and openai.model_name == "qwen2.5-coder-0.5b"
    assert str(openai.chat_model.openai_api_base) == "http://127.0.0.1:9/v1"  # type: ignore[union-attr]
    ollama = make_backend("ollama:llama3.2", settings)
    assert ollama.name == "ollama" and not ollama.is_builtin
    with pytest.raises(ConfigError, match="unknown LLM provider"):
        make_backend("anthropic:claude", settings)
    with pytest.raises(ConfigError, match="needs a model"):
        make_backend("openai", settings)


def test_first_complete_object_wins_over_trailing_prose() -> None:
    text = '{"action": "monitor", "rationale": "x"}\nNote: {braces} in prose {"a": 1'
    assert parse_json_object(text) == {"action": "monitor", "rationale": "x"}


@pytest.fixture
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTPILOT_LLM_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.mark.usefixtures("no_key_in_env")
@pytest.mark.parametrize(("key", "sent"), [("sk-test-123", "sk-test-123"), (None, "not-needed")])
def test_openai_backend_gets_the_secret_value(tmp_path: Path, key: str | None, sent: str) -> None:
    settings = Settings(home=tmp_path, llm_api_key=key, _env_file=None)
    chat = make_backend("openai:m", settings).chat_model
    assert chat is not None and chat.openai_api_key.get_secret_value() == sent


@pytest.mark.usefixtures("no_key_in_env")
def test_openai_backend_takes_the_key_from_openai_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-env")
    chat = make_backend("openai:m", Settings(home=tmp_path, _env_file=None)).chat_model
    assert chat is not None and chat.openai_api_key.get_secret_value() == "sk-from-openai-env"
