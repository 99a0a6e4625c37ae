"""flash_attn.utils.distributed.all_gather, as OpenRLHF imports it: fails when called (ring attention only)."""
from flash_attn.bert_padding import _absent as all_gather  # noqa: F401
