"""Every process launcher of rerankd, in one place, on one supervisor.

* :mod:`.process`: :func:`~.process.spawn` (children that die with their launcher) and the
  :class:`~.process.Supervisor` (restart with backoff, ordered stop); :mod:`.child` runs a
  Python module under a parent watch.
* :mod:`.valkey`: a private Valkey server (persistent AOF by default).
* :mod:`.embedded`: ``rerankd up`` (Valkey + worker + API, supervised).
* :mod:`.local`: the stack of the integration tests and benchmarks (Redis found or started,
  workers per model, the API).
* :mod:`.vllm_server`: a local ``vllm serve`` for the openai engine.
* :mod:`.demo_stack`: ``rerankd demo``'s private ``rerankd up`` and its clean-up.
* :mod:`.net`: free ports and the wait for an HTTP endpoint.
"""
