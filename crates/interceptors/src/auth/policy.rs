//! Per-method access rules, declared by each service next to its implementation.
//!
//! A service lists every method it serves with an [`Access`]; the auth layer looks
//! the gRPC path up before the handler runs. A method of a known service that is
//! missing from its list is refused: forgetting a rule fails closed.

use std::collections::HashMap;

use super::principal::Role;

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without a token (a valid token still yields a principal).
    Public,
    /// Any caller with a valid token.
    Authenticated,
    /// Callers with a valid token whose role is one of these.
    Roles(&'static [Role]),
}

/// The rules of one gRPC service.
#[derive(Clone, Debug)]
pub struct ServicePolicy {
    /// Fully-qualified service name, e.g. `agora.user.v1.UserService`.
    pub service: &'static str,
    /// Every method of the service, by its short name, with its rule.
    pub methods: &'static [(&'static str, Access)],
}

impl ServicePolicy {
    /// A service whose methods are all public (health, reflection).
    pub const fn public(service: &'static str) -> Self {
        Self {
            service,
            methods: &[],
        }
    }
}

/// What the auth layer concluded about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The method has this rule.
    Rule(Access),
    /// The service is known but declared no rule for the method: refuse.
    Undeclared,
    /// Not a service we serve; tonic answers UNIMPLEMENTED.
    UnknownService,
}

/// Every rule of every service on one port, keyed by gRPC path.
#[derive(Clone, Debug, Default)]
pub struct PolicyTable {
    /// foldhash: looked up by path on every call.
    methods: HashMap<String, Access, foldhash::fast::RandomState>,
    public_services: Vec<&'static str>,
    services: Vec<&'static str>,
}

impl PolicyTable {
    /// Adds a service's rules.
    pub fn add(&mut self, policy: &ServicePolicy) {
        self.services.push(policy.service);
        if policy.methods.is_empty() {
            self.public_services.push(policy.service);
        }
        for (method, access) in policy.methods {
            self.methods
                .insert(format!("/{}/{}", policy.service, method), *access);
        }
    }

    /// The rule for a request path such as `/agora.user.v1.UserService/GetUser`.
    pub fn lookup(&self, path: &str) -> Lookup {
        if let Some(access) = self.methods.get(path) {
            return Lookup::Rule(*access);
        }
        let service = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        if self.public_services.contains(&service) {
            Lookup::Rule(Access::Public)
        } else if self.services.contains(&service) {
            Lookup::Undeclared
        } else {
            Lookup::UnknownService
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_fails_closed_for_undeclared_methods() {
        let mut table = PolicyTable::default();
        table.add(&ServicePolicy {
            service: "a.v1.S",
            methods: &[
                ("Open", Access::Public),
                ("Admin", Access::Roles(&[Role::Admin])),
            ],
        });
        table.add(&ServicePolicy::public("grpc.health.v1.Health"));
        assert_eq!(table.lookup("/a.v1.S/Open"), Lookup::Rule(Access::Public));
        assert_eq!(table.lookup("/a.v1.S/Other"), Lookup::Undeclared);
        assert_eq!(
            table.lookup("/grpc.health.v1.Health/Check"),
            Lookup::Rule(Access::Public)
        );
        assert_eq!(table.lookup("/b.v1.T/X"), Lookup::UnknownService);
    }
}
