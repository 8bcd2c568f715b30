//! Test certificates written as PEM files: a CA, a server certificate for
//! 127.0.0.1 and `localhost`, a client certificate from the same CA, and one
//! from a CA nobody trusts.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// The files, in a folder that lives as long as this value: `ca.pem`,
/// `server.pem`/`server.key`, `client.pem`/`client.key`,
/// `rogue.pem`/`rogue.key`.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes the keys and certificates.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("write a PEM file")
        };
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let ca = authority();
        write("ca.pem", &ca.pem());
        let rogue = authority();
        for (name, issuer) in [("server", &ca), ("client", &ca), ("rogue", &rogue)] {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(names.clone())
                .expect("names")
                .signed_by(&key, issuer)
                .expect("certificate");
            write(&format!("{name}.pem"), &cert.pem());
            write(&format!("{name}.key"), &key.serialize_pem());
        }
        Self { dir }
    }

    /// The path of one of the files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The text of one of the files.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read a PEM file")
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

fn authority() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}
