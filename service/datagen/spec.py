"""What to generate, what came of it, and why a database may refuse it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class GenerationSpec:
    """What to generate. The same spec (with the same ``now``) gives the same rows."""

    products: int
    movements: int
    locations: int = 4
    days: int = 90
    seed: int = 1
    # The end of the history (default: the moment generation starts).
    now: datetime | None = None
    # At least this share of active products ends at or below its reorder point.
    low_stock_share: float = 0.05
    # This share of products is archived (is_active false) after 80 % of the history.
    archived_share: float = 0.01

    def __post_init__(self) -> None:
        if self.products < 0 or self.movements < 0:
            raise ValueError("products and movements must not be negative")
        if self.movements and not self.products:
            raise ValueError("movements need products")
        if self.locations < 1:
            raise ValueError("at least one location is needed")
        if self.days < 1:
            raise ValueError("the history needs at least one day")
        if self.now is not None and self.now.tzinfo is None:
            raise ValueError("now must be timezone-aware")


# The demo catalog `storekeeper demo` loads.
DEMO_SPEC = GenerationSpec(
    products=80, movements=2400, locations=4, days=90, seed=2026, archived_share=0.02
)


@dataclass
class GenerationResult:
    """What a generation wrote, and the seconds each phase took."""

    categories: int = 0
    categories_reused: int = 0
    locations: int = 0
    locations_reused: int = 0
    location_codes: list[str] = field(default_factory=list)
    products: int = 0
    archived_products: int = 0
    low_stock_products: int = 0
    documents: dict[str, int] = field(default_factory=dict)
    movements: int = 0
    levels: int = 0
    first_movement_at: datetime | None = None
    last_movement_at: datetime | None = None
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    foreign_keys: str = ""  # how the database checked the references while loading


class GenerationRefused(Exception):
    """The database cannot take this catalog; nothing was written."""


class CatalogLoaded(GenerationRefused):
    """A product SKU of the catalog exists already: it is (at least partly) loaded."""

    def __init__(self, sku: str) -> None:
        super().__init__(f"a product with SKU {sku} exists already")
        self.sku = sku
