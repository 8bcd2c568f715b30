//! The route table, read from the `google.api.http` option of every method in
//! the descriptor set: nothing about a route is written twice.
//!
//! Path templates follow `google/api/http.proto`: literal segments, variables
//! `{field}` (one segment) or `{field=pattern}` with `*` (one segment) and
//! `**` (the rest of the path), and an optional `:verb` suffix. A request
//! matches the first route whose method and template fit; routes with a verb
//! are tried first, so `/v1/orders/ID:watch` is WatchOrder, not GetOrder with
//! an id of `ID:watch`.

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use prost_reflect::{DescriptorPool, MethodDescriptor, Value};

/// Where the request's body goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyRule {
    /// No body; every field not in the path comes from the query.
    None,
    /// The body is the whole request message (`body: "*"`); no query.
    All,
    /// The body is this (top-level) field; the query fills the others.
    Field(String),
}

/// One piece of a path template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// `*`: exactly one segment.
    Star,
    /// `**`: every remaining segment (only last).
    DoubleStar,
}

/// A variable of a template: the field it sets, and the pieces it spans.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Variable {
    field: String,
    start: usize,
    end: usize,
}

/// A parsed path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
    variables: Vec<Variable>,
    verb: Option<String>,
}

impl Template {
    /// Parses `template` (`/v1/orders/{order_id}:cancel`).
    pub fn parse(template: &str) -> anyhow::Result<Self> {
        let Some(rest) = template.strip_prefix('/') else {
            bail!("path template {template:?} does not start with /");
        };
        let mut depth = 0i32;
        let mut verb_at = None;
        for (index, char) in rest.char_indices() {
            match char {
                '{' => depth += 1,
                '}' => depth -= 1,
                ':' if depth == 0 => verb_at = Some(index),
                _ => {}
            }
        }
        let (path, verb) = match verb_at {
            Some(index) => (&rest[..index], Some(rest[index + 1..].to_owned())),
            None => (rest, None),
        };
        let mut pieces = Vec::new();
        let mut variables = Vec::new();
        for segment in split_outside_braces(path) {
            if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let (field, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                let start = pieces.len();
                for part in pattern.split('/') {
                    pieces.push(piece(part));
                }
                variables.push(Variable {
                    field: field.to_owned(),
                    start,
                    end: pieces.len(),
                });
            } else {
                pieces.push(piece(segment));
            }
        }
        if let Some(position) = pieces.iter().position(|p| *p == Piece::DoubleStar)
            && position + 1 != pieces.len()
        {
            bail!("path template {template:?}: ** must be last");
        }
        Ok(Self {
            pieces,
            variables,
            verb,
        })
    }

    /// The fields the template's variables set, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(|v| v.field.as_str())
    }

    /// The variables' values (percent-decoded) if `path` fits the template.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let mut rest = path.strip_prefix('/')?;
        if let Some(verb) = &self.verb {
            rest = rest.strip_suffix(verb.as_str())?.strip_suffix(':')?;
        }
        let segments: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        // spans[i] = the segments piece i covered.
        let mut spans = Vec::with_capacity(self.pieces.len());
        let mut at = 0;
        for piece in &self.pieces {
            match piece {
                Piece::Literal(literal) => {
                    if segments.get(at) != Some(&literal.as_str()) {
                        return None;
                    }
                    spans.push((at, at + 1));
                    at += 1;
                }
                Piece::Star => {
                    let segment = segments.get(at)?;
                    if segment.is_empty() {
                        return None;
                    }
                    spans.push((at, at + 1));
                    at += 1;
                }
                Piece::DoubleStar => {
                    spans.push((at, segments.len()));
                    at = segments.len();
                }
            }
        }
        if at != segments.len() {
            return None;
        }
        let mut values = Vec::with_capacity(self.variables.len());
        for variable in &self.variables {
            let from = spans.get(variable.start).map_or(at, |span| span.0);
            let to = spans
                .get(variable.end.checked_sub(1)?)
                .map_or(from, |span| span.1);
            let raw = segments[from..to].join("/");
            values.push((variable.field.clone(), percent_decode(&raw)?));
        }
        Some(values)
    }

    fn specificity(&self) -> (bool, usize) {
        let literals = self
            .pieces
            .iter()
            .filter(|piece| matches!(piece, Piece::Literal(_)))
            .count();
        (self.verb.is_some(), literals)
    }
}

fn piece(part: &str) -> Piece {
    match part {
        "*" => Piece::Star,
        "**" => Piece::DoubleStar,
        literal => Piece::Literal(literal.to_owned()),
    }
}

fn split_outside_braces(path: &str) -> Vec<&str> {
    let mut segments = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (index, char) in path.char_indices() {
        match char {
            '{' => depth += 1,
            '}' => depth -= 1,
            '/' if depth == 0 => {
                segments.push(&path[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if start < path.len() {
        segments.push(&path[start..]);
    }
    segments
}

/// Decodes `%XX` escapes (and, for query strings, `+` as a space when
/// `plus_is_space`); `None` when the result is not UTF-8 or an escape is
/// malformed.
pub fn percent_decode_with(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = text.get(index + 1..index + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn percent_decode(text: &str) -> Option<String> {
    percent_decode_with(text, false)
}

/// One HTTP route to one gRPC method.
#[derive(Clone, Debug)]
pub struct Route {
    /// The HTTP method.
    pub method: http::Method,
    /// The template as written in the contract.
    pub pattern: String,
    /// The parsed template.
    pub template: Template,
    /// Where the body goes.
    pub body: BodyRule,
    /// The gRPC method.
    pub grpc: MethodDescriptor,
    /// `/package.Service/Method`.
    pub grpc_path: String,
}

impl Route {
    /// Whether the method streams its responses (served as Server-Sent Events).
    pub fn is_streaming(&self) -> bool {
        self.grpc.is_server_streaming()
    }

    /// The fully qualified gRPC service name.
    pub fn service(&self) -> &str {
        self.grpc.parent_service().full_name()
    }
}

/// A matched route with its path variables.
#[derive(Debug)]
pub struct Matched<'a> {
    /// The route.
    pub route: &'a Route,
    /// `(field path, value)` for each variable.
    pub bindings: Vec<(String, String)>,
}

/// Why no route matched.
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    /// No template fits the path.
    NotFound,
    /// A template fits, for another HTTP method.
    MethodNotAllowed,
}

/// Every route of every service in a descriptor pool.
#[derive(Clone, Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// The routes of the methods of `services` (full names) in `pool`; a
    /// method without an HTTP rule has no route.
    pub fn from_pool(pool: &DescriptorPool, services: &[&str]) -> anyhow::Result<Self> {
        let http = pool
            .get_extension_by_name("google.api.http")
            .context("the descriptor set has no google.api.http extension")?;
        let mut routes = Vec::new();
        for name in services {
            let service = pool
                .get_service_by_name(name)
                .with_context(|| format!("no service {name} in the descriptor set"))?;
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&http) {
                    continue;
                }
                let Value::Message(rule) = options.get_extension(&http).into_owned() else {
                    continue;
                };
                let mut rules = vec![rule.clone()];
                if let Some(Value::List(more)) = rule
                    .get_field_by_name("additional_bindings")
                    .map(|v| v.into_owned())
                {
                    rules.extend(more.into_iter().filter_map(|value| match value {
                        Value::Message(rule) => Some(rule),
                        _ => None,
                    }));
                }
                for rule in rules {
                    routes.push(route_of(&method, &rule)?);
                }
            }
        }
        routes.sort_by_key(|route| std::cmp::Reverse(route.template.specificity()));
        Ok(Self { routes })
    }

    /// Every route, most specific first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for `method` and `path`.
    pub fn find(&self, method: &http::Method, path: &str) -> Result<Matched<'_>, Miss> {
        let mut other_method = false;
        for route in &self.routes {
            if let Some(bindings) = route.template.matches(path) {
                if route.method == *method {
                    return Ok(Matched { route, bindings });
                }
                other_method = true;
            }
        }
        Err(if other_method {
            Miss::MethodNotAllowed
        } else {
            Miss::NotFound
        })
    }

    /// Routes grouped by template, for the OpenAPI document.
    pub fn by_pattern(&self) -> HashMap<&str, Vec<&Route>> {
        let mut grouped: HashMap<&str, Vec<&Route>> = HashMap::new();
        for route in &self.routes {
            grouped.entry(&route.pattern).or_default().push(route);
        }
        grouped
    }
}

fn route_of(
    method: &MethodDescriptor,
    rule: &prost_reflect::DynamicMessage,
) -> anyhow::Result<Route> {
    let text = |name: &str| match rule.get_field_by_name(name).map(|v| v.into_owned()) {
        Some(Value::String(text)) => text,
        _ => String::new(),
    };
    let mut found = None;
    for (name, verb) in [
        ("get", http::Method::GET),
        ("put", http::Method::PUT),
        ("post", http::Method::POST),
        ("delete", http::Method::DELETE),
        ("patch", http::Method::PATCH),
    ] {
        if rule.has_field_by_name(name) {
            found = Some((verb, text(name)));
        }
    }
    if let Some(Value::Message(custom)) = rule
        .has_field_by_name("custom")
        .then(|| rule.get_field_by_name("custom").map(|v| v.into_owned()))
        .flatten()
    {
        let kind = match custom.get_field_by_name("kind").map(|v| v.into_owned()) {
            Some(Value::String(kind)) => kind,
            _ => String::new(),
        };
        let path = match custom.get_field_by_name("path").map(|v| v.into_owned()) {
            Some(Value::String(path)) => path,
            _ => String::new(),
        };
        found = Some((http::Method::from_bytes(kind.as_bytes())?, path));
    }
    let (verb, pattern) =
        found.with_context(|| format!("{}: HTTP rule without a pattern", method.full_name()))?;
    let template = Template::parse(&pattern)
        .with_context(|| format!("{}: bad path template", method.full_name()))?;
    let input = method.input();
    for field in template.fields() {
        crate::transcode::field_path(&input, field)
            .with_context(|| format!("{}: {pattern}: no field {field}", method.full_name()))?;
    }
    let body = match text("body").as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::All,
        field => {
            input
                .get_field_by_name(field)
                .with_context(|| format!("{}: body field {field} unknown", method.full_name()))?;
            BodyRule::Field(field.to_owned())
        }
    };
    Ok(Route {
        method: verb,
        pattern,
        template,
        body,
        grpc_path: format!("/{}/{}", method.parent_service().full_name(), method.name()),
        grpc: method.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_bind_variables_and_verbs() {
        let cancel = Template::parse("/v1/orders/{order_id}:cancel").unwrap();
        assert_eq!(
            cancel.matches("/v1/orders/abc:cancel"),
            Some(vec![("order_id".into(), "abc".into())])
        );
        assert_eq!(cancel.matches("/v1/orders/abc"), None);
        let get = Template::parse("/v1/orders/{order_id}").unwrap();
        assert_eq!(
            get.matches("/v1/orders/a%20b"),
            Some(vec![("order_id".into(), "a b".into())])
        );
        assert_eq!(get.matches("/v1/orders/a/b"), None);
        assert_eq!(get.matches("/v1/orders/"), None);
        let nested = Template::parse("/v1/{name=shelves/*/books/**}").unwrap();
        assert_eq!(
            nested.matches("/v1/shelves/1/books/2/3"),
            Some(vec![("name".into(), "shelves/1/books/2/3".into())])
        );
        let collection = Template::parse("/v1/users:authenticate").unwrap();
        assert_eq!(collection.matches("/v1/users:authenticate"), Some(vec![]));
        assert_eq!(collection.matches("/v1/users"), None);
    }
}
