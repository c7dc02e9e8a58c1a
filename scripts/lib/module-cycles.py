"""Finds import cycles between the modules of each crate: `use crate::...` and `super::...` paths,
resolved to the deepest module they name, make a graph; a strongly connected set of more than one
module is a cycle. A module using what an ancestor defines or re-exports (`super::Publisher`) is
how Rust modules are built and is left out; a parent using its child is kept.

usage: module-cycles.py CRATE_DIR...   (exit 1 and the cycles when there are any)
"""
import re
import sys
from pathlib import Path

USE = re.compile(r"\buse\s+((?:crate|super)(?:::[\w{}, :*\n]+)?)\s*;", re.S)
PATH = re.compile(r"\b(crate|super)((?:::\w+)+)")


def module_of(src: Path, file: Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return tuple(parts)


def expand(use: str) -> list:
    """`crate::a::{b, c::d}` → [`crate::a::b`, `crate::a::c::d`] (one level of braces is enough here)."""
    use = " ".join(use.split())
    m = re.match(r"^(.*?)::\{(.*)\}$", use)
    if not m:
        return [use]
    head, inner = m.group(1), m.group(2)
    parts, depth, current = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        current += ch
    parts.append(current)
    out = []
    for p in (p.strip() for p in parts if p.strip()):
        out.extend(expand(f"{head}::{p}"))
    return out


def references(text: str) -> list:
    refs = []
    for use in USE.findall(text):
        refs.extend(expand(use))
    # Paths written out in code (`crate::amqp::Topology::new(...)`).
    refs.extend(m.group(1) + m.group(2) for m in PATH.finditer(text))
    return refs


def resolve(ref: str, here: tuple, modules: set) -> tuple:
    segments = ref.split("::")
    if segments[0] == "crate":
        base, rest = (), segments[1:]
    else:
        base = here
        while segments and segments[0] == "super":
            base, segments = base[:-1], segments[1:]
        rest = segments
    target = base
    for name in rest:
        if target + (name,) in modules:
            target = target + (name,)
        else:
            break
    return target


def ancestor(a: tuple, of: tuple) -> bool:
    return len(a) < len(of) and of[: len(a)] == a


def cycles(crate: Path, depth: int) -> list:
    """Cycles between modules cut to `depth` path segments: at 1, between the crate's top-level
    modules (a module counts with all it contains); at 2, between siblings one level down."""
    src = crate / "src"
    files = {module_of(src, f): f for f in src.rglob("*.rs")}
    modules = set(files)
    graph = {m[:depth]: set() for m in modules}
    for module, file in files.items():
        for ref in references(file.read_text()):
            source, target = module[:depth], resolve(ref, module, modules)[:depth]
            if target != source and not ancestor(target, source) and not ancestor(source, target):
                graph.setdefault(target, set())
                graph[source].add(target)
    # Tarjan's strongly connected components.
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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
                found.append(sorted("::".join(m) or "crate" for m in component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


failed = False
for crate in map(Path, sys.argv[1:]):
    found = [c for depth in (1, 2) for c in cycles(crate, depth)]
    for component in found:
        print(f"{crate}: import cycle among {', '.join(component)}")
    failed |= bool(found)
    if not found:
        print(f"{crate}: no import cycle between modules")
sys.exit(1 if failed else 0)
