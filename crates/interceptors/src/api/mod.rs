//! The conventions every Agora service speaks on the wire: the richer gRPC error
//! model, AIP-158 page tokens, protobuf timestamps, and the value types more
//! than one contract shares (ids, request ids, skus, quantities).

pub mod errors;
pub mod pagination;
pub mod time;
pub mod values;
