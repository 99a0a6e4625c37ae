"""A CPU platform for verl 0.9.1, which ships CUDA, NPU and ROCm ones only, so that its own FSDP engine runs in the
CPU tests (tests/test_verl_engine_ab.py). `install()` sets it before verl asks which platform it is on. Memory
statistics read 0 and the device index is "cpu" (verl moves the model with `.to(device=get_device_id())`)."""
from __future__ import annotations

import contextlib
import types

import torch


def _device_module() -> types.ModuleType:
    m = types.ModuleType("verl_cpu_device")
    for name in ("current_device", "device_count", "is_available", "synchronize", "Stream", "Event", "stream",
                 "current_stream"):
        setattr(m, name, getattr(torch.cpu, name))
    m.set_device = lambda index: None
    m.manual_seed = m.manual_seed_all = torch.manual_seed
    m.empty_cache = m.reset_peak_memory_stats = lambda *a, **k: None
    for name in ("max_memory_allocated", "max_memory_reserved", "memory_allocated", "memory_reserved"):
        setattr(m, name, lambda *a, **k: 0)
    m.mem_get_info = lambda *a, **k: (0, 0)
    m.get_device_name = lambda *a, **k: "cpu"
    m.is_bf16_supported = lambda *a, **k: True
    return m


def install() -> None:
    from verl.plugin.platform.platform_base import PlatformBase
    from verl.plugin.platform.platform_manager import set_platform

    class PlatformCPU(PlatformBase):
        _module = _device_module()
        device_name = property(lambda self: "cpu")
        vendor_name = property(lambda self: "cpu")
        device_module = property(lambda self: self._module)

        def is_available(self): return True
        def current_device(self): return "cpu"
        def device_count(self): return 1
        def set_device(self, device_index): return None
        def synchronize(self, device_index=None): return None
        def manual_seed(self, seed): torch.manual_seed(seed)
        def manual_seed_all(self, seed): torch.manual_seed(seed)
        def set_allocator_settings(self, settings): return None
        def empty_cache(self): return None
        def get_device_capability(self, device_index=0): return (None, None)
        def communication_backend_name(self): return "gloo"
        def visible_devices_envvar(self): return "CUDA_VISIBLE_DEVICES"
        def profiler_start(self): return None
        def profiler_stop(self): return None
        def ray_resource_name(self): return "CPU"
        def ray_noset_envvars(self): return []
        def is_ipc_supported(self): return False
        def cudart(self): return None

        @contextlib.contextmanager
        def nvtx_range(self, msg):
            yield

    set_platform(PlatformCPU())
