"""Data shipped with relate_fast: the default compliance list and the sample ad dataset.

    from relate_fast.data import load_ads, sample_ads, AdPrompt
"""
from relate_fast.data.ads import AdPrompt, load_ads, sample_ads  # noqa: F401
