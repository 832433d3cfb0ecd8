"""The layout's rules, checked on the source: no import circle, a generic sweeper plugin, a
results/plots/CLI side that never loads the training code, short functions, and private Hydra
and Optuna APIs in one place only."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
PLUGIN = "hydra_plugins.hpsweep_sweeper"
COMPAT = f"{PLUGIN}._compat"  # the one module allowed to touch private Hydra and Optuna APIs
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def imports(path: Path, top_level_only: bool = False) -> list[tuple[str, int]]:
    """(module imported, line) for each import of `path`, lazy ones inside functions included
    unless `top_level_only`; imports under `if TYPE_CHECKING:` are left out (never run)."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import) and not (top_level_only and in_function):
                found.extend((alias.name, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and not (top_level_only and in_function):
                base = child.module or ""
                if child.level:  # relative: resolve against this module's package
                    package = module_name(path).split(".")
                    if path.name != "__init__.py":
                        package = package[:-1]
                    base = ".".join([*package[: len(package) - child.level + 1], base])
                for alias in child.names:  # `from pkg import module` imports the module
                    full = f"{base}.{alias.name}"
                    found.append((full if full in MODULES else base, child.lineno))
            visit(child, nested)

    visit(tree, False)
    return found


def own_module(name: str) -> str | None:
    """The module of this source tree that importing `name` names, or None for another's."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def graph(top_level_only: bool = False) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, _ in imports(path, top_level_only):
            target = own_module(name)
            if target and target != module:
                edges[module].add(target)
    return edges


def test_no_module_takes_part_in_an_import_circle():
    edges = graph()
    circles = []
    # Tarjan's strongly connected components: any component of two or more is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in edges:
        if v not in index:
            connect(v)
    assert circles == [], f"import circles: {circles}"


def test_the_sweeper_plugin_imports_nothing_of_hpsweep():
    offending = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for module, path in MODULES.items()
        if module.startswith(PLUGIN)
        for name, line in imports(path)
        if name.split(".")[0] == "hpsweep"
    ]
    assert offending == []


def test_results_plots_and_cli_never_import_the_job_at_import_time():
    edges = graph(top_level_only=True)
    for side in ("hpsweep.results", "hpsweep.plots", "hpsweep.cli"):
        reached, todo = set(), [side]
        while todo:
            module = todo.pop()
            if module not in reached:
                reached.add(module)
                todo.extend(edges[module])
        training = sorted(m for m in reached if m.startswith(("hpsweep.job", "hpsweep.fused")))
        assert training == [], f"import {side} loads {training}"


@pytest.mark.parametrize("module", ["hpsweep.cli", "hpsweep.results", "hpsweep.plots"])
def test_reading_results_loads_no_torch(module):
    code = f"import sys, {module}; print([m for m in sys.modules if m.split('.')[0] == 'torch'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"import {module} loads {out.stdout.strip()}"


def test_the_command_loads_no_torch_until_a_job_runs(tmp_path):
    # `hpsweep-train --help`, `--cfg job` and a refused value answer in about a second:
    # importing torch (and through it the rest of the job) is what a job pays, when it runs
    commands = [
        "import hpsweep.train",
        "sys.argv[1:] = ['--help']; hpsweep.train.main()",
        "sys.argv[1:] = ['--cfg', 'job']; hpsweep.train.main()",
        "sys.argv[1:] = ['batch_size=0', 'hydra.run.dir=run']; hpsweep.train.main()",
    ]
    loaded = tmp_path / "loaded"
    for command in commands:
        code = (
            "import atexit, pathlib, sys, hpsweep.train\n"
            f"atexit.register(lambda: pathlib.Path({str(loaded)!r}).write_text(repr(sorted("
            "m for m in sys.modules if m.split('.')[0] in ('torch', 'matplotlib')))))\n" + command
        )
        loaded.unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True)
        assert loaded.read_text() == "[]", f"{command}: {loaded.read_text()[:200]}"
        assert b"Traceback" not in proc.stderr, proc.stderr


def test_a_sweeps_worker_loads_no_matplotlib(tmp_path):
    # its trials' curves.png are drawn by the sweep's drawer process: matplotlib (0.4 s to
    # import) would be each worker's first trial's cost for nothing
    loaded = tmp_path / "loaded"
    code = (
        "import atexit, pathlib, sys, hpsweep.train\n"
        f"atexit.register(lambda: pathlib.Path({str(loaded)!r}).write_text(repr(sorted("
        "m for m in sys.modules if m.split('.')[0] in ('torch', 'matplotlib')))))\n"
        "sys.argv[1:] = ['-m', 'sweep=mlp', 'hydra.sweeper.n_trials=2', 'epochs=1']\n"
        "hpsweep.train.main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = ast.literal_eval(loaded.read_text())
    assert "torch" in modules and "matplotlib" not in modules  # trained, drew nothing itself
    assert len(list(tmp_path.glob("multirun/mlp/trial_*/curves.png"))) == 2  # the drawer's


def test_no_function_in_src_is_longer_than_a_screen():
    long = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines}")
    assert long == []


def notebook_imports() -> list[tuple[str, int]]:
    notebook = json.loads((REPO / "notebooks" / "compare_trials.ipynb").read_text())
    found = []
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            for node in ast.walk(ast.parse("".join(cell["source"]))):
                if isinstance(node, ast.ImportFrom) and node.module:
                    found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
                elif isinstance(node, ast.Import):
                    found += [(a.name, node.lineno) for a in node.names]
    return found


def test_only_the_plugin_imports_its_private_modules():
    """The app, the benchmarks and the notebook use the plugin's face (its __init__). Tests
    may look inside: they test the private modules themselves, as Optuna's tests do."""
    users = {str(p.relative_to(REPO)): imports(p) for p in (REPO / "benchmarks").rglob("*.py")}
    users |= {
        str(path.relative_to(REPO)): imports(path)
        for module, path in MODULES.items()
        if not module.startswith(PLUGIN)
    }
    users["notebooks/compare_trials.ipynb"] = notebook_imports()
    offending = [
        f"{who}:{line} imports {name}"
        for who, found in users.items()
        for name, line in found
        if name.startswith(f"{PLUGIN}._")
    ]
    assert offending == []


def test_private_hydra_and_optuna_apis_are_used_in_one_module_only():
    offending = []
    for module, path in MODULES.items():
        if module == COMPAT:
            continue
        for name, line in imports(path):
            parts = name.split(".")
            private = any(part.startswith("_") for part in parts[1:])
            if parts[0] in ("hydra", "optuna") and private:
                offending.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert offending == []
