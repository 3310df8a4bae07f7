"""The generated catalog: its category tree, products and locations.

The tree, and the made-up brands and product lines that large catalogs repeat its base items
under, are data: ``catalog.yaml`` beside this module (:func:`load_catalog`). From them and the
seeded random generator come the categories in tree order, the products (name, SKU, unit,
typical cost, reorder point, lot size, how often they sell) and the locations with their roles
(warehouse, store, returns).
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

WAREHOUSE, STORE, RETURNS = "warehouse", "store", "returns"

# Locations in the order they are created; beyond these, STORE-n.
LOCATIONS: tuple[tuple[str, str, str], ...] = (
    ("WH-MAIN", "Main warehouse", WAREHOUSE),
    ("WH-NORTH", "North warehouse", WAREHOUSE),
    ("STORE-1", "Store 1 (high street)", STORE),
    ("RETURNS", "Returns area", RETURNS),
    ("WH-SOUTH", "South warehouse", WAREHOUSE),
    ("STORE-2", "Store 2 (retail park)", STORE),
    ("STORE-3", "Store 3 (trade counter)", STORE),
    ("WH-EAST", "East warehouse", WAREHOUSE),
)


@dataclass(frozen=True)
class Leaf:
    """A category that holds products, and what its products look like."""

    name: str
    code: str
    unit: str
    cost: tuple[float, float]  # unit cost range
    lot: int  # a typical customer order, in units
    items: tuple[tuple[str, tuple[str, ...]], ...]  # base name and its variants
    suffixes: tuple[str, ...] = ("",)
    blurbs: tuple[str, ...] = ()
    description: str | None = None


@dataclass(frozen=True)
class Branch:
    """A category that holds categories."""

    name: str
    code: str
    description: str
    children: tuple[Branch | Leaf, ...]


@dataclass(frozen=True)
class Catalog:
    """What catalog.yaml holds."""

    tree: tuple[Branch, ...]
    brands: tuple[str, ...]
    product_lines: tuple[str, ...]  # "" first: the first line under a brand has no label


@functools.cache
def load_catalog() -> Catalog:
    """catalog.yaml, read once (on first use: importing the package stays cheap)."""
    text = resources.files("service.datagen").joinpath("catalog.yaml").read_text(encoding="utf-8")
    return parse_catalog(yaml.safe_load(text))


def parse_catalog(data: Any) -> Catalog:
    """The YAML document as a Catalog; a ValueError says what is wrong where."""
    _check_keys(data, "the document", frozenset({"categories", "brands", "product_lines"}))
    tree = []
    for node in _sequence(data["categories"], "categories"):
        root = _node(node, "")
        if not isinstance(root, Branch):  # its code starts every SKU beneath it
            raise ValueError(f"catalog.yaml: {root.name}: a top-level category holds categories")
        tree.append(root)
    return Catalog(
        tuple(tree),
        _strings(data["brands"], "brands"),
        _strings(data["product_lines"], "product_lines"),
    )


_BRANCH_KEYS = frozenset({"name", "code", "description", "children"})
_LEAF_KEYS = frozenset({"name", "code", "description", "unit", "cost", "lot", "items"})
_LEAF_OPTIONAL_KEYS = frozenset({"suffixes", "blurbs"})


def _node(data: Any, parent: str) -> Branch | Leaf:
    name = data.get("name") if isinstance(data, dict) else None
    where = f"{parent}/{name}" if parent else str(name)
    if isinstance(data, dict) and "children" in data:
        _check_keys(data, where, _BRANCH_KEYS)
        return Branch(
            _text(data, "name", where),
            _text(data, "code", where),
            _text(data, "description", where),
            tuple(_node(child, where) for child in _sequence(data["children"], where)),
        )
    _check_keys(data, where, _LEAF_KEYS, _LEAF_OPTIONAL_KEYS)
    cost = data["cost"]
    if not (
        isinstance(cost, list)
        and len(cost) == 2
        and all(isinstance(x, int | float) and x > 0 for x in cost)
    ):
        raise ValueError(f"catalog.yaml: {where}: cost is [low, high], both above zero")
    if not isinstance(data["lot"], int) or data["lot"] < 1:
        raise ValueError(f"catalog.yaml: {where}: lot is a whole number of units, at least 1")
    items = []
    for item in _sequence(data["items"], where):
        if not isinstance(item, dict) or len(item) != 1:
            raise ValueError(f"catalog.yaml: {where}: an item is one 'base name: [variants]'")
        ((base, variants),) = item.items()
        if not isinstance(base, str):
            raise ValueError(f"catalog.yaml: {where}: the base name {base!r} must be text")
        items.append((base, _strings(variants, f"{where}: {base}")))
    return Leaf(
        _text(data, "name", where),
        _text(data, "code", where),
        _text(data, "unit", where),
        (float(cost[0]), float(cost[1])),
        data["lot"],
        tuple(items),
        _strings(data.get("suffixes", [""]), f"{where}: suffixes"),
        _strings(data.get("blurbs", []), f"{where}: blurbs"),
        _text(data, "description", where),
    )


def _check_keys(
    data: Any, where: str, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"catalog.yaml: {where}: expected a mapping, got {data!r}")
    missing, unknown = required - data.keys(), data.keys() - required - optional
    if missing or unknown:
        raise ValueError(
            f"catalog.yaml: {where}: missing {sorted(missing)}, unknown {sorted(unknown)}"
        )


def _sequence(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"catalog.yaml: {where}: expected a non-empty list")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    # No str(): YAML reads an unquoted 1.50 as the number 1.5, the name needs "1.50" quoted.
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"catalog.yaml: {where}: expected a list of strings, got {value!r}")
    return tuple(value)


def _text(data: dict[str, Any], key: str, where: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"catalog.yaml: {where}: {key} must be text, got {value!r}")
    return value


# --- the catalog, laid out ---------------------------------------------------------------------


@dataclass
class CatalogCategory:
    name: str
    description: str | None
    parent: int | None  # index into the category list
    leaf: Leaf | None
    path: str
    root_code: str
    id: int = 0
    reused: bool = False


def lay_out_categories() -> list[CatalogCategory]:
    out: list[CatalogCategory] = []

    def walk(node: Branch | Leaf, parent: int | None, path: str, root_code: str) -> None:
        full = f"{path}/{node.name}" if path else node.name
        description = node.description
        out.append(
            CatalogCategory(
                node.name,
                description,
                parent,
                node if isinstance(node, Leaf) else None,
                full,
                root_code,
            )
        )
        index = len(out) - 1
        if isinstance(node, Branch):
            for child in node.children:
                walk(child, index, full, root_code)

    for root in load_catalog().tree:
        walk(root, None, "", root.code)
    return out


@dataclass
class CatalogProduct:
    sku: str
    name: str
    description: str | None
    category: int  # index into the category list
    unit: str
    reorder_point: int
    reorder_quantity: int
    lot: int
    cost_cents: int  # a typical purchase price, in 1/10000 of the currency unit
    popularity: float


def _round_to(value: float, step: int) -> int:
    return max(step, round(value / step) * step)


def make_products(
    rng: random.Random, count: int, categories: list[CatalogCategory]
) -> list[CatalogProduct]:
    leaves = [index for index, category in enumerate(categories) if category.leaf is not None]
    # Bigger leaves (more base items) hold more products.
    weights = [
        sum(len(v) for _, v in categories[i].leaf.items) * len(categories[i].leaf.suffixes)
        for i in leaves
    ]
    # Every leaf once (when there are enough products), the rest by weight; shuffled so
    # ids do not follow the tree.
    chosen = leaves[:count] + rng.choices(leaves, weights=weights, k=max(0, count - len(leaves)))
    rng.shuffle(chosen)
    catalog = load_catalog()
    brands, product_lines = catalog.brands, catalog.product_lines
    combos: dict[int, list[tuple[str, str, str]]] = {}
    used: dict[int, int] = {}
    out = []
    for leaf_index in chosen:
        category = categories[leaf_index]
        leaf = category.leaf
        assert leaf is not None
        if leaf_index not in combos:
            options = [
                (base, variant, suffix)
                for base, variants in leaf.items
                for variant in variants
                for suffix in leaf.suffixes
            ]
            rng.shuffle(options)
            combos[leaf_index] = options
        options = combos[leaf_index]
        serial = used.get(leaf_index, 0)
        used[leaf_index] = serial + 1
        base, variant, suffix = options[serial % len(options)]
        name = f"{base} {variant}{suffix}"
        edition = serial // len(options)  # 0: the plain name; then brands, their lines, ...
        if edition:
            brand = brands[(edition - 1) % len(brands)]
            line_no = (edition - 1) // len(brands)
            line = product_lines[line_no % len(product_lines)]
            generation = line_no // len(product_lines) + 1
            label = " ".join(
                part
                for part in (brand, line, f"Gen {generation}" if generation > 1 else "")
                if part
            )
            name = f"{label} {name}"
        low, high = leaf.cost
        cost = low * (high / low) ** rng.random()
        cost_cents = (
            round(cost * 100) * 100 if cost >= 1 else round(cost * 10000)
        )  # cents, or 4 decimals below one unit
        popularity = math.exp(rng.gauss(0.0, 1.1)) * (1.0 + 20.0 / (cost + 5.0))
        lot = max(1, round(leaf.lot * (0.5 + rng.random())))
        if rng.random() < 0.1:
            reorder_point = 0  # not tracked for reordering
            reorder_quantity = 0
        else:
            step = 5 if lot * 4 >= 20 else 1
            reorder_point = _round_to(lot * rng.uniform(3, 10), step)
            reorder_quantity = _round_to(reorder_point * rng.choice((2, 3, 4)), step)
        description = rng.choice(leaf.blurbs) if leaf.blurbs and rng.random() < 0.6 else None
        out.append(
            CatalogProduct(
                sku=f"{category.root_code}-{leaf.code}-{serial + 1:05d}",
                name=name,
                description=description,
                category=leaf_index,
                unit=leaf.unit,
                reorder_point=reorder_point,
                reorder_quantity=reorder_quantity,
                lot=lot,
                cost_cents=cost_cents,
                popularity=popularity,
            )
        )
    return out


def make_locations(count: int) -> list[tuple[str, str, str]]:
    out = list(LOCATIONS[:count])
    store = 4
    while len(out) < count:
        out.append((f"STORE-{store}", f"Store {store}", STORE))
        store += 1
    return out
