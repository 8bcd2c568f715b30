//! grpc.reflection v1 and v1alpha, answered from the descriptor sets compiled
//! into the binary, so grpcurl, buf curl and grpcui work without `.proto`
//! files.
//!
//! Written here over tonic-reflection's generated types instead of using
//! tonic-reflection's own server, which ends the whole stream with NOT_FOUND
//! when asked for a symbol it does not know. The protocol (and grpc-go, the
//! server grpcurl is built against) answers a miss with an `error_response`
//! on the open stream and goes on serving it; ending the stream also made
//! every miss count as a failed call in the metrics. Like grpc-go, a file is
//! sent with the dependencies not yet sent on the stream (one round trip
//! instead of one per import), and extensions (`google.api.http`) are
//! answered.
//!
//! The index covers every file of the sets it is given, `google/rpc/*`
//! included, so clients can decode the `google.rpc.ErrorInfo`, `BadRequest`
//! and `PreconditionFailure` details Agora's errors carry.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message;
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_reflection::pb::v1 as v1_pb;
use tonic_reflection::pb::v1alpha as v1alpha_pb;
use v1_pb::server_reflection_request::MessageRequest;
use v1_pb::server_reflection_response::MessageResponse;

/// An encoded `FileDescriptorSet` read without decoding its files, so each
/// file is served byte for byte as compiled (prost would drop the custom
/// options, such as `google.api.http`, of a decoded and re-encoded file).
#[derive(Clone, PartialEq, prost::Message)]
struct RawFileSet {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file: Vec<Bytes>,
}

/// One file: its encoded descriptor and the files it imports.
#[derive(Debug)]
struct FileEntry {
    encoded: Bytes,
    dependencies: Vec<String>,
}

/// Every file, symbol and extension reflection can describe.
#[derive(Debug, Default)]
pub struct DescriptorIndex {
    files: HashMap<String, FileEntry>,
    /// Fully-qualified symbol (message, field, enum, enum value, service,
    /// method, extension) → the file defining it.
    symbols: HashMap<String, String>,
    /// (extended message, field number) → the file defining the extension.
    extensions: HashMap<(String, i32), String>,
}

impl DescriptorIndex {
    /// Indexes the files of `encoded_sets`; a file in several sets is taken
    /// from the first.
    pub fn new(encoded_sets: &[&[u8]]) -> anyhow::Result<Self> {
        let mut index = Self::default();
        for set in encoded_sets {
            for encoded in RawFileSet::decode(*set)?.file {
                let file = FileDescriptorProto::decode(encoded.clone())?;
                let name = file.name().to_owned();
                if index.files.contains_key(&name) {
                    continue;
                }
                index.add_symbols(&file);
                let dependencies = file.dependency.clone();
                index.files.insert(
                    name,
                    FileEntry {
                        encoded,
                        dependencies,
                    },
                );
            }
        }
        if let Some((file, missing)) = index.files.iter().find_map(|(name, entry)| {
            entry
                .dependencies
                .iter()
                .find(|dependency| !index.files.contains_key(*dependency))
                .map(|missing| (name, missing))
        }) {
            anyhow::bail!("reflection: {file} imports {missing}, which no descriptor set has");
        }
        Ok(index)
    }

    /// Agora's contracts (with google.rpc and google.api), grpc.health.v1 and
    /// both reflection versions: everything an Agora port serves or refers to.
    pub fn agora() -> Arc<Self> {
        static INDEX: LazyLock<Arc<DescriptorIndex>> = LazyLock::new(|| {
            Arc::new(
                DescriptorIndex::new(&[
                    agora_proto::FILE_DESCRIPTOR_SET,
                    tonic_health::pb::FILE_DESCRIPTOR_SET,
                    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                ])
                .expect("the descriptor sets compiled into the binary are complete"),
            )
        });
        INDEX.clone()
    }

    fn add_symbols(&mut self, file: &FileDescriptorProto) {
        let name = file.name();
        let package = file.package();
        let mut add = |symbol: String| {
            self.symbols.insert(symbol, name.to_owned());
        };
        for message in &file.message_type {
            message_symbols(package, message, &mut add);
        }
        for enumeration in &file.enum_type {
            enum_symbols(package, enumeration, &mut add);
        }
        for extension in &file.extension {
            add(qualify(package, extension.name()));
        }
        for service in &file.service {
            let service_name = qualify(package, service.name());
            for method in &service.method {
                add(qualify(&service_name, method.name()));
            }
            add(service_name);
        }
        let mut extensions = Vec::new();
        collect_extensions(&file.extension, &file.message_type, &mut extensions);
        for extension in extensions {
            let extendee = extension.extendee().trim_start_matches('.').to_owned();
            self.extensions
                .insert((extendee, extension.number()), name.to_owned());
        }
    }

    /// The encoded descriptor of `file` followed by those of its transitive
    /// imports not in `sent`, all of which are added to `sent`.
    fn with_dependencies(&self, file: &str, sent: &mut HashSet<String>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut queue = vec![file.to_owned()];
        let mut first = true;
        while let Some(name) = queue.pop() {
            // The asked-for file always goes out, even if sent before.
            if !sent.insert(name.clone()) && !first {
                continue;
            }
            first = false;
            if let Some(entry) = self.files.get(&name) {
                out.push(entry.encoded.to_vec());
                queue.extend(entry.dependencies.iter().rev().cloned());
            }
        }
        out
    }

    /// The answer to one request, given the files already sent on its stream.
    fn answer(
        &self,
        services: &[String],
        request: &MessageRequest,
        sent: &mut HashSet<String>,
    ) -> MessageResponse {
        let files = |file: &str, sent: &mut HashSet<String>| {
            MessageResponse::FileDescriptorResponse(v1_pb::FileDescriptorResponse {
                file_descriptor_proto: self.with_dependencies(file, sent),
            })
        };
        match request {
            MessageRequest::ListServices(_) => {
                MessageResponse::ListServicesResponse(v1_pb::ListServiceResponse {
                    service: services
                        .iter()
                        .map(|name| v1_pb::ServiceResponse { name: name.clone() })
                        .collect(),
                })
            }
            MessageRequest::FileByFilename(name) => match self.files.contains_key(name) {
                true => files(name, sent),
                false => not_found(format!("file {name:?} not found")),
            },
            MessageRequest::FileContainingSymbol(symbol) => {
                match self.symbols.get(symbol.trim_start_matches('.')) {
                    Some(file) => files(file, sent),
                    None => not_found(format!("symbol {symbol:?} not found")),
                }
            }
            MessageRequest::FileContainingExtension(extension) => {
                let key = (
                    extension.containing_type.trim_start_matches('.').to_owned(),
                    extension.extension_number,
                );
                match self.extensions.get(&key) {
                    Some(file) => files(file, sent),
                    None => not_found(format!("extension {} of {:?} not found", key.1, key.0)),
                }
            }
            MessageRequest::AllExtensionNumbersOfType(message) => {
                let message = message.trim_start_matches('.');
                if !self.symbols.contains_key(message) {
                    return not_found(format!("type {message:?} not found"));
                }
                let mut numbers: Vec<i32> = self
                    .extensions
                    .keys()
                    .filter(|(extendee, _)| extendee == message)
                    .map(|(_, number)| *number)
                    .collect();
                numbers.sort_unstable();
                MessageResponse::AllExtensionNumbersResponse(v1_pb::ExtensionNumberResponse {
                    base_type_name: message.to_owned(),
                    extension_number: numbers,
                })
            }
        }
    }
}

fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

fn message_symbols(scope: &str, message: &DescriptorProto, add: &mut impl FnMut(String)) {
    let name = qualify(scope, message.name());
    for field in message.field.iter().chain(&message.extension) {
        add(qualify(&name, field.name()));
    }
    for oneof in &message.oneof_decl {
        add(qualify(&name, oneof.name()));
    }
    for nested in &message.nested_type {
        message_symbols(&name, nested, add);
    }
    for enumeration in &message.enum_type {
        enum_symbols(&name, enumeration, add);
    }
    add(name);
}

/// An enum and its values; values are scoped beside the enum, not inside it
/// (protobuf's C++ scoping rules).
fn enum_symbols(
    scope: &str,
    enumeration: &prost_types::EnumDescriptorProto,
    add: &mut impl FnMut(String),
) {
    for value in &enumeration.value {
        add(qualify(scope, value.name()));
    }
    add(qualify(scope, enumeration.name()));
}

fn collect_extensions<'a>(
    top: &'a [FieldDescriptorProto],
    messages: &'a [DescriptorProto],
    out: &mut Vec<&'a FieldDescriptorProto>,
) {
    out.extend(top);
    for message in messages {
        collect_extensions(&message.extension, &message.nested_type, out);
    }
}

fn not_found(message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(v1_pb::ErrorResponse {
        error_code: Code::NotFound as i32,
        error_message: message,
    })
}

/// The reflection service of one port: the shared index and the names of
/// the services the port serves.
#[derive(Clone, Debug)]
pub struct Reflection {
    index: Arc<DescriptorIndex>,
    services: Arc<[String]>,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Reflection {
    /// Reflection over `index`, listing `services`.
    pub fn new(index: Arc<DescriptorIndex>, services: &[&str]) -> Self {
        Self {
            index,
            services: services.iter().map(|name| (*name).to_owned()).collect(),
        }
    }

    /// Answers each request of a stream in order; a request the index cannot
    /// answer gets an `error_response` and the stream goes on. The stream ends
    /// when the client's does.
    fn respond<In, Out>(&self, requests: Streaming<In>) -> ResponseStream<Out>
    where
        In: Message + Default + Send + 'static,
        Out: Message + Default + Send + 'static,
    {
        let this = self.clone();
        let responses = requests.scan(HashSet::new(), move |sent, request| {
            let reply = request.ok().map(|request| {
                let request: v1_pb::ServerReflectionRequest = transcode(&request);
                let message_response = match &request.message_request {
                    Some(message) => this.index.answer(&this.services, message, sent),
                    None => MessageResponse::ErrorResponse(v1_pb::ErrorResponse {
                        error_code: Code::InvalidArgument as i32,
                        error_message: "the request names no message_request".into(),
                    }),
                };
                Ok(transcode(&v1_pb::ServerReflectionResponse {
                    valid_host: request.host.clone(),
                    original_request: Some(request),
                    message_response: Some(message_response),
                }))
            });
            futures::future::ready(reply)
        });
        Box::pin(responses)
    }

    /// The grpc.reflection.v1 server.
    pub fn v1(&self) -> v1_pb::server_reflection_server::ServerReflectionServer<Self> {
        v1_pb::server_reflection_server::ServerReflectionServer::new(self.clone())
    }

    /// The grpc.reflection.v1alpha server.
    pub fn v1alpha(&self) -> v1alpha_pb::server_reflection_server::ServerReflectionServer<Self> {
        v1alpha_pb::server_reflection_server::ServerReflectionServer::new(self.clone())
    }
}

/// One message as another of identical wire format (v1alpha and v1 are the
/// same protocol under two package names).
fn transcode<A: Message, B: Message + Default>(message: &A) -> B {
    B::decode(message.encode_to_vec().as_slice()).unwrap_or_default()
}

#[tonic::async_trait]
impl v1_pb::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = ResponseStream<v1_pb::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1_pb::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        Ok(Response::new(self.respond(request.into_inner())))
    }
}

#[tonic::async_trait]
impl v1alpha_pb::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = ResponseStream<v1alpha_pb::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1alpha_pb::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        Ok(Response::new(self.respond(request.into_inner())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Files with their imports once per stream, and misses on the open
    // stream, are tested over real gRPC in tests/it/reflection.rs.

    #[test]
    fn error_details_enum_values_and_extensions_are_known() {
        let index = DescriptorIndex::agora();
        let mut sent = HashSet::new();
        for symbol in [
            "google.rpc.ErrorInfo",
            "google.rpc.BadRequest.FieldViolation",
            "agora.order.v1.ORDER_STATE_CONFIRMED",
            "grpc.health.v1.Health.Check",
            "google.api.http",
        ] {
            let answer = index.answer(
                &[],
                &MessageRequest::FileContainingSymbol(symbol.into()),
                &mut sent,
            );
            assert!(
                matches!(answer, MessageResponse::FileDescriptorResponse(_)),
                "{symbol}: {answer:?}"
            );
        }
        let numbers = index.answer(
            &[],
            &MessageRequest::AllExtensionNumbersOfType("google.protobuf.MethodOptions".into()),
            &mut sent,
        );
        match numbers {
            MessageResponse::AllExtensionNumbersResponse(numbers) => {
                assert!(
                    numbers.extension_number.contains(&72_295_728),
                    "{numbers:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        let miss = index.answer(
            &[],
            &MessageRequest::FileContainingSymbol("no.Such".into()),
            &mut sent,
        );
        assert!(
            matches!(miss, MessageResponse::ErrorResponse(ref error) if error.error_code == Code::NotFound as i32),
            "{miss:?}"
        );
    }
}
