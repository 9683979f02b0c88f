//! What the server tests share: building a connector for a server and reading through it.

use std::collections::HashMap;

use rollcall_core::{Directory, DirectoryRead, Person, Secret};
use rollcall_ldap::{Config, LdapDirectory};

pub fn config(url: &str, bind_dn: &str, password: &str, base: &str) -> Config {
    let mut c = Config::new(url, bind_dn, Secret::new(password));
    c.base_dns = vec![base.to_owned()];
    // Generous: Samba's DC serves one request at a time (`-M single`) and a read opens two
    // connections, so under a busy CI a TLS handshake can wait behind another test's search.
    // No test here depends on a timeout firing.
    c.operation_timeout_secs = 60;
    c.connect_timeout_secs = 20;
    c
}

pub async fn read(config: Config) -> DirectoryRead {
    LdapDirectory::new(config)
        .read(None)
        .await
        .unwrap_or_else(|e| panic!("read failed: {e}"))
}

pub async fn read_err(config: Config) -> String {
    match LdapDirectory::new(config).read(None).await {
        Ok(r) => panic!(
            "expected an error, read {} people ({:?})",
            r.people.len(),
            r.completeness
        ),
        Err(e) => e.to_string(),
    }
}

pub fn by_username(people: &[Person]) -> HashMap<&str, &Person> {
    people.iter().map(|p| (p.username.as_str(), p)).collect()
}

/// Starts a runtime-free server once per test binary; `None` when its programs are missing
/// (and not required).
#[macro_export]
macro_rules! shared_server {
    ($name:ident: $ty:ty = $start:expr, requires $programs:expr) => {
        fn $name() -> Option<&'static $ty> {
            static SERVER: std::sync::OnceLock<Option<$ty>> = std::sync::OnceLock::new();
            SERVER
                .get_or_init(|| {
                    if !rollcall_harness::servers_available(stringify!($name), $programs) {
                        return None;
                    }
                    Some($start.unwrap_or_else(|e| panic!("{e}")))
                })
                .as_ref()
        }
    };
}
