"""flash_attn.bert_padding's names that OpenRLHF imports: each fails when called (packing_samples must be off)."""


def _absent(*args, **kwargs):
    raise NotImplementedError("the flash-attn stand-in (tests/helpers/flash_attn_standin) was called: OpenRLHF "
                              "packs samples only with flash-attn; run it with packing_samples off")


index_first_axis = pad_input = unpad_input = rearrange = _absent
