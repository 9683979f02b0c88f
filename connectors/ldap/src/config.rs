//! The `directory: { ldap: … }` section of a pipeline: how to reach a client's domain controller
//! and which people to read from it.
//!
//! The doc comments on these types are the user reference: they are generated into the pipeline
//! schema (`rollcall schema`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rollcall_core::{Directory, DirectoryConfig, Secret};

use crate::client::LdapDirectory;

/// AD's people, as opposed to computers (also `objectClass: user`), contacts and groups.
pub const DEFAULT_FILTER: &str = "(&(objectClass=user)(!(objectClass=computer)))";

/// A directory read live over LDAP from Active Directory (or another LDAP server holding
/// AD-like entries). Every run reads everyone in scope, page by page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LdapDirectory")]
pub struct Config {
    /// The server: `ldaps://dc1.acme.local` (port 636) or `ldap://dc1.acme.local` (port 389,
    /// with `starttls: true`). An IP address works when the certificate names it.
    pub url: String,

    /// Upgrade an `ldap://` connection with StartTLS before binding. Ignored for `ldaps://`.
    #[serde(default)]
    pub starttls: bool,

    /// A PEM file with the CA certificate(s) that issued the server's certificate, for domains
    /// with a private CA (AD Certificate Services). Without it, the system's trusted roots are
    /// used. A relative path is relative to the pipeline file's folder.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,

    /// Accept any server certificate. Anyone on the path can then read the bind password: for a
    /// lab only. Every connection logs a warning while this is on.
    #[serde(default)]
    pub insecure_skip_verify: bool,

    /// Allow a simple bind over plain `ldap://` without StartTLS, which sends the password in
    /// clear text. Refused unless this is `true`.
    #[serde(default)]
    pub allow_plaintext: bool,

    /// The account to bind as: a DN (`CN=svc-rollcall,OU=Service,DC=acme,DC=local`), a UPN
    /// (`svc-rollcall@acme.local`) or `DOMAIN\user`. It needs read access only.
    pub bind_dn: String,

    /// The account's password, as a secret reference (`${ACME_LDAP_PASSWORD}`).
    pub password: Secret,

    /// Where people are searched, e.g. `OU=Staff,DC=acme,DC=local`. Several bases are read in
    /// turn; a person found under two is counted once. In a `[ ]` list, quote each DN: YAML
    /// splits an unquoted one at its commas.
    #[serde(deserialize_with = "base_dn_list")]
    pub base_dns: Vec<String>,

    /// Where groups are searched to work out nested membership. Defaults to `base_dns`; set it
    /// when groups live elsewhere (`OU=Groups,DC=acme,DC=local`, or the domain root).
    #[serde(default, deserialize_with = "dn_list")]
    pub group_base_dns: Vec<String>,

    /// `subtree` (the base and everything below, the default) or `one_level` (entries directly
    /// under the base only).
    #[serde(default)]
    pub scope: Scope,

    /// The LDAP filter selecting people. The default selects users and leaves out computers:
    /// `(&(objectClass=user)(!(objectClass=computer)))`. Machine and trust accounts are left out
    /// whatever the filter says.
    #[serde(default = "default_filter")]
    pub filter: String,

    /// OUs whose people are skipped, by DN (`OU=Disabled Users,OU=Staff,DC=acme,DC=local`);
    /// everything below them is skipped too.
    #[serde(default, deserialize_with = "dn_list")]
    pub exclude_ous: Vec<String>,

    /// Further attributes to read into each person's attributes, for the pipeline's rules
    /// (`employeeID`, `company`, `extensionAttribute1`…). Multi-valued ones are joined with "; ".
    #[serde(default)]
    pub attributes: Vec<String>,

    /// Entries per page of the paged-results control. AD's MaxPageSize is 1000.
    #[serde(default = "default_page_size")]
    pub page_size: u32,

    /// Seconds to wait for the TCP connection and TLS handshake.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,

    /// Seconds to wait for each answer from the server (a bind, each entry of a page).
    #[serde(default = "default_operation_timeout")]
    pub operation_timeout_secs: u64,

    /// How nested group membership is worked out: `auto` (the default) reads every group under
    /// `group_base_dns` once and expands nesting here, at the cost of one search; `in_chain`
    /// asks AD to expand each group with LDAP_MATCHING_RULE_IN_CHAIN, one search per group;
    /// `client` reads every group's members and expands them here.
    #[serde(default)]
    pub nested_groups: NestedGroups,

    /// Values asked for per request when reading a large group's members in ranges
    /// (`member;range=0-1499`). AD's MaxValRange is 1500; the server may return fewer.
    #[serde(default = "default_range_size")]
    pub range_size: u32,
}

/// How far below a base DN people are searched.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "LdapScope")]
pub enum Scope {
    /// The base entry and everything below it.
    #[default]
    Subtree,
    /// Only the entries directly below the base.
    OneLevel,
}

/// How nested group membership is worked out.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "LdapNestedGroups")]
pub enum NestedGroups {
    /// The cheapest exact way the server allows, never a search per group: on Active
    /// Directory every group's `memberOf` (the groups it is in) in one search, expanded from
    /// each person's own `memberOf`; elsewhere as `client`.
    #[default]
    Auto,
    /// One in-chain search per group (1.2.840.113556.1.4.1941) over `base_dns`: the server
    /// expands nesting, also through groups outside `group_base_dns`, but each search walks
    /// the people's whole base, which on a large domain costs seconds per group. Only Active
    /// Directory and Samba support it; others silently match nothing.
    InChain,
    /// Read every group's `member` (in ranges) and expand nesting here, with cycle detection.
    Client,
}

/// Reads a list of DNs, refusing what cannot be one at its line and column: a DN list slip
/// otherwise shows up only at run time, as a base that "does not exist" or an OU never excluded.
fn dn_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let dns = <Vec<String> as serde::Deserialize>::deserialize(deserializer)?;
    check_dns(&dns).map_err(serde::de::Error::custom)?;
    Ok(dns)
}

/// [`dn_list`], which must name at least one base: no base would read nobody, and a read of
/// nobody must never look complete.
fn base_dn_list<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    let dns = dn_list(deserializer)?;
    if dns.is_empty() {
        return Err(serde::de::Error::custom(
            "`base_dns` names no DN: give at least one, e.g. [\"OU=Staff,DC=acme,DC=local\"]",
        ));
    }
    Ok(dns)
}

/// Why `dns` cannot be a list of DNs, if it cannot.
fn check_dns(dns: &[String]) -> Result<(), String> {
    // `[OU=Staff,DC=acme,DC=local]` is three strings to YAML: a flow sequence splits at commas.
    // Several one-component "DNs", one of them a bare `DC=`, are that slip, not a real list.
    let single = |dn: &String| !dn.contains(',');
    if dns.len() > 1
        && dns.iter().all(single)
        && dns[1..]
            .iter()
            .any(|dn| dn.trim_start().to_ascii_lowercase().starts_with("dc="))
    {
        return Err(format!(
            "these DNs were read as {} separate ones ({}): in a [ ] list YAML splits at commas, so \
             quote each DN: [\"{}\"], or write one per line after `- `",
            dns.len(),
            dns.join(" | "),
            dns.join(",")
        ));
    }
    for dn in dns {
        let component = dn.split(',').next().unwrap_or_default();
        if dn.trim().is_empty() || !component.contains('=') {
            return Err(format!(
                "`{dn}` is not a DN: write it as `OU=Staff,DC=acme,DC=local`"
            ));
        }
    }
    Ok(())
}

fn default_filter() -> String {
    DEFAULT_FILTER.to_owned()
}

fn default_page_size() -> u32 {
    1000
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_operation_timeout() -> u64 {
    60
}

fn default_range_size() -> u32 {
    1500
}

impl Config {
    /// A config with every optional field at its default, for code that builds one directly.
    pub fn new(url: impl Into<String>, bind_dn: impl Into<String>, password: Secret) -> Self {
        Config {
            url: url.into(),
            starttls: false,
            ca_file: None,
            insecure_skip_verify: false,
            allow_plaintext: false,
            bind_dn: bind_dn.into(),
            password,
            base_dns: Vec::new(),
            group_base_dns: Vec::new(),
            scope: Scope::default(),
            filter: default_filter(),
            exclude_ous: Vec::new(),
            attributes: Vec::new(),
            page_size: default_page_size(),
            connect_timeout_secs: default_connect_timeout(),
            operation_timeout_secs: default_operation_timeout(),
            nested_groups: NestedGroups::default(),
            range_size: default_range_size(),
        }
    }
}

impl DirectoryConfig for Config {
    const STARTER: &'static str = STARTER;

    fn build(&self, pipeline_dir: &Path) -> Arc<dyn Directory> {
        let mut config = self.clone();
        config.ca_file = self.ca_file.as_ref().map(|p| pipeline_dir.join(p));
        Arc::new(LdapDirectory::new(config))
    }
}

/// The `directory:` body `rollcall init` writes for a domain controller, commented for a first
/// setup.
const STARTER: &str = r#"ldap:
        url: ldaps://dc1.acme.local   # or ldap://dc1.acme.local (389) with starttls: true
        # ca_file: acme-ca.pem   # the domain's own CA (PEM), relative to this file
        bind_dn: svc-rollcall@acme.local   # a read-only account: a UPN, a DN or DOMAIN\user
        password: ${ACME_LDAP_PASSWORD}   # a reference, never the value
        base_dns: ["OU=Staff,DC=acme,DC=local"]   # quoted: YAML splits [ ] lists at commas
        # group_base_dns: ["OU=Groups,DC=acme,DC=local"]   # where groups live, if elsewhere
        # exclude_ous: ["OU=Disabled Users,OU=Staff,DC=acme,DC=local"]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_a_pipeline_leaves_out() {
        let yaml = serde_json::json!({
            "url": "ldaps://dc1.acme.local",
            "bind_dn": "svc@acme.local",
            "password": "${ROLLCALL_LDAP_TEST_UNSET:-x}",
            "base_dns": ["DC=acme,DC=local"],
        });
        let c: Config = serde_json::from_value(yaml).expect("config");
        assert_eq!(c.page_size, 1000);
        assert_eq!(c.filter, DEFAULT_FILTER);
        assert_eq!(c.nested_groups, NestedGroups::Auto);
        assert_eq!(c.scope, Scope::Subtree);
        assert!(!c.allow_plaintext && !c.insecure_skip_verify && !c.starttls);
        assert!(!format!("{c:?}").contains("\"x\""));
    }

    #[test]
    fn dn_lists_split_by_yaml_or_empty_are_refused() {
        let with = |field: &str, value: serde_json::Value| {
            let mut yaml = serde_json::json!({
                "url": "ldaps://dc1", "bind_dn": "a", "password": "${X:-x}",
                "base_dns": ["OU=Staff,DC=acme,DC=local"],
            });
            yaml[field] = value;
            serde_json::from_value::<Config>(yaml).map_err(|e| e.to_string())
        };
        let split = serde_json::json!(["OU=Staff", "DC=acme", "DC=local"]);
        for field in ["base_dns", "group_base_dns", "exclude_ous"] {
            let err = with(field, split.clone()).unwrap_err();
            assert!(
                err.contains("read as 3 separate ones")
                    && err.contains("OU=Staff,DC=acme,DC=local"),
                "{field}: {err}"
            );
            let err = with(field, serde_json::json!(["Staff"])).unwrap_err();
            assert!(err.contains("`Staff` is not a DN"), "{field}: {err}");
        }
        let err = with("base_dns", serde_json::json!([])).unwrap_err();
        assert!(err.contains("names no DN"), "{err}");
        // Two whole DNs, and a single-label domain, are lists a pipeline may mean.
        let two = serde_json::json!(["OU=Staff,DC=acme,DC=local", "OU=Sales,DC=acme,DC=local"]);
        assert_eq!(with("base_dns", two).expect("two bases").base_dns.len(), 2);
        assert!(with("base_dns", serde_json::json!(["DC=acme"])).is_ok());
        assert!(with("group_base_dns", serde_json::json!([])).is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let yaml = serde_json::json!({
            "url": "ldaps://dc1", "bind_dn": "a", "password": "${X:-x}",
            "base_dns": ["DC=acme,DC=local"], "pasword": "oops",
        });
        let err = serde_json::from_value::<Config>(yaml)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pasword"), "{err}");
    }
}
