"""The APIs clients speak. Each dialect is a protocol module (its pydantic models), a
translator (request → `core.plan.Plan`, where all request validation happens) and a renderer
(neutral reply events → that API's JSON, SSE or NDJSON). None of them touches the engine."""
