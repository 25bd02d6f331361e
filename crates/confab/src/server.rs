//! Wires transports, the protocol core and storage into a running server. (Lead engineer.)
