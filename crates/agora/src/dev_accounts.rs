//! The development suite's two ready accounts: an admin and a customer. Their
//! passwords are random, made on first start and kept (owner-readable only)
//! under the data folder beside the signing key, so a restart signs them in
//! again; `--ephemeral` makes new ones each time. The accounts themselves are
//! made by the user service's seeding (`agora_user::seed`), once per database.

use std::path::{Path, PathBuf};

use agora_interceptors::auth::Role;
use agora_user::seed::SeedAccount;
use anyhow::Context;

use crate::dev_keys::write_private;

/// Email of the seeded admin.
pub const ADMIN_EMAIL: &str = "admin@example.com";
/// Email of the seeded customer.
pub const CUSTOMER_EMAIL: &str = "shopper@example.com";

/// The two accounts to seed.
#[derive(Clone, Debug)]
pub struct DevAccounts {
    /// An admin (role admin).
    pub admin: SeedAccount,
    /// A customer.
    pub customer: SeedAccount,
    /// Where the passwords are kept, if anywhere.
    pub passwords_file: Option<PathBuf>,
}

/// New random passwords, kept nowhere.
pub fn in_memory() -> DevAccounts {
    accounts(random_password(), random_password(), None)
}

/// The passwords under `data_dir/keys`, if a suite made them there.
pub fn load(data_dir: &Path) -> anyhow::Result<Option<DevAccounts>> {
    let path = passwords_path(data_dir);
    if path.exists() {
        load_or_create(data_dir).map(Some)
    } else {
        Ok(None)
    }
}

fn passwords_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("dev-passwords")
}

/// The passwords under `data_dir/keys`, made on first use.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<DevAccounts> {
    let path = passwords_path(data_dir);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_owned)
                .with_context(|| format!("{} has no {name}= line", path.display()))
        };
        return Ok(accounts(field("admin")?, field("customer")?, Some(path)));
    }
    let (admin, customer) = (random_password(), random_password());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private(&path, &format!("admin={admin}\ncustomer={customer}\n"))?;
    Ok(accounts(admin, customer, Some(path)))
}

fn accounts(admin: String, customer: String, passwords_file: Option<PathBuf>) -> DevAccounts {
    DevAccounts {
        admin: SeedAccount {
            email: ADMIN_EMAIL.to_owned(),
            display_name: "Agora Admin".to_owned(),
            role: Role::Admin,
            password: admin,
        },
        customer: SeedAccount {
            email: CUSTOMER_EMAIL.to_owned(),
            display_name: "Demo Shopper".to_owned(),
            role: Role::Customer,
            password: customer,
        },
        passwords_file,
    }
}

/// 122 random bits (a v4 UUID from the OS-seeded generator), as 32 hex digits.
fn random_password() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
