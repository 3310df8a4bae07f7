"""The stock history: documents and movements, posted as the ledger would post them.

:class:`History` simulates the movements of the past ``days`` days, exactly ``movements`` of
them: opening stock on the first day, then receipts (deliveries of what fell to its reorder
point, customer returns), shipments, transfers, adjustments (with reason codes) and a few
reversals, in documents of 1-5 lines, at working hours with quieter weekends. It keeps the
state :func:`service.domain.ledger.post` keeps and buffers the rows that function would write
for the same documents, posted one after the other:

* every movement's ``balance_after`` and ``average_cost_after``; shipments, transfers and
  negative adjustments take only stock that is there, so no balance is ever negative;
* ``products.average_cost`` follows :func:`service.domain.ledger.moving_average` (the ledger's own
  function) over receipts and reversals of receipts, with the product's total on-hand before
  the document, exactly as ``post`` computes it; ``version``/``updated_at`` move when it does;
* one ``stock_levels`` row per (product, location) ever touched, equal to its ledger sum,
  with the id ``post``'s ``INSERT .. ON CONFLICT DO NOTHING`` gives it (which uses up an id
  for every touched level, new or not, on both backends);
* documents and movements get increasing ids and increasing ``created_at``, a reversal
  compensates both legs of a transfer line and names the movements it reverses, nothing is
  reversed twice.

Full batches of rows go to a writer sink (:mod:`service.datagen.writers`) as they fill up.
Afterwards :func:`settle_reorder_points` raises a few reorder points, so that some active
products end at or below theirs.
"""

from __future__ import annotations

import bisect
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from service.datagen.catalog import RETURNS, STORE, WAREHOUSE, CatalogProduct
from service.datagen.writers import FLUSH_EVERY

if TYPE_CHECKING:
    from service.datagen.spec import GenerationSpec
    from service.datagen.writers import BackgroundWriter, InlineWriter, Writer

# Reversals pick among the latest lines of this share of documents (mistakes are noticed soon).
REVERSIBLE_SHARE = 0.25
REVERSAL_WINDOW = 60

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


# --- time --------------------------------------------------------------------------------------


def _at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


class Timeline:
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


def timelines(now: datetime, days: int) -> tuple[datetime, Timeline, Timeline]:
    """Catalog set-up time, the opening-stock day, and the working days after it up to now."""
    first = (now - timedelta(days=days)).date()
    setup = _at(first, 6)
    opening = Timeline([(_at(first, WORKDAY_HOURS[0]), _at(first, WORKDAY_HOURS[1]), 1.0)])
    intervals = []
    for offset in range(1, days + 1):
        day = first + timedelta(days=offset)
        hours = WORKDAY_HOURS if day.weekday() < 5 else WEEKEND_HOURS
        begin, end = _at(day, hours[0]), min(_at(day, hours[1]), now)
        if end > begin:
            intervals.append((begin, end, DAY_WEIGHTS[day.weekday()]))
    if not intervals:  # a one-day history generated before opening time
        intervals.append((_at(first, WORKDAY_HOURS[1]), now, 1.0))
    return setup, opening, Timeline(intervals)


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


class History:
    """Posts documents exactly as service.domain.ledger.post would, into row buffers."""

    def __init__(
        self,
        spec: GenerationSpec,
        rng: random.Random,
        products: list[CatalogProduct],
        product_ids: list[int],
        location_ids: list[int],
        roles: list[str],
        writer: Writer,
        sink: BackgroundWriter | InlineWriter,
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
        # missing keys in (product id, location id) order, each taking the next id.
        touched = sorted(
            {
                (product_ids[c.product], location_ids[c.location], c.product, c.location)
                for c in changes
            }
        )
        before = {}
        for product_id, location_id, product, where in touched:
            key = (product_id, location_id)
            if key not in self.levels:
                self.next_level += 1
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

    def run(self, opening_clock: Timeline, regular_clock: Timeline) -> None:
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


def settle_reorder_points(
    spec: GenerationSpec, rng: random.Random, products: list[CatalogProduct], history: History
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
