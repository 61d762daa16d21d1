"""LocalDocs: files, vector stores and retrieval (the OpenAI Files, Vector stores and
`file_search` APIs, and GPT4All's `references`).

- `ingest`: a file's bytes -> its text, page by page, and its metadata (title, author, date);
- `chunk`: text -> chunks with page numbers and character offsets;
- `index`: the SQLite database (files, vector stores, chunks, FTS5) in the data folder;
- `search`: hybrid retrieval (BM25 and vector similarity fused by relative score);
- `service`: what the routes call: uploads, background indexing, embeddings, retrieval;
- `prompt`: retrieved chunks -> the prompt's sources, citations and GPT4All references;
- `files_api`, `routes`: `/v1/files` and `/v1/vector_stores`;
- `responses`, `references`: `file_search` for the Responses API, `references` for chat;
- `folder`: a folder kept as a collection (the `docs` command).
"""
