"""The import graph points one way: cli -> study -> run/analysis -> core ->
models/tasks/data -> config -> registry -> errors.

Every `import mtljax.X` / `from mtljax... import` in the package, at module
level or inside a function, is checked against the layer of the module that
holds it: a module may import its own layer or a lower one, never a higher.
"""

import ast
import os

import pytest

PKG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "mtljax")

# Lower number = lower layer. Siblings on one level may import each other.
LAYERS = {
    "errors": 0, "hostmem": 0,
    "registry": 1,
    "config": 2,
    "data": 3, "models": 3, "tasks": 3, "methods": 3,
    "core": 4,
    "run": 5, "analysis": 5,
    "study": 6,
    "cli": 7, "__main__": 7, "__init__": 7,
}


def _layer(dotted: str) -> int:
  top = dotted.split(".")[1] if dotted.count(".") else "__init__"
  return LAYERS[top]


def _modules():
  for root, _, files in os.walk(PKG):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(root, f)
        rel = os.path.relpath(path, os.path.dirname(PKG))[:-3]
        name = rel.replace(os.sep, ".")
        if name.endswith(".__init__") and name.count(".") > 1:
          name = name[:-len(".__init__")]
        yield name, path


def _imports(path):
  tree = ast.parse(open(path).read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith("mtljax"):
          yield node.lineno, a.name
    elif isinstance(node, ast.ImportFrom) and node.module and (
        node.module.startswith("mtljax")):
      if node.module == "mtljax":
        for a in node.names:
          yield node.lineno, f"mtljax.{a.name}"
      else:
        yield node.lineno, node.module


def test_every_module_has_a_layer():
  for name, _ in _modules():
    if name == "mtljax.__init__" or name == "mtljax":
      continue
    _layer(name)  # KeyError: a new top-level module needs a layer above


@pytest.mark.parametrize("name, path", sorted(_modules()))
def test_imports_point_down(name, path):
  if name in ("mtljax", "mtljax.__init__"):
    return  # the public API re-exports from every layer (lazily)
  mine = _layer(name)
  up = [f"line {line}: {target}" for line, target in _imports(path)
        if _layer(target) > mine]
  assert not up, f"{name} (layer {mine}) imports a higher layer: {up}"
