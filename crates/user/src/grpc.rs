//! The gRPC face of the user context: parses requests into domain types, checks
//! who may do what, and converts results back to protobuf.

use std::time::Duration;

use agora_interceptors::api::errors::FieldViolations;
use agora_interceptors::api::pagination::PageRequest;
use agora_interceptors::api::time::{now_micros, parse_timestamp, timestamp_from_micros};
use agora_interceptors::auth::revocations::second_of;
use agora_interceptors::auth::{
    Access, Principal, Revocation, Revocations, Role, ServicePolicy, TokenIssuer,
};
use agora_proto::user::v1 as pb;
use pb::user_service_server::UserService;
use tonic::{Request, Response, Status};

use crate::domain::{DisplayName, Email, Password, User, UserId, parse_user_role};
use crate::error::UserError;
use crate::password;
use crate::store::{StoredRevocation, UserChanges, UserStore};

/// Who may call which method of `agora.user.v1.UserService`.
pub const POLICY: ServicePolicy = ServicePolicy {
    service: "agora.user.v1.UserService",
    methods: &[
        ("CreateUser", Access::Public),
        ("Authenticate", Access::Public),
        // Customers only themselves; admins and services anyone (checked below).
        ("GetUser", Access::Authenticated),
        ("UpdateUser", Access::Roles(&[Role::Customer, Role::Admin])),
        ("DeleteUser", Access::Roles(&[Role::Customer, Role::Admin])),
        ("ListUsers", Access::Roles(&[Role::Admin])),
        // Customers only their own tokens; admins anyone's (checked below).
        (
            "RevokeTokens",
            Access::Roles(&[Role::Customer, Role::Admin]),
        ),
        // Read by every service that verifies tokens.
        ("ListRevocations", Access::Roles(&[Role::Service])),
    ],
};

/// The generated tonic server around [`UserApi`], as `lib.rs` hands it to
/// the host (generated types stay in this module).
pub type Server = pb::user_service_server::UserServiceServer<UserApi>;

/// The UserService implementation.
#[derive(Clone)]
pub struct UserApi {
    store: UserStore,
    issuer: TokenIssuer,
    token_ttl: Duration,
    /// This service's own verifier's revocations: a revocation made here is
    /// refused here at once (other replicas and services poll for it).
    revocations: Revocations,
    /// A real argon2id hash of a random secret: sign-in with an unknown email is
    /// checked against it, so it costs as much as a wrong password and response
    /// times do not reveal which emails have accounts.
    decoy_hash: String,
}

impl std::fmt::Debug for UserApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserApi").finish_non_exhaustive()
    }
}

impl UserApi {
    /// The service over `store`, signing tokens with `issuer`, adding the
    /// revocations it makes to `revocations`.
    pub async fn new(
        store: UserStore,
        issuer: TokenIssuer,
        token_ttl: Duration,
        revocations: Revocations,
    ) -> anyhow::Result<Self> {
        let decoy = Password::parse_new(&uuid::Uuid::now_v7().to_string())?;
        Ok(Self {
            store,
            issuer,
            token_ttl,
            revocations,
            decoy_hash: password::hash(decoy).await?,
        })
    }

    /// The caller's principal, allowed to act on `user_id` (themselves, or anyone
    /// when admin or service).
    fn authorize_for<T>(request: &Request<T>, user_id: UserId) -> Result<Principal, Status> {
        let principal = Principal::of(request)?;
        if principal.may_act_for(&user_id.to_string()) {
            Ok(principal)
        } else {
            Err(UserError::Forbidden("customers may only access their own account").into())
        }
    }

    /// Refuses the revoked tokens here at once, after the revocation committed.
    fn revoked(&self, revocation: &StoredRevocation) {
        tracing::info!(
            subject = %revocation.subject,
            reason = %revocation.reason,
            "tokens revoked"
        );
        self.revocations.apply(
            &[Revocation {
                subject: revocation.subject.clone(),
                revoked_at: revocation.revoked_at,
            }],
            0,
        );
    }
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let email = violations.check("email", Email::parse(&request.email));
        let display_name =
            violations.check("display_name", DisplayName::parse(&request.display_name));
        let password = violations.check("password", Password::parse_new(&request.password));
        let (email, display_name, password) = violations.finish((email, display_name, password))?;

        let hash = password::hash(password).await.map_err(UserError::from)?;
        let user = self
            .store
            .insert(email, display_name, Role::Customer, &hash)
            .await?;
        tracing::info!(user_id = %user.id, "user created");
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(to_proto(&user)),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let id = parse_user_id("user_id", &request.get_ref().user_id)?;
        Self::authorize_for(&request, id)?;
        let stored = self
            .store
            .get(id)
            .await?
            .ok_or_else(|| UserError::NotFound(id.to_string()))?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(to_proto(&stored.user)),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.get_ref();
        let Some(user) = body.user.as_ref() else {
            return Err(FieldViolations::single("user", "is required"));
        };
        let id = parse_user_id("user.user_id", &user.user_id)?;
        Self::authorize_for(&request, id)?;

        let mut violations = FieldViolations::new();
        let mut changes = UserChanges::default();
        let mut new_password = None;
        let paths = body
            .update_mask
            .as_ref()
            .map(|mask| mask.paths.as_slice())
            .unwrap_or_default();
        if paths.is_empty() {
            violations.add("update_mask", "must name at least one field");
        }
        for path in paths {
            match path.as_str() {
                "display_name" => {
                    changes.display_name = violations
                        .check("user.display_name", DisplayName::parse(&user.display_name));
                }
                "email" => {
                    // The contract: a customer changes only display name
                    // and password; an email is an identity admins vouch for.
                    if !principal.is_admin() {
                        return Err(UserError::Forbidden("only admins may change emails").into());
                    }
                    changes.email = violations.check("user.email", Email::parse(&user.email))
                }
                "disabled" => {
                    if !principal.is_admin() {
                        return Err(
                            UserError::Forbidden("only admins may disable accounts").into()
                        );
                    }
                    changes.disabled = Some(user.disabled);
                }
                "password" => {
                    new_password =
                        violations.check("password", Password::parse_new(&body.password));
                }
                "role" => {
                    if !principal.is_admin() {
                        return Err(UserError::Forbidden("only admins may change roles").into());
                    }
                    let role = match pb::Role::try_from(user.role) {
                        Ok(pb::Role::Customer) => Ok(Role::Customer),
                        Ok(pb::Role::Admin) => Ok(Role::Admin),
                        Ok(pb::Role::Service) => parse_user_role(Role::Service),
                        _ => Err(crate::domain::ParseError::new(
                            "must be ROLE_CUSTOMER or ROLE_ADMIN",
                        )),
                    };
                    changes.role = violations.check("user.role", role);
                }
                other => violations.add(
                    "update_mask",
                    format!(
                        "{other:?} is not an updatable field (display_name, email, password, role, disabled)"
                    ),
                ),
            }
        }
        violations.into_result()?;
        if let Some(password) = new_password {
            changes.password_hash = Some(password::hash(password).await.map_err(UserError::from)?);
        }
        let (user, revocation) = self.store.update(id, changes).await?;
        if let Some(revocation) = &revocation {
            self.revoked(revocation);
        }
        tracing::info!(user_id = %user.id, fields = ?paths, "user updated");
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(to_proto(&user)),
        }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let id = parse_user_id("user_id", &request.get_ref().user_id)?;
        Self::authorize_for(&request, id)?;
        let Some(revocation) = self.store.delete(id).await? else {
            return Err(UserError::NotFound(id.to_string()).into());
        };
        self.revoked(&revocation);
        tracing::info!(user_id = %id, "user deleted");
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let request = request.into_inner();
        let page = PageRequest::parse(
            "agora.user.v1.UserService/ListUsers",
            request.page_size,
            &request.page_token,
            "",
        )?;
        let users = self.store.list(page.after(), page.fetch_limit()).await?;
        let (users, next_page_token) = page.split(users, |user| user.id.to_string());
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn revoke_tokens(
        &self,
        request: Request<pb::RevokeTokensRequest>,
    ) -> Result<Response<pb::RevokeTokensResponse>, Status> {
        self.revoke_user_tokens(request).await
    }

    async fn list_revocations(
        &self,
        request: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        self.list_user_revocations(request).await
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        if request.email.trim().is_empty() {
            violations.add("email", "is required");
        }
        let password = violations.check("password", Password::parse_offered(&request.password));
        violations.into_result()?;
        let Some(password) = password else {
            unreachable!("password parsed when there are no violations");
        };

        // An address that cannot parse cannot have an account; it still pays for
        // one hash so it answers no faster than a wrong password.
        let stored = match Email::parse(&request.email) {
            Ok(email) => self.store.find_by_email(&email).await?,
            Err(_) => None,
        };
        let hash = stored
            .as_ref()
            .map_or_else(|| self.decoy_hash.clone(), |s| s.password_hash.clone());
        let matches = password::verify(password, hash)
            .await
            .map_err(UserError::from)?;
        let Some(stored) = stored.filter(|_| matches) else {
            return Err(UserError::InvalidCredentials.into());
        };
        if stored.user.disabled {
            return Err(UserError::AccountDisabled.into());
        }

        // Stamped after the account's last revocation's second, so the new
        // token is not one of those revoked.
        let revoked_at = self.store.revoked_at(stored.user.id).await?;
        let issued = self
            .issuer
            .issue_after(
                &stored.user.id.to_string(),
                stored.user.role,
                self.token_ttl,
                revoked_at.map(second_of),
            )
            .map_err(UserError::from)?;
        Ok(Response::new(pb::AuthenticateResponse {
            access_token: issued.token,
            expire_time: Some(issued.expires_at.into()),
            user: Some(to_proto(&stored.user)),
        }))
    }
}

impl UserApi {
    /// RevokeTokens: see the contract.
    async fn revoke_user_tokens(
        &self,
        request: Request<pb::RevokeTokensRequest>,
    ) -> Result<Response<pb::RevokeTokensResponse>, Status> {
        let id = parse_user_id("user_id", &request.get_ref().user_id)?;
        Self::authorize_for(&request, id)?;
        let revocation = self.store.revoke_tokens(id).await?;
        self.revoked(&revocation);
        Ok(Response::new(pb::RevokeTokensResponse {
            revoke_time: Some(timestamp_from_micros(revocation.revoked_at)),
        }))
    }

    /// ListRevocations: see the contract.
    async fn list_user_revocations(
        &self,
        request: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        let request = request.into_inner();
        let since = match &request.since {
            Some(since) => {
                parse_timestamp(since).map_err(|e| FieldViolations::single("since", e.message()))?
            }
            None => 0,
        };
        let page = PageRequest::parse(
            "agora.user.v1.UserService/ListRevocations",
            request.page_size,
            &request.page_token,
            since.to_string(),
        )?;
        let read_at = now_micros();
        let horizon = crate::revocations::horizon(read_at, self.token_lifetime());
        let rows = self
            .store
            .revocations(since.max(horizon), page.after(), page.fetch_limit())
            .await?;
        let (rows, next_page_token) = page.split(rows, |row| row.subject.clone());
        Ok(Response::new(pb::ListRevocationsResponse {
            revocations: rows
                .into_iter()
                .map(|row| pb::Revocation {
                    subject: row.subject,
                    revoke_time: Some(timestamp_from_micros(row.revoked_at)),
                    reason: row.reason,
                })
                .collect(),
            next_page_token,
            horizon_time: Some(timestamp_from_micros(horizon)),
            read_time: Some(timestamp_from_micros(read_at)),
        }))
    }

    /// How long a token of this service can be accepted: its lifetime plus
    /// the verifiers' leeway for clock skew.
    pub fn token_lifetime(&self) -> Duration {
        self.token_ttl + self.issuer.settings().leeway
    }
}

fn parse_user_id(field: &str, value: &str) -> Result<UserId, Status> {
    UserId::parse(value).map_err(|e| FieldViolations::single(field, e.to_string()))
}

fn to_proto(user: &User) -> pb::User {
    let disabled = user.disabled;
    let role = match user.role {
        Role::Customer => pb::Role::Customer,
        Role::Admin => pb::Role::Admin,
        Role::Service => pb::Role::Service,
    };
    pb::User {
        user_id: user.id.to_string(),
        email: user.email.as_str().to_owned(),
        display_name: user.display_name.as_str().to_owned(),
        role: role as i32,
        create_time: Some(timestamp_from_micros(user.created_at)),
        update_time: Some(timestamp_from_micros(user.updated_at)),
        disabled,
    }
}
