//! Pure deciders for products, stock and orders. See ARCHITECTURE.md.
