"""A realistic catalog and stock history, written straight into the database in bulk.

``generate(database_url, GenerationSpec(...))`` creates a category tree (``Tools/Hand tools``,
``Fasteners/Screws`` ...), locations (``WH-MAIN``, ``WH-NORTH``, ``STORE-1``, ``RETURNS`` ...),
products with realistic names, SKUs, units, costs and reorder points, and a stock history of
exactly ``movements`` ledger movements spread over the past ``days`` days: opening stock,
then receipts, shipments, transfers, adjustments (with reason codes) and a few reversals, in
documents of 1-5 lines. The same spec and seed give the same data.

It writes what :func:`service.domain.ledger.post` would have written for the same documents, posted
one after the other, only much faster (bulk inserts instead of an ORM round trip per row):

* every movement's ``balance_after`` and ``average_cost_after``; shipments, transfers and
  negative adjustments take only stock that is there, so no balance is ever negative;
* ``products.average_cost`` follows :func:`service.domain.ledger.moving_average` (the ledger's own
  function) over receipts and reversals of receipts, with the product's total on-hand before
  the document, exactly as ``post`` computes it; ``version``/``updated_at`` move when it does;
* one ``stock_levels`` row per (product, location) ever touched, equal to its ledger sum,
  with the id ``post``'s ``INSERT .. ON CONFLICT DO NOTHING`` gives it (which uses up an id
  for every touched level, new or not, on both backends);
* documents and movements get increasing ids and increasing ``created_at`` (working hours,
  quieter weekends), a reversal compensates both legs of a transfer line and names the
  movements it reverses, nothing is reversed twice.

``storekeeper stock verify`` passes on the result; tests/domain/test_datagen.py replays the generated
documents through the real ledger and compares every row.

Writing, all or nothing, in one transaction:

* SQLite: ``executemany`` after ``BEGIN IMMEDIATE``; foreign keys are checked at commit
  (``defer_foreign_keys``), so the products go in last, with their final cost and version.
* PostgreSQL: ``COPY``, from a writer thread while the history is being made, after locking
  the tables it writes (others can still read); then the id sequences move past every id
  used, and ``ANALYZE`` runs. The foreign-key triggers are three quarters of the load time;
  a role that may (a superuser) skips them for this transaction
  (``session_replication_role = replica``, as ``pg_restore --disable-triggers`` does) and
  writes the products last. Other roles keep them: products first, an UPDATE at the end.

Ids continue after the existing rows (and after deleted ones). A category with the same name
under the same parent and an active location with the same code are reused; an archived one
refuses the run, and so does a product SKU that exists already (:class:`CatalogLoaded`): the
same catalog is never loaded twice. Meant for a database nobody else writes to meanwhile
(a demo, a benchmark).

Measured on 2 CPUs (100,000 products, 1,000,000 movements, 8 locations, 365 days): SQLite
about 50 s, PostgreSQL about 35 s (scripts/bench_reports.py reports it on each run).
"""

from __future__ import annotations

import bisect
import math
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

# Rows buffered before they go to the database (one executemany / one COPY).
FLUSH_EVERY = 50_000
# Reversals pick among the latest lines of this share of documents (mistakes are noticed soon).
REVERSIBLE_SHARE = 0.25
REVERSAL_WINDOW = 60

WAREHOUSE, STORE, RETURNS = "warehouse", "store", "returns"

# --- the catalog -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """A category that holds products, and what its products look like."""

    name: str
    code: str
    unit: str
    price: tuple[float, float]  # unit cost range
    lot: int  # a typical customer order, in units
    items: tuple[tuple[str, tuple[str, ...]], ...]  # base name and its variants
    suffixes: tuple[str, ...] = ("",)
    blurbs: tuple[str, ...] = ()
    description: str | None = None


@dataclass(frozen=True)
class Branch:
    name: str
    code: str
    description: str
    children: tuple[Branch | Leaf, ...]


# The category tree, one node a line, indented by two spaces a level:
#   Name | CODE | description                                  a category holding categories
#   Name | CODE | unit | low-high cost | lot | description       a category holding products
#     = Base item: variant; variant; ...                         products: base + variant
#     + suffix; suffix; ...                                      ... + each suffix (packs, finishes)
#     ? A description some of its products get
CATALOG_TEXT = """
Tools | TLS | Hand and power tools, measuring and storage
  Hand tools | HND | each | 3.5-45 | 2 | Hammers, screwdrivers, pliers, wrenches, saws and chisels
    = Claw hammer: 16 oz; 20 oz; 24 oz fibreglass
    = Screwdriver: PH1 x 75 mm; PH2 x 100 mm; SL 5.5 x 125 mm; PZ2 x 100 mm
    = Combination pliers: 160 mm; 180 mm; 200 mm
    = Adjustable wrench: 150 mm; 200 mm; 250 mm; 300 mm
    = Utility knife: 18 mm snap-off; 25 mm heavy duty
    = Hacksaw: 300 mm; junior 150 mm
    = Wood chisel: 6 mm; 12 mm; 19 mm; 25 mm
    ? Drop-forged steel, cushioned grip.
    ? Chrome vanadium, lifetime guarantee.
    ? Trade quality for daily site use.
  Power tools | PWR | Cordless and mains power tools
    Cordless | CDL | each | 45-320 | 1 | Battery tools, batteries and chargers
      = Cordless drill driver: 12 V; 18 V; 18 V brushless
      = Impact driver: 18 V; 18 V brushless
      = Cordless angle grinder: 18 V 115 mm; 18 V 125 mm
      = Cordless jigsaw: 18 V
      = Cordless circular saw: 18 V 165 mm
      = Battery pack: 18 V 2.0 Ah; 18 V 4.0 Ah; 18 V 5.0 Ah
      = Battery charger: 18 V fast
      + ; , body only; , with case
      ? One battery platform across the range.
      ? Two-speed gearbox, LED work light.
    Corded | CRD | each | 35-280 | 1 | Mains-powered tools
      = Hammer drill: 650 W; 850 W; 1100 W
      = Angle grinder: 850 W 115 mm; 1200 W 125 mm; 2200 W 230 mm
      = Random orbital sander: 125 mm 300 W; 150 mm 400 W
      = Heat gun: 2000 W
      = Mitre saw: 216 mm 1500 W; 254 mm 1800 W
      + ; , 110 V site
      ? Soft start, 3 m cable.
      ? Variable speed, carry case included.
  Measuring tools | MSR | each | 2.5-120 | 2 | Tapes, levels and gauges
    = Tape measure: 3 m; 5 m; 8 m; 10 m
    = Spirit level: 400 mm; 600 mm; 1000 mm; 1200 mm
    = Laser distance meter: 30 m; 50 m
    = Combination square: 300 mm
    = Digital caliper: 150 mm
    = Folding rule: 2 m
  Tool storage | STO | each | 8-150 | 1 | Boxes, bags and chests
    = Tool box: 16 in; 19 in; 22 in
    = Tool bag: open top 18 in; with wheels
    = Small parts organiser: 10 compartments; 20 compartments
    = Tool chest: 5 drawers; 7 drawers
Fasteners | FST | Screws, bolts, nuts, nails, anchors and washers
  Screws | SCR | box | 2.5-28 | 3 | Wood, drywall, decking and machine screws
    = Wood screw: 3.0 x 16 mm; 3.5 x 25 mm; 4.0 x 30 mm; 4.0 x 40 mm
    = Wood screw: 5.0 x 50 mm; 5.0 x 70 mm; 6.0 x 80 mm
    = Drywall screw: 3.5 x 25 mm; 3.5 x 35 mm; 3.9 x 45 mm
    = Decking screw: 4.5 x 50 mm; 5.0 x 60 mm
    = Self-tapping screw: 3.5 x 13 mm; 4.2 x 19 mm
    = Machine screw: M4 x 20; M5 x 25; M6 x 30
    + , zinc, box of 200; , stainless A2, box of 100; , black, box of 500
  Bolts & nuts | BLT | box | 3-35 | 2 | Bolts, nuts and threaded rod
    = Hex bolt: M6 x 40; M8 x 50; M10 x 60; M12 x 80
    = Carriage bolt: M8 x 60; M10 x 100
    = Hex nut: M6; M8; M10; M12
    = Nyloc nut: M6; M8; M10
    = Threaded rod: M8 x 1 m; M10 x 1 m; M12 x 1 m
    + , zinc plated; , stainless A2; , hot-dip galvanised
  Nails | NLS | box | 2-16 | 2 | Wire nails and pins
    = Round wire nail: 50 mm; 75 mm; 100 mm
    = Lost head nail: 40 mm; 65 mm
    = Clout nail: 30 mm galvanised
    = Panel pin: 25 mm; 30 mm
    + , 1 kg; , 2.5 kg
  Anchors & plugs | ANC | pack | 1.8-25 | 3 | Wall plugs and anchors
    = Nylon wall plug: 5 mm; 6 mm; 8 mm; 10 mm
    = Hollow wall anchor: M4; M5; M6
    = Frame fixing: 8 x 80 mm; 10 x 100 mm
    = Chemical anchor stud: M10; M12
    + , pack of 25; , pack of 50; , pack of 100
  Washers | WSH | pack | 1.2-12 | 3 | Flat, spring and penny washers
    = Flat washer: M6; M8; M10; M12
    = Spring washer: M6; M8; M10
    = Penny washer: M6 x 25; M8 x 30
    + , zinc, pack of 100; , stainless, pack of 50
Electrical | ELC | Cables, wiring accessories, lighting and protection
  Cables | CBL | m | 0.35-9 | 25 | Power, flex, armoured and data cable by the metre
    = Twin and earth cable: 1.0 mm²; 1.5 mm²; 2.5 mm²; 6.0 mm²; 10 mm²
    = Flexible cable 3-core: 0.75 mm²; 1.5 mm²; 2.5 mm²
    = Armoured cable 3-core: 1.5 mm²; 2.5 mm²; 4.0 mm²
    = Speaker cable: 2 x 1.5 mm²
    = Cat6 network cable: U/UTP; F/UTP
    + , grey; , white; , black
    ? Sold by the metre, cut to length.
  Switches & sockets | SWS | each | 2.5-35 | 3 | Wiring accessories
    = Light switch: 1-gang 2-way; 2-gang 2-way; 3-gang 2-way; dimmer 400 W
    = Socket outlet: single switched; double switched; double with USB-A/C
    = Fused spur: switched 13 A
    = Cooker switch: 45 A with socket
    + , white; , brushed steel; , matt black
  Lighting | LGT | each | 2-90 | 3 | Lamps, battens and floodlights
    = LED bulb: E27 8.5 W warm white; E27 13 W cool white; GU10 4.7 W warm white; E14 4.9 W candle
    = LED batten: 600 mm 18 W; 1200 mm 36 W; 1500 mm 45 W
    = LED floodlight: 20 W; 50 W; 100 W
    = Downlight: fire-rated 6 W; IP65 8 W
  Fuses & breakers | FUS | each | 1.5-60 | 2 | Circuit protection
    = MCB: B6; B16; B20; B32; B40
    = RCBO: B16 30 mA; B32 30 mA
    = Cartridge fuse: 3 A; 5 A; 13 A
    = Consumer unit: 10-way dual RCD; 6-way main switch
Plumbing | PLB | Fittings, pipe, valves and taps
  Fittings | FIT | each | 0.6-18 | 4 | Compression, push-fit and solder fittings
    = Compression elbow: 15 mm; 22 mm
    = Compression tee: 15 mm; 22 mm
    = Push-fit coupler: 15 mm; 22 mm; 28 mm
    = Solder ring elbow: 15 mm; 22 mm
    = Tank connector: 15 mm x 3/4 in; 22 mm x 1 in
    = Reducing coupler: 22 x 15 mm; 28 x 22 mm
    + , brass; , chrome plated
  Pipes | PIP | each | 3-60 | 3 | Copper, PEX and waste pipe
    = Copper pipe: 15 mm x 3 m; 22 mm x 3 m; 28 mm x 3 m
    = PEX barrier pipe: 15 mm x 25 m coil; 22 mm x 25 m coil
    = Waste pipe: 32 mm x 3 m; 40 mm x 3 m
    = Soil pipe: 110 mm x 3 m
  Valves | VLV | each | 3-45 | 2 | Isolating, ball, gate and radiator valves
    = Isolating valve: 15 mm; 22 mm
    = Lever ball valve: 1/2 in; 3/4 in; 1 in
    = Gate valve: 15 mm; 22 mm; 28 mm
    = Thermostatic radiator valve: 15 mm angled; 15 mm straight
    = Check valve: 15 mm; 22 mm
  Taps | TAP | each | 18-180 | 1 | Basin, kitchen, bath and outside taps
    = Basin mixer tap: chrome; brushed nickel; matt black
    = Kitchen sink mixer: swan neck chrome; pull-out spray
    = Bath shower mixer: deck mounted
    = Outside tap kit: 1/2 in with double check valve
    ? Ceramic disc cartridge, 5-year guarantee.
Paint | PNT | Paint, primers and decorating tools
  Brushes | BRS | each | 1.5-18 | 3 | Brushes and brush sets
    = Paint brush: 12 mm; 25 mm; 38 mm; 50 mm; 75 mm; 100 mm
    = Angled sash brush: 25 mm; 38 mm
    = Masonry brush: 100 mm; 125 mm
    = Paint brush set: 5-piece synthetic; 3-piece pure bristle
  Rollers | ROL | each | 2-25 | 2 | Sleeves, frames, trays and poles
    = Roller sleeve: 230 mm short pile; 230 mm medium pile; 230 mm long pile; 100 mm foam
    = Roller frame: 230 mm; 100 mm mini
    = Roller tray: 230 mm; 300 mm
    = Extension pole: 1.2-2.4 m telescopic
  Interior paint | INT | tin | 9-60 | 2 | Emulsions, satinwood and gloss
    = Vinyl matt emulsion: brilliant white 2.5 l; brilliant white 10 l; magnolia 2.5 l
    = Vinyl matt emulsion: magnolia 10 l; soft grey 2.5 l; duck egg 2.5 l
    = Silk emulsion: brilliant white 2.5 l; pure white 5 l
    = Satinwood: white 750 ml; white 2.5 l
    = Gloss: white 750 ml; white 2.5 l; black 750 ml
    ? Low odour, water based.
    ? Covers up to 13 m² per litre.
  Primers & sealers | PRM | tin | 6-45 | 1 | Primers, sealers and stain blocks
    = Wood primer: white 750 ml; white 2.5 l
    = Multi-surface primer: 750 ml; 2.5 l
    = Stain block: 500 ml; 2.5 l
    = Masonry sealer: 5 l
    = Mist coat: 5 l
Safety | SAF | Personal protective equipment
  Gloves | GLV | pair | 0.9-12 | 4 | Work gloves
    = Nitrile-coated work gloves: size 8; size 9; size 10; size 11
    = Cut-resistant gloves level C: size 9; size 10
    = Rigger gloves: one size
    = Thermal work gloves: size 9; size 10
  Eye protection | EYE | each | 2-25 | 3 | Glasses, goggles and shields
    = Safety glasses: clear; smoke; anti-fog clear
    = Safety goggles: indirect vent; chemical splash
    = Face shield: with brow guard
  Workwear | WWR | each | 6-90 | 1 | Hi-vis, trousers, boots and hard hats
    = Hi-vis vest: M; L; XL; XXL
    = Work trousers: 30R; 32R; 34R; 36R; 38R
    = Safety boots S3: size 7; size 8; size 9; size 10; size 11
    = Gel knee pads: one size
    = Hard hat: white; yellow; blue
Adhesives | ADH | Glues, sealants and tapes
  Glues | GLU | each | 2-18 | 2 | Wood glue, super glue, contact and epoxy
    = PVA wood glue: 250 ml; 1 l; 5 l
    = Super glue: 3 g; 20 g gel
    = Contact adhesive: 250 ml; 1 l
    = Epoxy adhesive: 2 x 25 ml rapid; 2 x 25 ml slow set
    = Grab adhesive: 290 ml cartridge
  Sealants | SEA | each | 3-15 | 3 | Silicone, caulk and foam
    = Silicone sealant: white 310 ml; clear 310 ml; anti-mould white 310 ml
    = Decorator's caulk: white 310 ml
    = Expanding foam: 750 ml handheld; 750 ml gun grade
    = Frame sealant: white 310 ml; brown 310 ml
  Tapes | TPE | roll | 1.2-12 | 3 | Masking, duct and sealing tapes
    = Masking tape: 25 mm x 50 m; 38 mm x 50 m; 50 mm x 50 m
    = Duct tape: silver 50 mm x 50 m; black 50 mm x 25 m
    = Insulation tape: 19 mm x 20 m
    = Double-sided tape: 25 mm x 5 m
    = PTFE thread seal tape: 12 mm x 12 m
Garden | GDN | Watering and garden tools
  Hoses | HOS | each | 4-60 | 1 | Hoses, reels and fittings
    = Garden hose: 15 m; 25 m; 30 m; 50 m
    = Hose reel: wall mounted; mobile cart
    = Hose connector: 1/2 in; 3/4 in
    = Spray gun: 7-pattern; pistol
  Garden tools | GTL | each | 6-60 | 1 | Digging, cutting and raking
    = Digging spade: stainless steel; carbon steel
    = Garden fork: digging; border
    = Pruning secateurs: bypass; anvil
    = Lawn rake: metal; plastic
    = Hedge shears: wavy blade
    = Wheelbarrow: 85 l; 100 l
Hardware | HDW | Hinges, locks and handles
  Hinges | HNG | pair | 1.5-18 | 2 | Door and cabinet hinges
    = Butt hinge: 75 mm; 100 mm
    = Concealed hinge: 35 mm soft close
    = Tee hinge: 300 mm
    = Piano hinge: 1.8 m
    + , satin chrome; , brass; , black
  Locks | LCK | each | 6-90 | 1 | Padlocks, cylinders and door locks
    = Padlock: 40 mm; 50 mm; 60 mm closed shackle
    = Euro cylinder: 35/35; 40/40; 45/45
    = Mortice sashlock: 64 mm; 76 mm
    = Hasp and staple: 100 mm; 150 mm
  Handles | HDL | pair | 3-45 | 1 | Door and cabinet handles
    = Lever on rose: satin chrome; polished brass; matt black
    = Cabinet pull: 96 mm; 128 mm; 160 mm
    = Cabinet knob: 30 mm
    = Pull handle: 225 mm
"""


def _parse_catalog(text: str) -> tuple[Branch, ...]:
    """CATALOG_TEXT as a tree of Branch and Leaf."""
    roots: list[dict[str, Any]] = []
    stack: list[tuple[int, dict[str, Any]]] = []  # (indent, node)
    for raw in text.strip("\n").splitlines():
        indent = len(raw) - len(raw.lstrip(" "))
        line = raw.strip()
        if line[0] in "=+?":
            node = stack[-1][1]
            body = line[1:].strip()
            if line[0] == "=":
                base, variants = body.split(":", 1)
                node["items"].append((base.strip(), tuple(v.strip() for v in variants.split(";"))))
            elif line[0] == "+":
                # "+ ; , with case": no suffix, or ", with case" (a leading ";" = none first)
                node["suffixes"] = tuple(part.strip() for part in body.split(";"))
            else:
                node["blurbs"].append(body)
            continue
        fields = [f.strip() for f in line.split("|")]
        node = {"fields": fields, "children": [], "items": [], "blurbs": [], "suffixes": ("",)}
        while stack and stack[-1][0] >= indent:
            stack.pop()
        (stack[-1][1]["children"] if stack else roots).append(node)
        stack.append((indent, node))

    def build(node: dict[str, Any]) -> Branch | Leaf:
        fields = node["fields"]
        if len(fields) == 3:
            name, code, description = fields
            return Branch(name, code, description, tuple(build(c) for c in node["children"]))
        name, code, unit, price, lot, description = fields
        low, high = (float(x) for x in price.split("-"))
        return Leaf(
            name,
            code,
            unit,
            (low, high),
            int(lot),
            tuple(node["items"]),
            node["suffixes"],
            tuple(node["blurbs"]),
            description,
        )

    return tuple(build(root) for root in roots)  # the roots are branches


CATALOG: tuple[Branch, ...] = _parse_catalog(CATALOG_TEXT)

# Made-up brands and product lines: large catalogs repeat the base items under them.
BRANDS = (
    "Atlas",
    "Brenner",
    "Corvid",
    "Duro",
    "Ferrum",
    "Granite",
    "Helix",
    "Ironside",
    "Kestrel",
    "Lumen",
    "Norsk",
    "Orion",
    "Pioneer",
    "Quadra",
    "Rivet",
    "Stahl",
    "Titan",
    "Vector",
)
PRODUCT_LINES = ("", "Pro", "Plus", "XT", "Trade", "Eco", "Max", "Compact")

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

DOCUMENT_KINDS = ("receipt", "shipment", "transfer", "adjustment", "reversal")
KIND_WEIGHTS = (0.20, 0.485, 0.16, 0.14, 0.015)
LINE_WEIGHTS = (0.34, 0.24, 0.18, 0.13, 0.11)  # 1 to 5 lines per document
REASONS = ("count", "damage", "loss", "found", "other")
REASON_WEIGHTS = (0.45, 0.2, 0.1, 0.15, 0.1)
REASON_NOTES = {
    "damage": ("Water damage", "Broken in handling", "Crushed on pallet", "Packaging torn"),
    "loss": ("Not found at count", "Suspected theft", "Missing after stock move"),
    "found": ("Found in overflow bay", "Mis-shelved, found at count", "Found behind racking"),
    "other": ("Display sample", "Quality hold released", "Used for repairs"),
}
REVERSAL_NOTES = ("Posted twice", "Wrong location", "Wrong quantity keyed", "Wrong product scanned")
WORKDAY_HOURS = (7, 19)
WEEKEND_HOURS = (9, 17)
DAY_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 0.45, 0.15)  # Monday .. Sunday


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


# --- time --------------------------------------------------------------------------------------


def _at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


class _Timeline:
    """Maps progress (0..1) onto working hours, monotonically, with quiet weekends."""

    def __init__(self, intervals: list[tuple[datetime, datetime, float]]) -> None:
        self.starts: list[int] = []
        self.lengths: list[int] = []
        self.cumulative: list[float] = []
        total = 0.0
        for begin, end, weight in intervals:
            length = int((end - begin) / timedelta(microseconds=1))
            if length <= 0 or weight <= 0:
                continue
            total += weight * length
            self.starts.append(_micros(begin))
            self.lengths.append(length)
            self.cumulative.append(total)
        if not self.starts:
            raise ValueError("no time to spread the history over")
        self.total = total

    def at(self, fraction: float) -> int:
        """Microseconds since the epoch at ``fraction`` of the way through."""
        target = min(max(fraction, 0.0), 1.0) * self.total
        index = min(bisect.bisect_left(self.cumulative, target), len(self.starts) - 1)
        before = self.cumulative[index - 1] if index else 0.0
        span = self.cumulative[index] - before
        inside = (target - before) / span if span else 0.0
        return self.starts[index] + int(inside * (self.lengths[index] - 1))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _moment(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _timelines(now: datetime, days: int) -> tuple[datetime, _Timeline, _Timeline]:
    """Catalog set-up time, the opening-stock day, and the working days after it up to now."""
    first = (now - timedelta(days=days)).date()
    setup = _at(first, 6)
    opening = _Timeline([(_at(first, WORKDAY_HOURS[0]), _at(first, WORKDAY_HOURS[1]), 1.0)])
    intervals = []
    for offset in range(1, days + 1):
        day = first + timedelta(days=offset)
        hours = WORKDAY_HOURS if day.weekday() < 5 else WEEKEND_HOURS
        begin, end = _at(day, hours[0]), min(_at(day, hours[1]), now)
        if end > begin:
            intervals.append((begin, end, DAY_WEIGHTS[day.weekday()]))
    if not intervals:  # a one-day history generated before opening time
        intervals.append((_at(first, WORKDAY_HOURS[1]), now, 1.0))
    return setup, opening, _Timeline(intervals)


# --- the catalog, laid out ---------------------------------------------------------------------


@dataclass
class _Category:
    name: str
    description: str | None
    parent: int | None  # index into the category list
    leaf: Leaf | None
    path: str
    root_code: str
    id: int = 0
    reused: bool = False


def _categories() -> list[_Category]:
    out: list[_Category] = []

    def walk(node: Branch | Leaf, parent: int | None, path: str, root_code: str) -> None:
        full = f"{path}/{node.name}" if path else node.name
        description = node.description
        out.append(
            _Category(
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

    for root in CATALOG:
        walk(root, None, "", root.code)
    return out


@dataclass
class _Product:
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


def _products(rng: random.Random, count: int, categories: list[_Category]) -> list[_Product]:
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
            brand = BRANDS[(edition - 1) % len(BRANDS)]
            line_no = (edition - 1) // len(BRANDS)
            line = PRODUCT_LINES[line_no % len(PRODUCT_LINES)]
            generation = line_no // len(PRODUCT_LINES) + 1
            label = " ".join(
                part
                for part in (brand, line, f"Gen {generation}" if generation > 1 else "")
                if part
            )
            name = f"{label} {name}"
        low, high = leaf.price
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
            _Product(
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


def _locations(count: int) -> list[tuple[str, str, str]]:
    out = list(LOCATIONS[:count])
    store = 4
    while len(out) < count:
        out.append((f"STORE-{store}", f"Store {store}", STORE))
        store += 1
    return out


# --- the database --------------------------------------------------------------------------------

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "categories": (
        "id",
        "name",
        "description",
        "parent_id",
        "sibling_key",
        "created_at",
        "updated_at",
        "version",
    ),
    "locations": (
        "id",
        "code",
        "code_key",
        "name",
        "is_active",
        "created_at",
        "updated_at",
        "version",
    ),
    "products": (
        "id",
        "sku",
        "sku_key",
        "name",
        "description",
        "category_id",
        "unit_of_measure",
        "reorder_point",
        "reorder_quantity",
        "is_active",
        "created_at",
        "updated_at",
        "version",
        "average_cost",
    ),
    "stock_documents": (
        "id",
        "kind",
        "reference",
        "note",
        "location_id",
        "to_location_id",
        "created_at",
        "created_by_user_id",
        "created_by_api_key_id",
    ),
    "stock_movements": (
        "id",
        "document_id",
        "line_no",
        "kind",
        "product_id",
        "location_id",
        "quantity",
        "balance_after",
        "unit_cost",
        "average_cost_after",
        "reason",
        "note",
        "reference",
        "reversal_of",
        "created_at",
        "created_by_user_id",
        "created_by_api_key_id",
    ),
    "stock_levels": ("id", "product_id", "location_id", "on_hand", "updated_at"),
}
PRODUCT_UPDATE_COLUMNS = (
    "id",
    "average_cost",
    "reorder_point",
    "reorder_quantity",
    "is_active",
    "updated_at",
    "version",
)


def check_model_columns() -> None:
    """The generator writes every column of its tables; fail loudly if the models moved on."""
    from service.models import Base

    for table, columns in TABLE_COLUMNS.items():
        model = {column.name for column in Base.metadata.tables[table].columns}
        if model != set(columns):
            raise RuntimeError(
                f"service/datagen.py writes {table} columns {sorted(columns)}, the model has "
                f"{sorted(model)}: update TABLE_COLUMNS and the rows it writes"
            )


class _Writer:
    """Bulk writes in one transaction; subclasses per backend."""

    products_last = False
    foreign_keys = ""

    def __init__(self, raw_connection: Any) -> None:
        self.raw = raw_connection

    def time(self, moment: datetime) -> Any:
        raise NotImplementedError

    def boolean(self, value: bool) -> Any:
        raise NotImplementedError

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def insert(self, table: str, rows: list[tuple]) -> None:
        raise NotImplementedError


class _SqliteWriter(_Writer):
    # Foreign keys are checked at COMMIT (defer_foreign_keys), so products can come last.
    products_last = True
    foreign_keys = "checked at commit"

    def __init__(self, raw_connection: Any) -> None:
        super().__init__(raw_connection)
        self.db = raw_connection.driver_connection
        self.db.execute("PRAGMA cache_size = -262144")  # 256 MiB while indexes grow
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("PRAGMA defer_foreign_keys = ON")  # until this transaction ends

    def sink(self) -> _InlineWriter:
        # sqlite3 holds the GIL while it binds each row: a writer thread only adds contention.
        return _InlineWriter(self)

    def time(self, moment: datetime) -> str:
        # What SQLAlchemy's SQLite DateTime stores for UTCDateTime: naive UTC, microseconds.
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")

    def boolean(self, value: bool) -> int:
        return int(value)

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.db.execute(sql, params).fetchone()
        return row[0] if row else None

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.db.execute(sql, params).fetchall()

    def next_ids(self, tables: Iterable[str]) -> dict[str, int]:
        # AUTOINCREMENT never reuses an id, even a deleted row's: continue after its counter.
        out = {}
        for table in tables:
            sequence = self.scalar("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
            highest = self.scalar(f"SELECT MAX(id) FROM {table}")
            out[table] = max(sequence or 0, highest or 0)
        return out

    def insert(self, table: str, rows: list[tuple]) -> None:
        if not rows:
            return
        columns = TABLE_COLUMNS[table]
        placeholders = ", ".join("?" for _ in columns)
        self.db.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", rows
        )

    def update_products(self, rows: list[tuple]) -> None:
        # rows: PRODUCT_UPDATE_COLUMNS
        self.db.executemany(
            "UPDATE products SET average_cost = ?, reorder_point = ?, reorder_quantity = ?, "
            "is_active = ?, updated_at = ?, version = ? WHERE id = ?",
            [(*row[1:], row[0]) for row in rows],
        )

    def finish(self, counters: dict[str, int]) -> None:
        for table, last in counters.items():
            # The ids the ledger would have consumed (stock_levels: more than it kept).
            self.db.execute(
                "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?", (last, table)
            )
        self.db.execute("COMMIT")

    def abort(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def analyze(self, _tables: Iterable[str]) -> None:
        """SQLite gets no statistics: the service never runs ANALYZE there either."""


class _PostgresWriter(_Writer):
    def __init__(
        self, raw_connection: Any, lock_tables: Iterable[str], trust_references: bool
    ) -> None:
        import psycopg

        super().__init__(raw_connection)
        self.db = raw_connection.driver_connection
        self.db.autocommit = False
        self.products_last = False
        self.foreign_keys = "checked"
        with self.db.cursor() as cursor:
            # Nobody else writes these tables until we commit; readers are not blocked.
            cursor.execute(f"LOCK TABLE {', '.join(lock_tables)} IN SHARE ROW EXCLUSIVE MODE")
            if not trust_references:
                return
            # The foreign-key triggers cost three quarters of the load (50 s of 65 s for a
            # million movements); every id written here is one the generator just made, so a
            # role that may (a superuser, as in development and CI) skips them for this
            # transaction only, like pg_restore --disable-triggers. Then products can come
            # last, with their final values. Otherwise: checked, and an UPDATE at the end.
            cursor.execute("SAVEPOINT datagen_replica")
            try:
                cursor.execute("SET LOCAL session_replication_role = replica")
            except psycopg.errors.InsufficientPrivilege:
                cursor.execute("ROLLBACK TO SAVEPOINT datagen_replica")
            else:
                self.products_last = True
                self.foreign_keys = "not checked (bulk load as superuser)"
            cursor.execute("RELEASE SAVEPOINT datagen_replica")

    def sink(self) -> _BackgroundWriter:
        return _BackgroundWriter(self)

    def time(self, moment: datetime) -> datetime:
        return moment

    def boolean(self, value: bool) -> bool:
        return value

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self.db.cursor() as cursor:
            row = cursor.execute(sql.replace("?", "%s"), params).fetchone()
            return row[0] if row else None

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self.db.cursor() as cursor:
            return cursor.execute(sql.replace("?", "%s"), params).fetchall()

    def next_ids(self, tables: Iterable[str]) -> dict[str, int]:
        out = {}
        for table in tables:
            sequence = self.scalar("SELECT pg_get_serial_sequence(?, 'id')", (table,))
            last, called = self.rows(f"SELECT last_value, is_called FROM {sequence}")[0]
            highest = self.scalar(f"SELECT MAX(id) FROM {table}")
            out[table] = max(last if called else last - 1, highest or 0)
        return out

    def insert(self, table: str, rows: list[tuple]) -> None:
        if not rows:
            return
        columns = ", ".join(TABLE_COLUMNS[table])
        with (
            self.db.cursor() as cursor,
            cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def update_products(self, rows: list[tuple]) -> None:
        with self.db.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE datagen_products (id integer PRIMARY KEY, "
                "average_cost bigint, reorder_point integer, reorder_quantity integer, "
                "is_active boolean, "
                "updated_at timestamptz, version integer) ON COMMIT DROP"
            )
            with cursor.copy(
                f"COPY datagen_products ({', '.join(PRODUCT_UPDATE_COLUMNS)}) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(
                "UPDATE products p SET average_cost = d.average_cost, "
                "reorder_point = d.reorder_point, reorder_quantity = d.reorder_quantity, "
                "is_active = d.is_active, "
                "updated_at = d.updated_at, version = d.version "
                "FROM datagen_products d WHERE p.id = d.id"
            )

    def finish(self, counters: dict[str, int]) -> None:
        with self.db.cursor() as cursor:
            for table, last in counters.items():
                # The next id the service hands out comes after every id we used.
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"GREATEST((SELECT MAX(id) FROM {table}), %s, 1))",
                    (last,),
                )
        self.db.commit()

    def abort(self) -> None:
        self.db.rollback()

    def analyze(self, tables: Iterable[str]) -> None:
        """Fresh statistics, as autovacuum would gather after a load this size."""
        self.db.autocommit = True
        try:
            with self.db.cursor() as cursor:
                cursor.execute(f"ANALYZE {', '.join(tables)}")
        finally:
            self.db.autocommit = False


class _InlineWriter:
    """Writes each batch as it comes."""

    def __init__(self, writer: _Writer) -> None:
        self.writer = writer

    def put(self, batch: list[tuple[str, list[tuple]]]) -> None:
        for table, rows in batch:
            self.writer.insert(table, rows)

    def close(self, *, raise_error: bool = True) -> None:
        """Nothing pending."""


class _BackgroundWriter:
    """Writes row batches in a thread while the history goes on: the two overlap.

    (psycopg and sqlite3 release the GIL while the database works.) One batch waits at most,
    so memory stays bounded; the first error stops the writing and is raised to the caller.
    """

    def __init__(self, writer: _Writer) -> None:
        self.writer = writer
        self.batches: queue.Queue[list[tuple[str, list[tuple]]] | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="datagen-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (batch := self.batches.get()) is not None:
            if self.error is not None:
                continue  # drain until close()
            try:
                for table, rows in batch:
                    self.writer.insert(table, rows)
            except BaseException as exc:  # handed to the main thread
                self.error = exc

    def put(self, batch: list[tuple[str, list[tuple]]]) -> None:
        while True:
            self._raise()
            try:
                self.batches.put(batch, timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self, *, raise_error: bool = True) -> None:
        if self.thread.is_alive():
            self.batches.put(None)
            self.thread.join()
        if raise_error:
            self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


# --- the history ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Change:
    """One movement to write, as service.domain.ledger.Change describes it."""

    line_no: int
    kind: str
    product: int  # index into the product list
    location: int  # index into the location list
    quantity: int
    cost: Decimal | None = None  # unit cost, 4 places
    cost_scaled: int | None = None
    reason: str | None = None
    note: str | None = None
    reversal_of: int | None = None


@dataclass(slots=True)
class _Reversible:
    """A posted request line: its movement ids and what reversing it would change."""

    kind: str
    reference: str | None
    legs: list[tuple[int, int, int, int, Decimal | None, int | None]]
    # each leg: (movement id, product, location, quantity, unit cost, unit cost scaled)
    reversed: bool = False


def _alias_table(weights: Sequence[float]) -> tuple[list[float], list[int]]:
    """Walker/Vose alias tables: weighted picks in constant time (a 100k catalog, 5M picks)."""
    count = len(weights)
    total = sum(weights) or 1.0
    scaled = [weight * count / total for weight in weights]
    probability, alias = [1.0] * count, list(range(count))
    small = [i for i, value in enumerate(scaled) if value < 1.0]
    large = [i for i, value in enumerate(scaled) if value >= 1.0]
    while small and large:
        less, more = small.pop(), large.pop()
        probability[less], alias[less] = scaled[less], more
        scaled[more] += scaled[less] - 1.0
        (small if scaled[more] < 1.0 else large).append(more)
    return probability, alias


def _chooser(rng: random.Random, items: Sequence[Any], weights: Sequence[float]):
    """rng.choices(items, weights)[0], without its per-call set-up."""
    cumulative, running = [], 0.0
    for weight in weights:
        running += weight
        cumulative.append(running)
    last = len(items) - 1

    def choose() -> Any:
        return items[min(bisect.bisect_right(cumulative, rng.random() * running), last)]

    return choose


class _History:
    """Posts documents exactly as service.domain.ledger.post would, into row buffers."""

    def __init__(
        self,
        spec: GenerationSpec,
        rng: random.Random,
        products: list[_Product],
        product_ids: list[int],
        location_ids: list[int],
        roles: list[str],
        writer: _Writer,
        sink: _BackgroundWriter | _InlineWriter,
        next_ids: dict[str, int],
        moving_average: Callable[[Decimal, int, int, Decimal], Decimal],
    ) -> None:
        self.spec = spec
        self.rng = rng
        self.products = products
        self.product_ids = product_ids
        self.location_ids = location_ids
        self.roles = roles
        self.writer = writer
        self.sink = sink
        self.moving_average = moving_average
        count = len(products)
        self.on_hand = [[0] * count for _ in location_ids]
        self.total = [0] * count
        self.average = [Decimal(0)] * count
        self.average_scaled = [0] * count
        self.version = [1] * count
        self.changed_at: list[datetime | None] = [None] * count
        self.active = [True] * count
        self.levels: dict[tuple[int, int], list[Any]] = {}  # key -> [id, updated_at]
        self.next_document = next_ids["stock_documents"]
        self.next_movement = next_ids["stock_movements"]
        self.next_level = next_ids["stock_levels"]
        self.documents: list[tuple] = []
        self.movements: list[tuple] = []
        self.produced = 0
        self.kinds: dict[str, int] = dict.fromkeys(DOCUMENT_KINDS, 0)
        self.first_at: datetime | None = None
        self.last_at: datetime | None = None
        self._last_micros = 0
        self.random = rng.random
        self.choose_reason = _chooser(rng, REASONS, REASON_WEIGHTS)
        self.alias_probability, self.alias = _alias_table([p.popularity for p in products])
        self.queue: deque[int] = deque()
        self.queued = bytearray(count)
        self.reversible: list[_Reversible] = []
        self.returns_stock: list[int] = []  # products that went into RETURNS (lazily pruned)
        self.warehouses = [i for i, role in enumerate(roles) if role == WAREHOUSE] or [0]
        self.stores = [i for i, role in enumerate(roles) if role == STORE]
        self.returns = [i for i, role in enumerate(roles) if role == RETURNS]
        self.counters = dict.fromkeys(("PO", "SO", "TR", "ADJ", "RMA", "RTV"), 0)
        for prefix in self.counters:
            self.counters[prefix] = rng.randint(1000, 9000) * 10

    # --- picking ----------------------------------------------------------------------------

    def pick(self) -> int:
        """A product by popularity (active or not: callers check), in O(1)."""
        index = int(self.random() * len(self.alias))
        return index if self.random() < self.alias_probability[index] else self.alias[index]

    def pick_stocked(self, location: int, taken: set[int], tries: int = 6) -> int | None:
        on_hand = self.on_hand[location]
        if location in self.returns:
            candidates = self.returns_stock
            for _ in range(min(tries, len(candidates))):
                index = self.rng.randrange(len(candidates))
                product = candidates[index]
                if on_hand[product] <= 0 or not self.active[product]:
                    candidates[index] = candidates[-1]  # prune: nothing left there
                    candidates.pop()
                    continue
                if product not in taken:
                    return product
            return None
        for _ in range(tries):
            product = self.pick()
            if on_hand[product] > 0 and self.active[product] and product not in taken:
                return product
        return None

    def reference(self, prefix: str) -> str:
        self.counters[prefix] += self.rng.randint(1, 3)
        return f"{prefix}-{self.counters[prefix]:06d}"

    def receipt_cost(self, product: int, progress: float) -> tuple[Decimal, int]:
        """Today's purchase price: the typical one, a little inflation, some noise."""
        typical = self.products[product].cost_cents
        scaled = typical * (1.0 + 0.04 * progress) * self.rng.uniform(0.93, 1.08)
        step = 100 if typical >= 10000 else 1  # whole cents from one unit up
        value = max(step, round(scaled / step) * step)
        return Decimal(value).scaleb(-4), value

    # --- documents ------------------------------------------------------------------------

    def opening(self, product_indexes: list[int], budget: int) -> None:
        """Opening balances on the first day, five lines a document."""
        lines = product_indexes[:budget]
        for start in range(0, len(lines), 5):
            chunk = lines[start : start + 5]
            location = (
                self.warehouses[0]
                if len(self.warehouses) == 1 or self.rng.random() < 0.75
                else self.rng.choice(self.warehouses[1:])
            )
            changes = []
            for line_no, product in enumerate(chunk):
                info = self.products[product]
                quantity = max(1, info.reorder_point + info.reorder_quantity, info.lot * 8)
                cost, scaled = self.receipt_cost(product, 0.0)
                changes.append(
                    _Change(line_no, "receipt", product, location, quantity, cost, scaled)
                )
            self.post(
                "receipt",
                changes,
                location,
                None,
                "OPENING-BALANCE",
                "Opening stock",
                self.opening_clock.at(start / max(len(lines), 1)),
                reversible=False,
            )

    def receipt(self, lines: int, progress: float, *, reorders_only: bool = True) -> bool:
        """A delivery: of what fell to its reorder point (oldest first), else of anything."""
        if self.returns and self.rng.random() < 0.04:
            return self.customer_return(lines)
        location = (
            self.warehouses[0]
            if len(self.warehouses) == 1 or self.rng.random() < 0.7
            else self.rng.choice(self.warehouses[1:])
        )
        chosen: list[int] = []
        while self.queue and len(chosen) < lines:
            product = self.queue.popleft()
            self.queued[product] = 0
            if self.active[product] and product not in chosen:
                chosen.append(product)
        for _ in range(0 if reorders_only else lines * 3):
            if len(chosen) >= lines:
                break
            product = self.pick()
            if self.active[product] and product not in chosen:
                chosen.append(product)
        if not chosen:
            return False
        changes = []
        for line_no, product in enumerate(chosen):
            info = self.products[product]
            base = info.reorder_quantity or info.lot * 10
            quantity = max(1, round(base * self.rng.uniform(0.8, 1.25)))
            cost, scaled = self.receipt_cost(product, progress)
            changes.append(_Change(line_no, "receipt", product, location, quantity, cost, scaled))
        note = "Partial delivery" if self.rng.random() < 0.05 else None
        self.post("receipt", changes, location, None, self.reference("PO"), note)
        return True

    def customer_return(self, lines: int) -> bool:
        """Goods back from customers, received into RETURNS at the current average cost."""
        location = self.returns[0]
        chosen: list[int] = []
        for _ in range(lines * 3):
            if len(chosen) >= lines:
                break
            product = self.pick()
            if self.active[product] and self.average_scaled[product] and product not in chosen:
                chosen.append(product)
        if not chosen:
            return False
        changes = []
        for line_no, product in enumerate(chosen):
            # The unit cost has 4 places; the average has 6.
            scaled = max(1, round(self.average_scaled[product] / 100))
            quantity = self.rng.randint(1, max(1, self.products[product].lot))
            changes.append(
                _Change(
                    line_no,
                    "receipt",
                    product,
                    location,
                    quantity,
                    Decimal(scaled).scaleb(-4),
                    scaled,
                )
            )
            self.returns_stock.append(product)
        self.post("receipt", changes, location, None, self.reference("RMA"), "Customer return")
        return True

    def shipment(self, lines: int, budget: int) -> bool:
        if self.returns and self.rng.random() < 0.03:
            location = self.returns[0]
            prefix, note = "RTV", "Returned to supplier"
        else:
            pool = self.stores * 3 + self.warehouses if self.stores else self.warehouses
            location = self.rng.choice(pool)
            prefix = "SO"
            note = self.rng.choice((None, None, None, "Customer collection", "Trade account"))
        taken: set[int] = set()
        changes = []
        for _ in range(lines):
            product = self.pick_stocked(location, taken)
            if product is None:
                continue
            taken.add(product)
            available = self.on_hand[location][product]
            wanted = self.rng.randint(1, max(1, self.products[product].lot * 2))
            changes.append(
                _Change(len(changes), "shipment", product, location, -min(wanted, available))
            )
        if not changes:
            # Nothing on the shelf here: the store asks a warehouse instead.
            return self.roles[location] == STORE and self.transfer(
                min(lines, budget // 2), target=location
            )
        self.post("shipment", changes, location, None, self.reference(prefix), note)
        return True

    def transfer(self, lines: int, target: int | None = None) -> bool:
        if len(self.location_ids) < 2 or lines < 1:
            return False
        if target is None:
            if self.returns and self.rng.random() < 0.15:
                source, target = self.returns[0], self.warehouses[0]
            elif self.stores and self.rng.random() < 0.75:
                source, target = self.rng.choice(self.warehouses), self.rng.choice(self.stores)
            elif len(self.warehouses) > 1:
                source, target = self.rng.sample(self.warehouses, 2)  # rebalancing
            else:
                source, target = (
                    self.warehouses[0],
                    self.rng.choice(
                        [i for i in range(len(self.location_ids)) if i != self.warehouses[0]]
                    ),
                )
        else:
            source = self.rng.choice(self.warehouses)
        if source == target:
            return False
        taken: set[int] = set()
        picked: list[tuple[int, int]] = []
        for _ in range(lines):
            product = self.pick_stocked(source, taken)
            if product is None:
                continue
            taken.add(product)
            available = self.on_hand[source][product]
            wanted = self.products[product].lot * self.rng.randint(2, 6)
            picked.append((product, min(wanted, available)))
        if not picked:
            return False
        changes = []
        for line_no, (product, quantity) in enumerate(picked):
            changes.append(_Change(line_no, "transfer_out", product, source, -quantity))
            changes.append(_Change(line_no, "transfer_in", product, target, quantity))
        if self.roles[source] == RETURNS:
            note = "Returns back to stock"
        elif self.roles[target] == STORE:
            note = "Store replenishment"
        else:
            note = None
        self.post("transfer", changes, source, target, self.reference("TR"), note)
        return True

    def adjustment(self, lines: int, moment_micros: int) -> bool:
        location = self.rng.randrange(len(self.location_ids))
        counting = self.rng.random() < 0.5
        taken: set[int] = set()
        changes = []
        for _ in range(lines):
            reason = "count" if counting else self.choose_reason()
            if reason == "found":
                product = self.pick()
                if not self.active[product] or product in taken:
                    continue
            else:
                product = self.pick_stocked(location, taken)
                if product is None:
                    continue
            taken.add(product)
            on_hand = self.on_hand[location][product]
            if reason == "count":
                delta = max(self.rng.choice((-3, -2, -1, -1, 1, 1, 2, 3)), -on_hand)
            elif reason in ("damage", "loss"):
                delta = -self.rng.randint(1, min(on_hand, 3))
            elif reason == "found":
                delta = self.rng.randint(1, 3)
            else:
                delta = -1 if on_hand and self.rng.random() < 0.6 else 1
            note = (
                self.rng.choice(REASON_NOTES[reason])
                if reason in REASON_NOTES and self.rng.random() < 0.7
                else None
            )
            changes.append(
                _Change(
                    len(changes), "adjustment", product, location, delta, reason=reason, note=note
                )
            )
        if not changes:
            return False
        if counting:
            reference = f"COUNT-{_moment(moment_micros):%Y%m%d}"
            note = "Cycle count"
        else:
            reference, note = self.reference("ADJ"), None
        self.post("adjustment", changes, location, None, reference, note)
        return True

    def reversal(self, budget: int) -> bool:
        """Undo a recent line; a mis-keyed delivery is the commonest mistake, so first those."""
        window = min(len(self.reversible), REVERSAL_WINDOW)
        if not window:
            return False
        sample = [len(self.reversible) - 1 - self.rng.randrange(window) for _ in range(6)]
        sample.sort(key=lambda i: self.reversible[i].kind != "receipt")
        for index in sample:
            candidate = self.reversible[index]
            if candidate.reversed or len(candidate.legs) > budget:
                continue
            if not all(self.active[leg[1]] for leg in candidate.legs):
                continue
            balances: dict[tuple[int, int], int] = {}
            feasible = True
            for _, product, location, quantity, _, _ in candidate.legs:
                key = (product, location)
                balance = balances.get(key, self.on_hand[location][product]) - quantity
                balances[key] = balance
                feasible = feasible and balance >= 0
            if not feasible:
                continue
            candidate.reversed = True
            note = self.rng.choice(REVERSAL_NOTES)
            changes = [
                _Change(
                    line_no,
                    "reversal",
                    product,
                    location,
                    -quantity,
                    cost if candidate.kind == "receipt" else None,
                    scaled if candidate.kind == "receipt" else None,
                    note=note,
                    reversal_of=movement_id,
                )
                for line_no, (movement_id, product, location, quantity, cost, scaled) in enumerate(
                    candidate.legs
                )
            ]
            # Like the service: without a reference of its own, the reversal takes the
            # reversed movement's.
            self.post("reversal", changes, None, None, candidate.reference, note, reversible=False)
            return True
        return False

    # --- posting ------------------------------------------------------------------------

    def regular_progress(self) -> float:
        """How far through the history after the opening day (0..1)."""
        done = self.produced - self.opening_movements
        return done / max(self.spec.movements - self.opening_movements, 1)

    def clock_at(self, micros: int) -> datetime:
        micros = max(micros, self._last_micros + 1)  # strictly increasing with the id
        self._last_micros = micros
        return _moment(micros)

    def post(
        self,
        kind: str,
        changes: list[_Change],
        location: int | None,
        to_location: int | None,
        reference: str | None,
        note: str | None,
        micros: int | None = None,
        *,
        reversible: bool = True,
    ) -> None:
        """service.domain.ledger.post, step for step, on the in-memory state."""
        if micros is None:
            micros = self.regular_clock.at(self.regular_progress())
        moment = self.clock_at(micros)
        stamp = self.writer.time(moment)
        if self.first_at is None:
            self.first_at = moment
        self.last_at = moment
        product_ids, location_ids = self.product_ids, self.location_ids

        # Levels are created on first touch by one INSERT .. ON CONFLICT DO NOTHING over the
        # touched keys in (product id, location id) order. Each row of it takes an id from the
        # sequence (PostgreSQL) or AUTOINCREMENT counter (SQLite), inserted or not.
        touched = sorted(
            {
                (product_ids[c.product], location_ids[c.location], c.product, c.location)
                for c in changes
            }
        )
        before = {}
        for product_id, location_id, product, where in touched:
            key = (product_id, location_id)
            self.next_level += 1
            if key not in self.levels:
                self.levels[key] = [self.next_level, stamp, 0]  # id, updated_at, on_hand
            before[key] = self.on_hand[where][product]

        self.next_document += 1
        document_id = self.next_document
        self.documents.append(
            (
                document_id,
                kind,
                reference,
                note,
                None if location is None else location_ids[location],
                None if to_location is None else location_ids[to_location],
                stamp,
                None,
                None,
            )
        )
        self.kinds[kind] += 1

        # Receipts and their reversals move the average cost, from the product's total
        # on-hand before the document (the ledger's `totals`).
        costed = {c.product for c in changes if c.cost is not None}
        totals = {product: self.total[product] for product in costed}
        averages_before = {product: self.average[product] for product in costed}
        on_hand, average_scaled, movements = self.on_hand, self.average_scaled, self.movements
        first_movement = self.next_movement + 1
        for change in changes:
            product, where, quantity = change.product, change.location, change.quantity
            balance = on_hand[where][product] + quantity
            if balance < 0:  # the generator only ever asks for stock that is there
                raise AssertionError(f"negative balance for {change}")
            on_hand[where][product] = balance
            if change.cost is not None:
                total = totals[product]
                average = self.moving_average(self.average[product], total, quantity, change.cost)
                self.average[product] = average
                average_scaled[product] = int(average.scaleb(6))
                totals[product] = total + quantity
            self.next_movement += 1
            movements.append(
                (
                    self.next_movement,
                    document_id,
                    change.line_no,
                    change.kind,
                    product_ids[product],
                    location_ids[where],
                    quantity,
                    balance,
                    change.cost_scaled,
                    average_scaled[product],
                    change.reason,
                    change.note,
                    reference,
                    change.reversal_of,
                    stamp,
                    None,
                    None,
                )
            )
        self.produced += len(changes)
        for product_id, location_id, product, where in touched:
            level = self.levels[(product_id, location_id)]
            balance = on_hand[where][product]
            if balance != before[(product_id, location_id)]:
                level[1] = stamp  # post() touches updated_at only when on-hand moved
            level[2] = balance
        for product in costed:
            # The product row is flushed (version + 1, updated_at) only if its cost moved.
            if self.average[product] != averages_before[product]:
                self.version[product] += 1
                self.changed_at[product] = moment
        for change in changes:
            product = change.product
            total = self.total[product] = self.total[product] + change.quantity
            if (
                change.quantity < 0
                and total <= self.products[product].reorder_point
                and not self.queued[product]
            ):
                self.queued[product] = 1
                self.queue.append(product)
        if reversible and self.random() < REVERSIBLE_SHARE:
            self._remember(kind, reference, changes, first_movement)

    def _remember(
        self, kind: str, reference: str | None, changes: list[_Change], first: int
    ) -> None:
        """Keep the document's lines as candidates for a later reversal."""
        by_line: dict[int, list] = {}
        for offset, change in enumerate(changes):
            by_line.setdefault(change.line_no, []).append(
                (
                    first + offset,
                    change.product,
                    change.location,
                    change.quantity,
                    change.cost,
                    change.cost_scaled,
                )
            )
        self.reversible.extend(_Reversible(kind, reference, legs) for legs in by_line.values())
        if len(self.reversible) > 20 * REVERSAL_WINDOW:
            del self.reversible[:-REVERSAL_WINDOW]

    def flush(self, force: bool = False) -> None:
        if force or len(self.movements) >= FLUSH_EVERY:
            self.sink.put(
                [("stock_documents", self.documents), ("stock_movements", self.movements)]
            )
            self.documents, self.movements = [], []

    # --- the whole history -----------------------------------------------------------------

    def run(self, opening_clock: _Timeline, regular_clock: _Timeline) -> None:
        self.opening_clock = opening_clock
        self.regular_clock = regular_clock
        spec, rng = self.spec, self.rng
        count = len(self.products)
        # Most products start with opening stock (up to a third of the movements); the rest
        # wait in the reorder queue and are first received later.
        opening = [i for i in range(count) if rng.random() < 0.9]
        budget = min(len(opening), spec.movements // 3)
        stocked = set(opening[:budget])
        for product in range(count):
            if product not in stocked:
                self.queue.append(product)
                self.queued[product] = 1
        self.opening(opening, budget)
        self.opening_movements = self.produced
        self.flush()

        choose_kind = _chooser(rng, DOCUMENT_KINDS, KIND_WEIGHTS)
        choose_lines = _chooser(rng, (1, 2, 3, 4, 5), LINE_WEIGHTS)
        archived = rng.sample(range(count), int(count * spec.archived_share)) if count else []
        archive_at = 0.8 * spec.movements
        while self.produced < spec.movements:
            remaining = spec.movements - self.produced
            if archived and self.produced >= archive_at:
                for product in archived:
                    self.active[product] = False
                archived = []
            progress = self.regular_progress()
            kind = choose_kind()
            lines = min(choose_lines(), remaining)
            if kind == "receipt":
                done = self.receipt(lines, progress)
            elif kind == "shipment":
                done = self.shipment(lines, remaining)
            elif kind == "transfer":
                done = self.transfer(min(lines, remaining // 2))
            elif kind == "adjustment":
                done = self.adjustment(lines, self.regular_clock.at(progress))
            else:
                done = self.reversal(remaining)
            # Whatever could not be posted (nothing to reorder, nothing on the shelf, the
            # budget too small) becomes a sale, else a delivery of anything.
            if not done and kind != "shipment":
                done = self.shipment(lines, remaining)
            if not done and not self.receipt(lines, progress, reorders_only=False):
                raise RuntimeError("no active product left to post stock for")
            self.flush()
        self.flush(force=True)


# --- the entry point ---------------------------------------------------------------------------


def generate(
    database_url: str,
    spec: GenerationSpec,
    *,
    progress: Callable[[str], None] | None = None,
    trust_references: bool = True,
) -> GenerationResult:
    """Write the catalog and history of ``spec`` into the (migrated) database, all or nothing.

    ``trust_references=False`` keeps PostgreSQL's foreign-key triggers on even when the role
    could skip them (slower; the tests use it to cover that path).
    """
    from service.db import make_engine
    from service.domain.ledger import moving_average

    check_model_columns()
    say = progress or (lambda _message: None)
    began = time.perf_counter()
    result = GenerationResult()
    now = spec.now or datetime.now(UTC)
    setup_at, opening_clock, regular_clock = _timelines(now, spec.days)
    rng = random.Random(spec.seed)
    categories = _categories()
    products = _products(rng, spec.products, categories)
    locations = _locations(spec.locations)
    tables = list(TABLE_COLUMNS)

    engine = make_engine(database_url)
    try:
        _require_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    raw = engine.raw_connection()
    writer: _SqliteWriter | _PostgresWriter | None = None
    sink: _BackgroundWriter | _InlineWriter | None = None
    try:
        writer = (
            _PostgresWriter(raw, tables, trust_references)
            if engine.dialect.name == "postgresql"
            else _SqliteWriter(raw)
        )
        result.foreign_keys = writer.foreign_keys
        ids = writer.next_ids(tables)
        phase = time.perf_counter()
        _write_categories(writer, categories, ids, setup_at, result)
        location_ids = _write_locations(writer, locations, ids, setup_at, result)
        _refuse_existing_skus(writer, products)
        first_product_id = ids["products"] + 1
        product_ids = list(range(first_product_id, first_product_id + len(products)))
        # Created during the hour before opening stock, in id order.
        spread = timedelta(minutes=55) / max(len(products), 1)
        created = [setup_at + timedelta(minutes=2) + spread * i for i in range(len(products))]
        if not writer.products_last:
            # Checked references: the products exist before their movements, and get their
            # final cost, version and reorder point by an UPDATE at the end.
            _insert_products(writer, products, product_ids, categories, created, None)
        result.products = len(products)
        result.phases["catalog"] = time.perf_counter() - phase
        say(f"catalog: {result.categories} categories, {result.products} products")

        phase = time.perf_counter()
        sink = writer.sink()
        history = _History(
            spec,
            rng,
            products,
            product_ids,
            location_ids,
            [role for _, _, role in locations],
            writer,
            sink,
            ids,
            moving_average,
        )
        history.run(opening_clock, regular_clock)
        sink.close()
        result.movements = history.produced
        result.documents = {k: v for k, v in history.kinds.items() if v}
        result.first_movement_at, result.last_movement_at = history.first_at, history.last_at
        result.phases["history"] = time.perf_counter() - phase
        say(f"history: {sum(result.documents.values())} documents, {result.movements} movements")

        phase = time.perf_counter()
        result.archived_products = history.active.count(False)
        result.low_stock_products = _settle_reorder_points(spec, rng, products, history)
        if writer.products_last:
            _insert_products(writer, products, product_ids, categories, created, history)
        else:
            writer.update_products(
                [
                    (
                        product_ids[i],
                        history.average_scaled[i],
                        products[i].reorder_point,
                        products[i].reorder_quantity,
                        writer.boolean(history.active[i]),
                        writer.time(history.changed_at[i] or created[i]),
                        history.version[i],
                    )
                    for i in range(len(products))
                ]
            )
        level_rows = [
            (level_id, product_id, location_id, on_hand, updated_at)
            for (product_id, location_id), (level_id, updated_at, on_hand) in sorted(
                history.levels.items(), key=lambda item: item[1][0]
            )
        ]
        for start in range(0, len(level_rows), FLUSH_EVERY):
            writer.insert("stock_levels", level_rows[start : start + FLUSH_EVERY])
        result.levels = len(level_rows)
        result.phases["products_and_levels"] = time.perf_counter() - phase

        phase = time.perf_counter()
        ids.update(
            stock_documents=history.next_document,
            stock_movements=history.next_movement,
            stock_levels=history.next_level,
            products=ids["products"] + len(products),
        )
        writer.finish(ids)
        result.phases["commit"] = time.perf_counter() - phase
        phase = time.perf_counter()
        writer.analyze(tables)
        result.phases["analyze"] = time.perf_counter() - phase
    except BaseException:
        if sink is not None:
            sink.close(raise_error=False)  # no more writes from its thread
        if writer is not None:
            writer.abort()
        raise
    finally:
        raw.close()
        engine.dispose()
    result.seconds = time.perf_counter() - began
    return result


def _write_categories(
    writer: _Writer,
    categories: list[_Category],
    ids: dict[str, int],
    setup_at: datetime,
    result: GenerationResult,
) -> None:
    """The tree; a category with the same name under the same parent is reused."""
    from service.models.category import sibling_key

    existing = {
        key: category_id
        for category_id, key in writer.rows("SELECT id, sibling_key FROM categories")
    }
    rows = []
    for index, category in enumerate(categories):
        parent_id = categories[category.parent].id if category.parent is not None else None
        key = sibling_key(parent_id, category.name)
        if key in existing:
            category.id, category.reused = existing[key], True
            result.categories_reused += 1
            continue
        ids["categories"] += 1
        category.id = ids["categories"]
        moment = writer.time(setup_at + timedelta(seconds=index))
        rows.append(
            (category.id, category.name, category.description, parent_id, key, moment, moment, 1)
        )
    writer.insert("categories", rows)
    result.categories = len(rows)


def _write_locations(
    writer: _Writer,
    locations: list[tuple[str, str, str]],
    ids: dict[str, int],
    setup_at: datetime,
    result: GenerationResult,
) -> list[int]:
    """The locations' ids; an active location with the same code is reused."""
    from service.models.location import code_key

    existing = {
        key: (location_id, bool(active))
        for location_id, key, active in writer.rows("SELECT id, code_key, is_active FROM locations")
    }
    location_ids, rows = [], []
    for index, (code, name, _role) in enumerate(locations):
        key = code_key(code)
        if key in existing:
            location_id, active = existing[key]
            if not active:
                raise GenerationRefused(
                    f"location {code} exists and is archived: it takes no stock"
                )
            location_ids.append(location_id)
            result.locations_reused += 1
            continue
        ids["locations"] += 1
        location_ids.append(ids["locations"])
        moment = writer.time(setup_at + timedelta(minutes=1, seconds=index))
        rows.append((ids["locations"], code, key, name, writer.boolean(True), moment, moment, 1))
    writer.insert("locations", rows)
    result.locations = len(rows)
    result.location_codes = [code for code, _, _ in locations]
    return location_ids


def _refuse_existing_skus(writer: _Writer, products: list[_Product]) -> None:
    """A SKU that exists already means this catalog is (partly) loaded: refuse it whole."""
    from service.models.product import sku_key

    if not products or not writer.scalar("SELECT COUNT(*) FROM products"):
        return
    taken = {key for (key,) in writer.rows("SELECT sku_key FROM products")}
    clash = next((p.sku for p in products if sku_key(p.sku) in taken), None)
    if clash is not None:
        raise CatalogLoaded(clash)


def _insert_products(
    writer: _Writer,
    products: list[_Product],
    product_ids: list[int],
    categories: list[_Category],
    created: list[datetime],
    history: _History | None,
) -> None:
    """Product rows: final (after the history) or as first created (``history`` None)."""
    from service.models.product import sku_key

    rows = []
    for i, product in enumerate(products):
        born = writer.time(created[i])
        changed = born
        active, version, average = True, 1, 0
        if history is not None:
            active, version = history.active[i], history.version[i]
            average = history.average_scaled[i]
            if history.changed_at[i] is not None:
                changed = writer.time(history.changed_at[i])
        rows.append(
            (
                product_ids[i],
                product.sku,
                sku_key(product.sku),
                product.name,
                product.description,
                categories[product.category].id,
                product.unit,
                product.reorder_point,
                product.reorder_quantity,
                writer.boolean(active),
                born,
                changed,
                version,
                average,
            )
        )
    for start in range(0, len(rows), FLUSH_EVERY):
        writer.insert("products", rows[start : start + FLUSH_EVERY])


def _settle_reorder_points(
    spec: GenerationSpec, rng: random.Random, products: list[_Product], history: _History
) -> int:
    """Make sure a few active products sit at or below their reorder point; count them."""

    def low(index: int) -> bool:
        product = products[index]
        return (
            history.active[index]
            and product.reorder_point > 0
            and history.total[index] <= product.reorder_point
        )

    active = [i for i in range(len(products)) if history.active[i]]
    wanted = max(1, round(len(active) * spec.low_stock_share)) if active else 0
    count = sum(1 for i in active if low(i))
    candidates = [i for i in active if not low(i) and history.total[i] > 0]
    rng.shuffle(candidates)
    for index in candidates[: max(0, wanted - count)]:
        product = products[index]
        # Below, not just at: the alert reads naturally ("37 on hand, reorder at 40").
        product.reorder_point = history.total[index] + rng.randint(1, max(1, product.lot * 3))
        if product.reorder_quantity < product.reorder_point:
            product.reorder_quantity = product.reorder_point * 2
        count += 1
    return count


def _require_schema(engine: Any) -> None:
    from sqlalchemy import inspect

    inspector = inspect(engine)
    missing = [table for table in TABLE_COLUMNS if not inspector.has_table(table)]
    if missing:
        raise GenerationRefused(
            f"the database has no {', '.join(missing)} table(s); run 'storekeeper db upgrade'"
        )
    columns = {c["name"] for c in inspector.get_columns("stock_movements")}
    if "average_cost_after" not in columns:
        raise GenerationRefused(
            "the database is not migrated to head; run 'storekeeper db upgrade'"
        )
