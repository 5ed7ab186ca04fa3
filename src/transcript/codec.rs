//! Placeholder: the codec is being written (see docs/transcript-format.md).
use super::Transcript;

pub const MAGIC: &[u8; 8] = b"TLSIGN\x00\x01";
pub const FORMAT_MAJOR: u16 = 1;
pub const FORMAT_MINOR: u16 = 0;

#[derive(Clone, Debug)]
pub struct Limits;

#[derive(Debug, thiserror::Error)]
#[error("transcript codec not written yet")]
pub struct DecodeError;

pub fn encode(_t: &Transcript) -> Vec<u8> {
    unimplemented!()
}

pub fn decode(_bytes: &[u8], _limits: &Limits) -> Result<Transcript, DecodeError> {
    Err(DecodeError)
}
