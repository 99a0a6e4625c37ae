"""Run configurations, installed as the package data of `relate_fast.configs` (so an installed
relate_fast trains the same embedded default as the checkout): tiny_cpu.yaml is the default of
`python -m relate_fast.train`; qwen3_8b_8gpu.yaml and qwen3_8b_4gpu.yaml are the paper's setup."""
