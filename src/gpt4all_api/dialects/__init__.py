"""The APIs clients speak. Each dialect is a protocol module (its pydantic models), a
translator (request → `core.plan.Plan`, where all request validation happens) and a renderer
(neutral reply events → that API's JSON, SSE or NDJSON). None of them touches the engine."""

#: Response header naming the hosted tool types a request offered that were left out of the
#: prompt (the Responses and Messages APIs).
IGNORED_TOOLS_HEADER = "x-gpt4all-api-ignored-tools"


def ignored_tools_headers(kinds: tuple[str, ...]) -> dict[str, str] | None:
    return {IGNORED_TOOLS_HEADER: ", ".join(kinds)} if kinds else None
