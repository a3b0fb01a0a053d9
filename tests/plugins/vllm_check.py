"""``python -m tests.plugins.vllm_check MODEL``: plain vLLM, outside this framework, loads ``MODEL`` and greedily
continues a prompt; prints ``VLLM_OK <tokens>``. The process ends without its interpreter's slow teardown."""

import gc
import os
import sys

if __name__ == "__main__":
    gc.disable()  # a one-off check: vLLM's import is 1.2 s faster without the collector's passes
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
    from vllm import LLM, SamplingParams

    llm = LLM(model=sys.argv[1], dtype="float32", enforce_eager=True)
    out = llm.generate(["12+3="], SamplingParams(max_tokens=4, temperature=0))
    print("VLLM_OK", len(out[0].outputs[0].token_ids), flush=True)
    os._exit(0)  # vLLM's shutdown at exit takes about 2 s
