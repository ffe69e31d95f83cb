"""Job callbacks: the egress policy (:mod:`.egress`), Standard Webhooks signing with per-key
secrets (:mod:`.signing`), one delivery attempt over a pinned connection (:mod:`.delivery`) and
the dispatcher of the durable outbox in Redis (:mod:`.dispatcher`, :mod:`rerankd.jobs.outbox`).
See docs/webhooks.md."""
