//! Cutting SIP messages out of a byte stream (TCP, TLS) by Content-Length (RFC 3261 §18.3).
