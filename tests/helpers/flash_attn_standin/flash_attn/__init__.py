"""A stand-in for flash-attn, for tests only: OpenRLHF 0.11.2 imports four helpers of flash-attn at module level
(openrlhf/models/ring_attn_utils.py, through its actor) and calls them only when it packs samples (ring attention).
With this folder on the path its actor imports, and with `packing_samples` off it runs exactly the code it runs
with flash-attn installed (its log-prob fallback, without flash-attn's cross-entropy, is its own torch code). Any
call of a helper fails loudly. It carries no package metadata, so transformers does not take it for flash-attn."""
