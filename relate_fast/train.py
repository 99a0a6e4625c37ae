"""Train a policy with RELATE.

    python -m relate_fast.train                                   # the embedded default (configs/tiny_cpu.yaml)
    python -m relate_fast.train --config configs/qwen3_8b_8gpu.yaml --run.name qwen3-8b
    torchrun --nproc_per_node 8 -m relate_fast.train --config configs/qwen3_8b_8gpu.yaml
    python -m relate_fast.train --help                            # every option, with help and default

Options are the config tree's fields as --section.field VALUE (or =VALUE), applied after the YAML.
"""
from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path


def default_config_path() -> str:
    """configs/tiny_cpu.yaml, shipped inside the package as relate_fast.configs (the same file in a
    checkout and in an installed package)."""
    try:
        path = resources.files("relate_fast.configs") / "tiny_cpu.yaml"
        if path.is_file():
            return str(path)
    except ModuleNotFoundError:
        pass
    repo = Path(__file__).resolve().parents[1] / "configs" / "tiny_cpu.yaml"
    if repo.is_file():
        return str(repo)
    raise FileNotFoundError("the default config tiny_cpu.yaml is missing from the installed package "
                            "(relate_fast.configs); pass --config")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from relate_fast.config import format_help, load_config

    if "-h" in argv or "--help" in argv:
        print(__doc__)
        print("Options (section.field):")
        print(format_help())
        return 0
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            print("--config needs a YAML file", file=sys.stderr)
            return 2
        config = argv[i + 1]
        del argv[i:i + 2]
    else:
        config = default_config_path()
    try:
        cfg = load_config(config, argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"relate_fast.train: {e}", file=sys.stderr)
        return 2
    from relate_fast.checkpoint import CheckpointError
    from relate_fast.trainer import RolloutError, Trainer

    try:
        Trainer(cfg).run()
        if cfg.rollout.sampler_ranks:
            from relate_fast.distributed import close_split_job

            close_split_job()
    except KeyboardInterrupt:
        print("relate_fast.train: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, FloatingPointError, RolloutError, CheckpointError) as e:
        # bad input (model path, dataset row, config value) or repeated NaN losses: one clear line,
        # the checkpoint untouched; RELATE_FAST_DEBUG=1 shows the traceback
        if os.environ.get("RELATE_FAST_DEBUG") == "1":
            raise
        print(f"relate_fast.train: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
