//! The auth layer's matrix: every way a token can be wrong is UNAUTHENTICATED,
//! the wrong role is PERMISSION_DENIED, and the right caller reaches the handler
//! as a typed principal.

use std::time::{SystemTime, UNIX_EPOCH};

use agora_interceptors::auth::{Claims, KeySet, Role, SigningKey, TokenIssuer};
use agora_proto::user::v1 as pb;
use agora_testkit::{TestKeys, with_token};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::Code;
use tonic_types::StatusExt;

use crate::probe::ProbeApp;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(role: &str) -> Claims {
    let now = now();
    Claims {
        sub: "user-1".into(),
        role: role.into(),
        iss: "agora".into(),
        aud: "agora".into(),
        exp: now + 600,
        nbf: now,
        iat: now,
        jti: "jti".into(),
    }
}

fn signed(keys: &TestKeys, claims: &Claims) -> String {
    TokenIssuer::new(&keys.signing, keys.settings.clone())
        .unwrap()
        .sign(claims)
        .unwrap()
}

/// A token with a hand-written header and no or fake signature.
fn unsigned(header: serde_json::Value, claims: &Claims, signature: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The ErrorInfo every refusal carries, in Agora's domain.
#[track_caller]
fn error_info(status: &tonic::Status) -> tonic_types::ErrorInfo {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "agora.dev");
    info
}

#[tokio::test]
async fn every_bad_token_is_unauthenticated() {
    let app = ProbeApp::start(|_| {}).await;
    let keys = &app.keys;
    let public_x = URL_SAFE_NO_PAD.decode(keys.signing.public_jwk().x).unwrap();

    let mut expired = claims("customer");
    expired.exp = now() - 120; // beyond the 30 s leeway
    let mut not_yet = claims("customer");
    not_yet.nbf = now() + 120;
    let mut wrong_audience = claims("customer");
    wrong_audience.aud = "somebody-else".into();
    let mut wrong_issuer = claims("customer");
    wrong_issuer.iss = "evil".into();
    let mut unknown_role = claims("customer");
    unknown_role.role = "superuser".into();

    // HS256 "signed" with the public key as the HMAC secret: the classic
    // algorithm-confusion attack.
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("test-key".into());
        jsonwebtoken::encode(
            &header,
            &claims("admin"),
            &jsonwebtoken::EncodingKey::from_secret(&public_x),
        )
        .unwrap()
    };
    let alg_none = unsigned(
        serde_json::json!({"alg": "none", "typ": "JWT", "kid": "test-key"}),
        &claims("admin"),
        b"",
    );
    let stranger = TestKeys::new(); // same kid, different key
    let other_kid = {
        let key = SigningKey::generate("unknown-kid").unwrap();
        TokenIssuer::new(&key, keys.settings.clone())
            .unwrap()
            .sign(&claims("admin"))
            .unwrap()
    };
    let mut tampered = signed(keys, &claims("customer"));
    tampered.replace_range(tampered.len() - 4.., "AAAA");

    let cases = [
        ("garbage", "garbage".to_owned()),
        ("expired", signed(keys, &expired)),
        ("not yet valid", signed(keys, &not_yet)),
        ("wrong audience", signed(keys, &wrong_audience)),
        ("wrong issuer", signed(keys, &wrong_issuer)),
        ("unknown role", signed(keys, &unknown_role)),
        ("alg none", alg_none),
        ("HS256 with the public key", hs256),
        ("signed by another key", signed(&stranger, &claims("admin"))),
        ("unknown kid", other_kid),
        ("tampered signature", tampered),
    ];
    for (name, token) in &cases {
        let status = app.whoami(Some(token)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        // Clients switch on the reason: only an expired token says to sign
        // in again for that reason.
        let want = if *name == "expired" {
            "TOKEN_EXPIRED"
        } else {
            "UNAUTHENTICATED"
        };
        assert_eq!(error_info(&status).reason, want, "{name}");
    }
    let missing = app.whoami(None).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert_eq!(error_info(&missing).reason, "UNAUTHENTICATED");
    assert_eq!(
        app.state.entered.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no refused call reached a handler"
    );

    // A good token passes, and the handler sees the principal it names.
    let user = app
        .whoami(Some(&signed(keys, &claims("customer"))))
        .await
        .unwrap();
    assert_eq!(user.user_id, "user-1");
    assert_eq!(user.role, pb::Role::Customer as i32);
    app.stop().await.1.unwrap();
}

#[tokio::test]
async fn roles_are_enforced_per_method() {
    let app = ProbeApp::start(|_| {}).await;
    let mut client = app.client();
    let customer = app.keys.token("c-1", Role::Customer);
    let admin = app.keys.token("a-1", Role::Admin);
    let service = app.keys.token("order", Role::Service);

    let list = |token: &str| with_token(pb::ListUsersRequest::default(), token);
    let refused = client.list_users(list(&customer)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let info = error_info(&refused);
    assert_eq!(info.reason, "PERMISSION_DENIED");
    assert_eq!(info.metadata["role"], "customer");
    assert_eq!(
        info.metadata["method"],
        "/agora.user.v1.UserService/ListUsers"
    );
    assert_eq!(
        client.list_users(list(&service)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(client.list_users(list(&admin)).await.is_ok());

    let delete = |token: &str| {
        with_token(
            pb::DeleteUserRequest {
                user_id: "x".into(),
            },
            token,
        )
    };
    assert_eq!(
        client.delete_user(delete(&admin)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(client.delete_user(delete(&service)).await.is_ok());

    // Public: no token needed, and a bad one is ignored rather than fatal.
    assert!(
        client
            .create_user(pb::CreateUserRequest::default())
            .await
            .is_ok()
    );
    assert!(
        client
            .create_user(with_token(pb::CreateUserRequest::default(), "stale"))
            .await
            .is_ok()
    );

    // A method with no declared rule is refused even for an admin.
    let undeclared = client
        .update_user(with_token(pb::UpdateUserRequest::default(), &admin))
        .await
        .unwrap_err();
    assert_eq!(undeclared.code(), Code::PermissionDenied);
    assert_eq!(error_info(&undeclared).reason, "PERMISSION_DENIED");

    // Health and reflection stay public.
    agora_testkit::wait_until_serving(app.channel(), "agora.user.v1.UserService").await;
    app.stop().await.1.unwrap();
}

#[tokio::test]
async fn keys_rotate_with_several_accepted_at_once() {
    let current = TestKeys::new();
    let next_key = SigningKey::generate("next-key").unwrap();
    let mut next_set = KeySet::new();
    next_set.insert(next_key.public_jwk()).unwrap();
    let app = ProbeApp::start_with_keys(current.clone(), Some(next_set), |_| {}).await;

    let old = current.token("u-old", Role::Customer);
    let new = TokenIssuer::new(&next_key, current.settings.clone())
        .unwrap()
        .issue("u-new", Role::Customer, std::time::Duration::from_secs(60))
        .unwrap()
        .token;
    assert_eq!(app.whoami(Some(&old)).await.unwrap().user_id, "u-old");
    assert_eq!(app.whoami(Some(&new)).await.unwrap().user_id, "u-new");
    app.stop().await.1.unwrap();
}
