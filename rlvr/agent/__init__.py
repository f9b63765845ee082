"""The agent endpoint: an OpenAI-compatible API served from a run's rollout engines, so that
users' agent code (the `openai` client, LangGraph, smolagents, ...) runs against it unmodified.
`protocol` reads the requests and builds the responses (pure JSON, no I/O), with `messages`
(chat messages and tools, template-ready) and `checks` (JSON values, OpenAI errors)."""
