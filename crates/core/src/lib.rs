//! confab-core (being written).
