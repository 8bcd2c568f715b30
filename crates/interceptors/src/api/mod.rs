//! The conventions every Agora service speaks on the wire: the richer gRPC error
//! model, AIP-158 page tokens, and protobuf timestamps.

pub mod errors;
pub mod pagination;
pub mod time;
