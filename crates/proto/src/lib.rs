//! Agora's gRPC contracts, generated at build time from `proto/` by tonic-prost-build
//! and the pure-Rust `protox` compiler.
//!
//! Generated types stay at the edge: each service converts them into its own domain
//! types in its gRPC adapter, which is where requests are parsed and validated.
#![forbid(unsafe_code)]
#![allow(clippy::all, missing_docs, unreachable_pub)]

/// Every Agora proto file (and the well-known types they import), encoded as one
/// `FileDescriptorSet`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/agora_descriptor.bin"));

/// Shared value types (`agora.type.v1`). The module keeps the package's name
/// because generated code refers to it by that path.
pub mod r#type {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("agora.r#type.v1");
    }
}

pub use r#type::v1::Money;

/// The user context (`agora.user.v1`).
pub mod user {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("agora.user.v1");
    }
}

/// The inventory context (`agora.inventory.v1`).
pub mod inventory {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("agora.inventory.v1");
    }
}

/// The payment context (`agora.payment.v1`).
pub mod payment {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("agora.payment.v1");
    }
}

/// The order context (`agora.order.v1`).
pub mod order {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("agora.order.v1");
    }
}

/// Domain events and the feed every service serves (`agora.events.v1`).
pub mod events {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("agora.events.v1");
    }
}

/// The notification context (`agora.notification.v1`).
pub mod notification {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("agora.notification.v1");
    }
}
