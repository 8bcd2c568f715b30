//! HTTP/JSON to a request message and a response message back to JSON, by
//! the proto3 JSON mapping that prost-reflect implements (field masks,
//! timestamps, enums by name, 64-bit integers as strings).
//!
//! A request message is built as one JSON object: the body where the rule
//! puts it, then each query parameter and each path variable written at its
//! field path (path variables win). Each parameter is first checked on its
//! own, so a bad one is reported under its own name; then the whole object is
//! decoded into the method's input type. Every mistake is a field violation,
//! answered 400.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::{Map, Value};

use crate::routes::{BodyRule, Route, percent_decode_with};

/// A caller's mistake in one field: `(field, description)`.
pub type Violation = (String, String);

/// The field at dotted `path` (proto or JSON names) in `message`, with the
/// fields leading to it.
pub fn field_path(message: &MessageDescriptor, path: &str) -> Option<Vec<FieldDescriptor>> {
    let mut fields = Vec::new();
    let mut current = message.clone();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = current
            .get_field_by_name(part)
            .or_else(|| current.get_field_by_json_name(part))?;
        if parts.peek().is_some() {
            let Kind::Message(inner) = field.kind() else {
                return None;
            };
            if field.is_list() || field.is_map() {
                return None;
            }
            current = inner;
        }
        fields.push(field);
    }
    Some(fields)
}

/// The JSON value of a path or query parameter for `field`: booleans as
/// booleans, everything else as a string (the proto3 JSON mapping accepts
/// numbers, enums, timestamps, durations and field masks as strings).
fn parameter_value(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    match field.kind() {
        Kind::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, got {text:?}")),
        },
        Kind::Message(message)
            if !message.full_name().starts_with("google.protobuf.") || field.is_map() =>
        {
            Err("a message field cannot be set from a parameter".to_owned())
        }
        _ => Ok(Value::String(text.to_owned())),
    }
}

/// Writes `value` at `fields` into `object`, replacing what was there under
/// either name; list fields collect repeated parameters.
fn write_at(object: &mut Map<String, Value>, fields: &[FieldDescriptor], value: Value) {
    let Some((field, rest)) = fields.split_first() else {
        return;
    };
    let json_name = field.json_name();
    let name = field.name();
    if rest.is_empty() {
        if field.is_list() {
            let existing = object.remove(name).or_else(|| object.remove(json_name));
            let mut items = match existing {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            items.push(value);
            object.insert(name.to_owned(), Value::Array(items));
        } else {
            object.remove(json_name);
            object.insert(name.to_owned(), value);
        }
        return;
    }
    let existing = object.remove(name).or_else(|| object.remove(json_name));
    let mut inner = match existing {
        Some(Value::Object(inner)) => inner,
        _ => Map::new(),
    };
    write_at(&mut inner, rest, value);
    object.insert(name.to_owned(), Value::Object(inner));
}

fn decode(message: &MessageDescriptor, object: Value) -> Result<DynamicMessage, String> {
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(message.clone(), object, &options)
        .map_err(|error| error.to_string())
}

/// Parses one parameter on its own, so its mistake names it.
fn parameter(
    input: &MessageDescriptor,
    name: &str,
    text: &str,
) -> Result<(Vec<FieldDescriptor>, Value), String> {
    let fields = field_path(input, name).ok_or_else(|| "no such field".to_owned())?;
    let last = fields.last().ok_or_else(|| "no such field".to_owned())?;
    let value = parameter_value(last, text)?;
    let mut alone = Map::new();
    write_at(&mut alone, &fields, value.clone());
    decode(input, Value::Object(alone))?;
    Ok((fields, value))
}

/// The request message for `route` from its path variables, query string and
/// body, or every field violation found.
pub fn request_message(
    route: &Route,
    bindings: &[(String, String)],
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, Vec<Violation>> {
    let input = route.grpc.input();
    let mut violations = Vec::new();
    let mut object = Map::new();

    let body_json = || -> Result<Value, Violation> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Map::new()));
        }
        serde_json::from_slice(body)
            .map_err(|error| ("body".to_owned(), format!("invalid JSON: {error}")))
    };
    match &route.body {
        BodyRule::None => {}
        BodyRule::All => match body_json() {
            Ok(Value::Object(map)) => object = map,
            Ok(_) => violations.push(("body".to_owned(), "expected a JSON object".to_owned())),
            Err(violation) => violations.push(violation),
        },
        BodyRule::Field(field) => match body_json() {
            Ok(value) => {
                object.insert(field.clone(), value);
            }
            Err(violation) => violations.push(violation),
        },
    }

    if route.body != BodyRule::All {
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(name), Some(text)) = (
                percent_decode_with(raw_name, true),
                percent_decode_with(raw_value, true),
            ) else {
                violations.push((raw_name.to_owned(), "bad percent-encoding".to_owned()));
                continue;
            };
            let bound = bindings.iter().any(|(field, _)| *field == name)
                || matches!(&route.body, BodyRule::Field(field) if *field == name);
            if bound {
                violations.push((
                    name,
                    "set by the path or the body, not the query".to_owned(),
                ));
                continue;
            }
            match parameter(&input, &name, &text) {
                Ok((fields, value)) => write_at(&mut object, &fields, value),
                Err(description) => violations.push((name, description)),
            }
        }
    }

    for (name, text) in bindings {
        match parameter(&input, name, text) {
            Ok((fields, value)) => write_at(&mut object, &fields, value),
            Err(description) => violations.push((name.clone(), description)),
        }
    }

    if !violations.is_empty() {
        return Err(violations);
    }
    decode(&input, Value::Object(object)).map_err(|description| {
        let field = match &route.body {
            BodyRule::Field(field) => field.clone(),
            _ => "body".to_owned(),
        };
        vec![(field, description)]
    })
}

/// How responses are written: proto3 JSON with lowerCamel names, and every
/// field present, defaults included, so a client never has to know them.
pub fn serialize_options() -> SerializeOptions {
    SerializeOptions::new().skip_default_fields(false)
}

/// `message` as JSON bytes.
pub fn to_json(message: &DynamicMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::new(&mut out);
    // Serializing a decoded message into memory cannot fail short of a
    // descriptor bug; an empty object is the least surprising answer then.
    if message
        .serialize_with_options(&mut serializer, &serialize_options())
        .is_err()
    {
        return b"{}".to_vec();
    }
    out
}
