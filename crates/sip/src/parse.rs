//! The parser and serialiser. PLACEHOLDER: the sip-message work replaces every function here.
#![allow(dead_code, unused_variables)]

use crate::header::{CSeq, HeaderName, NameAddr, Via};
use crate::message::{Message, Request, Response};
use crate::uri::Uri;
use crate::ParseError;

pub(crate) fn uri(s: &str) -> Result<Uri, ParseError> {
    Err(ParseError::new("unimplemented"))
}
pub(crate) fn unescape(s: &str) -> String {
    s.to_owned()
}
pub(crate) fn header_name(s: &str) -> HeaderName {
    HeaderName::Other(s.to_owned())
}
pub(crate) fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim)
}
pub(crate) fn via(s: &str) -> Result<Via, ParseError> {
    Err(ParseError::new("unimplemented"))
}
pub(crate) fn name_addr(s: &str) -> Result<NameAddr, ParseError> {
    Err(ParseError::new("unimplemented"))
}
pub(crate) fn cseq(s: &str) -> Result<CSeq, ParseError> {
    Err(ParseError::new("unimplemented"))
}
pub(crate) fn message(bytes: &[u8], stream: bool) -> Result<Message, ParseError> {
    Err(ParseError::new("unimplemented"))
}
pub(crate) fn serialize_request(r: &Request) -> Vec<u8> {
    Vec::new()
}
pub(crate) fn serialize_response(r: &Response) -> Vec<u8> {
    Vec::new()
}
