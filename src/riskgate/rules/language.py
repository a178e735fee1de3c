"""Safe `when` expressions: parsed with :mod:`ast`, checked against a whitelist, compiled once.

A rule's ``when`` is Python expression syntax over the request's namespace::

    counters.login_accounts_per_ip > 8 and not challenge.passed
    ip in lists.bad_networks or cidr(ip, "10.0.0.0/8")
    matches(device.user_agent, "(?i)headless|phantomjs") and attributes.seats >= 6

Why compile to Python instead of interpreting: measured here, 40 rules as validated
``ast`` compiled into one function cost 3.2 µs per request, simpleeval 283 µs and
cel-python 4.5 ms. An interpreter walks a tree on every request; we walk it once at
load and let CPython's bytecode run the rest. Safety comes from the whitelist, not
from the interpreter: the generated code contains only names this module allocates
and literals printed with ``repr`` of checked constants, and runs without builtins.

Missing values (``None``: a signal a source could not supply) never raise: a
comparison, ``in`` or string function with a missing operand is false, arithmetic
with one is missing.

>>> ns = Namespace.build(counters=["fails"])
>>> expr, problems = check("counters.fails > 3 and ip.prefix != '10.0.0.0/24'", ns)
>>> fn = compile_rules([(expr, "hit")], ns, on_error=print)
>>> fn({"ip.prefix": "203.0.113.0/24"}, {"fails": 5})
['hit']
>>> fn({}, {})
[]
>>> check("counters.fail > 3", ns)[1][0].message
'unknown counter `fail`; did you mean `fails`? known: fails'
"""

from __future__ import annotations

import ast
import difflib
import ipaddress
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from riskgate.rules.members import CidrSet, ExprType, Members
from riskgate.rules.regex import RegexError, compile_search
from riskgate.signals import catalog

_TYPE_WORDS: Final[dict[str, str]] = {
    "str": "a string", "num": "a number", "bool": "true/false", "any": "a value",
}
_EXAMPLES: Final[dict[str, str]] = {"str": '"RU"', "num": "5", "bool": "True", "any": "5"}
_FROM_CATALOG: Final[dict[str, ExprType]] = {
    "str": "str", "int": "num", "float": "num", "bool": "bool",
}
#: Supplied by the model stage (riskgate.model.online): scores from 0 to 1, None when
#: no model runs, it is still warming up, or it failed.
MODEL_SIGNALS: Final[dict[str, ExprType]] = {"model.anomaly": "num",
                                              "model.bot_probability": "num"}
#: Names usable as literals besides Python's, because analysts write YAML.
_BOOL_NAMES: Final[dict[str, bool]] = {"true": True, "false": False, "True": True, "False": False}


def did_you_mean(word: str, choices: Iterable[str], what: str = "") -> str:
    """A hint to append to an "unknown ..." message.

    >>> did_you_mean("windw", ["window", "events"])
    '; did you mean `window`?'
    >>> did_you_mean("x", ["a", "b"], what="known")
    '; known: a, b'
    """
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1)
    hint = f"; did you mean `{close[0]}`?" if close else ""
    if what:
        hint += f" {what}: {', '.join(options)}" if close else f"; {what}: {', '.join(options)}"
    return hint


# --- sets an expression can test with `in` --------------------------------------------


# --- the namespace and checked expressions ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Namespace:
    """What a ``when`` may name: signals with their types, open families, counters, lists."""

    signals: Mapping[str, ExprType]
    families: frozenset[str]
    counters: frozenset[str]
    lists: Mapping[str, Members]

    @classmethod
    def build(
        cls, counters: Iterable[str] = (), lists: Mapping[str, Members] | None = None
    ) -> Namespace:
        """The namespace of the signal catalog as it stands now, plus declared names."""
        known = {n: _FROM_CATALOG.get(s.type, "any") for n, s in catalog.CATALOG.items()}
        for name, kind in MODEL_SIGNALS.items():
            known.setdefault(name, kind)
        return cls(known, frozenset(catalog.OPEN_FAMILIES), frozenset(counters), dict(lists or {}))

    def roots(self) -> set[str]:
        return {n.split(".")[0] for n in self.signals} | self.families | {"counters", "lists"}


@dataclass(frozen=True, slots=True)
class ExprProblem:
    """A problem inside one expression: 1-based line, 0-based character column."""

    line: int
    column: int
    message: str


@dataclass(frozen=True, slots=True)
class Expr:
    """A ``when`` that passed every check; compile it with :func:`compile_rules`."""

    source: str
    tree: ast.expr


def check(source: str, ns: Namespace) -> tuple[Expr | None, list[ExprProblem]]:
    """Parse and check one expression; every problem found is returned, not just the first."""
    # The parentheses let a multi-line block scalar parse as one expression.
    wrapped = f"(\n{source}\n)"
    try:
        tree = ast.parse(wrapped, mode="eval").body
    except SyntaxError as e:
        lines = source.split("\n")
        line = max((e.lineno or 2) - 1, 1)
        col = max((e.offset or 1) - 1, 0)
        if line > len(lines):  # the error is at our closing parenthesis: the text ended early
            line, col = len(lines), len(lines[-1].rstrip())
        return None, [ExprProblem(line, col, f"`when` is not a valid expression: {e.msg}")]
    except (RecursionError, MemoryError):
        return None, [ExprProblem(1, 0, "`when` is nested too deeply; split it into rules")]
    compiler = _Compiler(ns, wrapped, _Builder())
    try:
        _, kind = compiler.expr(tree)
    except RecursionError:
        return None, [ExprProblem(1, 0, "`when` is nested too deeply; split it into rules")]
    compiler.want_condition(tree, kind, "`when`")
    return (None if compiler.problems else Expr(source, tree)), compiler.problems


# --- what an expression reads -------------------------------------------------------------


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    return ".".join([node.id, *parts]) if isinstance(node, ast.Name) else None


def references(expr: Expr) -> set[str]:
    """The dotted names ``expr`` reads: signals, ``attributes.X``, ``counters.X`` ...

    >>> ns = Namespace.build()
    >>> sorted(references(check("ip.country == 'RU' and attributes.seats > 9", ns)[0]))
    ['attributes.seats', 'ip.country']
    """
    found: set[str] = set()
    pending: list[ast.AST] = [expr.tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Call):  # the function's name is not a value it reads
            pending.extend(node.args)
            continue
        name = _dotted(node) if isinstance(node, ast.Attribute | ast.Name) else None
        if name is not None:
            found.add(name)
        else:
            pending.extend(ast.iter_child_nodes(node))
    return found


def _is_number(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return (isinstance(node, ast.Constant) and isinstance(node.value, int | float)
            and not isinstance(node.value, bool))


def compared_with_numbers(expr: Expr, family: str = "attributes") -> set[str]:
    """Names of ``family`` members that ``expr`` compares with a number literal.

    The type checker cannot judge these (an attribute is whatever the request sent),
    so :mod:`riskgate.rules.wiring` holds them against the routes' declared types.

    >>> ns = Namespace.build()
    >>> e, _ = check("attributes.seats > 9 or attributes.flight == 'CA1' or "
    ...              "attributes.party in [1, 2]", ns)
    >>> sorted(compared_with_numbers(e))
    ['party', 'seats']
    """
    found: set[str] = set()
    for node in ast.walk(expr.tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for left, op, right in zip(operands, node.ops, operands[1:], strict=False):
            if isinstance(op, ast.In | ast.NotIn):
                numbers = isinstance(right, ast.List | ast.Tuple | ast.Set) and any(
                    _is_number(e) for e in right.elts)
                pairs = [(left, right)] if numbers else []
            else:
                pairs = [(left, right), (right, left)]
            for value, other in pairs:
                name = _dotted(value) if isinstance(value, ast.Attribute) else None
                if name and name.startswith(f"{family}.") and (
                        _is_number(other) or isinstance(op, ast.In | ast.NotIn)):
                    found.add(name.partition(".")[2])
    return found


# --- code generation ------------------------------------------------------------------------


class _Builder:
    """Names in one generated function: facts and counters read once into locals,
    constants (compiled regexes, sets, Match objects) passed in as globals."""

    def __init__(self) -> None:
        self.facts: dict[str, str] = {}
        self.counters: dict[str, str] = {}
        self.consts: dict[str, object] = {}
        self.shared: dict[str, str] = {}
        self._names: dict[Hashable, str] = {}
        self._temps = 0

    def fact(self, name: str) -> str:
        return self.facts.setdefault(name, f"f{len(self.facts)}")

    def counter(self, name: str) -> str:
        return self.counters.setdefault(name, f"c{len(self.counters)}")

    def const(self, value: object) -> str:
        try:  # equal constants share a name, so equal tests can be shared too
            key: Hashable = (type(value), value)
            hash(key)
        except TypeError:
            key = object()
        if key not in self._names:
            self._names[key] = f"K{len(self.consts)}"
            self.consts[self._names[key]] = value
        return self._names[key]

    def temp(self) -> str:
        self._temps += 1
        return f"t{self._temps}"

    def share(self, code: str) -> str:
        """A local computed once per request for a pure test that cannot raise.

        Rules of one event often ask the same thing (``ip in lists.bad_networks``,
        ``lower(device.user_agent)``); computing it once up front beats once per rule.
        """
        return self.shared.setdefault(code, f"s{len(self.shared)}")


_NUMBERS: Final = frozenset({int, float})
_GLOBALS: Final[dict[str, object]] = {
    "__builtins__": {},  # generated code needs none; defence in depth
    "_N": _NUMBERS, "isinstance": isinstance, "type": type, "len": len, "abs": abs,
    "min": min, "max": max,
    "str": str, "list": list, "tuple": tuple, "dict": dict, "Exception": Exception,
}

T = TypeVar("T")


def compile_rules(
    rules: Sequence[tuple[Expr, T]], ns: Namespace, on_error: Callable[[int], object]
) -> Callable[[Mapping[str, Any], Mapping[str, Any]], list[T]]:
    """One Python function ``(facts, counters) -> [results of matching rules]``.

    Each rule runs in its own ``try`` (free in CPython 3.11 until something raises), so a
    rule that fails at run time (division by zero, a value of the wrong type) does not
    match, ``on_error(index)`` is told, and the other rules still run.
    """
    b = _Builder()
    body: list[str] = []
    for i, (expr, result) in enumerate(rules):
        code, _ = _Compiler(ns, f"(\n{expr.source}\n)", b).expr(expr.tree)
        body.append(
            f"    try:\n        if {code}:\n            out.append({b.const(result)})\n"
            f"    except Exception:\n        err({i})\n"
        )
    loads = [f"    {v} = fg({k!r})\n" for k, v in b.facts.items()]
    loads += [f"    {v} = cg({k!r})\n" for k, v in b.counters.items()]
    loads += [f"    {v} = {k}\n" for k, v in b.shared.items()]
    source = (
        "def evaluate(facts, counters):\n    fg = facts.get\n    cg = counters.get\n"
        "    out = []\n" + "".join(loads) + "".join(body) + "    return out\n"
    )
    scope: dict[str, Any] = {**_GLOBALS, **b.consts, "err": on_error}
    # Safe: every name in `source` was allocated above and every literal is the repr of a
    # checked str/int/float/bool constant; user text never reaches it verbatim.
    exec(compile(source, "<riskgate rules>", "exec"), scope)  # noqa: S102
    fn: Callable[[Mapping[str, Any], Mapping[str, Any]], list[T]] = scope["evaluate"]
    return fn


# --- the checker and code generator --------------------------------------------------------

_COMPARE_OPS: Final[dict[type[ast.cmpop], str]] = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
}
_ARITH_OPS: Final[dict[type[ast.operator], str]] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%",
}
_ALLOWED: Final = (
    "comparisons, and/or/not, + - * / %, `in`, and the functions "
    "matches, startswith, endswith, contains, lower, len, cidr, min, max, abs"
)
_REFUSED: Final[dict[type[ast.AST], str]] = {
    ast.Lambda: "`lambda` is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Subscript: "subscripts (`x[...]`) are not allowed; name the value, e.g. `attributes.seats`",
    ast.JoinedStr: "f-strings are not allowed; use a plain string",
    ast.IfExp: "`... if ... else ...` is not allowed; combine conditions with and/or",
    ast.NamedExpr: "`:=` is not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Starred: "`*` unpacking is not allowed",
    ast.Await: "`await` is not allowed",
}


class _Compiler:
    """Checks one expression tree and emits Python source for it, in one walk.

    Each method returns ``(code, type)``; problems are collected, and a node with a
    problem gets type ``any`` so one mistake does not cascade into several.
    """

    def __init__(self, ns: Namespace, source: str, builder: _Builder) -> None:
        self.ns = ns
        self.source = source
        self.lines = source.split("\n")
        self.b = builder
        self.problems: list[ExprProblem] = []

    # -- helpers

    def problem(self, node: ast.AST, message: str) -> tuple[str, ExprType]:
        line = getattr(node, "lineno", 2)
        col_bytes = getattr(node, "col_offset", 0)
        text = self.lines[line - 1] if line - 1 < len(self.lines) else ""
        col = len(text.encode()[:col_bytes].decode(errors="ignore"))  # ast counts UTF-8 bytes
        self.problems.append(ExprProblem(max(line - 1, 1), col, message))
        return "None", "any"

    def text(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.source, node) or type(node).__name__

    def want_condition(self, node: ast.AST, kind: ExprType, where: str) -> None:
        if kind in ("str", "num"):
            test = "> 0" if kind == "num" else '!= ""'
            example = f"{self.text(node)} {test}"
            self.problem(node, f"{where} needs a condition but `{self.text(node)}` is "
                               f"{_TYPE_WORDS[kind]}; compare it, e.g. `{example}`")

    def want(self, node: ast.AST, kind: ExprType, wanted: tuple[ExprType, ...], what: str) -> None:
        if kind != "any" and kind not in wanted:
            words = " or ".join(_TYPE_WORDS[w] for w in wanted)
            shown = self.text(node)
            self.problem(node, f"{what} takes {words} but `{shown}` is {_TYPE_WORDS[kind]}")

    def pure(self, code: str, operand: str) -> str:
        """Share ``code`` across the rules of the function when its operand is a plain local."""
        return self.b.share(code) if operand.isidentifier() else code

    def bind(self, node: ast.expr) -> tuple[str, str, ExprType]:
        """Code that evaluates ``node`` once: (first use, later uses, type)."""
        code, kind = self.expr(node)
        if isinstance(node, ast.Constant) or code.isidentifier():
            return code, code, kind
        t = self.b.temp()
        return f"({t} := {code})", t, kind

    def expr(self, node: ast.expr) -> tuple[str, ExprType]:
        method = _DISPATCH.get(type(node))
        if method is None:
            why = _REFUSED.get(type(node))
            return self.problem(node, why or f"`{self.text(node)}` is not allowed; `when` "
                                             f"allows {_ALLOWED}")
        return method(self, node)

    # -- leaves

    def constant(self, node: ast.Constant) -> tuple[str, ExprType]:
        v = node.value
        if isinstance(v, bool):
            return repr(v), "bool"
        if isinstance(v, int | float):
            return (repr(v) if math.isfinite(v) else self.b.const(v)), "num"
        if isinstance(v, str):
            return repr(v), "str"
        if v is None:
            return self.problem(node, "`None` can only be used as `x is None` or `x is not None`")
        return self.problem(node, f"`{self.text(node)}` is not allowed; `when` allows {_ALLOWED}")

    def reference(self, node: ast.Name | ast.Attribute) -> tuple[str, ExprType]:
        parts: list[str] = []
        cur: ast.expr = node
        while isinstance(cur, ast.Attribute):
            parts.insert(0, cur.attr)
            cur = cur.value
        if not isinstance(cur, ast.Name):
            return self.problem(node, "attribute access is only allowed on signal names "
                                      "such as `ip.prefix` or `counters.NAME`")
        parts.insert(0, cur.id)
        name = ".".join(parts)
        if any(p.startswith("_") for p in parts):
            return self.problem(node, f"`{name}`: names starting with `_` are not allowed")
        if len(parts) == 1 and name in _BOOL_NAMES:
            return repr(_BOOL_NAMES[name]), "bool"
        root, ns = parts[0], self.ns
        if root == "counters":
            if len(parts) == 2 and parts[1] in ns.counters:
                return self.b.counter(parts[1]), "num"
            if not ns.counters:
                return self.problem(node, f"unknown counter `{name[9:]}`; no counters are "
                                          "declared: add it under `counters:`")
            return self.problem(node, f"unknown counter `{name[9:]}`"
                                + did_you_mean(name[9:], ns.counters, "known"))
        if root == "lists":
            if len(parts) != 2 or parts[1] not in ns.lists:
                return self.unknown_list(node, name[6:])
            return self.problem(node, f"`{name}` can only be used after `in`, "
                                      f"e.g. `ip in {name}`")
        if name in ns.signals:
            return self.b.fact(name), ns.signals[name]
        if root in ns.families:
            if len(parts) == 2:
                return self.b.fact(name), "any"
            return self.problem(node, f"`{name}`: {root} are one level deep, e.g. `{root}.NAME`")
        if root in ns.roots():
            family = [n for n in ns.signals if n.split(".")[0] == root]
            return self.problem(node, f"unknown signal `{name}`"
                                + did_you_mean(name, family, "known"))
        close = did_you_mean(name, ns.roots() | set(ns.signals))
        return self.problem(node, f"unknown name `{name}`{close or ';'} names start with: "
                                  + ", ".join(sorted(ns.roots())))

    def unknown_list(self, node: ast.AST, name: str) -> tuple[str, ExprType]:
        if not self.ns.lists:
            return self.problem(node, f"unknown list `{name}`; no lists are declared: "
                                      "add it under `lists:`")
        return self.problem(node, f"unknown list `{name}`"
                            + did_you_mean(name, self.ns.lists, "known"))

    # -- operators

    def boolop(self, node: ast.BoolOp) -> tuple[str, ExprType]:
        codes = []
        for value in node.values:
            code, kind = self.expr(value)
            self.want_condition(value, kind, "`and`/`or`")
            codes.append(code)
        joiner = " and " if isinstance(node.op, ast.And) else " or "
        return f"({joiner.join(codes)})", "bool"

    def unaryop(self, node: ast.UnaryOp) -> tuple[str, ExprType]:
        if isinstance(node.op, ast.Not):
            code, kind = self.expr(node.operand)
            self.want_condition(node.operand, kind, "`not`")
            return f"(not {code})", "bool"
        if isinstance(node.op, ast.Invert):
            return self.problem(node, f"`~` is not allowed; `when` allows {_ALLOWED}")
        sign = "-" if isinstance(node.op, ast.USub) else "+"
        operand = node.operand
        if isinstance(operand, ast.Constant) and type(operand.value) in _NUMBERS:
            return f"({sign}{operand.value!r})", "num"
        first, later, kind = self.bind(operand)
        self.want(operand, kind, ("num",), f"`{sign}`")
        return f"({sign}{later} if type({first}) in _N else None)", "num"

    def binop(self, node: ast.BinOp) -> tuple[str, ExprType]:
        op = _ARITH_OPS.get(type(node.op))
        if op is None:
            return self.problem(node, f"`{self.text(node)}`: this operator is not allowed; "
                                      "arithmetic is + - * / %")
        if op in "/%" and isinstance(node.right, ast.Constant) and node.right.value == 0:
            return self.problem(node.right, f"`{self.text(node)}` divides by zero")
        a_first, a, a_kind = self.bind(node.left)
        b_first, b, b_kind = self.bind(node.right)
        self.want(node.left, a_kind, ("num",), f"`{op}`")
        self.want(node.right, b_kind, ("num",), f"`{op}`")
        return f"({a} {op} {b} if type({a_first}) in _N and type({b_first}) in _N else None)", "num"

    def compare(self, node: ast.Compare) -> tuple[str, ExprType]:
        op = node.ops[0]
        if isinstance(op, ast.In | ast.NotIn | ast.Is | ast.IsNot):
            if len(node.ops) > 1:
                return self.problem(node, "chained `in`/`is` is ambiguous; join separate "
                                          "comparisons with `and`")
            if isinstance(op, ast.Is | ast.IsNot):
                return self.is_none(node, isinstance(op, ast.IsNot))
            return self.membership(node, isinstance(op, ast.NotIn))
        terms: list[str] = []
        left_node = node.left
        first, left, left_kind = self.bind(left_node)
        if not isinstance(left_node, ast.Constant):
            terms.append(f"{first} is not None")
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            sym = _COMPARE_OPS.get(type(op))
            if sym is None:
                return self.problem(node, "chained `in`/`is` is ambiguous; join separate "
                                          "comparisons with `and`")
            if isinstance(right_node, ast.Constant) and right_node.value is None:
                return self.problem(right_node, "compare with None as "
                                                f"`{self.text(left_node)} is None`")
            r_first, right, right_kind = self.bind(right_node)
            if not isinstance(right_node, ast.Constant):
                terms.append(f"{r_first} is not None")
            self.check_compare(sym, left_node, left_kind, right_node, right_kind)
            terms.append(f"{left} {sym} {right}")
            left_node, left, left_kind = right_node, right, right_kind
        return f"({' and '.join(terms)})", "bool"

    def check_compare(
        self, sym: str, ln: ast.expr, lk: ExprType, rn: ast.expr, rk: ExprType
    ) -> None:
        if "any" in (lk, rk):
            return
        lt, rt = self.text(ln), self.text(rn)
        if sym in ("==", "!=") and lk != rk:
            self.problem(ln, f"`{lt}` is {_TYPE_WORDS[lk]} and `{rt}` is {_TYPE_WORDS[rk]}, so "
                             f"they are never equal; compare with {_TYPE_WORDS[lk]} such as "
                             f"{_EXAMPLES[lk]}")
        elif sym not in ("==", "!=") and (lk != rk or lk == "bool"):
            self.problem(ln, f"`{lt} {sym} {rt}` compares {_TYPE_WORDS[lk]} with "
                             f"{_TYPE_WORDS[rk]}; `{sym}` needs two numbers or two strings")

    def is_none(self, node: ast.Compare, negate: bool) -> tuple[str, ExprType]:
        right = node.comparators[0]
        if not (isinstance(right, ast.Constant) and right.value is None):
            return self.problem(node, "`is` only tests for None (`x is None`); use `==`")
        code, _ = self.expr(node.left)
        return f"({code} is {'not ' if negate else ''}None)", "bool"

    def membership(self, node: ast.Compare, negate: bool) -> tuple[str, ExprType]:
        first, left, kind = self.bind(node.left)
        right = node.comparators[0]
        test: str
        if isinstance(right, ast.List | ast.Tuple | ast.Set):
            values = []
            for element in right.elts:
                value, ok = _literal(element)
                if not ok:
                    self.problem(element, f"`{self.text(element)}`: a list after `in` holds "
                                          "literals only, e.g. `[\"RU\", \"CN\"]`")
                    continue
                e_kind: ExprType = (
                    "bool" if isinstance(value, bool) else "str" if isinstance(value, str)
                    else "num"
                )
                self.check_compare("==", node.left, kind, element, e_kind)
                values.append(value)
            test = f"{left} in {self.b.const(frozenset(values))}"
        elif _is_list_ref(right):
            name = right.attr  # type: ignore[attr-defined]
            members = self.ns.lists.get(name)
            if members is None:
                return self.unknown_list(right, name)
            self.check_compare("==", node.left, kind, right, members.element)
            test = self.pure(f"{self.b.const(members.__contains__)}({left})", left)
            if not negate:  # Members never contain None: no need to test for it
                return (test if first == left else f"({first} is not None and {test})"), "bool"
        else:
            return self.problem(right, "`in` takes a list such as `[\"RU\", \"CN\"]` or a "
                                       "declared list `lists.NAME`; for text inside text use "
                                       "`contains(s, \"part\")`")
        return f"({first} is not None and {'not ' if negate else ''}{test})", "bool"

    # -- functions

    def call(self, node: ast.Call) -> tuple[str, ExprType]:
        if not isinstance(node.func, ast.Name):
            before = len(self.problems)
            self.expr(node.func)  # report what is wrong inside first (lambda, `__class__`, ...)
            if len(self.problems) > before:
                return "None", "any"
            return self.problem(node, f"`{self.text(node.func)}` cannot be called; `when` can "
                                      f"call only {', '.join(_FUNCTIONS)}")
        name = node.func.id
        spec = _FUNCTIONS.get(name)
        if spec is None:
            return self.problem(node, f"unknown function `{name}`"
                                + did_you_mean(name, _FUNCTIONS, "allowed"))
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            return self.problem(node, f"`{name}()` takes plain arguments, no `name=` or `*`")
        lo, hi = spec[0], spec[1]
        if not lo <= len(node.args) <= hi:
            count = f"{lo}" if lo == hi else f"{lo} or more" if hi > 9 else f"{lo} to {hi}"
            return self.problem(node, f"`{name}()` takes {count} arguments, got {len(node.args)}")
        return spec[2](self, node, name)

    def string_test(self, node: ast.Call, name: str) -> tuple[str, ExprType]:
        s_first, s, s_kind = self.bind(node.args[0])
        self.want(node.args[0], s_kind, ("str",), f"`{name}()`")
        p_first, p, p_kind = self.bind(node.args[1])
        self.want(node.args[1], p_kind, ("str",), f"`{name}()`")
        test = f"{p} in {s}" if name == "contains" else f"{s}.{name}({p})"
        literal = isinstance(node.args[1], ast.Constant)
        p_check = "" if literal else f"isinstance({p_first}, str) and "
        return f"(isinstance({s_first}, str) and {p_check}{test})", "bool"

    def matches(self, node: ast.Call, name: str) -> tuple[str, ExprType]:
        s_first, s, s_kind = self.bind(node.args[0])
        self.want(node.args[0], s_kind, ("str",), "`matches()`")
        pattern = node.args[1]
        if not (isinstance(pattern, ast.Constant) and isinstance(pattern.value, str)):
            return self.problem(pattern, "`matches()` takes the regex as a quoted string")
        try:
            search = compile_search(pattern.value)
        except RegexError as e:
            return self.problem(pattern, str(e))
        test = f"(isinstance({s_first}, str) and {self.b.const(search)}({s}) is not None)"
        return self.pure(test, s_first), "bool"

    def cidr(self, node: ast.Call, name: str) -> tuple[str, ExprType]:
        code, kind = self.expr(node.args[0])
        self.want(node.args[0], kind, ("str",), "`cidr()`")
        nets = []
        for arg in node.args[1:]:
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                self.problem(arg, "`cidr()` takes networks as quoted strings, e.g. \"10.0.0.0/8\"")
                continue
            try:
                nets.append(ipaddress.ip_network(arg.value))
            except ValueError as e:
                self.problem(arg, f"bad CIDR {arg.value!r}: {e}")
        return self.pure(f"{self.b.const(CidrSet(nets).__contains__)}({code})", code), "bool"

    def lower(self, node: ast.Call, name: str) -> tuple[str, ExprType]:
        first, s, kind = self.bind(node.args[0])
        self.want(node.args[0], kind, ("str",), "`lower()`")
        return self.pure(f"({s}.lower() if isinstance({first}, str) else None)", first), "str"

    def length(self, node: ast.Call, name: str) -> tuple[str, ExprType]:
        first, s, kind = self.bind(node.args[0])
        self.want(node.args[0], kind, ("str",), "`len()`")
        test = f"(len({s}) if isinstance({first}, (str, list, tuple, dict)) else None)"
        return self.pure(test, first), "num"

    def numeric(self, node: ast.Call, name: str) -> tuple[str, ExprType]:
        firsts, laters = [], []
        for arg in node.args:
            first, later, kind = self.bind(arg)
            self.want(arg, kind, ("num",), f"`{name}()`")
            firsts.append(first)
            laters.append(later)
        checks = " and ".join(f"type({first}) in _N" for first in firsts)
        return f"({name}({', '.join(laters)}) if {checks} else None)", "num"


def _literal(node: ast.expr) -> tuple[object, bool]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float):
        return node.value, True
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
            and isinstance(node.operand.value, int | float)
            and not isinstance(node.operand.value, bool)):
        return -node.operand.value, True
    return None, False


def _is_list_ref(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "lists")


_Emit = Callable[[_Compiler, ast.Call, str], tuple[str, ExprType]]
#: name -> (fewest arguments, most arguments, emitter)
_FUNCTIONS: Final[dict[str, tuple[int, int, _Emit]]] = {
    "matches": (2, 2, _Compiler.matches),
    "startswith": (2, 2, _Compiler.string_test),
    "endswith": (2, 2, _Compiler.string_test),
    "contains": (2, 2, _Compiler.string_test),
    "lower": (1, 1, _Compiler.lower),
    "len": (1, 1, _Compiler.length),
    "cidr": (2, 99, _Compiler.cidr),
    "min": (2, 99, _Compiler.numeric),
    "max": (2, 99, _Compiler.numeric),
    "abs": (1, 1, _Compiler.numeric),
}
_DISPATCH: Final[dict[type[ast.AST], Callable[[_Compiler, Any], tuple[str, ExprType]]]] = {
    ast.Constant: _Compiler.constant,
    ast.Name: _Compiler.reference,
    ast.Attribute: _Compiler.reference,
    ast.BoolOp: _Compiler.boolop,
    ast.UnaryOp: _Compiler.unaryop,
    ast.BinOp: _Compiler.binop,
    ast.Compare: _Compiler.compare,
    ast.Call: _Compiler.call,
}
