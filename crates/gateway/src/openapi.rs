//! The OpenAPI 3 document of the HTTP/JSON API, generated from the same
//! descriptors the routes come from: one operation per HTTP rule, its path
//! and query parameters, its body, and a schema per message in the proto3
//! JSON mapping, with the protos' comments as descriptions. Served at
//! `/openapi.json` and printed by `agora-gateway --print-openapi`.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::routes::{BodyRule, Route, RouteTable};

/// The leading comment of the element at `path` in `file`.
fn comment(pool: &DescriptorPool, file: &str, path: &[i32]) -> Option<String> {
    let file = pool.get_file_by_name(file)?;
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info
        .location
        .iter()
        .find(|location| location.path == path)?;
    let text = location.leading_comments.as_deref()?.trim();
    (!text.is_empty()).then(|| text.lines().map(str::trim).collect::<Vec<_>>().join("\n"))
}

fn message_comment(pool: &DescriptorPool, message: &MessageDescriptor) -> Option<String> {
    comment(pool, message.parent_file().name(), message.path())
}

fn field_comment(pool: &DescriptorPool, field: &FieldDescriptor) -> Option<String> {
    comment(pool, field.parent_file().name(), field.path())
}

/// The schema of a field's value (one element, for lists).
fn kind_schema(kind: &Kind, wanted: &mut BTreeSet<String>) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "string", "format": "int64"}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Enum(enumeration) => json!({
            "type": "string",
            "enum": enumeration.values().map(|value| value.name().to_owned()).collect::<Vec<_>>(),
        }),
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
            "google.protobuf.Duration" => json!({"type": "string", "example": "1.5s"}),
            "google.protobuf.FieldMask" => {
                json!({"type": "string", "example": "display_name,email"})
            }
            "google.protobuf.Empty" => json!({"type": "object"}),
            "google.protobuf.Any" => json!({
                "type": "object",
                "properties": {"@type": {"type": "string"}},
                "additionalProperties": true,
            }),
            name => {
                wanted.insert(name.to_owned());
                json!({"$ref": format!("#/components/schemas/{name}")})
            }
        },
    }
}

fn field_schema(
    pool: &DescriptorPool,
    field: &FieldDescriptor,
    wanted: &mut BTreeSet<String>,
) -> Value {
    let mut schema = if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return json!({});
        };
        let value = entry.map_entry_value_field();
        json!({"type": "object", "additionalProperties": kind_schema(&value.kind(), wanted)})
    } else if field.is_list() {
        json!({"type": "array", "items": kind_schema(&field.kind(), wanted)})
    } else {
        kind_schema(&field.kind(), wanted)
    };
    if let Some(text) = field_comment(pool, field) {
        if schema.get("$ref").is_some() {
            // OpenAPI 3.0 ignores siblings of $ref: wrap it.
            schema = json!({"allOf": [schema], "description": text});
        } else if let Value::Object(map) = &mut schema {
            map.insert("description".into(), Value::String(text));
        }
    }
    schema
}

fn message_schema(
    pool: &DescriptorPool,
    message: &MessageDescriptor,
    wanted: &mut BTreeSet<String>,
) -> Value {
    let mut properties = Map::new();
    for field in message.fields() {
        properties.insert(
            field.json_name().to_owned(),
            field_schema(pool, &field, wanted),
        );
    }
    let mut schema = json!({"type": "object", "properties": properties});
    if let Some(text) = message_comment(pool, message) {
        schema["description"] = Value::String(text);
    }
    schema
}

/// Query parameters of a route: the top-level scalar fields neither in the
/// path nor in the body.
fn query_parameters(
    pool: &DescriptorPool,
    route: &Route,
    wanted: &mut BTreeSet<String>,
) -> Vec<Value> {
    if route.body == BodyRule::All {
        return Vec::new();
    }
    let bound: BTreeSet<&str> = route
        .template
        .fields()
        .map(|field| field.split('.').next().unwrap_or(field))
        .collect();
    route
        .grpc
        .input()
        .fields()
        .filter(|field| !bound.contains(field.name()))
        .filter(|field| !matches!(&route.body, BodyRule::Field(body) if body == field.name()))
        .filter(|field| {
            !matches!(field.kind(), Kind::Message(ref m) if !m.full_name().starts_with("google.protobuf."))
        })
        .map(|field| {
            let mut parameter = json!({
                "name": field.name(),
                "in": "query",
                "required": false,
                "schema": field_schema(pool, &field, wanted),
            });
            if let Some(text) = field_comment(pool, &field) {
                parameter["description"] = Value::String(text);
            }
            parameter
        })
        .collect()
}

fn operation(pool: &DescriptorPool, route: &Route, wanted: &mut BTreeSet<String>) -> Value {
    let method = &route.grpc;
    let service = method.parent_service();
    let input = method.input();
    let mut parameters: Vec<Value> = route
        .template
        .fields()
        .map(|field| {
            let schema = crate::transcode::field_path(&input, field)
                .and_then(|fields| fields.last().cloned())
                .map_or_else(
                    || json!({"type": "string"}),
                    |last| field_schema(pool, &last, wanted),
                );
            json!({"name": field, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    parameters.extend(query_parameters(pool, route, wanted));
    parameters.push(json!({
        "name": "grpc-timeout", "in": "header", "required": false,
        "description": "The call's deadline in gRPC's format (\"5S\", \"250m\"); the gateway's default otherwise.",
        "schema": {"type": "string"},
    }));

    let output = method.output();
    wanted.insert(output.full_name().to_owned());
    let reference = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let success = if route.is_streaming() {
        json!({
            "description": format!("A Server-Sent Events stream: one `data:` event per {} in JSON; a failure ends it with an `error` event holding a google.rpc.Status.", output.name()),
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        })
    } else {
        json!({"description": "OK", "content": {"application/json": {"schema": reference(output.full_name())}}})
    };
    let mut operation = json!({
        "operationId": format!("{}_{}", service.name(), method.name()),
        "tags": [service.name()],
        "summary": format!("{}.{}", service.full_name(), method.name()),
        "parameters": parameters,
        "responses": {
            "200": success,
            "default": {
                "description": "An error: the google.rpc.Status with its details; the HTTP status follows google.rpc.Code.",
                "content": {"application/json": {"schema": reference("google.rpc.Status")}},
            },
        },
    });
    if let Some(text) = comment(pool, service.parent_file().name(), method.path()) {
        operation["description"] = Value::String(text);
    }
    let body_schema = match &route.body {
        BodyRule::None => None,
        BodyRule::All => {
            wanted.insert(input.full_name().to_owned());
            Some(reference(input.full_name()))
        }
        BodyRule::Field(name) => input
            .get_field_by_name(name)
            .map(|field| kind_schema(&field.kind(), wanted)),
    };
    if let Some(schema) = body_schema {
        operation["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": schema}},
        });
    }
    operation
}

/// The whole document.
pub fn document(pool: &DescriptorPool, routes: &RouteTable) -> Value {
    let mut wanted = BTreeSet::from(["google.rpc.Status".to_owned()]);
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for route in routes.routes() {
        let item = paths.entry(route.pattern.clone()).or_default();
        item.insert(
            route.method.as_str().to_ascii_lowercase(),
            operation(pool, route, &mut wanted),
        );
    }
    let mut schemas = Map::new();
    let mut done = BTreeSet::new();
    while let Some(name) = wanted.iter().find(|name| !done.contains(*name)).cloned() {
        done.insert(name.clone());
        if let Some(message) = pool.get_message_by_name(&name) {
            let schema = message_schema(pool, &message, &mut wanted);
            schemas.insert(name, schema);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Agora API",
            "version": "v1",
            "description": "Agora's gRPC services over HTTP/JSON, transcoded by agora-gateway from the google.api.http rules of the contracts. JSON follows the proto3 JSON mapping: lowerCamelCase names (proto names accepted), enums by name, 64-bit integers as strings, timestamps in RFC 3339.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
        "security": [{"bearer": []}, {}],
    })
}
