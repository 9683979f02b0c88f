//! The [`Directory`] a domain controller plays: connect, bind, work out group membership, then
//! stream people page by page.
//!
//! Memory stays bounded by the page size, not the directory: entries are mapped to people as
//! they arrive and handed to the caller ([`LdapDirectory::read_each`]); only group membership,
//! which every person's groups depend on, is gathered first. The one rule that matters most
//! (DESIGN invariant 3): whatever cuts a read short after people were seen — a dropped
//! connection, a size or time limit, a referral we do not follow, an entry we cannot identify —
//! makes the read [`Completeness::Incomplete`], never an error that loses what was read and
//! never a complete read with fewer people.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapResult, SearchEntry};
use rollcall_core::{Completeness, Cursor, Directory, DirectoryError, DirectoryRead, Person};

use crate::config::{Config, NestedGroups, Scope};
use crate::error::{AdBindCode, LdapError};
use crate::model::{self, Entry};
use crate::wire::{self, Endpoint, Item, Wire};
use rollcall_core::groups::Groups;

/// `supportedCapabilities` value by which AD (and Samba) say they are Active Directory, and so
/// support LDAP_MATCHING_RULE_IN_CHAIN and ranged retrieval.
const LDAP_CAP_ACTIVE_DIRECTORY: &str = "1.2.840.113556.1.4.800";
const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";
/// How long a server gets to answer the unbind that ends a read; nothing depends on it.
const UNBIND_GRACE: Duration = Duration::from_secs(2);

/// People read live from one directory server on each [`Directory::read`].
#[derive(Debug, Clone)]
pub struct LdapDirectory {
    config: Config,
}

/// What [`LdapDirectory::read_each`] saw, besides the people it handed over.
#[derive(Debug, Clone)]
pub struct ReadSummary {
    pub people: usize,
    pub completeness: Completeness,
    pub warnings: Vec<String>,
    /// How nested groups were worked out on this server: `client` for both client-side
    /// strategies (groups' `member` or, on AD under `auto`, groups' `memberOf`).
    pub nested_groups: NestedGroups,
    pub pages: usize,
    /// Search requests sent, on either connection (the root DSE, every page, every range):
    /// what the read cost the server, which tests pin so that a strategy costing one search
    /// per group cannot come back unnoticed.
    pub searches: usize,
}

/// How this read works nesting out, `auto` resolved against the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nesting {
    /// One in-chain search per group, asked for by name (`nested_groups: in_chain`).
    InChain,
    /// Every group's `member`, in ranges, expanded here (`client`, and `auto` off AD).
    Members,
    /// Every group's `memberOf` (the groups it is in), expanded here from each person's own
    /// `memberOf`: `auto` on AD, whose `memberOf` is the server-kept back link of `member`, so
    /// the same nesting costs one search of a few bytes per group instead of one domain-wide
    /// search per group (in-chain) or every member's DN (`member`).
    Parents,
}

/// How one search ended, when it did not end well.
enum Cut {
    /// Nothing more can be read: the read is incomplete from here on.
    Incomplete(LdapError),
    /// Nothing could be read at all.
    Fatal(LdapError),
}

/// What a search asks for, besides its base.
#[derive(Clone, Copy)]
struct Query<'a> {
    /// As the protocol numbers it: 1 one level, 2 subtree.
    scope: i64,
    filter: &'a str,
    attrs: &'a [String],
}

/// What a whole read has counted and noted so far.
#[derive(Default)]
struct Tally {
    pages: usize,
    searches: usize,
    warnings: Vec<String>,
}

impl LdapDirectory {
    pub fn new(config: Config) -> Self {
        LdapDirectory { config }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn server(&self) -> String {
        self.config.url.clone()
    }

    fn op_timeout(&self) -> Duration {
        Duration::from_secs(self.config.operation_timeout_secs.max(1))
    }

    /// Opens a connection and binds: every check that needs no people read happens here. The
    /// connection is driven by a task of its own.
    pub async fn connect(&self) -> Result<Ldap, LdapError> {
        let (conn, ldap) = self.open().await?;
        let server = self.server();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(server = %server, error = %e, "LDAP connection ended.");
            }
        });
        self.bind(ldap).await
    }

    /// Opens the connection (TCP, TLS), without binding.
    async fn open(&self) -> Result<(LdapConnAsync, Ldap), LdapError> {
        let c = &self.config;
        let url = c.url.trim();
        let lower = url.to_ascii_lowercase();
        let tls = if lower.starts_with("ldaps://") {
            true
        } else if lower.starts_with("ldap://") {
            c.starttls
        } else {
            return Err(LdapError::InvalidUrl {
                url: url.to_owned(),
                detail: "the scheme must be ldaps:// or ldap://".to_owned(),
            });
        };
        if !tls && !c.allow_plaintext {
            return Err(LdapError::PlaintextRefused {
                server: self.server(),
            });
        }
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(Duration::from_secs(c.connect_timeout_secs.max(1)))
            .set_starttls(c.starttls && lower.starts_with("ldap://"));
        if tls {
            if c.insecure_skip_verify {
                tracing::warn!(
                    server = %self.server(),
                    "TLS certificate verification is OFF (`insecure_skip_verify: true`): anyone on the network path can read the bind password."
                );
            }
            settings = settings.set_config(crate::tls::client_config(
                c.ca_file.as_deref(),
                c.insecure_skip_verify,
            )?);
        } else {
            tracing::warn!(server = %self.server(), "Binding over plain LDAP (`allow_plaintext: true`): the password crosses the network unencrypted.");
        }
        LdapConnAsync::with_settings(settings, url)
            .await
            .map_err(|e| self.connect_error(e))
    }

    /// Opens and binds the wire that carries the paged searches, with the settings and account
    /// ldap3's connection has just been opened with.
    async fn open_wire(&self) -> Result<Wire, LdapError> {
        let c = &self.config;
        let endpoint = Endpoint::parse(&c.url).map_err(|detail| LdapError::InvalidUrl {
            url: c.url.trim().to_owned(),
            detail,
        })?;
        let tls = if endpoint.ldaps || c.starttls {
            Some(crate::tls::client_config(
                c.ca_file.as_deref(),
                c.insecure_skip_verify,
            )?)
        } else {
            None
        };
        let server = self.server();
        let mut wire = Wire::open(wire::Opening {
            server: &server,
            endpoint: &endpoint,
            starttls: c.starttls && !endpoint.ldaps,
            tls,
            connect_timeout: Duration::from_secs(c.connect_timeout_secs.max(1)),
            op_timeout: self.op_timeout(),
        })
        .await?;
        let res = wire.bind(&c.bind_dn, c.password.expose()).await?;
        self.bind_answer(res.rc, &res.text)?;
        Ok(wire)
    }

    /// Binds with the configured account.
    async fn bind(&self, mut ldap: Ldap) -> Result<Ldap, LdapError> {
        let c = &self.config;
        if c.password.expose().is_empty() {
            // An empty password makes an unauthenticated bind that "succeeds" and then reads
            // nothing: it would look like an empty directory.
            return Err(LdapError::BadCredentials {
                server: self.server(),
                bind_dn: c.bind_dn.clone(),
                code: None,
                diagnostic: "the password is empty (an empty password is an anonymous bind)"
                    .to_owned(),
            });
        }
        let res = ldap
            .with_timeout(self.op_timeout())
            .simple_bind(&c.bind_dn, c.password.expose())
            .await
            .map_err(|e| self.wire_error(e, "binding"))?;
        self.bind_answer(res.rc, &res.text)?;
        Ok(ldap)
    }

    /// What a bind's result code means, worded for the operator: the same on both connections.
    fn bind_answer(&self, rc: u32, text: &str) -> Result<(), LdapError> {
        let c = &self.config;
        match rc {
            0 => Ok(()),
            49 => Err(LdapError::BadCredentials {
                server: self.server(),
                bind_dn: c.bind_dn.clone(),
                code: AdBindCode::from_diagnostic(text),
                diagnostic: diagnostic(text, "invalid credentials"),
            }),
            // strongerAuthRequired, confidentialityRequired: AD and Samba refuse simple binds
            // without TLS when signing is required.
            8 | 13 => Err(LdapError::StrongAuthRequired {
                server: self.server(),
                diagnostic: diagnostic(text, "transport encryption required"),
            }),
            50 => Err(LdapError::InsufficientAccess {
                bind_dn: c.bind_dn.clone(),
                dn: c.bind_dn.clone(),
                diagnostic: diagnostic(text, "insufficient access"),
            }),
            rc => Err(LdapError::Protocol {
                server: self.server(),
                during: "the bind".to_owned(),
                rc,
                text: diagnostic(text, "no diagnostic"),
            }),
        }
    }

    fn protocol(&self, rc: u32, res: &LdapResult, during: &str) -> LdapError {
        LdapError::Protocol {
            server: self.server(),
            during: during.to_owned(),
            rc,
            text: diagnostic(&res.text, "no diagnostic"),
        }
    }

    fn connect_error(&self, e: ldap3::LdapError) -> LdapError {
        let server = self.server();
        match e {
            ldap3::LdapError::Timeout { .. } => LdapError::Unreachable {
                server,
                detail: format!(
                    "no connection within {} s (`connect_timeout_secs`)",
                    self.config.connect_timeout_secs
                ),
            },
            ldap3::LdapError::Rustls { source } => LdapError::Tls {
                server,
                detail: source.to_string(),
            },
            ldap3::LdapError::DNSName { source } => LdapError::Tls {
                server,
                detail: source.to_string(),
            },
            ldap3::LdapError::UrlParsing { source } => LdapError::InvalidUrl {
                url: server,
                detail: source.to_string(),
            },
            // tokio-rustls reports handshake failures (an unknown issuer, a name mismatch, a
            // plain-text server on the ldaps port) as I/O errors of kind InvalidData.
            ldap3::LdapError::Io { source }
                if source.kind() == std::io::ErrorKind::InvalidData
                    || source.get_ref().is_some_and(|s| s.is::<rustls::Error>()) =>
            {
                LdapError::Tls {
                    server,
                    detail: source.to_string(),
                }
            }
            ldap3::LdapError::Io { source } => LdapError::Unreachable {
                server,
                detail: source.to_string(),
            },
            // StartTLS refused by the server.
            ldap3::LdapError::LdapResult { result } => LdapError::Tls {
                server,
                detail: format!(
                    "StartTLS refused: {}",
                    diagnostic(&result.text, "no diagnostic")
                ),
            },
            other => LdapError::Unreachable {
                server,
                detail: other.to_string(),
            },
        }
    }

    fn wire_error(&self, e: ldap3::LdapError, during: &str) -> LdapError {
        match e {
            ldap3::LdapError::Timeout { .. } => LdapError::Timeout {
                server: self.server(),
                during: during.to_owned(),
                secs: self.config.operation_timeout_secs,
            },
            ldap3::LdapError::FilterParsing => LdapError::Protocol {
                server: self.server(),
                during: during.to_owned(),
                rc: 87,
                text: "the filter is not valid LDAP filter syntax (check `filter`)".to_owned(),
            },
            other => LdapError::ConnectionLost {
                server: self.server(),
                during: during.to_owned(),
                detail: other.to_string(),
            },
        }
    }

    /// Whether the server says it is Active Directory. A server that hides its root DSE is
    /// taken not to be.
    async fn is_active_directory(&self, ldap: &mut Ldap, tally: &mut Tally) -> bool {
        tally.searches += 1;
        let res = ldap
            .with_timeout(self.op_timeout())
            .search(
                "",
                ldap3::Scope::Base,
                "(objectClass=*)",
                vec!["supportedCapabilities"],
            )
            .await;
        match res {
            Ok(ldap3::SearchResult(entries, _)) => entries.into_iter().any(|e| {
                SearchEntry::construct(e)
                    .attrs
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("supportedCapabilities"))
                    .flat_map(|(_, v)| v)
                    .any(|v| v == LDAP_CAP_ACTIVE_DIRECTORY)
            }),
            Err(_) => false,
        }
    }

    /// One paged search on the wire, handing each entry to `on_entry` as it is decoded. Page
    /// size bounds what is in memory: the wire buffers part of a page, and each entry is
    /// dropped once handled.
    async fn paged_search(
        &self,
        wire: &mut Wire,
        base: &str,
        query: Query<'_>,
        tally: &mut Tally,
        on_entry: &mut (dyn FnMut(Entry) -> Result<(), LdapError> + Send),
    ) -> Result<usize, (usize, Cut)> {
        let Query {
            scope,
            filter,
            attrs,
        } = query;
        let during = format!("reading {base}");
        let lost = |seen: usize, e: LdapError| {
            if seen == 0 {
                (seen, Cut::Fatal(e))
            } else {
                (seen, Cut::Incomplete(e))
            }
        };
        let Some(filter) = wire::compile_filter(filter) else {
            return Err(lost(
                0,
                LdapError::Protocol {
                    server: self.server(),
                    during,
                    rc: 87,
                    text: "the filter is not valid LDAP filter syntax (check `filter`)".to_owned(),
                },
            ));
        };
        let search = wire::Search {
            base,
            scope,
            filter: &filter,
            attrs,
        };
        let size = i32::try_from(self.config.page_size.max(1)).unwrap_or(1000);
        let mut cookie = Vec::new();
        let mut seen = 0usize;
        loop {
            let mut stopped: Option<Cut> = None;
            let warnings = &mut tally.warnings;
            tally.searches += 1;
            let page = wire
                .search_page(&search, Some((size, &cookie)), &mut |item| match item {
                    Item::Entry(bytes) => match Entry::from_wire(bytes) {
                        Ok(e) => {
                            seen += 1;
                            match on_entry(e) {
                                Ok(()) => true,
                                Err(e) => {
                                    stopped = Some(Cut::Incomplete(e));
                                    false
                                }
                            }
                        }
                        Err(m) => {
                            let e = LdapError::Protocol {
                                server: self.server(),
                                during: during.clone(),
                                rc: 2,
                                text: format!("a search entry that is not valid LDAP: {m}"),
                            };
                            stopped = Some(lost(seen, e).1);
                            false
                        }
                    },
                    Item::Reference(urls) => match self.continuation(base, &urls, warnings) {
                        Some(cut) => {
                            stopped = Some(Cut::Incomplete(cut));
                            false
                        }
                        None => true,
                    },
                })
                .await;
            let res = match (page, stopped) {
                (Ok(Some(res)), None) => res,
                (_, Some(cut)) => return Err((seen, cut)),
                // Only a handler that stopped abandons a search, and it says why.
                (Ok(None), None) => {
                    let e = LdapError::ConnectionLost {
                        server: self.server(),
                        during,
                        detail: "the search was abandoned".to_owned(),
                    };
                    return Err(lost(seen, e));
                }
                (Err(e), None) => return Err(lost(seen, e)),
            };
            tally.pages += 1;
            match res.rc {
                0 => {}
                // sizeLimitExceeded, timeLimitExceeded: what came back is real, but not all.
                4 => {
                    return Err((
                        seen,
                        Cut::Incomplete(LdapError::SizeLimit {
                            server: self.server(),
                            base_dn: base.to_owned(),
                            entries: seen,
                        }),
                    ));
                }
                3 => {
                    return Err((
                        seen,
                        Cut::Incomplete(LdapError::TimeLimit {
                            server: self.server(),
                            base_dn: base.to_owned(),
                            entries: seen,
                        }),
                    ));
                }
                10 => {
                    let cut = LdapError::Referral {
                        server: self.server(),
                        base_dn: base.to_owned(),
                        to: res.refs.join(" "),
                    };
                    return Err(lost(seen, cut));
                }
                32 => {
                    let cut = LdapError::NoSuchBase {
                        server: self.server(),
                        base_dn: base.to_owned(),
                        matched: res.matched.clone(),
                    };
                    return Err(lost(seen, cut));
                }
                50 => {
                    let cut = LdapError::InsufficientAccess {
                        bind_dn: self.config.bind_dn.clone(),
                        dn: base.to_owned(),
                        diagnostic: diagnostic(&res.text, "insufficient access"),
                    };
                    return Err(lost(seen, cut));
                }
                // unavailable, unwillingToPerform, other: the server gave up on this search.
                rc => {
                    let cut = LdapError::Protocol {
                        server: self.server(),
                        during: during.clone(),
                        rc,
                        text: diagnostic(&res.text, "no diagnostic"),
                    };
                    return Err(lost(seen, cut));
                }
            }
            match res.cookie {
                Some(c) if !c.is_empty() => cookie = c,
                _ => return Ok(seen),
            }
        }
    }

    /// A search continuation reference (a subtree search crossing into another naming
    /// context). AD's domain-root searches return ones into the Configuration and DNS
    /// partitions, which hold no people: skipped. Any other is people we cannot see.
    fn continuation(
        &self,
        base: &str,
        urls: &[String],
        warnings: &mut Vec<String>,
    ) -> Option<LdapError> {
        let elsewhere: Vec<&String> = urls
            .iter()
            .filter(|u| {
                let dn = u
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                !(dn.starts_with("cn=configuration,")
                    || dn.starts_with("dc=domaindnszones,")
                    || dn.starts_with("dc=forestdnszones,")
                    || dn.starts_with("cn=schema,cn=configuration,"))
            })
            .collect();
        if elsewhere.is_empty() {
            tracing::debug!(server = %self.server(), refs = ?urls, "Skipped references to AD's non-domain partitions.");
            return None;
        }
        let to = elsewhere
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        warnings.push(format!(
            "{}: search of {base} refers to {to}, not followed",
            self.server()
        ));
        Some(LdapError::Referral {
            server: self.server(),
            base_dn: base.to_owned(),
            to,
        })
    }

    /// Reads every value of a ranged attribute of `dn`, starting after `first` (AD sends at
    /// most MaxValRange values per request: `member;range=0-1499`, then asks continue).
    async fn rest_of_range(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        attribute: &str,
        mut next_low: u32,
        out: &mut Vec<String>,
        searches: &mut usize,
    ) -> Result<(), LdapError> {
        let step = self.config.range_size.max(1);
        let during = format!("reading {attribute} of {dn} in ranges");
        loop {
            let want = format!(
                "{attribute};range={next_low}-{}",
                next_low.saturating_add(step - 1)
            );
            *searches += 1;
            let res = ldap
                .with_timeout(self.op_timeout())
                .search(dn, ldap3::Scope::Base, "(objectClass=*)", vec![want])
                .await
                .map_err(|e| self.wire_error(e, &during))?;
            if res.1.rc != 0 {
                return Err(self.protocol(res.1.rc, &res.1, &during));
            }
            let Some(entry) = res.0.into_iter().next() else {
                return Ok(());
            };
            let entry = SearchEntry::construct(entry);
            let found = entry
                .attrs
                .into_iter()
                .find_map(|(k, v)| model::parse_range(&k, attribute).map(|r| (r, v)));
            match found {
                Some((range, values)) => {
                    out.extend(values);
                    match range.high {
                        Some(high) if high >= range.low => next_low = high + 1,
                        _ => return Ok(()),
                    }
                }
                // No more values: AD answers a range past the end with no attribute.
                None => return Ok(()),
            }
        }
    }

    /// Every value of `attribute` in `entry`, fetching the remaining ranges when the server
    /// sent only the first.
    async fn all_values(
        &self,
        ldap: &mut Ldap,
        entry: &mut Entry,
        attribute: &str,
        searches: &mut usize,
    ) -> Result<Vec<String>, LdapError> {
        let mut values = Vec::new();
        let mut resume = None;
        let taken = entry.take_where(|k| {
            k.eq_ignore_ascii_case(attribute) || model::parse_range(k, attribute).is_some()
        });
        for (k, v) in taken {
            if let Some(range) = model::parse_range(&k, attribute)
                && let Some(high) = range.high
            {
                resume = Some(high + 1);
            }
            values.extend(v);
        }
        if let Some(low) = resume {
            self.rest_of_range(
                ldap,
                &entry.dn.clone(),
                attribute,
                low,
                &mut values,
                searches,
            )
            .await?;
        }
        Ok(values)
    }

    fn group_bases(&self) -> &[String] {
        if self.config.group_base_dns.is_empty() {
            &self.config.base_dns
        } else {
            &self.config.group_base_dns
        }
    }

    /// Reads the groups and how they nest: one paged search of every group under the group
    /// bases (a pipeline's rules may name any of them), then, by `mode`, each group's members
    /// or the groups it is in, completed in ranges where the server cut them.
    async fn read_groups(
        &self,
        ldap: &mut Ldap,
        wire: &mut Wire,
        mode: Nesting,
        ad: bool,
        tally: &mut Tally,
    ) -> Result<Groups, Cut> {
        let mut groups = Groups::default();
        let member_attr = if ad {
            // Ask for a range explicitly: Samba sends ranges only when asked, and AD honours
            // the request up to its MaxValRange.
            format!(
                "{};range=0-{}",
                model::MEMBER,
                self.config.range_size.max(1) - 1
            )
        } else {
            model::MEMBER.to_owned()
        };
        let (attrs, links) = match mode {
            Nesting::Members => (vec![model::CN.to_owned(), member_attr], model::MEMBER),
            // A group is in few groups: AD sends `memberOf` whole below MaxValRange, and in
            // ranges (completed below) above it.
            Nesting::Parents => (
                vec![model::CN.to_owned(), model::MEMBER_OF.to_owned()],
                model::MEMBER_OF,
            ),
            Nesting::InChain => (vec![model::CN.to_owned()], model::MEMBER),
        };
        let scope = self.scope();
        // Each group's DN key and the DNs of the groups it is in, resolved once every group is
        // known (a parent may come later in the answer, or under another base).
        let mut nesting: Vec<(String, Vec<String>)> = Vec::new();
        for base in self.group_bases().to_vec() {
            // Entries are kept (groups are few) and ranges completed after the page loop,
            // since the connection is busy with the paged search meanwhile.
            let mut found: Vec<Entry> = Vec::new();
            let result = self
                .paged_search(
                    wire,
                    &base,
                    Query {
                        scope,
                        filter: "(objectClass=group)",
                        attrs: &attrs,
                    },
                    tally,
                    &mut |e| {
                        found.push(e);
                        Ok(())
                    },
                )
                .await;
            if let Err((_, cut)) = result {
                return Err(match cut {
                    Cut::Incomplete(e) | Cut::Fatal(e) => Cut::Fatal(e),
                });
            }
            for mut e in found {
                let name = model::group_name(&e.dn, e.text(model::CN));
                let key = model::dn_key(&e.dn);
                let Some(idx) = groups.add(key.clone(), name) else {
                    continue;
                };
                if mode == Nesting::InChain {
                    continue;
                }
                let values = self
                    .all_values(ldap, &mut e, links, &mut tally.searches)
                    .await
                    .map_err(Cut::Fatal)?;
                if mode == Nesting::Parents {
                    nesting.push((key, values));
                    continue;
                }
                // A person is in several groups: their key is allocated once.
                let mut member = String::new();
                for m in values {
                    model::dn_key_into(&m, &mut member);
                    groups.add_member(&member, idx);
                }
            }
        }
        let mut parent = String::new();
        for (key, parents) in nesting {
            for dn in parents {
                model::dn_key_into(&dn, &mut parent);
                // A group outside the group bases: its name still reaches the people directly
                // in it (their own `memberOf`), but what it nests in is not known, exactly as
                // when members are read.
                if let Some(p) = groups.index_of(&parent) {
                    groups.add_member(&key, p);
                }
            }
        }
        if mode == Nesting::InChain {
            groups.set_transitive();
            // The group DNs as the server wrote them are needed for the filter; keys are
            // lowercased, which AD's DN matching ignores anyway.
            for (idx, key) in groups.keys().to_vec().into_iter().enumerate() {
                let idx = u32::try_from(idx).unwrap_or(u32::MAX);
                let filter = format!(
                    "(&{}(memberOf:{IN_CHAIN}:={}))",
                    self.config.filter,
                    ldap3::ldap_escape(key.as_str())
                );
                for base in self.config.base_dns.clone() {
                    let mut members = Vec::new();
                    let r = self
                        .paged_search(
                            wire,
                            &base,
                            Query {
                                scope,
                                filter: &filter,
                                attrs: &["1.1".to_owned()],
                            },
                            tally,
                            &mut |e| {
                                members.push(model::dn_key(&e.dn));
                                Ok(())
                            },
                        )
                        .await;
                    if let Err((_, cut)) = r {
                        return Err(match cut {
                            Cut::Incomplete(e) | Cut::Fatal(e) => Cut::Fatal(e),
                        });
                    }
                    for m in members {
                        groups.add_member(&m, idx);
                    }
                }
            }
        }
        Ok(groups)
    }

    /// The search scope as the protocol numbers it.
    fn scope(&self) -> i64 {
        match self.config.scope {
            Scope::OneLevel => 1,
            Scope::Subtree => 2,
        }
    }

    /// Reads everyone in scope, handing each person to `on_person` as their page arrives, so a
    /// caller that streams them on needs memory for one page, not the directory. Errors only
    /// when no person was handed over; a read cut short later is `Ok` and incomplete.
    pub async fn read_each(
        &self,
        on_person: &mut (dyn FnMut(Person) + Send),
    ) -> Result<ReadSummary, LdapError> {
        // A pipeline cannot name no base (its reader refuses it), but code can: reading nobody
        // must be an error, never a complete read of no one.
        if self.config.base_dns.is_empty() {
            return Err(LdapError::NoSuchBase {
                server: self.server(),
                base_dn: "(none: `base_dns` is empty)".to_owned(),
                matched: String::new(),
            });
        }
        // Two connections: ldap3's opens first, so a wrong password, CA or port is worded by
        // the checks that have always worded it, and it serves the root DSE and ranged
        // attributes; the wire then carries the paged searches, decoded in this task as whole
        // socket reads (of up to 256 KiB) arrive, so a wake-up hands over dozens of entries.
        let ldap = self.connect().await?;
        let wire = match self.open_wire().await {
            Ok(w) => w,
            Err(e) => {
                let _ = tokio::time::timeout(UNBIND_GRACE, ldap.clone().unbind()).await;
                return Err(e);
            }
        };
        self.read_bound(ldap, wire, on_person).await
    }

    async fn read_bound(
        &self,
        mut ldap: Ldap,
        mut wire: Wire,
        on_person: &mut (dyn FnMut(Person) + Send),
    ) -> Result<ReadSummary, LdapError> {
        let mut tally = Tally::default();
        let ad = self.is_active_directory(&mut ldap, &mut tally).await;
        // Chosen by what each costs, not by what the server can do: AD answers in-chain
        // searches, but one per group over the people's base is a domain-wide search each
        // (24–34 s against a Samba DC where the people alone take 0.4 s: BENCHMARKS.md),
        // while the groups' own `memberOf` gives the same nesting in one small search.
        let mode = match self.config.nested_groups {
            NestedGroups::Auto if ad => Nesting::Parents,
            NestedGroups::Auto | NestedGroups::Client => Nesting::Members,
            NestedGroups::InChain => Nesting::InChain,
        };
        let mut groups = match self
            .read_groups(&mut ldap, &mut wire, mode, ad, &mut tally)
            .await
        {
            Ok(g) => g,
            Err(Cut::Fatal(e) | Cut::Incomplete(e)) => return Err(e),
        };
        let attrs = model::person_attributes(&self.config.attributes);
        let excluded: Vec<String> = self
            .config
            .exclude_ous
            .iter()
            .map(|d| model::dn_key(d))
            .collect();
        let now = chrono::Utc::now();
        let several_bases = self.config.base_dns.len() > 1;
        let mut ids: HashSet<String> = HashSet::new();
        let mut people = 0usize;
        let mut skipped: Vec<String> = Vec::new();
        let mut cut: Option<LdapError> = None;
        // Users in more groups than MaxValRange have ranged memberOf; they are finished after
        // the page (the connection is busy with the paged search meanwhile).
        let mut ranged: Vec<Entry> = Vec::new();
        for base in self.config.base_dns.clone() {
            let mut key = String::new();
            let mut handle = |mut e: Entry, groups: &mut Groups| {
                // The DN key is needed only to exclude OUs or to look up group members.
                let need_key = !excluded.is_empty() || groups.has_members();
                if need_key {
                    model::dn_key_into(&e.dn, &mut key);
                    if excluded.iter().any(|x| model::is_under(&key, x)) {
                        return None;
                    }
                }
                let names = groups.of(need_key.then_some(key.as_str()), e.texts(model::MEMBER_OF));
                match model::person(&mut e, &self.config.attributes, names, now) {
                    Ok(p) => Some(p),
                    Err(model::Skip::Machine) => None,
                    Err(model::Skip::NoId(why)) => {
                        skipped.push(format!("{}: {}: {why}", self.server(), e.dn));
                        None
                    }
                }
            };
            let result = self
                .paged_search(
                    &mut wire,
                    &base,
                    Query {
                        scope: self.scope(),
                        filter: &self.config.filter,
                        attrs: &attrs,
                    },
                    &mut tally,
                    &mut |e| {
                        if e.names()
                            .any(|k| model::parse_range(k, model::MEMBER_OF).is_some())
                        {
                            ranged.push(e);
                            return Ok(());
                        }
                        if let Some(p) = handle(e, &mut groups) {
                            if several_bases && !ids.insert(p.id.clone()) {
                                return Ok(());
                            }
                            people += 1;
                            on_person(p);
                        }
                        Ok(())
                    },
                )
                .await;
            for mut e in std::mem::take(&mut ranged) {
                match self
                    .all_values(&mut ldap, &mut e, model::MEMBER_OF, &mut tally.searches)
                    .await
                {
                    Ok(all) => {
                        e.set_texts(model::MEMBER_OF, all);
                        if let Some(p) = handle(e, &mut groups)
                            && (!several_bases || ids.insert(p.id.clone()))
                        {
                            people += 1;
                            on_person(p);
                        }
                    }
                    Err(err) => {
                        cut.get_or_insert(err);
                    }
                }
            }
            match result {
                Ok(_) => {}
                Err((_, Cut::Fatal(e))) if people == 0 && cut.is_none() => {
                    let _ = tokio::time::timeout(UNBIND_GRACE, wire.unbind()).await;
                    let _ = tokio::time::timeout(UNBIND_GRACE, ldap.unbind()).await;
                    return Err(e);
                }
                Err((_, Cut::Fatal(e) | Cut::Incomplete(e))) => {
                    cut.get_or_insert(e);
                    break;
                }
            }
        }
        // Best effort: the server closes the connection anyway.
        let _ = tokio::time::timeout(UNBIND_GRACE, wire.unbind()).await;
        let _ = tokio::time::timeout(UNBIND_GRACE, ldap.unbind()).await;
        let completeness = match (&cut, skipped.first()) {
            (Some(e), _) => Completeness::Incomplete {
                reason: format!("{e}; {people} people were read before that"),
            },
            (None, Some(first)) => Completeness::Incomplete {
                reason: format!(
                    "{} entries could not be read, the first: {first}",
                    skipped.len()
                ),
            },
            (None, None) => Completeness::Complete,
        };
        if let Some(e) = &cut {
            tally.warnings.push(e.to_string());
        }
        tally.warnings.extend(skipped);
        Ok(ReadSummary {
            people,
            completeness,
            warnings: tally.warnings,
            nested_groups: match mode {
                Nesting::InChain => NestedGroups::InChain,
                Nesting::Members | Nesting::Parents => NestedGroups::Client,
            },
            pages: tally.pages,
            searches: tally.searches,
        })
    }
}

fn diagnostic(text: &str, fallback: &str) -> String {
    let t = text.trim().trim_end_matches('\0').trim();
    if t.is_empty() {
        fallback.to_owned()
    } else {
        t.to_owned()
    }
}

#[async_trait]
impl Directory for LdapDirectory {
    fn describe(&self) -> String {
        format!("ldap {}", self.config.url)
    }

    /// Always a full read (`cursor: None`): AD's uSNChanged is per domain controller, so a
    /// cursor would be valid only against the one DC it came from.
    async fn read(&self, _cursor: Option<&Cursor>) -> Result<DirectoryRead, DirectoryError> {
        let mut people = Vec::new();
        let summary = self.read_each(&mut |p| people.push(p)).await.map_err(|e| {
            DirectoryError::Unavailable {
                source_name: self.describe(),
                message: e.to_string(),
            }
        })?;
        tracing::info!(
            server = %self.config.url,
            people = summary.people,
            pages = summary.pages,
            complete = summary.completeness.is_complete(),
            "Read the directory."
        );
        Ok(DirectoryRead {
            people,
            completeness: summary.completeness,
            warnings: summary.warnings,
            cursor: None,
            subscriptions: Vec::new(),
        })
    }
}
