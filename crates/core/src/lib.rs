//! Confab's PBX domain: the request dispatcher ([`Endpoint`]), the digest authentication policy
//! with failure counting and bans, the registrar/location service, and calls between users
//! ([`call`]: a B2BUA that rings every device and anchors media through a [`MediaRelay`]).
//!
//! Sans-IO like `confab-sip`: nothing here reads a clock, sleeps, spawns or touches a socket.
//! Time arrives as `Instant` arguments, bytes as slices, and answers leave as
//! [`confab_sip::Transmit`]s appended to a caller's buffer. Confab never forwards a request it
//! does not serve: it is not an open relay.

mod auth;
pub mod ban;
pub mod call;
pub mod config;
pub mod directory;
pub mod endpoint;
mod hash;
pub mod registrar;

pub use call::{CallRecord, CallSummary, MediaRelay};
pub use config::{CallConfig, CoreConfig};
pub use directory::{DirectoryUser, MemoryDirectory, UserCredential, UserDirectory};
pub use endpoint::{Endpoint, EndpointStats};
pub use registrar::{Authenticated, Registrar, RegistrarConfig};
