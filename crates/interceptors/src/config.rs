//! Settings shared by every service binary. Each is a flag and an environment
//! variable (twelve-factor); `--help` shows the doc comments below.

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{KeySet, TokenSettings};

/// How a service is served: auth, health and shutdown settings.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// JSON Web Key Set (RFC 7517) with the Ed25519 public keys that access tokens
    /// may be signed with; several keys may be listed while keys rotate.
    #[arg(long, env = "AGORA_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// Expected `iss` claim of access tokens.
    #[arg(long, env = "AGORA_JWT_ISSUER", default_value = "agora")]
    pub jwt_issuer: String,

    /// Expected `aud` claim of access tokens.
    #[arg(long, env = "AGORA_JWT_AUDIENCE", default_value = "agora")]
    pub jwt_audience: String,

    /// How long in-flight calls may finish after SIGTERM before connections are
    /// closed (e.g. "10s"). Keep it below Kubernetes' terminationGracePeriodSeconds.
    #[arg(long, env = "AGORA_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// How often the readiness probe checks the database (e.g. "2s").
    #[arg(long, env = "AGORA_READINESS_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub readiness_interval: Duration,

    /// Deadline of a served call whose caller sent no `grpc-timeout` (e.g. "30s");
    /// the call is answered DEADLINE_EXCEEDED when it passes, and downstream
    /// calls made while serving it get only the time that remains.
    #[arg(long, env = "AGORA_DEFAULT_DEADLINE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub default_deadline: Duration,

    /// Log format: "pretty" for people, "json" for log pipelines.
    #[arg(long, env = "AGORA_LOG_FORMAT", default_value = "pretty")]
    pub log_format: crate::telemetry::LogFormat,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            jwt_jwks_file: None,
            jwt_issuer: "agora".into(),
            jwt_audience: "agora".into(),
            shutdown_grace: Duration::from_secs(10),
            readiness_interval: Duration::from_secs(2),
            default_deadline: Duration::from_secs(30),
            log_format: crate::telemetry::LogFormat::Pretty,
        }
    }
}

impl ServeArgs {
    /// Issuer, audience and leeway of access tokens.
    pub fn token_settings(&self) -> TokenSettings {
        TokenSettings {
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            ..TokenSettings::default()
        }
    }

    /// The configured key set, or an empty one when no file is configured.
    pub fn key_set(&self) -> anyhow::Result<KeySet> {
        match &self.jwt_jwks_file {
            Some(path) => KeySet::from_file(path),
            None => Ok(KeySet::new()),
        }
    }
}
