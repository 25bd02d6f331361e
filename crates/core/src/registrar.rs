//! Registrar and location service (being written).
