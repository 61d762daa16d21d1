"""gpt4all-api: an OpenAI-compatible HTTP API over local GPT4All / GGUF models."""

__version__ = "0.1.0"
