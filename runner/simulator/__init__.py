"""A local Shopify Admin API for bulk operations: faithful shapes, limits, timing, faults and ground truth."""
