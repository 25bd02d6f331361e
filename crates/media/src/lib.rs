//! Confab media plane (being written).
