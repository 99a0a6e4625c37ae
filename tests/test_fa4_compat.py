"""benchmarks/fa4_compat.py against a stand-in flash_attn.cute (flash-attn 4 needs CUDA): a 0-dim tensor
max-seqlen — what transformers' packed path and verl's hand over — reaches FA4's entry as an int, by keyword or by
position; everything else passes unchanged; applying twice wraps once; the signature transformers inspects is FA4's."""
import inspect
import sys
import types

import pytest
import torch

from benchmarks.fa4_compat import int_max_seqlen_for_fa4


@pytest.fixture
def fake_fa4(monkeypatch):
    calls = []

    def flash_attn_varlen_func(q, k, v, qv=None, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
                               max_seqlen_k=None, causal=False):
        calls.append(dict(cu_seqlens_q=cu_seqlens_q, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
                          causal=causal))
        return q

    interface = types.ModuleType("flash_attn.cute.interface")
    interface.flash_attn_varlen_func = flash_attn_varlen_func
    cute = types.ModuleType("flash_attn.cute")
    cute.flash_attn_varlen_func = flash_attn_varlen_func
    cute.interface = interface
    package = types.ModuleType("flash_attn")
    package.cute = cute
    for name, module in (("flash_attn", package), ("flash_attn.cute", cute), ("flash_attn.cute.interface", interface)):
        monkeypatch.setitem(sys.modules, name, module)
    return cute, interface, calls


def test_tensor_max_seqlens_arrive_as_ints(fake_fa4):
    cute, interface, calls = fake_fa4
    assert int_max_seqlen_for_fa4()
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    q = torch.zeros(7, 2, 4)
    out = cute.flash_attn_varlen_func(q, q, q, cu_seqlens_q=cu, cu_seqlens_k=cu,
                                      max_seqlen_q=cu.diff().max(), max_seqlen_k=cu.diff().max(), causal=True)
    interface.flash_attn_varlen_func(q, q, q, None, cu, cu, torch.tensor(4), 4)  # by position, through the module
    assert out is q
    for call in calls:
        assert type(call["max_seqlen_q"]) is int and type(call["max_seqlen_k"]) is int
        assert call["max_seqlen_q"] == call["max_seqlen_k"] == 4
        assert call["cu_seqlens_q"] is cu  # tensors that FA4 wants as tensors stay tensors
    assert calls[0]["causal"] is True and calls[1]["causal"] is False


def test_applied_twice_wraps_once_and_keeps_fa4s_signature(fake_fa4):
    cute, interface, _ = fake_fa4
    original = cute.flash_attn_varlen_func
    assert int_max_seqlen_for_fa4() and int_max_seqlen_for_fa4()
    assert cute.flash_attn_varlen_func.__wrapped__ is original and interface.flash_attn_varlen_func is cute.flash_attn_varlen_func
    # transformers decides which keywords to pass from this signature (_lazy_define_process_function)
    assert inspect.signature(cute.flash_attn_varlen_func) == inspect.signature(original)


def test_without_flash_attn_4_nothing_is_patched(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn.cute", None)  # import raises ImportError
    assert int_max_seqlen_for_fa4() is False


def test_bench_attentions_call_counter_sees_the_calls_through_the_shim(fake_fa4):
    """bench_attention's transformers check counts FA4 calls first, then applies the shim over the counter: both
    act (the counter is what says which pass reached FA4)."""
    from benchmarks import bench_attention as ba

    cute, _, calls = fake_fa4
    cute.flash_attn_func = lambda q, k, v, causal=False: q
    counted = ba._count_fa4_calls()
    q = torch.zeros(3, 1, 2)
    cute.flash_attn_func(q, q, q)
    assert counted == {"flash_attn_func": 1}
    assert int_max_seqlen_for_fa4()
    cute.flash_attn_varlen_func(q, q, q, max_seqlen_q=torch.tensor(3), max_seqlen_k=torch.tensor(3))
    assert counted == {"flash_attn_func": 1, "flash_attn_varlen_func": 1} and type(calls[-1]["max_seqlen_q"]) is int
