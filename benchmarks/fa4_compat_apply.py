"""Imported for its effect: flash-attn 4's int max-seqlen adaptation (benchmarks/fa4_compat.py) in every process
that imports it — verl's driver and Ray workers list it in VERL_USE_EXTERNAL_MODULES when bench_vs_verl runs verl
on flash-attn 4 (`--attention flash_attention_4`)."""
from benchmarks.fa4_compat import int_max_seqlen_for_fa4

APPLIED = int_max_seqlen_for_fa4()
