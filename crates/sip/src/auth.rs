//! HTTP digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760).
