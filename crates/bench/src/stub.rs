//! The RPC under measurement: `agora.user.v1.UserService/GetUser`, answered
//! from memory with a ~100-byte user, so the figures are the serving path's
//! and not a database's. Every other method is UNIMPLEMENTED.

use agora_interceptors::auth::{Access, Role, ServicePolicy};
use agora_proto::user::v1 as pb;
use agora_proto::user::v1::user_service_server::UserService;
use tonic::{Request, Response, Status};

/// The path h2load calls.
pub const PATH: &str = "/agora.user.v1.UserService/GetUser";

/// The access rules the full stack enforces: GetUser needs a valid token.
pub const POLICY: ServicePolicy = ServicePolicy {
    service: "agora.user.v1.UserService",
    methods: &[("GetUser", Access::Authenticated)],
};

/// The role of the token the load carries: a customer, so the per-principal
/// rate limiter runs for every call (its budget is set high enough never to
/// refuse one).
pub const CALLER_ROLE: Role = Role::Customer;

/// The request h2load sends.
pub fn request() -> pb::GetUserRequest {
    pb::GetUserRequest {
        user_id: "0192f0c4-7a6e-7cc0-8a3b-5b0e7d3c9f11".into(),
    }
}

/// Answers GetUser with a fixed user.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stub;

#[tonic::async_trait]
impl UserService for Stub {
    async fn create_user(
        &self,
        _: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        Err(Status::unimplemented("not measured"))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let user_id = request.into_inner().user_id;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(pb::User {
                user_id,
                email: "ada@example.com".into(),
                display_name: "Ada Lovelace".into(),
                role: pb::Role::Customer as i32,
                create_time: None,
                update_time: None,
                disabled: false,
            }),
        }))
    }

    async fn update_user(
        &self,
        _: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        Err(Status::unimplemented("not measured"))
    }

    async fn delete_user(
        &self,
        _: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        Err(Status::unimplemented("not measured"))
    }

    async fn list_users(
        &self,
        _: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        Err(Status::unimplemented("not measured"))
    }

    async fn authenticate(
        &self,
        _: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        Err(Status::unimplemented("not measured"))
    }

    async fn revoke_tokens(
        &self,
        _: Request<pb::RevokeTokensRequest>,
    ) -> Result<Response<pb::RevokeTokensResponse>, Status> {
        Err(Status::unimplemented("not measured"))
    }

    async fn list_revocations(
        &self,
        _: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        Err(Status::unimplemented("not measured"))
    }
}
