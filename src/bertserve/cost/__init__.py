"""Price catalog (a TOML data file) and the cost model: dollars per million inferences."""

from bertserve.cost.catalog import Catalog, CatalogError, Machine, load_catalog, parse_catalog
from bertserve.cost.model import (
    CostComparison,
    best_point,
    budget_interval,
    compare_costs,
    cost_per_million,
    format_ratio,
)

__all__ = [
    "Catalog",
    "CatalogError",
    "CostComparison",
    "Machine",
    "best_point",
    "budget_interval",
    "compare_costs",
    "cost_per_million",
    "format_ratio",
    "load_catalog",
    "parse_catalog",
]
