"""Bounds on a GraphQL document, checked before graphql-core validates it, so that no
document can make validation slow (issue 18, finding 5) and every refusal is a GraphQL
error with a ``code`` in its extensions.

In order, for every operation (query, mutation, subscription; over HTTP and websockets):

1. the document's size: at most :data:`MAX_DOCUMENT_BYTES` bytes and
   :data:`MAX_TOKENS` tokens (``query_too_large``), before it is parsed;
2. its shape: at most :data:`MAX_FIELDS` field selections, :data:`MAX_FRAGMENTS`
   fragments, and a response name or fragment spread at most :data:`MAX_REPEATS` times
   in one selection set (``query_too_large``): graphql-core's rule that fields can be
   merged compares repeated fields and fragments pairwise;
3. the operation's depth, aliases and cost, with every fragment measured once per type
   it is spread on (a document of fragments spreading each other twice measures
   linearly, not exponentially): depth over ``max_depth`` (``query_too_deep``), more than
   ``max_aliases`` aliases (``too_many_aliases``), cost over ``max_cost``
   (``query_too_costly``).

The cost: a field costs its weight (1, or :data:`FIELD_COST` for the fields that read
the history database) times the number of parent items it is fetched for; a list field
multiplies its children by its ``limit`` argument, a literal or a variable at the value
sent (else the argument's default, else :data:`DEFAULT_LIST`).

>>> from graphql import build_schema, parse
>>> s = build_schema("type Q { a(limit: Int): [A] } type A { b: Int }  schema { query: Q }")
>>> doc = parse("query($n: Int) { a(limit: $n) { ...F } } fragment F on A { b }")
>>> measure(doc, s, None, {"n": 40})
Measure(cost=41, depth=1, aliases=0)
>>> measure(doc, s, None, {})  # no value, no default: DEFAULT_LIST
Measure(cost=21, depth=1, aliases=0)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, overload

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    parse,
)
from strawberry.extensions import SchemaExtension

MAX_DOCUMENT_BYTES = 16_000
MAX_TOKENS = 1_000
"""GraphiQL's introspection query has 163 tokens, the dashboard's largest about 100."""
MAX_FIELDS = 300
MAX_REPEATS = 10
MAX_FRAGMENTS = 20
"""graphql-core compares fragments spread together pairwise."""
DEFAULT_LIST = 20
"""The size a list field counts for in the cost when it has no ``limit``."""
HISTORY_COST = 100
FIELD_COST = {
    ("Sensor", "timeseries"): HISTORY_COST,
    ("Asset", "history"): HISTORY_COST,
    ("Query", "sensorTrends"): 10 * HISTORY_COST,
    ("Query", "modelAccuracy"): HISTORY_COST,
}
"""Fields that cost more than 1: each reads the history database (sensorTrends: every
sensor of a machine; modelAccuracy: every stored prediction). One machine's sensors'
series (20 by default) fit in a query; at most about 50 series do."""
PARSE_CACHE = 1024
BIG = 10**12
"""Numbers above this are counted as this (a limit of 10**100 is simply too costly)."""


def refusal(code: str, message: str, **extensions: Any) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code, **extensions})


# -- 1. size -----------------------------------------------------------------------------------
@lru_cache(maxsize=PARSE_CACHE)
def parse_bounded(query: str) -> DocumentNode:
    """The document of ``query``, refused when it is larger than the bounds (a syntax
    error raises graphql-core's own ``GraphQLError``)."""
    size = len(query.encode())
    if size > MAX_DOCUMENT_BYTES:
        raise refusal(
            "query_too_large",
            f"the document is {size} bytes, more than the limit of {MAX_DOCUMENT_BYTES}",
            limit=MAX_DOCUMENT_BYTES,
        )
    try:
        return parse(query, max_tokens=MAX_TOKENS)
    except GraphQLError as exc:
        if "tokens" in exc.message and "Parsing aborted" in exc.message:
            raise refusal(
                "query_too_large",
                f"the document has more than {MAX_TOKENS} tokens (names, punctuation, "
                "values); ask for less in one operation",
                limit=MAX_TOKENS,
            ) from None
        raise


# -- 2. shape ----------------------------------------------------------------------------------
def _selection_sets(document: DocumentNode) -> Iterator[SelectionSetNode]:
    """The selection sets of the operations, fragments and fields (an inline fragment's
    belongs to the selection set it is in)."""
    stack: list[Any] = [d for d in document.definitions if getattr(d, "selection_set", None)]
    while stack:
        selections = stack.pop().selection_set
        yield selections
        stack.extend(f for f in _flat(selections) if f.selection_set is not None)


def check_shape(document: DocumentNode) -> None:
    fragments = sum(isinstance(d, FragmentDefinitionNode) for d in document.definitions)
    if fragments > MAX_FRAGMENTS:
        raise refusal(
            "query_too_large",
            f"the document defines {fragments} fragments, more than {MAX_FRAGMENTS}",
            limit=MAX_FRAGMENTS,
        )
    fields = 0
    for selections in _selection_sets(document):
        seen: dict[str, int] = {}
        for sel in _flat(selections, spreads=True):
            if isinstance(sel, FieldNode):
                fields += 1
                name = (sel.alias or sel.name).value
            else:
                name = "..." + sel.name.value
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > MAX_REPEATS:
                raise refusal(
                    "query_too_large",
                    f"{name!r} is asked more than {MAX_REPEATS} times in one selection; "
                    "ask for it once",
                    limit=MAX_REPEATS,
                )
        if fields > MAX_FIELDS:
            raise refusal(
                "query_too_large",
                f"the document selects more than {MAX_FIELDS} fields; ask for less in one "
                "operation",
                limit=MAX_FIELDS,
            )


@overload
def _flat(selections: SelectionSetNode) -> Iterator[FieldNode]: ...
@overload
def _flat(
    selections: SelectionSetNode, spreads: bool
) -> Iterator[FieldNode | FragmentSpreadNode]: ...
def _flat(
    selections: SelectionSetNode, spreads: bool = False
) -> Iterator[FieldNode | FragmentSpreadNode]:
    """The fields of a selection set, those of its inline fragments included (and, with
    ``spreads``, its fragment spreads)."""
    for sel in selections.selections:
        if isinstance(sel, FieldNode) or (spreads and isinstance(sel, FragmentSpreadNode)):
            yield sel
        elif isinstance(sel, InlineFragmentNode) and sel.selection_set is not None:
            yield from _flat(sel.selection_set, spreads)


# -- 3. depth, aliases, cost -------------------------------------------------------------------
class Measure(NamedTuple):
    cost: int
    depth: int
    aliases: int


def _unwrap(t: Any) -> tuple[Any, bool]:
    is_list = False
    while isinstance(t, GraphQLNonNull | GraphQLList):
        if isinstance(t, GraphQLList):
            is_list = True
        t = t.of_type
    return t, is_list


@dataclass
class _Measurer:
    schema: GraphQLSchema
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: Mapping[str, Any]
    defaults: Mapping[str, Any]
    memo: dict[tuple[str, str], Measure]
    busy: set[tuple[str, str]]

    def items(self, definition: Any, node: FieldNode) -> int:
        """How many items a list field is asked for (see the module docstring)."""
        n: Any = DEFAULT_LIST
        default = definition.args.get("limit")
        if default is not None and isinstance(default.default_value, int):
            n = default.default_value
        for arg in node.arguments or ():
            if arg.name.value != "limit":
                continue
            if isinstance(arg.value, IntValueNode):
                n = int(arg.value.value)
            elif isinstance(arg.value, VariableNode):
                name = arg.value.name.value
                n = self.variables.get(name, self.defaults.get(name, n))
        return min(max(n, 1), BIG) if isinstance(n, int) and not isinstance(n, bool) else 1

    def selections(self, selections: SelectionSetNode | None, parent: Any) -> Measure:
        """The measure of a selection set for one parent item."""
        if selections is None or parent is None:
            return Measure(0, 0, 0)
        cost = depth = aliases = 0
        for sel in selections.selections:
            if isinstance(sel, FieldNode):
                aliases += sel.alias is not None
                name = sel.name.value
                fields = getattr(parent, "fields", None) or {}
                definition = fields.get(name)
                cost += FIELD_COST.get((parent.name, name), 1)
                if definition is None or name.startswith("__"):
                    continue  # introspection, or an unknown field (validation says so)
                child, is_list = _unwrap(definition.type)
                if isinstance(child, GraphQLObjectType) and sel.selection_set is not None:
                    n = self.items(definition, sel) if is_list else 1
                    inner = self.selections(sel.selection_set, child)
                    cost += min(n * inner.cost, BIG)
                    depth = max(depth, inner.depth + 1)
                    aliases += inner.aliases
            else:
                if isinstance(sel, InlineFragmentNode):
                    inner = self.selections(sel.selection_set, self.on(sel, parent))
                elif isinstance(sel, FragmentSpreadNode):
                    inner = self.fragment(sel.name.value, parent)
                else:
                    continue
                cost, aliases = min(cost + inner.cost, BIG), aliases + inner.aliases
                depth = max(depth, inner.depth)
        return Measure(cost, depth, min(aliases, BIG))

    def on(self, node: InlineFragmentNode | FragmentDefinitionNode, parent: Any) -> Any:
        if node.type_condition is None:
            return parent
        named = self.schema.get_type(node.type_condition.name.value)
        return named if isinstance(named, GraphQLObjectType) else parent

    def fragment(self, name: str, parent: Any) -> Measure:
        """A fragment's measure on ``parent``, computed once (a cycle counts nothing:
        validation refuses it)."""
        key = (name, getattr(parent, "name", ""))
        found = self.memo.get(key)
        if found is not None:
            return found
        definition = self.fragments.get(name)
        if definition is None or key in self.busy:
            return Measure(0, 0, 0)
        self.busy.add(key)
        found = self.memo[key] = self.selections(
            definition.selection_set, self.on(definition, parent)
        )
        self.busy.discard(key)
        return found


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    for d in document.definitions:
        if isinstance(d, OperationDefinitionNode) and (
            name is None or (d.name is not None and d.name.value == name)
        ):
            return d
    return None


def measure(
    document: DocumentNode,
    schema: GraphQLSchema,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> Measure:
    """The cost, depth and aliases of the operation that runs (``None``: none)."""
    operation = _operation(document, operation_name)
    if operation is None:
        return Measure(0, 0, 0)
    root = {
        "query": schema.query_type,
        "mutation": schema.mutation_type,
        "subscription": schema.subscription_type,
    }[operation.operation.value]
    defaults: dict[str, Any] = {}
    for v in operation.variable_definitions or ():
        if isinstance(v.default_value, IntValueNode):
            defaults[v.variable.name.value] = int(v.default_value.value)
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    measurer = _Measurer(schema, fragments, variables or {}, defaults, {}, set())
    return measurer.selections(operation.selection_set, root)


# -- the extension -----------------------------------------------------------------------------
def document_limits(max_depth: int, max_cost: int, max_aliases: int) -> type[SchemaExtension]:
    """A schema extension that parses with the bounds (it replaces strawberry's
    ``ParserCache``: parses are cached) and checks the shape and the measure before
    validation (list it before ``ValidationCache``)."""

    class DocumentLimits(SchemaExtension):
        def on_parse(self) -> Iterator[None]:
            context = self.execution_context
            if context.graphql_document is None and context.query:
                context.graphql_document = parse_bounded(context.query)
            yield

        def on_validate(self) -> Iterator[None]:
            context = self.execution_context
            document = context.graphql_document
            if document is not None:
                check_shape(document)
                m = measure(
                    document, context.schema._schema, context.operation_name, context.variables
                )
                name = context.operation_name or "anonymous"
                if m.depth > max_depth:
                    raise refusal(
                        "query_too_deep",
                        f"'{name}' exceeds maximum operation depth of {max_depth}",
                        limit=max_depth,
                    )
                if m.aliases > max_aliases:
                    raise refusal(
                        "too_many_aliases",
                        f"{m.aliases} aliases found. Allowed: {max_aliases}",
                        limit=max_aliases,
                    )
                if m.cost > max_cost:
                    raise refusal(
                        "query_too_costly",
                        f"query cost {m.cost} is over the limit of {max_cost}; ask for fewer "
                        "items (smaller limit) or fewer fields",
                        cost=m.cost,
                        limit=max_cost,
                    )
            yield

    return DocumentLimits
