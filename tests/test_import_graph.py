"""The one-way flow, checked on the source: no import circle among the project's modules (imports
inside functions count; `if TYPE_CHECKING:` blocks do not), ray only in orchestrator/raybackend/,
the packages import in the declared direction, and planning a sweep imports no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tiedattn", "records", "orchestrator", "analysis", "tiedsweep")
# package -> the project packages it may import (sweeps -> orchestrator -> tiedattn -> Parquet -> analysis)
ALLOWED = {
    "tiedattn": set(),
    "records": {"tiedattn"},
    "orchestrator": {"tiedattn", "records"},
    "analysis": {"records", "tiedattn"},
    "tiedsweep": {"orchestrator", "analysis", "tiedattn"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join([*parts[: len(parts) - node.level + 1], *([node.module] if node.module else [])])
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


def _graph() -> tuple[dict[str, set[str]], set[str]]:
    mods = _modules()
    edges, ray = {}, set()
    for name, path in mods.items():
        imports = _imports(name, path)
        if any(i == "ray" or i.startswith("ray.") for i in imports):
            ray.add(name)
        edges[name] = {i for i in imports if i in mods and i != name}
    return edges, ray


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                on.discard(w)
                comp.append(w)
            on.discard(v)
            if comp:
                out.append(sorted([v, *comp]))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    assert _cycles(_graph()[0]) == []


def test_ray_only_in_the_ray_backend():
    _, ray = _graph()
    assert ray and all(m.startswith("orchestrator.raybackend.") for m in ray), sorted(ray)


def test_packages_import_in_one_direction():
    edges, _ = _graph()
    pkg = lambda m: m.split(".")[0]  # noqa: E731
    wrong = sorted(f"{a} -> {b}" for a, bs in edges.items() for b in bs if pkg(b) not in {pkg(a), *ALLOWED[pkg(a)]})
    assert wrong == []


def test_the_check_sees_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_planning_commands_do_not_import_torch(tmp_path):
    """`run --dry-run` and `status` read configs, ids and Parquet only: importing torch would add
    ~2.5 s of CPU to each (tiedattn/config.py and variants.py exist for this)."""
    code = (
        "import sys\n"
        "from tiedsweep.cli import main\n"
        f"main(['run', 'sweeps/demo.toml', '--dry-run', '--results', {str(tmp_path)!r}])\n"
        f"main(['status', {str(tmp_path)!r}])\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]", out.stdout.splitlines()[-1][:300]
