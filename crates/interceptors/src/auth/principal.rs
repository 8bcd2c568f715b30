//! The verified caller, as handlers see it.

use tonic::{Request, Status};

/// What a caller may do. Matches `agora.user.v1.Role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A shopper: sees and changes only their own data.
    Customer,
    /// An operator: sees and manages everything.
    Admin,
    /// Another Agora service calling on its own behalf.
    Service,
}

impl Role {
    /// The claim value in a token.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }

    /// Parses a claim value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Role::Customer),
            "admin" => Some(Role::Admin),
            "service" => Some(Role::Service),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A caller whose token was verified. The auth layer puts it in the request's
/// extensions; handlers take it with [`Principal::of`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject: a user id for people, a service name for services.
    pub subject: String,
    /// What the caller may do.
    pub role: Role,
}

impl Principal {
    /// The verified caller of this request. UNAUTHENTICATED when there is none,
    /// which only happens on a method whose policy is public.
    pub fn of<T>(request: &Request<T>) -> Result<Principal, Status> {
        request
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| super::layer::unauthenticated(&super::AuthError::Missing))
    }

    /// True for admins.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// True when the caller is `subject` itself, or an admin or service acting on
    /// anyone's behalf.
    pub fn may_act_for(&self, subject: &str) -> bool {
        matches!(self.role, Role::Admin | Role::Service) || self.subject == subject
    }
}
