"""SQLAlchemy models; importing this package registers every table on ``Base.metadata``."""

from service.models.base import Base
from service.models.category import Category
from service.models.idempotency import IdempotencyRecord
from service.models.location import Location
from service.models.product import Product
from service.models.stock import StockDocument, StockLevel, StockMovement

__all__ = [
    "Base",
    "Category",
    "IdempotencyRecord",
    "Location",
    "Product",
    "StockDocument",
    "StockLevel",
    "StockMovement",
]
