//! Confab's PBX domain (being written).
pub mod registrar;
