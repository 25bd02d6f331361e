//! confab-net (being written).
