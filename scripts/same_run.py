"""Do two runs of the trainer compute the same thing? For refactors that must not change numbers.

    python scripts/same_run.py RUN_A RUN_B      # two run folders (<out_dir>/<name>)

Compares metrics.jsonl step by step (every key but timings, speeds and memory), the baseline and final
evaluations of summary.json, and samples_final.jsonl. Exit status 0 when all are equal, 1 otherwise
(the first differences are printed).

The redesign of issue 25 was checked this way, step by step, against the code before it (commit
37930e5): run the same command in a `git worktree` of the old commit and in the working tree, e.g.
`python -m relate_fast.train --run.out_dir /tmp/a --rollout.engine hf --grpo.steps 3` (plus the tiny
settings of tests/test_train.py's SMALL), then compare /tmp/a/<name> with /tmp/b/<name>.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

VOLATILE = ("time/", "speed/", "tokens_per_second", "gpu_mem")


def _metrics(run: Path):
    return [{k: v for k, v in json.loads(l).items() if not k.startswith(VOLATILE)}
            for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]


def differences(a: Path, b: Path) -> list:
    out = []
    ma, mb = _metrics(a), _metrics(b)
    if len(ma) != len(mb):
        out.append(f"metrics.jsonl: {len(ma)} steps against {len(mb)}")
    for x, y in zip(ma, mb):
        for k in sorted(set(x) | set(y)):
            if x.get(k) != y.get(k):
                out.append(f"step {x.get('step')}: {k} {x.get(k)!r} != {y.get(k)!r}")
    sa, sb = (json.loads((r / "summary.json").read_text()) if (r / "summary.json").is_file() else {} for r in (a, b))
    for part in ("baseline", "final"):
        if sa.get(part) != sb.get(part):
            out.append(f"summary.json {part}: {sa.get(part)} != {sb.get(part)}")
    fa, fb = a / "samples_final.jsonl", b / "samples_final.jsonl"
    if fa.is_file() != fb.is_file() or (fa.is_file() and fa.read_text() != fb.read_text()):
        out.append("samples_final.jsonl differs")
    return out


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    diff = differences(Path(args[0]), Path(args[1]))
    for line in diff[:20]:
        print(line)
    print("same" if not diff else f"{len(diff)} differences")
    return 0 if not diff else 1


if __name__ == "__main__":
    sys.exit(main())
