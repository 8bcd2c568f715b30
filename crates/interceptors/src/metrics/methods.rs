//! Which gRPC methods exist and how they stream, read once from the descriptor
//! sets compiled into the binary, so `grpc_type` is known without touching each
//! service and unknown paths can be folded into one bounded label set.

use std::collections::HashMap;

use prost::Message;
use prost_types::FileDescriptorSet;

/// How a method streams, named as go-grpc-prometheus names it in `grpc_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodType {
    /// One request, one response.
    Unary,
    /// A stream of requests, one response.
    ClientStream,
    /// One request, a stream of responses.
    ServerStream,
    /// Streams both ways.
    BidiStream,
    /// A path no descriptor set describes.
    Unknown,
}

impl MethodType {
    /// The `grpc_type` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ClientStream => "client_stream",
            Self::ServerStream => "server_stream",
            Self::BidiStream => "bidi_stream",
            Self::Unknown => "unknown",
        }
    }

    fn from_flags(client_streaming: bool, server_streaming: bool) -> Self {
        match (client_streaming, server_streaming) {
            (false, false) => Self::Unary,
            (true, false) => Self::ClientStream,
            (false, true) => Self::ServerStream,
            (true, true) => Self::BidiStream,
        }
    }
}

/// One method as the metric labels describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    /// Fully-qualified service name, e.g. `grpc.health.v1.Health`.
    pub service: String,
    /// Method name, e.g. `Check`.
    pub method: String,
    /// How it streams.
    pub kind: MethodType,
}

impl MethodInfo {
    /// The labels every path no descriptor describes is recorded under, so a
    /// scanner probing random paths cannot grow the number of series.
    pub fn unknown() -> Self {
        Self {
            service: "unknown".into(),
            method: "unknown".into(),
            kind: MethodType::Unknown,
        }
    }
}

/// Every method of the given encoded `FileDescriptorSet`s, by HTTP/2 path
/// (`/pkg.Service/Method`).
pub fn methods_by_path(encoded_sets: &[&[u8]]) -> anyhow::Result<HashMap<String, MethodInfo>> {
    let mut methods = HashMap::new();
    for encoded in encoded_sets {
        let set = FileDescriptorSet::decode(*encoded)?;
        for file in set.file {
            let package = file.package();
            for service in &file.service {
                let service_name = if package.is_empty() {
                    service.name().to_owned()
                } else {
                    format!("{package}.{}", service.name())
                };
                for method in &service.method {
                    let info = MethodInfo {
                        service: service_name.clone(),
                        method: method.name().to_owned(),
                        kind: MethodType::from_flags(
                            method.client_streaming(),
                            method.server_streaming(),
                        ),
                    };
                    methods.insert(format!("/{service_name}/{}", info.method), info);
                }
            }
        }
    }
    Ok(methods)
}

/// The methods of every service an Agora port may serve: Agora's contracts,
/// grpc.health.v1 and both grpc.reflection versions.
pub fn agora_methods() -> anyhow::Result<HashMap<String, MethodInfo>> {
    methods_by_path(&[
        agora_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(service: &str, method: &str, kind: MethodType) -> MethodInfo {
        MethodInfo {
            service: service.into(),
            method: method.into(),
            kind,
        }
    }

    #[test]
    fn health_and_reflection_methods_have_their_streaming_type() {
        let methods = agora_methods().unwrap();
        assert_eq!(
            methods["/grpc.health.v1.Health/Check"],
            info("grpc.health.v1.Health", "Check", MethodType::Unary)
        );
        assert_eq!(
            methods["/grpc.health.v1.Health/Watch"],
            info("grpc.health.v1.Health", "Watch", MethodType::ServerStream)
        );
        assert_eq!(
            methods["/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"].kind,
            MethodType::BidiStream
        );
        assert_eq!(
            methods["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"].kind,
            MethodType::BidiStream
        );
    }

    #[test]
    fn agora_contracts_are_included() {
        let methods = agora_methods().unwrap();
        let user = methods
            .iter()
            .filter(|(path, _)| path.starts_with("/agora.user.v1.UserService/"))
            .collect::<Vec<_>>();
        assert!(!user.is_empty(), "no agora.user.v1 methods found");
        assert_eq!(
            methods["/agora.order.v1.OrderService/WatchOrder"].kind,
            MethodType::ServerStream
        );
        for (path, info) in user {
            assert_eq!(info.service, "agora.user.v1.UserService");
            assert_eq!(*path, format!("/{}/{}", info.service, info.method));
        }
    }

    #[test]
    fn type_labels_match_go_grpc_prometheus() {
        let labels = [
            MethodType::from_flags(false, false),
            MethodType::from_flags(true, false),
            MethodType::from_flags(false, true),
            MethodType::from_flags(true, true),
            MethodType::Unknown,
        ]
        .map(MethodType::as_str);
        assert_eq!(
            labels,
            [
                "unary",
                "client_stream",
                "server_stream",
                "bidi_stream",
                "unknown"
            ]
        );
    }
}
