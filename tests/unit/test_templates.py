import pytest

from gpt4all_api.engine import templates
from gpt4all_api.errors import InvalidRequest

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_jinja_chat_template_with_generation_prompt() -> None:
    out = templates.render_jinja(CHATML, [{"role": "user", "content": "Hi"}])
    assert out == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_jinja_template_is_sandboxed() -> None:
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(Exception):  # noqa: B017 - any refusal from the sandbox will do
        templates.render_jinja(evil, [])


def test_template_raise_exception_becomes_400() -> None:
    src = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(InvalidRequest, match="roles must alternate"):
        templates.render_jinja(src, [{"role": "user", "content": "x"}])


def test_gpt4all_prompt_template() -> None:
    assert templates.apply_prompt_template("%1", "hi") == "hi"
    assert templates.apply_prompt_template("### Human:\n%1\n### Assistant:\n", "hi") == (
        "### Human:\nhi\n### Assistant:\n"
    )
    assert templates.apply_prompt_template("<|user|>%1<|a|>%2<|end|>", "hi") == "<|user|>hi<|a|>"
    assert templates.apply_prompt_template("Answer: ", "hi") == "Answer: hi"


def test_gpt4all_conversation() -> None:
    out = templates.render_gpt4all(
        "U: %1\nA: %2\n",
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
    )
    assert out == "Be brief.\nU: a\nA: b\nU: c\nA: "


def test_plain_fallback() -> None:
    out = templates.render_plain([{"role": "user", "content": "Hi"}])
    assert out.endswith("### Assistant:\n") and "### User:\nHi" in out
