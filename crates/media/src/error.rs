//! The crate's one error type.

use std::io;

use crate::SessionId;

/// Errors of the media control API. Packets never produce errors: bad ones are dropped and
/// counted in the session's statistics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Every RTP/RTCP pair in the configured range is in use (the call should get a 503/488).
    #[error("no free media port pair in {min}-{max}")]
    NoFreePorts { min: u16, max: u16 },
    /// The session was released already (or never existed): the caller's bookkeeping is off.
    #[error("unknown media session {0}")]
    UnknownSession(SessionId),
    /// The engine's workers have stopped.
    #[error("media engine stopped")]
    Stopped,
    /// The configuration cannot work.
    #[error("invalid media configuration: {0}")]
    Config(&'static str),
    /// Binding a socket or setting up a worker failed.
    #[error("media socket: {0}")]
    Io(#[from] io::Error),
}
