"""The openai engine: any OpenAI-compatible server through the ``openai`` SDK (:mod:`.engine`),
with bounded retries (:mod:`.retry`).  Needs the ``openai`` extra."""
