import pytest
from pydantic import ValidationError

from gpt4all_api.errors import InvalidRequest, UnsupportedParameter
from gpt4all_api.protocol.chat import ChatCompletionRequest
from gpt4all_api.protocol.completions import CompletionRequest
from gpt4all_api.protocol.embeddings import EmbeddingRequest

USER = [{"role": "user", "content": "hi"}]


def test_prompt_forms() -> None:
    assert CompletionRequest(prompt="a").prompts() == ["a"]
    assert CompletionRequest(prompt=["a", "b"]).prompts() == ["a", "b"]
    assert CompletionRequest(prompt=[1, 2]).prompts() == [[1, 2]]
    assert CompletionRequest(prompt=[[1], [2, 3]]).prompts() == [[1], [2, 3]]
    for empty in (None, "", [], ["a", ""]):
        with pytest.raises(InvalidRequest, match="empty prompt"):
            CompletionRequest(prompt=empty).prompts()


def test_unknown_fields_are_kept_for_the_router_to_refuse() -> None:
    req = CompletionRequest(prompt="a", frobnicate=1)
    assert req.model_extra == {"frobnicate": 1}


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": -1},
        {"temperature": 2.5},
        {"top_p": 1.1},
        {"max_tokens": -1},
        {"n": 0},
        {"presence_penalty": 3},
        {"top_logprobs": 21},
    ],
)
def test_out_of_range(fields: dict) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest(messages=USER, **fields)


def test_stop_limit_and_penalty_spellings() -> None:
    with pytest.raises(InvalidRequest):
        CompletionRequest(prompt="a", stop=["1", "2", "3", "4", "5"])
    assert CompletionRequest(prompt="a", stop="x").stop_list == ("x",)
    with pytest.raises(InvalidRequest):
        CompletionRequest(prompt="a", repeat_penalty=1.1, repeat_penality=1.2)


def test_chat_refusals_name_the_field() -> None:
    for field, value in [("store", True), ("verbosity", "high")]:
        with pytest.raises(UnsupportedParameter) as exc:
            ChatCompletionRequest(messages=USER, **{field: value}).check_supported()
        assert exc.value.param == field
    ChatCompletionRequest(
        messages=USER, store=False, service_tier="auto", n=1, modalities=["text"]
    ).check_supported()


def test_top_logprobs_needs_logprobs() -> None:
    with pytest.raises(InvalidRequest) as exc:
        ChatCompletionRequest(messages=USER, top_logprobs=2).check_supported()
    assert exc.value.param == "top_logprobs"


def test_tool_modes() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert ChatCompletionRequest(messages=USER).tool_mode() == "none"
    assert ChatCompletionRequest(messages=USER, tools=[tool]).tool_mode() == "auto"
    named = ChatCompletionRequest(
        messages=USER, tools=[tool], tool_choice={"type": "function", "function": {"name": "f"}}
    )
    assert named.tool_mode() == "named" and named.named_tool() == "f"
    legacy = ChatCompletionRequest(
        messages=USER, functions=[tool["function"]], function_call={"name": "f"}
    )
    assert legacy.legacy_functions and legacy.tool_mode() == "named"
    with pytest.raises(InvalidRequest):
        ChatCompletionRequest(messages=USER, tool_choice="required").check_supported()


def test_embedding_inputs() -> None:
    assert EmbeddingRequest(input="a").inputs() == ["a"]
    assert EmbeddingRequest(input=[3, 4]).inputs() == [[3, 4]]
    with pytest.raises(InvalidRequest):
        EmbeddingRequest(input=[]).inputs()
