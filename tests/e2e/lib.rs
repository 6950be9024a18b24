//! End-to-end tests live in this package's test targets; it has no library code.
