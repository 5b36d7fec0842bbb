"""Architecture rules, checked on the source with `ast` (nothing is imported).

Layers, lowest first: codec < protocol < broker < store < server/admin < client/worker/testing
(admin, the management API, sits beside the transport: it may use server, never the reverse).
- a module may import from its own layer and from lower layers, never from higher ones;
- codec imports nothing from other minimq layers; protocol only codec; broker only
  codec/protocol;
- the pure core (codec, protocol, broker, and store if present) does no I/O and does not read
  the clock: no asyncio, socket, selectors, ssl, threading or time (time goes through the
  clock the Broker is given).
The root package `minimq` itself (version metadata only) is importable from anywhere.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "minimq"

ORDER = ["codec", "protocol", "broker", "store", "server", "admin", "client", "worker", "testing"]
TOP = "<top-level module>"  # minimq/cli.py, minimq/__main__.py: above every layer
RANK = {
    "codec": 0, "protocol": 1, "broker": 2, "store": 3, "server": 4, "admin": 4,
    "client": 5, "worker": 5, "testing": 5, TOP: 99,
}
# Explicit allow-lists for the core layers (stricter than "anything lower").
ALLOWED = {
    "codec": {"codec"},
    "protocol": {"codec", "protocol"},
    "broker": {"codec", "protocol", "broker"},
    "store": {"codec", "protocol", "broker", "store"},
}
PURE_LAYERS = {"codec", "protocol", "broker", "store"}
FORBIDDEN_IN_PURE = {"asyncio", "socket", "selectors", "ssl", "threading", "time"}


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer of a minimq module: its first sub-package; TOP for a top-level module such
    as minimq.cli; None for the root package and for names that are no module at all
    (`from minimq import __version__`)."""
    parts = module.split(".")
    if parts[0] != "minimq" or len(parts) < 2:
        return None
    first = parts[1]
    if first in RANK or (PACKAGE / first).is_dir():
        return first
    if (PACKAGE / f"{first}.py").exists():
        return TOP
    return None


def all_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[str, int]]:
    """Absolute names of every module imported (at any depth: also in functions and
    `if TYPE_CHECKING:` blocks), with line numbers. `from x import y` yields x and x.y,
    since y may be a submodule."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mod = module_name(path, root)
    is_pkg = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")
                drop = node.level - 1 if is_pkg else node.level
                base = base[: len(base) - drop] if drop else base
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            for alias in node.names:
                if alias.name != "*":
                    found.append((f"{target}.{alias.name}", node.lineno))
        elif isinstance(node, ast.Call):
            # importlib.import_module("minimq.x") / __import__("x") with a literal name
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append((arg.value, node.lineno))
    return found


def minimq_layers_imported(path: Path) -> list[tuple[str, str, int]]:
    """(layer, imported module, line) for each import of a minimq layer."""
    out = []
    for name, line in imports_of(path):
        if name == "minimq" or not name.startswith("minimq."):
            continue
        layer = layer_of(name)
        if layer is None:
            continue
        out.append((layer, name, line))
    return out


MODULES = all_modules()
MODULE_IDS = [module_name(p) for p in MODULES]


def test_the_package_is_found():
    names = set(MODULE_IDS)
    for required in ("minimq.codec", "minimq.protocol.connection", "minimq.broker.session"):
        assert required in names
    assert len(MODULES) > 10


def test_layers_are_known():
    """Every sub-package of minimq is a known layer (a new one must be placed in ORDER)."""
    subpackages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert subpackages <= set(ORDER), subpackages - set(ORDER)


@pytest.mark.parametrize("path", MODULES, ids=MODULE_IDS)
def test_lower_layers_never_import_higher_ones(path):
    own = layer_of(module_name(path))
    if own is None or own == TOP:
        return  # the root package and top-level modules (cli, __main__) may use any layer
    bad = []
    for layer, name, line in minimq_layers_imported(path):
        if layer not in RANK:
            bad.append(f"line {line}: {name} (unknown layer {layer!r})")
        elif RANK[layer] > RANK[own]:
            bad.append(f"line {line}: {name} ({layer} is above {own})")
    assert not bad, f"{module_name(path)} imports from a higher layer:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if layer_of(module_name(p)) in ALLOWED],
    ids=[m for m in MODULE_IDS if layer_of(m) in ALLOWED],
)
def test_core_layers_import_only_what_they_may(path):
    own = layer_of(module_name(path))
    bad = [
        f"line {line}: {name}"
        for layer, name, line in minimq_layers_imported(path)
        if layer not in ALLOWED[own]
    ]
    assert not bad, f"{module_name(path)} ({own}) may only use {sorted(ALLOWED[own])}:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if layer_of(module_name(p)) in PURE_LAYERS],
    ids=[m for m in MODULE_IDS if layer_of(m) in PURE_LAYERS],
)
def test_core_does_no_io_and_reads_no_clock(path):
    bad = [
        f"line {line}: {name}"
        for name, line in imports_of(path)
        if name.split(".")[0] in FORBIDDEN_IN_PURE
    ]
    assert not bad, f"{module_name(path)} imports I/O or clock modules:\n" + "\n".join(bad)


# ------------------------------------------------------------- the checker itself


def _check_source(tmp_path: Path, rel: str, source: str) -> list[tuple[str, int]]:
    fake = tmp_path / rel
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text(source)
    return imports_of(fake, tmp_path)


def test_checker_resolves_relative_and_nested_imports(tmp_path):
    src = (
        "from . import spec\n"
        "from .values import x\n"
        "from ..broker import queue\n"
        "def f():\n"
        "    import time\n"
        "if False:\n"
        "    from minimq.server import app\n"
        "importlib.import_module('socket')\n"
    )
    names = {n for n, _ in _check_source(tmp_path, "minimq/codec/frames.py", src)}
    assert {"minimq.codec", "minimq.codec.spec", "minimq.codec.values", "minimq.broker.queue",
            "time", "minimq.server", "minimq.server.app", "socket"} <= names
    pkg = {n for n, _ in _check_source(tmp_path, "minimq/codec/__init__.py", "from .spec import A\n")}
    assert "minimq.codec.spec" in pkg


def test_the_transport_never_imports_the_management_layer():
    """admin reads the server's connections; the server must not depend on admin."""
    bad = [
        f"{module_name(p)} line {line}: {name}"
        for p in MODULES if layer_of(module_name(p)) == "server"
        for layer, name, line in minimq_layers_imported(p) if layer == "admin"
    ]
    assert not bad, bad


def test_layer_of():
    assert layer_of("minimq.codec.spec") == "codec"
    assert layer_of("minimq.store") == "store"
    assert layer_of("minimq.cli") == TOP
    assert layer_of("minimq") is None
    assert layer_of("minimq.__version__") is None
    assert layer_of("asyncio") is None


# ------------------------------------------------------------- private names stay private
#
# A name starting with one underscore belongs to its module. Another module may not read it:
# neither `from minimq.x import _name` nor `obj._name` on an object from elsewhere. Without
# types the check is a sound approximation: `obj._name` is fine when the name is defined in
# the same module (a def, a class, an assigned attribute or name, a __slots__ entry, an
# argument), when `obj` is `self`/`cls`/`super()`, or when `obj` is a standard library
# module (`os._exit`).

# Cross-module private reads still allowed, as (module, what). It held the last cases while
# the broker and the management API were restructured (issue 16) and is empty now: it may
# only shrink, so it stays empty. A new case is fixed with a public name or a protocol,
# never by an entry here.
PRIVATE_ACCESS_ALLOWED: frozenset[tuple[str, str]] = frozenset()
#: Public API that happens to start with an underscore (namedtuple's).
_UNDERSCORE_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in _UNDERSCORE_API


def _names_defined_in(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
            names.update(c.value for c in ast.walk(node.value)
                         if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return names


def _foreign_modules(tree: ast.AST) -> set[str]:
    """Local names bound to non-minimq modules by `import x` / `import x as y`."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not alias.name.startswith("minimq"):
                    out.add(alias.asname or alias.name.split(".")[0])
    return out


def private_access(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, what) for each read of another module's private name in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = _names_defined_in(tree)
    foreign = _foreign_modules(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level or (node.module or "").startswith("minimq"):
                found += [(node.lineno, f"import {a.name}") for a in node.names
                          if _is_private(a.name)]
        elif isinstance(node, ast.Attribute) and _is_private(node.attr):
            value = node.value
            if isinstance(value, ast.Name) and (value.id in ("self", "cls") or value.id in foreign):
                continue
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "super":
                continue
            if node.attr in own:
                continue
            found.append((node.lineno, ast.unparse(node)))
    return found


@pytest.mark.parametrize("path", MODULES, ids=MODULE_IDS)
def test_no_module_reads_another_modules_private_names(path):
    mod = module_name(path)
    bad = [f"line {line}: {what}" for line, what in private_access(path)
           if (mod, what) not in PRIVATE_ACCESS_ALLOWED]
    assert not bad, f"{mod} reads private names of other modules:\n" + "\n".join(bad)


def test_the_private_access_allow_list_only_shrinks():
    """The allow-list only shrinks: it is empty, and it stays empty. (Were it not, every
    allowed case would have to still exist, so that a fixed one leaves the list.)"""
    present = {(module_name(p), what) for p in MODULES for _, what in private_access(p)}
    assert PRIVATE_ACCESS_ALLOWED <= present, PRIVATE_ACCESS_ALLOWED - present
    assert not PRIVATE_ACCESS_ALLOWED, (
        f"entries added to the private-access allow-list: {sorted(PRIVATE_ACCESS_ALLOWED)}; "
        "give the name a public spelling instead"
    )
    assert not present, f"cross-module private reads: {sorted(present)}"


def test_private_access_checker(tmp_path):
    src = (
        "import os\n"
        "from minimq.codec.values import _as_bytes\n"
        "from .frames import encode_frame, _hidden\n"
        "class A:\n"
        "    __slots__ = ('_slot',)\n"
        "    def __init__(self, other):\n"
        "        self._mine = 1\n"
        "        other._mine, other._slot = 2, 3\n"
        "        other.connection._send_method(1)\n"
        "        super()._base()\n"
        "        os._exit(0)\n"
        "        point._replace(x=1)\n"
    )
    fake = tmp_path / "minimq" / "codec" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(src)
    assert [what for _, what in private_access(fake, tmp_path)] == [
        "import _as_bytes", "import _hidden", "other.connection._send_method"]
