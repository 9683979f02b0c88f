//! ConnectWise Manage as a [`BillingSystem`]: reads a client's contacts and agreement additions,
//! and writes one change at a time.
//!
//! Everything about retrying lives in [`rollcall_core::http`]. This module builds ConnectWise's
//! requests (Basic auth with `company+public:private` plus `clientId`, `conditions=` queries, every
//! page of every list) and converts between ConnectWise's objects ([`crate::model`]) and the
//! engine's. ConnectWise has no idempotency key, so each create first looks for what it would
//! make, and a create whose answer was lost is reconciled by reading before it is sent again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use rollcall_core::http::{Created, HttpClient, HttpSettings, RateLimit, RetryPolicy};
use rollcall_core::{
    AccountRef, ActualAddition, ActualContact, AdditionFields, Applied, BillingAccount,
    BillingSystem, Change, ClientState, ContactFields, ContactKey, NewTicket, RemoteError,
    RemoteErrorKind, ServiceDesk, Ticket,
};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::{Config, MAX_PAGE_SIZE};
use crate::error::ConfigError;
use crate::model::{
    Addition, Agreement, BillCustomer, CatalogItem, CommunicationItem, CommunicationType, Company,
    Contact, ErrorResponse, PatchOperation, Reference, SystemInfo, Ticket as WireTicket,
};

/// A look-up run before a create, and again to reconcile one whose answer was lost.
type Lookup = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<i64>, RemoteError>> + Send + 'static>,
>;

/// The connector's kind, as pipelines name it and errors report it.
pub const VENDOR: &str = "connectwise";

/// The communication types rollcall writes: every ConnectWise site has an "Email" type; "Direct"
/// is the standard work-phone type.
const EMAIL_TYPE: &str = "Email";
const PHONE_TYPE: &str = "Direct";

/// A ConnectWise Manage site, reached with one API member's keys. Clones share the HTTP
/// client, its rate limit and call count, and the product cache.
#[derive(Clone)]
pub struct ConnectWise {
    http: HttpClient,
    base: String,
    company_id: String,
    auth: HeaderValue,
    client_id: HeaderValue,
    page_size: u32,
    /// Catalogue ids by lower-cased product identifier: products do not move while a run lasts.
    products: Arc<Mutex<HashMap<String, i64>>>,
    /// The mark on what this client makes (an integrator tag on contacts, the `description`
    /// of additions): the pipeline's, so two pipelines billing one company keep apart.
    mark: String,
}

impl std::fmt::Debug for ConnectWise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectWise")
            .field("url", &self.base)
            .field("company_id", &self.company_id)
            .field("page_size", &self.page_size)
            .field("calls", &self.http.calls())
            .finish_non_exhaustive()
    }
}

impl ConnectWise {
    /// A client for the configured site, retrying by [`RetryPolicy::default`].
    pub fn new(config: &Config) -> Result<Self, RemoteError> {
        Self::with_retry(config, RetryPolicy::default())
    }

    /// A client with its own retry policy (tests use millisecond backoffs).
    pub fn with_retry(config: &Config, retry: RetryPolicy) -> Result<Self, RemoteError> {
        let base = config.url.trim().trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base).map_err(|e| ConfigError::Url {
            url: base.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError::Url {
                url: base,
                reason: "the scheme must be https (or http for the sandbox)".to_owned(),
            }
            .into());
        }
        if !(1..=MAX_PAGE_SIZE).contains(&config.page_size) {
            return Err(ConfigError::PageSize(config.page_size).into());
        }
        let per_second = std::num::NonZeroU32::new(config.rate_limit_per_second)
            .ok_or(ConfigError::RateLimit)?;
        for (field, value) in [
            ("company_id", &config.company_id),
            ("client_id", &config.client_id),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::Empty { field }.into());
            }
        }
        let token = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}+{}:{}",
            config.company_id,
            config.public_key.expose(),
            config.private_key.expose()
        ));
        // The message must not quote the value: it carries the keys.
        let mut auth = HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| {
            RemoteError::new(
                VENDOR,
                "configure",
                RemoteErrorKind::Rejected,
                "the company id or keys contain characters that cannot be sent in a header",
            )
        })?;
        auth.set_sensitive(true);
        let client_id = HeaderValue::from_str(config.client_id.trim()).map_err(|_| {
            RemoteError::new(
                VENDOR,
                "configure",
                RemoteErrorKind::Rejected,
                "client_id contains characters that cannot be sent in a header",
            )
        })?;
        let mut settings = HttpSettings::new(VENDOR, describe_error);
        settings.limit_scope = format!("{VENDOR}:{base}:{}", config.company_id);
        settings.retry = retry;
        settings.rate_limit = Some(RateLimit::per_second(per_second));
        Ok(ConnectWise {
            http: HttpClient::new(settings)?,
            base,
            company_id: config.company_id.clone(),
            auth,
            client_id,
            page_size: config.page_size,
            products: Arc::new(Mutex::new(HashMap::new())),
            mark: crate::model::MARK.to_owned(),
        })
    }

    /// This client, marking what it makes with `mark` ([`rollcall_core::owner_mark`]).
    pub fn with_mark(self, mark: &str) -> Self {
        ConnectWise {
            mark: mark.to_owned(),
            ..self
        }
    }

    /// Requests sent so far, retries included.
    pub fn calls(&self) -> u64 {
        self.http.calls()
    }

    /// The server's version: a cheap authenticated call that checks the URL and keys.
    pub async fn system_info(&self) -> Result<SystemInfo, RemoteError> {
        let operation = "read system info";
        let reply = self
            .http
            .send(operation, || self.request(Method::GET, "system/info"))
            .await?;
        decode(operation, &reply.body)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        // No versioned Accept header: the server's current version answers, and the fields read
        // here have been stable across versions (ConnectWise makes the version pin optional).
        self.http
            .request(method, &format!("{}/{path}", self.base))
            .header(AUTHORIZATION, self.auth.clone())
            .header("clientId", self.client_id.clone())
            .header(ACCEPT, "application/json")
    }

    /// Every row of a list, page by page. ConnectWise's default page is 25 rows, so the page
    /// size is always sent; a `Link` header without `rel="next"` ends the walk, and without a
    /// `Link` header a short page does.
    async fn list<T: DeserializeOwned>(
        &self,
        operation: &str,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Vec<T>, RemoteError> {
        let mut rows = Vec::new();
        let mut page: u32 = 1;
        loop {
            let mut query: Vec<(&str, String)> = params.to_vec();
            query.push(("pageSize", self.page_size.to_string()));
            // `page` goes last, as in ConnectWise's own Link URLs.
            query.push(("page", page.to_string()));
            let reply = self
                .http
                .send(operation, || self.request(Method::GET, path).query(&query))
                .await?;
            let batch: Vec<T> = decode(operation, &reply.body)?;
            let got = batch.len();
            rows.extend(batch);
            let more = match has_next_link(&reply.headers) {
                Some(next) => next,
                None => got >= self.page_size as usize,
            };
            if !more || got == 0 {
                return Ok(rows);
            }
            page += 1;
        }
    }

    async fn patch(
        &self,
        operation: &str,
        path: &str,
        operations: &[PatchOperation],
    ) -> Result<(), RemoteError> {
        self.http
            .send(operation, || {
                self.request(Method::PATCH, path).json(operations)
            })
            .await?;
        Ok(())
    }

    async fn find_company(&self, identifier: &str) -> Result<Company, RemoteError> {
        let companies: Vec<Company> = self
            .list(
                "find company",
                "company/companies",
                &[("conditions", format!("identifier={}", quoted(identifier)))],
            )
            .await?;
        companies
            .into_iter()
            .find(|c| c.identifier.eq_ignore_ascii_case(identifier))
            .ok_or_else(|| {
                RemoteError::new(
                    VENDOR,
                    "find company",
                    RemoteErrorKind::NotFound,
                    format!("no company with identifier {identifier:?} exists in ConnectWise"),
                )
            })
    }

    async fn find_agreement(
        &self,
        company: &Company,
        name: &str,
    ) -> Result<Agreement, RemoteError> {
        let operation = "find agreement";
        let agreements: Vec<Agreement> = self
            .list(
                operation,
                "finance/agreements",
                &[(
                    "conditions",
                    format!("company/id={} and name={}", company.id, quoted(name)),
                )],
            )
            .await?;
        let named: Vec<Agreement> = agreements
            .into_iter()
            .filter(|a| a.name.eq_ignore_ascii_case(name))
            .collect();
        let total = named.len();
        let mut open: Vec<Agreement> = named.into_iter().filter(|a| !a.cancelled_flag).collect();
        let company = &company.identifier;
        match open.len() {
            1 => Ok(open.remove(0)),
            0 if total > 0 => Err(RemoteError::new(
                VENDOR,
                operation,
                RemoteErrorKind::NotFound,
                format!("the agreement {name:?} of company {company:?} is cancelled"),
            )),
            0 => Err(RemoteError::new(
                VENDOR,
                operation,
                RemoteErrorKind::NotFound,
                format!("company {company:?} has no agreement named {name:?}"),
            )),
            n => {
                let ids: Vec<String> = open.iter().map(|a| a.id.to_string()).collect();
                Err(RemoteError::new(
                    VENDOR,
                    operation,
                    RemoteErrorKind::Rejected,
                    format!(
                        "company {company:?} has {n} open agreements named {name:?} (ids {}); \
                         rename all but one so rollcall knows which carries the seats",
                        ids.join(", ")
                    ),
                ))
            }
        }
    }

    async fn contacts_of(
        &self,
        operation: &str,
        conditions: String,
    ) -> Result<Vec<Contact>, RemoteError> {
        self.list(
            operation,
            "company/contacts",
            &[("conditions", conditions), ("orderBy", "id asc".to_owned())],
        )
        .await
    }

    async fn additions_of(
        &self,
        operation: &str,
        agreement_id: i64,
        conditions: String,
    ) -> Result<Vec<Addition>, RemoteError> {
        self.list(
            operation,
            &format!("finance/agreements/{agreement_id}/additions"),
            &[("conditions", conditions), ("orderBy", "id asc".to_owned())],
        )
        .await
    }

    /// The active contact in `company_id` with `key`, made by an earlier attempt or run.
    /// Inactive contacts are not adopted: a create means the person must be active.
    async fn find_contact(
        &self,
        company_id: i64,
        key: &ContactKey,
        fields: &ContactFields,
    ) -> Result<Option<i64>, RemoteError> {
        // Narrowed by name on the server: the object a create makes carries these names.
        let mut conditions = format!(
            "company/id={company_id} and inactiveFlag=false and firstName={}",
            quoted(fields.first_name.trim())
        );
        if !fields.last_name.trim().is_empty() {
            conditions.push_str(&format!(
                " and lastName={}",
                quoted(fields.last_name.trim())
            ));
        }
        let contacts = self.contacts_of("look for contact", conditions).await?;
        Ok(contacts
            .into_iter()
            .find(|c| !c.inactive_flag && contact_fields(c).key() == *key)
            .map(|c| c.id))
    }

    /// The open addition for `product` on the agreement, made by an earlier attempt or run.
    async fn find_addition(
        &self,
        agreement_id: i64,
        product: &str,
    ) -> Result<Option<i64>, RemoteError> {
        let additions = self
            .additions_of(
                "look for addition",
                agreement_id,
                format!(
                    "cancelledDate=null and product/identifier={}",
                    quoted(product)
                ),
            )
            .await?;
        Ok(additions
            .into_iter()
            .find(|a| product_identifier(a).is_some_and(|p| p.eq_ignore_ascii_case(product)))
            .map(|a| a.id))
    }

    /// The catalogue id of a product identifier, read once per client.
    async fn catalog_id(&self, product: &str) -> Result<i64, RemoteError> {
        let key = product.to_lowercase();
        if let Some(id) = self.cached_product(&key) {
            return Ok(id);
        }
        let items: Vec<CatalogItem> = self
            .list(
                "find product",
                "procurement/catalog",
                &[("conditions", format!("identifier={}", quoted(product)))],
            )
            .await?;
        let item = items
            .into_iter()
            .find(|i| i.identifier.eq_ignore_ascii_case(product))
            .ok_or_else(|| {
                RemoteError::new(
                    VENDOR,
                    "find product",
                    RemoteErrorKind::NotFound,
                    format!(
                        "product {product:?} is not in the ConnectWise catalog \
                         (Procurement > Product Catalog)"
                    ),
                )
            })?;
        self.products
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, item.id);
        Ok(item.id)
    }

    fn cached_product(&self, key: &str) -> Option<i64> {
        self.products
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .copied()
    }

    async fn create_contact(
        &self,
        account: &AccountRef,
        key: &ContactKey,
        after: &ContactFields,
    ) -> Result<Applied, RemoteError> {
        let company_id = numeric_id("company", &account.company_id)?;
        let operation = format!("create contact in company {company_id}");
        // The look-up owns what it reads (cloning the client is cheap):
        // `apply`'s future must be `Send`, and rustc cannot prove that for a look-up future
        // that borrows, once it passes through `send_create`'s `AsyncFn` bound.
        let find = {
            let (this, key, after) = (self.clone(), key.clone(), after.clone());
            move || -> Lookup {
                let (this, key, after) = (this.clone(), key.clone(), after.clone());
                Box::pin(async move { this.find_contact(company_id, &key, &after).await })
            }
        };
        if let Some(id) = find().await? {
            return Ok(adopted(id));
        }
        let body = new_contact(company_id, after, &self.mark);
        let created = self
            .http
            .send_create(
                &operation,
                || self.request(Method::POST, "company/contacts").json(&body),
                find,
            )
            .await?;
        match created {
            Created::Sent(reply) => {
                let contact: Contact = decode(&operation, &reply.body)?;
                Ok(written(contact.id))
            }
            Created::Found(id) => Ok(adopted(id)),
        }
    }

    async fn update_contact(
        &self,
        id: &str,
        before: &ContactFields,
        after: &ContactFields,
        reactivate: bool,
    ) -> Result<Applied, RemoteError> {
        let contact_id = numeric_id("contact", id)?;
        let operation = format!("update contact {contact_id}");
        let path = format!("company/contacts/{contact_id}");
        let mut operations = Vec::new();
        if reactivate {
            operations.push(PatchOperation::replace("inactiveFlag", Value::Bool(false)));
        }
        if before.first_name != after.first_name {
            operations.push(PatchOperation::replace(
                "firstName",
                Value::from(after.first_name.trim()),
            ));
        }
        if before.last_name != after.last_name {
            let last = Some(after.last_name.trim()).filter(|l| !l.is_empty());
            operations.push(PatchOperation::replace("lastName", Value::from(last)));
        }
        if before.title != after.title {
            operations.push(PatchOperation::replace(
                "title",
                Value::from(after.title.clone()),
            ));
        }
        if before.email != after.email || before.phone != after.phone {
            // communicationItems is replaced as a whole, so start from what the contact has now:
            // fax numbers and other phones rollcall does not manage must survive.
            let reply = self
                .http
                .send(&operation, || self.request(Method::GET, &path))
                .await?;
            let current: Contact = decode(&operation, &reply.body)?;
            let mut items = current.communication_items;
            if before.email != after.email {
                set_item(
                    &mut items,
                    CommunicationType::Email,
                    EMAIL_TYPE,
                    after.email.as_deref(),
                );
            }
            if before.phone != after.phone {
                set_item(
                    &mut items,
                    CommunicationType::Phone,
                    PHONE_TYPE,
                    after.phone.as_deref(),
                );
            }
            let items = serde_json::to_value(&items).map_err(|e| {
                RemoteError::new(VENDOR, &operation, RemoteErrorKind::Decode, e.to_string())
            })?;
            operations.push(PatchOperation::replace("communicationItems", items));
        }
        if !operations.is_empty() {
            self.patch(&operation, &path, &operations).await?;
        }
        Ok(written(contact_id))
    }

    async fn deactivate_contact(&self, id: &str) -> Result<Applied, RemoteError> {
        let contact_id = numeric_id("contact", id)?;
        self.patch(
            &format!("deactivate contact {contact_id}"),
            &format!("company/contacts/{contact_id}"),
            &[PatchOperation::replace("inactiveFlag", Value::Bool(true))],
        )
        .await?;
        Ok(written(contact_id))
    }

    async fn create_addition(
        &self,
        account: &AccountRef,
        product: &str,
        after: &AdditionFields,
    ) -> Result<Applied, RemoteError> {
        let agreement_id = agreement_of(account, "create addition")?;
        let product_id = self.catalog_id(product).await?;
        let operation = format!("create addition {product} on agreement {agreement_id}");
        let find = {
            let (this, product) = (self.clone(), product.to_owned());
            move || -> Lookup {
                let (this, product) = (this.clone(), product.clone());
                Box::pin(async move { this.find_addition(agreement_id, &product).await })
            }
        };
        if let Some(id) = find().await? {
            return Ok(adopted(id));
        }
        let body = Addition {
            product: Some(Reference::id(product_id)),
            quantity: Some(Decimal::from(after.quantity)),
            unit_price: Some(after.unit_price),
            bill_customer: Some(BillCustomer::Billable),
            effective_date: Some(today()),
            invoice_description: Some(after.invoice_description.clone()),
            description: Some(self.mark.clone()),
            ..Addition::default()
        };
        let path = format!("finance/agreements/{agreement_id}/additions");
        let created = self
            .http
            .send_create(
                &operation,
                || self.request(Method::POST, &path).json(&body),
                find,
            )
            .await?;
        match created {
            Created::Sent(reply) => {
                let addition: Addition = decode(&operation, &reply.body)?;
                Ok(written(addition.id))
            }
            Created::Found(id) => Ok(adopted(id)),
        }
    }

    async fn update_addition(
        &self,
        account: &AccountRef,
        id: &str,
        before: &AdditionFields,
        after: &AdditionFields,
    ) -> Result<Applied, RemoteError> {
        let addition_id = numeric_id("addition", id)?;
        let operation = format!("update addition {addition_id}");
        let agreement_id = agreement_of(account, &operation)?;
        let mut operations = Vec::new();
        if before.quantity != after.quantity {
            operations.push(PatchOperation::replace(
                "quantity",
                Value::from(after.quantity),
            ));
        }
        if before.unit_price != after.unit_price {
            operations.push(PatchOperation::replace(
                "unitPrice",
                decimal_value(after.unit_price),
            ));
        }
        if before.invoice_description != after.invoice_description {
            operations.push(PatchOperation::replace(
                "invoiceDescription",
                Value::from(after.invoice_description.clone()),
            ));
        }
        if !operations.is_empty() {
            self.patch(
                &operation,
                &format!("finance/agreements/{agreement_id}/additions/{addition_id}"),
                &operations,
            )
            .await?;
        }
        Ok(written(addition_id))
    }

    async fn cancel_addition(
        &self,
        account: &AccountRef,
        id: &str,
    ) -> Result<Applied, RemoteError> {
        let addition_id = numeric_id("addition", id)?;
        let operation = format!("cancel addition {addition_id}");
        let agreement_id = agreement_of(account, &operation)?;
        self.patch(
            &operation,
            &format!("finance/agreements/{agreement_id}/additions/{addition_id}"),
            &[PatchOperation::replace(
                "cancelledDate",
                Value::from(today()),
            )],
        )
        .await?;
        Ok(written(addition_id))
    }
}

/// ConnectWise is a PSA: its service desk holds the tickets of each client's company.
#[async_trait]
impl ServiceDesk for ConnectWise {
    async fn tickets(&self, account: &AccountRef) -> Result<Vec<Ticket>, RemoteError> {
        let company_id = numeric_id("company", &account.company_id)?;
        let rows: Vec<WireTicket> = self
            .list(
                "list tickets",
                "service/tickets",
                &[("conditions", format!("company/id={company_id}"))],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|t| Ticket {
                id: t.id.to_string(),
                summary: t.summary,
                contact_id: t.contact.map(|c| c.id.to_string()),
                opened: t.info.and_then(|i| i.get("dateEntered").cloned()),
                closed: t.closed_date,
            })
            .collect())
    }

    /// The ticket's summary ends with its reference, so a create whose answer was lost is
    /// found again by it before it is sent again.
    async fn open_ticket(
        &self,
        account: &AccountRef,
        ticket: &NewTicket,
    ) -> Result<String, RemoteError> {
        let company_id = numeric_id("company", &account.company_id)?;
        let operation = format!("open ticket in company {company_id}");
        let summary = ticket_summary(&ticket.summary, &ticket.reference);
        let find = {
            let (this, summary) = (self.clone(), summary.clone());
            move || -> Lookup {
                let (this, summary) = (this.clone(), summary.clone());
                Box::pin(async move { this.find_ticket(company_id, &summary).await })
            }
        };
        if let Some(id) = find().await? {
            return Ok(id.to_string());
        }
        let body = WireTicket {
            id: 0,
            summary,
            company: Some(Reference::id(company_id)),
            contact: None,
            status: None,
            closed_date: None,
            board: Some(Reference::named(ticket.board.trim())),
            initial_description: Some(ticket.description.clone()),
            info: None,
        };
        let created = self
            .http
            .send_create(
                &operation,
                || self.request(Method::POST, "service/tickets").json(&body),
                find,
            )
            .await?;
        match created {
            Created::Sent(reply) => {
                let made: WireTicket = decode(&operation, &reply.body)?;
                Ok(made.id.to_string())
            }
            Created::Found(id) => Ok(id.to_string()),
        }
    }
}

/// A ticket summary ConnectWise stores whole: the text shortened to leave room for
/// ` [reference]` at the end.
fn ticket_summary(text: &str, reference: &str) -> String {
    let tag = format!(" [{reference}]");
    let room = crate::model::TICKET_SUMMARY_MAX.saturating_sub(tag.chars().count());
    let text = text.trim();
    let short: String = if text.chars().count() > room {
        let mut s: String = text.chars().take(room.saturating_sub(1)).collect();
        s.push('…');
        s
    } else {
        text.to_owned()
    };
    format!("{short}{tag}")
}

impl ConnectWise {
    async fn find_ticket(
        &self,
        company_id: i64,
        summary: &str,
    ) -> Result<Option<i64>, RemoteError> {
        let rows: Vec<WireTicket> = self
            .list(
                "find ticket",
                "service/tickets",
                &[(
                    "conditions",
                    format!("company/id={company_id} and summary={}", quoted(summary)),
                )],
            )
            .await?;
        Ok(rows
            .into_iter()
            .find(|t| t.summary == summary)
            .map(|t| t.id))
    }
}

#[async_trait]
impl BillingSystem for ConnectWise {
    fn kind(&self) -> &'static str {
        VENDOR
    }

    #[tracing::instrument(skip_all, fields(vendor = VENDOR, company = %account.company))]
    async fn read(
        &self,
        account: &BillingAccount,
        products: &[String],
    ) -> Result<ClientState, RemoteError> {
        let company = self.find_company(&account.company).await?;
        let agreement = match &account.agreement {
            Some(name) => Some(self.find_agreement(&company, name).await?),
            None => None,
        };
        let contacts = self
            .contacts_of("list contacts", format!("company/id={}", company.id))
            .await?
            .iter()
            .map(|c| ActualContact {
                id: c.id.to_string(),
                fields: contact_fields(c),
                active: !c.inactive_flag,
                marked: c.integrator_tags.contains(&self.mark),
            })
            .collect();
        let mut additions = Vec::new();
        if let Some(agreement) = agreement.as_ref().filter(|_| !products.is_empty()) {
            let open = self
                .additions_of(
                    "list additions",
                    agreement.id,
                    "cancelledDate=null".to_owned(),
                )
                .await?;
            for addition in &open {
                // Report the product as the pipeline spells it: identifiers ignore case.
                let Some(product) = product_identifier(addition)
                    .and_then(|p| products.iter().find(|want| want.eq_ignore_ascii_case(p)))
                else {
                    continue;
                };
                additions.push(actual_addition(addition, product, &self.mark)?);
            }
        }
        Ok(ClientState {
            account: AccountRef {
                company_id: company.id.to_string(),
                agreement_id: agreement.map(|a| a.id.to_string()),
            },
            invoice: None,
            contacts,
            additions,
        })
    }

    fn field_limits(&self) -> rollcall_core::FieldLimits {
        crate::model::LIMITS
    }

    fn service_desk(&self) -> Option<&dyn ServiceDesk> {
        Some(self)
    }

    #[tracing::instrument(skip_all, fields(vendor = VENDOR, change = change.kind()))]
    async fn apply(&self, account: &AccountRef, change: &Change) -> Result<Applied, RemoteError> {
        match change {
            Change::CreateContact { key, after } => self.create_contact(account, key, after).await,
            Change::UpdateContact {
                id, before, after, ..
            } => self.update_contact(id, before, after, false).await,
            Change::ReactivateContact {
                id, before, after, ..
            } => self.update_contact(id, before, after, true).await,
            Change::DeactivateContact { id, .. } => self.deactivate_contact(id).await,
            Change::CreateAddition { product, after } => {
                self.create_addition(account, product, after).await
            }
            Change::UpdateAddition {
                id, before, after, ..
            } => self.update_addition(account, id, before, after).await,
            Change::CancelAddition { id, .. } => self.cancel_addition(account, id).await,
            // The planner makes these only for invoice-model systems.
            Change::CreateCustomer { .. }
            | Change::CreateInvoice { .. }
            | Change::UpdateInvoice { .. } => Err(RemoteError::new(
                VENDOR,
                change.kind(),
                RemoteErrorKind::Rejected,
                "ConnectWise bills through agreements; invoices are its own to raise",
            )),
        }
    }
}

/// Turns a ConnectWise error body (`{code, message, errors[{code, message, resource, field}]}`)
/// into one line that names the refused fields.
pub fn describe_error(status: StatusCode, body: &[u8]) -> String {
    if let Ok(error) = serde_json::from_slice::<ErrorResponse>(body)
        && !(error.message.is_empty() && error.code.is_empty() && error.errors.is_empty())
    {
        let mut text = error.message.trim().to_owned();
        if !error.code.is_empty() {
            if text.is_empty() {
                text = error.code;
            } else {
                text.push_str(&format!(" ({})", error.code));
            }
        }
        for field in &error.errors {
            let name = if field.field.is_empty() {
                &field.resource
            } else {
                &field.field
            };
            text.push_str(&format!("; {name}: {}", field.message.trim()));
        }
        return text;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("no details given")
            .to_owned();
    }
    // An HTML error page or a proxy's text: keep enough to recognise it.
    let mut short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

fn decode<T: DeserializeOwned>(operation: &str, body: &[u8]) -> Result<T, RemoteError> {
    serde_json::from_slice(body).map_err(|e| {
        RemoteError::new(
            VENDOR,
            operation,
            RemoteErrorKind::Decode,
            format!("unexpected answer: {e}"),
        )
    })
}

/// `Some(true)` when a `Link` header offers a next page, `Some(false)` when it offers none, and
/// `None` when there is no `Link` header to go by.
fn has_next_link(headers: &HeaderMap) -> Option<bool> {
    let values: Vec<String> = headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.to_ascii_lowercase())
        .collect();
    if values.is_empty() {
        return None;
    }
    Some(
        values
            .iter()
            .any(|v| v.contains("rel=\"next\"") || v.contains("rel=next")),
    )
}

/// A string literal of ConnectWise's condition language.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn numeric_id(what: &str, id: &str) -> Result<i64, RemoteError> {
    id.trim().parse().map_err(|_| {
        RemoteError::new(
            VENDOR,
            format!("parse {what} id"),
            RemoteErrorKind::Rejected,
            format!("{what} id {id:?} is not a ConnectWise id (a whole number)"),
        )
    })
}

fn agreement_of(account: &AccountRef, operation: &str) -> Result<i64, RemoteError> {
    let Some(id) = account.agreement_id.as_deref() else {
        return Err(RemoteError::new(
            VENDOR,
            operation,
            RemoteErrorKind::Rejected,
            format!(
                "company {} has no agreement configured, and ConnectWise bills seats as \
                 additions on an agreement: name one in the client's billing account",
                account.company_id
            ),
        ));
    };
    numeric_id("agreement", id)
}

fn written(id: i64) -> Applied {
    Applied {
        remote_id: id.to_string(),
        reconciled: false,
    }
}

fn adopted(id: i64) -> Applied {
    Applied {
        remote_id: id.to_string(),
        reconciled: true,
    }
}

/// Midnight UTC today, as ConnectWise writes dates.
fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%dT00:00:00Z").to_string()
}

/// A decimal as an exact JSON number.
fn decimal_value(amount: Decimal) -> Value {
    serde_json::from_str(&amount.to_string()).unwrap_or_else(|_| Value::String(amount.to_string()))
}

fn category(item: &CommunicationItem) -> Option<CommunicationType> {
    item.communication_type.or_else(|| {
        item.kind
            .as_ref()
            .and_then(|t| t.name.as_deref())
            .filter(|n| n.eq_ignore_ascii_case(EMAIL_TYPE))
            .map(|_| CommunicationType::Email)
    })
}

/// The contact's default item of a category (else its first), as ConnectWise shows it.
fn pick(items: &[CommunicationItem], wanted: CommunicationType) -> Option<String> {
    let of_kind = || {
        items.iter().filter(move |i| {
            category(i) == Some(wanted) && i.value.as_deref().is_some_and(|v| !v.trim().is_empty())
        })
    };
    of_kind()
        .find(|i| i.default_flag)
        .or_else(|| of_kind().next())
        .and_then(|i| i.value.as_deref())
        .map(|v| v.trim().to_owned())
}

/// Sets (or, with `None`, removes) the default item of a category, leaving the others alone.
fn set_item(
    items: &mut Vec<CommunicationItem>,
    wanted: CommunicationType,
    type_name: &str,
    value: Option<&str>,
) {
    let index = items
        .iter()
        .position(|i| category(i) == Some(wanted) && i.default_flag)
        .or_else(|| items.iter().position(|i| category(i) == Some(wanted)));
    match (index, value.map(str::trim).filter(|v| !v.is_empty())) {
        (Some(i), Some(value)) => items[i].value = Some(value.to_owned()),
        (Some(i), None) => {
            items.remove(i);
        }
        (None, Some(value)) => items.push(new_item(wanted, type_name, value)),
        (None, None) => {}
    }
}

fn new_item(category: CommunicationType, type_name: &str, value: &str) -> CommunicationItem {
    CommunicationItem {
        kind: Some(Reference::named(type_name)),
        value: Some(value.to_owned()),
        default_flag: true,
        communication_type: Some(category),
        ..CommunicationItem::default()
    }
}

fn new_contact(company_id: i64, fields: &ContactFields, mark: &str) -> Contact {
    let mut items = Vec::new();
    set_item(
        &mut items,
        CommunicationType::Email,
        EMAIL_TYPE,
        fields.email.as_deref(),
    );
    set_item(
        &mut items,
        CommunicationType::Phone,
        PHONE_TYPE,
        fields.phone.as_deref(),
    );
    Contact {
        first_name: fields.first_name.trim().to_owned(),
        last_name: Some(fields.last_name.trim().to_owned()).filter(|l| !l.is_empty()),
        company: Some(Reference::id(company_id)),
        title: fields.title.clone().filter(|t| !t.trim().is_empty()),
        communication_items: items,
        integrator_tags: vec![mark.to_owned()],
        ..Contact::default()
    }
}

fn contact_fields(contact: &Contact) -> ContactFields {
    ContactFields {
        first_name: contact.first_name.clone(),
        last_name: contact.last_name.clone().unwrap_or_default(),
        email: pick(&contact.communication_items, CommunicationType::Email),
        title: contact.title.clone().filter(|t| !t.trim().is_empty()),
        phone: pick(&contact.communication_items, CommunicationType::Phone),
    }
}

fn product_identifier(addition: &Addition) -> Option<&str> {
    addition.product.as_ref()?.identifier.as_deref()
}

fn actual_addition(
    addition: &Addition,
    product: &str,
    mark: &str,
) -> Result<ActualAddition, RemoteError> {
    let quantity = addition.quantity.unwrap_or(Decimal::ZERO);
    let seats = Some(quantity)
        .filter(|q| q.fract().is_zero())
        .and_then(|q| q.to_u32())
        .ok_or_else(|| {
            RemoteError::new(
                VENDOR,
                "list additions",
                RemoteErrorKind::Decode,
                format!(
                    "addition {} ({product}) has quantity {quantity}, which is not a whole \
                     number of seats; correct it in ConnectWise",
                    addition.id
                ),
            )
        })?;
    Ok(ActualAddition {
        id: addition.id.to_string(),
        product: product.to_owned(),
        fields: AdditionFields {
            quantity: seats,
            unit_price: addition.unit_price.unwrap_or(Decimal::ZERO),
            invoice_description: addition.invoice_description.clone().unwrap_or_default(),
        },
        marked: addition.description.as_deref() == Some(mark),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: CommunicationType, value: &str, default_flag: bool) -> CommunicationItem {
        CommunicationItem {
            value: Some(value.to_owned()),
            default_flag,
            communication_type: Some(kind),
            ..CommunicationItem::default()
        }
    }

    #[test]
    fn describe_error_names_the_refused_fields() {
        let body = br#"{"code":"InvalidObject","message":"addition object is invalid",
            "errors":[{"code":"NullValue","message":"billCustomer is required","resource":"addition","field":"billCustomer"}]}"#;
        assert_eq!(
            describe_error(StatusCode::BAD_REQUEST, body),
            "addition object is invalid (InvalidObject); billCustomer: billCustomer is required"
        );
        assert_eq!(describe_error(StatusCode::BAD_GATEWAY, b""), "Bad Gateway");
        assert_eq!(
            describe_error(StatusCode::BAD_GATEWAY, b"<html>proxy</html>"),
            "<html>proxy</html>"
        );
    }

    #[test]
    fn the_default_item_of_each_category_is_read() {
        let items = vec![
            item(CommunicationType::Phone, "555-0100", false),
            item(CommunicationType::Email, "old@acme.test", false),
            item(CommunicationType::Email, "ann@acme.test", true),
            item(CommunicationType::Fax, "555-0199", true),
        ];
        assert_eq!(
            pick(&items, CommunicationType::Email).as_deref(),
            Some("ann@acme.test")
        );
        assert_eq!(
            pick(&items, CommunicationType::Phone).as_deref(),
            Some("555-0100")
        );
    }

    #[test]
    fn set_item_changes_only_the_managed_item() {
        let mut items = vec![
            item(CommunicationType::Fax, "555-0199", true),
            item(CommunicationType::Email, "ann@acme.test", true),
        ];
        set_item(
            &mut items,
            CommunicationType::Email,
            EMAIL_TYPE,
            Some("ann.lee@acme.test"),
        );
        set_item(
            &mut items,
            CommunicationType::Phone,
            PHONE_TYPE,
            Some("555-0123"),
        );
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].value.as_deref(), Some("555-0199"));
        assert_eq!(items[1].value.as_deref(), Some("ann.lee@acme.test"));
        assert_eq!(items[2].kind, Some(Reference::named(PHONE_TYPE)));
        set_item(&mut items, CommunicationType::Email, EMAIL_TYPE, None);
        assert_eq!(items.len(), 2);
        assert!(pick(&items, CommunicationType::Email).is_none());
    }

    #[test]
    fn next_links_decide_paging_when_present() {
        let mut headers = HeaderMap::new();
        assert_eq!(has_next_link(&headers), None);
        headers.insert(
            reqwest::header::LINK,
            HeaderValue::from_static("<http://x/a?page=1>; rel=\"first\""),
        );
        assert_eq!(has_next_link(&headers), Some(false));
        headers.insert(
            reqwest::header::LINK,
            HeaderValue::from_static(
                "<http://x/a?pageSize=2&page=3>; rel=\"next\", <http://x/a?page=9>; rel=\"last\"",
            ),
        );
        assert_eq!(has_next_link(&headers), Some(true));
    }

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quoted(r#"O"Brien\Co"#), r#""O\"Brien\\Co""#);
    }

    #[test]
    fn fractional_quantities_are_refused_naming_the_addition() {
        let addition = Addition {
            id: 41,
            quantity: Some(Decimal::new(25, 1)),
            ..Addition::default()
        };
        let err = actual_addition(&addition, "M365-BP", crate::model::MARK).expect_err("2.5 seats");
        assert_eq!(err.kind, RemoteErrorKind::Decode);
        assert!(
            err.message.contains("addition 41 (M365-BP)") && err.message.contains("2.5"),
            "{err}"
        );
    }
}
