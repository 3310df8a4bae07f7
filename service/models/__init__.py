"""SQLAlchemy models; importing this package registers every table on ``Base.metadata``."""

from service.models.base import Base
from service.models.category import Category
from service.models.product import Product

__all__ = ["Base", "Category", "Product"]
