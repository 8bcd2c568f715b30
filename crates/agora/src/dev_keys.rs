//! Development signing keys, created on first start and kept under the data
//! folder, so tokens minted yesterday still verify today.

use std::path::{Path, PathBuf};

use agora_interceptors::auth::{KeySet, SigningKey};
use anyhow::Context;

/// Key id of the development key.
pub const DEV_KID: &str = "agora-dev";

/// The development key pair and where it lives.
#[derive(Debug)]
pub struct DevKeys {
    /// Private key (PKCS#8 PEM at `signing_key_file`).
    pub signing: SigningKey,
    /// Public key set (JWKS at `jwks_file`).
    pub key_set: KeySet,
    /// Where the JWKS is stored (none for in-memory keys).
    pub jwks_file: Option<PathBuf>,
}

/// Fresh keys kept in memory only (`--ephemeral`): tokens die with the process.
pub fn in_memory() -> anyhow::Result<DevKeys> {
    let signing = SigningKey::generate(DEV_KID)?;
    let mut key_set = KeySet::new();
    key_set.insert(signing.public_jwk())?;
    Ok(DevKeys {
        signing,
        key_set,
        jwks_file: None,
    })
}

/// Loads the development keys from `data_dir/keys`, creating them first if absent.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<DevKeys> {
    let dir = data_dir.join("keys");
    let signing_key_file = dir.join("dev-signing-key.pem");
    let jwks_file = dir.join("jwks.json");
    let signing = if signing_key_file.exists() {
        let key = SigningKey::from_file(DEV_KID, &signing_key_file)?;
        // Earlier versions wrote the PKCS#8 v2 form, which `openssl pkey`
        // cannot read: rewrite it in the standard one (same key).
        let standard = key.to_pkcs8_pem()?;
        if std::fs::read_to_string(&signing_key_file).ok().as_deref() != Some(standard.as_str()) {
            std::fs::remove_file(&signing_key_file)
                .with_context(|| format!("replacing {}", signing_key_file.display()))?;
            write_private(&signing_key_file, &standard)?;
        }
        key
    } else {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = SigningKey::generate(DEV_KID)?;
        write_private(&signing_key_file, &key.to_pkcs8_pem()?)?;
        tracing::info!(path = %signing_key_file.display(), "created a development signing key");
        key
    };
    let mut key_set = KeySet::new();
    key_set.insert(signing.public_jwk())?;
    std::fs::write(&jwks_file, key_set.to_jwks_json())
        .with_context(|| format!("writing {}", jwks_file.display()))?;
    Ok(DevKeys {
        signing,
        key_set,
        jwks_file: Some(jwks_file),
    })
}

/// Writes a secret readable by its owner only.
pub(crate) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}
