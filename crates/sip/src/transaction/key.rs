//! Which transaction a message belongs to (RFC 3261 §17.1.3, §17.2.3).

use std::fmt;

use crate::header::Via;
use crate::message::{Method, Request, Response};
use crate::uri::Host;
use crate::ParseError;

/// Identifies a transaction: equal keys mean the same transaction.
///
/// Server keys follow RFC 3261 §17.2.3: the top Via branch (compared case-insensitively, §7.3.1),
/// its sent-by, and the request method, with ACK counted as INVITE so that the ACK for a non-2xx
/// final response finds its INVITE transaction; CANCEL has a transaction of its own. When the
/// branch lacks the `z9hG4bK` cookie (an RFC 2543 peer), the key falls back to the Request-URI,
/// From tag, To tag, Call-ID, CSeq and top Via (§17.2.3, last paragraphs). In that fallback INVITE
/// and ACK keys leave out the To tag, since the ACK carries the tag of our response, which the
/// INVITE did not.
///
/// Client keys follow §17.1.3: branch and CSeq method. Client and server keys never compare
/// equal, so one table may hold both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionKey(Inner);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Inner {
    Rfc3261 {
        role: Role,
        branch: String,
        /// `None` for client keys: §17.1.3 matches responses on branch and method only.
        sent_by: Option<(Host, Option<u16>)>,
        method: Method,
    },
    Rfc2543 {
        method: Method,
        request_uri: String,
        from_tag: Option<String>,
        to_tag: Option<String>,
        call_id: String,
        cseq: u32,
        top_via: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    Client,
    Server,
}

/// ACK belongs to the INVITE transaction (RFC 3261 §17.2.3, §17.1.3).
fn transaction_method(method: &Method) -> Method {
    match method {
        Method::Ack => Method::Invite,
        other => other.clone(),
    }
}

impl TransactionKey {
    /// The server transaction an incoming request belongs to (RFC 3261 §17.2.3). An ACK maps to
    /// its INVITE's key; if no transaction has it, the ACK acknowledges a 2xx and goes to the TU.
    pub fn server(req: &Request) -> Result<Self, ParseError> {
        Self::server_with_method(req, transaction_method(&req.method))
    }

    /// The INVITE server transaction a CANCEL targets (RFC 3261 §9.2: it matches the INVITE
    /// "using the same rules as §17.2.3", except for the method).
    pub fn cancelled_invite(cancel: &Request) -> Result<Self, ParseError> {
        Self::server_with_method(cancel, Method::Invite)
    }

    /// [`Self::server`] for a caller that has parsed the request's top Via already (`via` must
    /// be `req.top_via()`), sparing a second parse.
    pub fn server_with_via(req: &Request, via: &Via) -> Result<Self, ParseError> {
        Self::server_via(req, transaction_method(&req.method), via)
    }

    fn server_with_method(req: &Request, method: Method) -> Result<Self, ParseError> {
        let via = req.view_top_via()?;
        match via.branch() {
            // What `server_via` makes of the owned Via, without building it.
            Some(branch) if branch.starts_with("z9hG4bK") => Ok(Self(Inner::Rfc3261 {
                role: Role::Server,
                branch: branch.to_ascii_lowercase(),
                sent_by: Some((via.host.to_host(), via.port)),
                method,
            })),
            _ => Self::server_via(req, method, &via.to_via()),
        }
    }

    fn server_via(req: &Request, method: Method, via: &Via) -> Result<Self, ParseError> {
        if via.has_rfc3261_branch() {
            let branch = via.branch().unwrap_or_default().to_ascii_lowercase();
            return Ok(Self(Inner::Rfc3261 {
                role: Role::Server,
                branch,
                sent_by: Some((via.host.clone(), via.port)),
                method,
            }));
        }
        // RFC 3261 §17.2.3: RFC 2543 compatibility.
        let cseq = req.cseq()?;
        let from_tag = req.from_tag()?.map(str::to_owned);
        let to_tag = if method == Method::Invite {
            None
        } else {
            req.to_tag()?.map(str::to_owned)
        };
        Ok(Self(Inner::Rfc2543 {
            method,
            request_uri: req.uri.to_string(),
            from_tag,
            to_tag,
            call_id: req.call_id().to_owned(),
            cseq: cseq.seq,
            top_via: via.to_string(),
        }))
    }

    /// The client transaction an incoming response belongs to (RFC 3261 §17.1.3): top Via branch
    /// and CSeq method.
    pub fn client(resp: &Response) -> Result<Self, ParseError> {
        let branch = resp
            .view_top_via()?
            .branch()
            .ok_or_else(|| ParseError::new("Via without branch"))?;
        let method = transaction_method(&resp.cseq()?.method);
        Ok(Self::client_key(branch, method))
    }

    /// The key of the client transaction that sends `req`, for looking up its responses. The
    /// request's top Via must carry the branch this element generated.
    pub fn client_for_request(req: &Request) -> Result<Self, ParseError> {
        let branch = req
            .view_top_via()?
            .branch()
            .ok_or_else(|| ParseError::new("Via without branch"))?;
        Ok(Self::client_key(branch, transaction_method(&req.method)))
    }

    fn client_key(branch: &str, method: Method) -> Self {
        Self(Inner::Rfc3261 {
            role: Role::Client,
            branch: branch.to_ascii_lowercase(),
            sent_by: None,
            method,
        })
    }

    /// Whether this key was built by the RFC 2543 fallback.
    pub fn is_rfc2543(&self) -> bool {
        matches!(self.0, Inner::Rfc2543 { .. })
    }
}

impl fmt::Display for TransactionKey {
    /// A short form for logs, e.g. `server z9hg4bk74bf9 pc33.example.com:5060 INVITE`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Rfc3261 {
                role,
                branch,
                sent_by,
                method,
            } => {
                let role = match role {
                    Role::Client => "client",
                    Role::Server => "server",
                };
                write!(f, "{role} {branch}")?;
                if let Some((host, port)) = sent_by {
                    write!(f, " {host}")?;
                    if let Some(port) = port {
                        write!(f, ":{port}")?;
                    }
                }
                write!(f, " {method}")
            }
            Inner::Rfc2543 {
                method,
                call_id,
                cseq,
                ..
            } => {
                write!(f, "server rfc2543 {call_id} {cseq} {method}")
            }
        }
    }
}
