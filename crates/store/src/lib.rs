//! confab-store (being written).
