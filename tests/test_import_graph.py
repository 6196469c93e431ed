"""The import graph of keras_pixelcnn, trainers and export: layered, without cycles.

Edges are the project modules named by import statements anywhere in a file (inside
functions too: a lazy import is still a dependency); ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg``. Importing ``pkg.sub`` is not counted as
an import of ``pkg/__init__.py``.
"""

import ast
import os

import pytest
from conftest import REPO_ROOT

PACKAGES = ("keras_pixelcnn", "trainers", "export")
LIBRARY = "keras_pixelcnn"


def project_modules():
    """{module name: file path} of every .py file in PACKAGES."""
    modules = {}
    for package in PACKAGES:
        for name in sorted(os.listdir(os.path.join(REPO_ROOT, package))):
            if name.endswith(".py"):
                module = package if name == "__init__.py" else f"{package}.{name[:-3]}"
                modules[module] = os.path.join(REPO_ROOT, package, name)
    return modules


def imported_modules(path, known):
    """The modules of ``known`` that the file ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in known:
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
    return found


def import_graph():
    """{module: set of project modules it imports}."""
    known = project_modules()
    return {module: imported_modules(path, known) - {module} for module, path in known.items()}


def find_cycle(graph):
    """One import cycle of ``graph`` as [a, b, ..., a], or None."""
    state = {}  # module -> "active" while on the DFS path, "done" after

    def visit(module, path):
        state[module] = "active"
        for dependency in sorted(graph.get(module, ())):
            if state.get(dependency) == "active":
                return path[path.index(dependency) :] + [dependency]
            if dependency not in state:
                cycle = visit(dependency, path + [dependency])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    assert "keras_pixelcnn.sampling" in graph["keras_pixelcnn.model"]  # imported inside ConditionalPixelCNN.sample
    assert "trainers.model_dir" in graph["export.export"]  # imported inside export_from_model_dir


def test_the_import_graph_has_no_cycle():
    assert find_cycle(import_graph()) is None


@pytest.mark.parametrize("outside", ["trainers", "export"])
def test_the_library_imports_neither_trainers_nor_export(outside):
    offenders = {
        module: sorted(d for d in dependencies if d.split(".")[0] == outside)
        for module, dependencies in import_graph().items()
        if module.split(".")[0] == LIBRARY
    }
    assert not {module: names for module, names in offenders.items() if names}


def module_constants(path):
    """{NAME: literal value} of the UPPER_CASE names a file assigns a literal at module level."""
    constants = {}
    for node in ast.parse(open(path, encoding="utf-8").read()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.isupper():
                try:
                    constants[name] = ast.literal_eval(node.value)
                except ValueError:  # not a literal (a computed value): not a copy anyone could drift from
                    pass
    return constants


def test_the_module_constant_finder_reads_literals_only(tmp_path):
    path = tmp_path / "m.py"
    path.write_text('HEADS = ("a", "b")\nLIMIT = 256\nlower = 1\nDERIVED = len(HEADS)\n')
    assert module_constants(path) == {"HEADS": ("a", "b"), "LIMIT": 256}


# The serving clients run without keras_pixelcnn (a client machine needs only tensorflow-serving-api),
# so they restate the wire contract (signature names) instead of importing it; equal values are pinned below.
CLIENTS = ("export.grpc_client", "export.rest_client")


def test_each_constant_has_one_home():
    """A setting's name list or default is defined once (HEADS, DEFAULT_MAX_BATCH_SIZE, the precisions, ...):
    the binaries import the library's (common_flags starts TensorFlow quietly first), never copy it."""
    homes, ours, clients = {}, {}, {}
    for module, path in project_modules().items():
        for name, value in module_constants(path).items():
            if module in CLIENTS:
                clients[name] = value
            else:
                homes.setdefault((name, repr(value)), []).append(module)
                ours[name] = value
    assert not {key: modules for key, modules in homes.items() if len(modules) > 1}
    restated = {name: (value, ours[name]) for name, value in clients.items() if name in ours}
    assert restated and all(client == library for client, library in restated.values()), restated
