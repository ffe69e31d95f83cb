"""The hf engine: transformers on CPU or GPU (:mod:`.engine`), ICR's query-row attention
(:mod:`.attention`), the micro-batcher that groups concurrent calls (:mod:`.micro_batcher`) and
torch device/dtype resolution (:mod:`.device`).  Needs the ``hf`` extra."""
