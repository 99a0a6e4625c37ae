"""The package's shape stays what docs/development.md draws: no import circle between relate_fast's
modules (imports inside functions count too), the reward context read only inside rewards/, and the
rollout engine's weights pushed from one place (RolloutEngine.ensure_weights)."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "relate_fast"


def _modules():
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = f
    return mods


def import_graph():
    """module -> the relate_fast modules it imports anywhere in its text. `from pkg import sub` counts as
    importing the submodule `sub` when it is one (not the package's __init__)."""
    mods = _modules()
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:
                    base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    graph[m].add(sub if sub in mods else target)
            elif isinstance(node, ast.Import):
                graph[m].update(a.name for a in node.names)
        graph[m] = {t for t in graph[m] if t in mods and t != m}
    return graph


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_relate_fast():
    graph = import_graph()
    assert "relate_fast.rollout.hf" in graph["relate_fast.rollout"]  # the factory's lazy import is seen
    assert cycles(graph) == []


def _sources(exclude=()):
    for f in PKG.rglob("*.py"):
        if not any(f.is_relative_to(PKG / e) for e in exclude):
            yield f, f.read_text(encoding="utf-8")


def test_the_reward_context_is_read_only_inside_rewards():
    hits = [f"{f.relative_to(ROOT)}:{i}" for f, text in _sources(exclude=("rewards",))
            for i, line in enumerate(text.splitlines(), 1) if re.search(r"\.ctx\b", line)]
    assert hits == []


def test_weights_are_pushed_from_one_place():
    calls = [f"{f.relative_to(ROOT)}:{i}" for f, text in _sources()
             for i, line in enumerate(text.splitlines(), 1)
             if re.search(r"\.push_weights\(", line) and "def push_weights" not in line]
    assert calls == ["relate_fast/rollout/base.py:" + str(next(
        i for i, line in enumerate((PKG / "rollout" / "base.py").read_text().splitlines(), 1)
        if "self.push_weights(" in line))]


def test_no_function_over_80_lines_and_a_short_trainer():
    """The redesign's size limits: Trainer reads like a table of contents (<= 250 lines for its module)
    and no function of the package runs past 80 lines."""
    long = []
    for f in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long, long
    assert len((PKG / "trainer.py").read_text(encoding="utf-8").splitlines()) <= 250


def test_readme_is_for_users():
    """The README: at most 200 lines, no issue numbers, no table cell longer than a sentence or two, and
    it opens with the two commands CI runs."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert not re.search(r"\bissues? #?\d+", text, re.I), re.search(r"\bissues? #?\d+", text, re.I)
    cells = [c.strip() for line in text.splitlines() if line.startswith("|") for c in line.strip("|").split("|")]
    assert max(map(len, cells)) <= 200, max(cells, key=len)
    first_blocks = re.findall(r"```bash\n(.*?)\n```", text, re.S)[:2]
    assert first_blocks[0].startswith("bash scripts/setup.sh train") and "relate_fast.train" in first_blocks[0]
    assert first_blocks[1].startswith("bash scripts/setup.sh test") and "pytest" in first_blocks[1]  # .ci/run's line


def test_every_package_folder_is_installed():
    """pyproject.toml lists its packages by hand: a new sub-package left out would import here (the
    source tree is on the path) and fail in an installed copy."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(f.parent.relative_to(ROOT).parts) for f in PKG.rglob("__init__.py")}
    assert found - {"relate_fast.kernels"} <= listed, sorted(found - listed)
