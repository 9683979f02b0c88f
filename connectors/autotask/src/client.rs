//! Autotask as a [`BillingSystem`]: reads a client's contacts and the units of its recurring
//! services, and writes one change at a time.
//!
//! Everything about retrying lives in [`rollcall_core::http`]. This module finds the API user's
//! zone, builds Autotask's requests (three credential headers, JSON filter queries, every page by
//! `nextPageUrl`) and converts between Autotask's entities ([`crate::model`]) and the engine's.
//!
//! Seats are the units of a service on the company's recurring service contract. Autotask never
//! lets units be set: they change only through an adjustment (`unitChange` from an effective
//! date), which can be neither read back nor undone. So every unit change is computed at apply
//! time from the units Autotask holds *now*, never from the plan's `before`: a retried, crashed
//! or replayed change finds the units already at the target and sends nothing, and an answer
//! lost after Autotask committed is reconciled by reading the units again before resending.
//! Autotask has no idempotency key for creates either, so a contact or contract service is
//! looked for before it is made, and looked for again before a create is resent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use rollcall_core::http::{Created, HttpClient, HttpSettings, RateLimit, RetryPolicy};
use rollcall_core::{
    AccountRef, ActualAddition, ActualContact, AdditionFields, Applied, BillingAccount,
    BillingSystem, Change, ClientState, ContactFields, ContactKey, RemoteError, RemoteErrorKind,
};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::config::{Config, HOURLY_THRESHOLD, MAX_PAGE_SIZE};
use crate::error::{ConfigError, REFUSAL_HINT, business_rule, classify_error};
use crate::model::{
    Company, Contact, Contract, ContractService, ContractServiceAdjustment, ContractServiceUnit,
    ErrorBody, Filter, ItemId, Query, QueryPage, RECURRING_SERVICE, Service, ZoneInformation, day,
};

/// A look-up run before a create, and again to reconcile one whose answer was lost.
type Lookup<T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<T>, RemoteError>> + Send + 'static>,
>;

/// Clients' states read ahead, by account (company, contract), with the products they were
/// read for.
type ReadAhead = HashMap<(String, Option<String>), (Vec<String>, ClientState)>;

/// The connector's kind, as pipelines name it and errors report it.
pub const VENDOR: &str = "autotask";

/// Autotask's thread limit: three requests at once per tracking identifier and entity.
const MAX_CONCURRENT: usize = 3;

/// An Autotask database, reached as one API user. Clones share the HTTP client, its rate
/// limit and call count, the zone and the service catalogue.
#[derive(Clone)]
pub struct Autotask {
    http: HttpClient,
    zone_lookup: String,
    username: String,
    headers: HeaderMap,
    page_size: u32,
    /// The zone's API root (`…/ATServicesRest/V1.0`), found once.
    zone: Arc<OnceCell<String>>,
    /// Services by lower-cased name: the catalogue does not move while a run lasts.
    services: Arc<Mutex<HashMap<String, Service>>>,
    /// Clients' states read ahead by `prepare`, each answering one `read`.
    prefetched: Arc<Mutex<ReadAhead>>,
    /// The mark on what this client makes (a contact's `externalID`, a contract service's
    /// `internalDescription`): the pipeline's, so two pipelines billing one company keep apart.
    mark: String,
}

impl std::fmt::Debug for Autotask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autotask")
            .field("zone_lookup_url", &self.zone_lookup)
            .field("username", &self.username)
            .field("page_size", &self.page_size)
            .field("calls", &self.http.calls())
            .finish_non_exhaustive()
    }
}

fn header(name: &'static str, value: &str, what: &str) -> Result<HeaderValue, RemoteError> {
    // The message must not quote the value: it may be a secret.
    let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
        RemoteError::new(
            VENDOR,
            "configure",
            RemoteErrorKind::Rejected,
            format!("{what} contains characters that cannot be sent in the {name} header"),
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl Autotask {
    /// A client for the configured API user, retrying by [`RetryPolicy::default`].
    pub fn new(config: &Config) -> Result<Self, RemoteError> {
        Self::with_retry(config, RetryPolicy::default())
    }

    /// A client with its own retry policy (tests use millisecond backoffs).
    pub fn with_retry(config: &Config, retry: RetryPolicy) -> Result<Self, RemoteError> {
        let zone_lookup = config
            .zone_lookup_url
            .trim()
            .trim_end_matches('/')
            .to_owned();
        check_url("zone_lookup_url", &zone_lookup)?;
        if !(1..=MAX_PAGE_SIZE).contains(&config.page_size) {
            return Err(ConfigError::PageSize(config.page_size).into());
        }
        let per_hour = std::num::NonZeroU32::new(config.rate_limit_per_hour)
            .filter(|n| n.get() <= HOURLY_THRESHOLD)
            .ok_or(ConfigError::RateLimit(config.rate_limit_per_hour))?;
        if config.username.trim().is_empty() {
            return Err(ConfigError::Empty { field: "username" }.into());
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("apiintegrationcode"),
            header(
                "ApiIntegrationCode",
                config.integration_code.expose(),
                "integration_code",
            )?,
        );
        headers.insert(
            HeaderName::from_static("username"),
            header("UserName", &config.username, "username")?,
        );
        headers.insert(
            HeaderName::from_static("secret"),
            header("Secret", config.secret.expose(), "secret")?,
        );
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let mut settings = HttpSettings::new(VENDOR, describe_error);
        settings.classify_error = classify_error;
        // The threshold is the database's; the user name stands for it.
        settings.limit_scope = format!("{VENDOR}:{}", config.username.trim().to_lowercase());
        settings.retry = retry;
        // A tenth of the hour's budget may go at once, so a run starts without waiting; the
        // rest comes evenly, and never more than the hour's in an hour.
        let burst = std::num::NonZeroU32::new((per_hour.get() / 10).max(1)).unwrap_or(per_hour);
        settings.rate_limit = Some(RateLimit {
            requests: per_hour,
            per: std::time::Duration::from_secs(3600),
            burst,
        });
        settings.max_concurrent = Some(MAX_CONCURRENT);
        Ok(Autotask {
            http: HttpClient::new(settings)?,
            zone_lookup,
            username: config.username.trim().to_owned(),
            headers,
            page_size: config.page_size,
            zone: Arc::new(OnceCell::new()),
            services: Arc::new(Mutex::new(HashMap::new())),
            prefetched: Arc::new(Mutex::new(HashMap::new())),
            mark: crate::model::MARK.to_owned(),
        })
    }

    /// This client, marking what it makes with `mark` ([`rollcall_core::owner_mark`]).
    pub fn with_mark(self, mark: &str) -> Self {
        Autotask {
            mark: mark.to_owned(),
            ..self
        }
    }

    /// Requests sent so far, retries included.
    pub fn calls(&self) -> u64 {
        self.http.calls()
    }

    /// The zone's API root, asked of the zone lookup once per client (and its clones).
    pub async fn zone(&self) -> Result<String, RemoteError> {
        self.zone
            .get_or_try_init(|| async {
                let operation = "find the API user's zone";
                let url = format!("{}/zoneInformation", self.zone_lookup);
                let reply = self
                    .http
                    .send(operation, || {
                        self.http
                            .request(Method::GET, &url)
                            .query(&[("user", self.username.as_str())])
                            .header(ACCEPT, "application/json")
                    })
                    .await?;
                let zone: ZoneInformation = decode(operation, &reply.body)?;
                let root = format!("{}/V1.0", zone.url.trim().trim_end_matches('/'));
                check_url("the zone's url", &root).map_err(|e| {
                    RemoteError::new(VENDOR, operation, RemoteErrorKind::Decode, e.to_string())
                })?;
                Ok(root)
            })
            .await
            .cloned()
    }

    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url).headers(self.headers.clone())
    }

    /// Every record matching `filter`, page by page: the first page by `POST {entity}/query`,
    /// each next one by the `nextPageUrl` the previous answered, until it answers none.
    async fn query<T: DeserializeOwned>(
        &self,
        operation: &str,
        entity: &str,
        filter: Vec<Filter>,
    ) -> Result<Vec<T>, RemoteError> {
        let root = self.zone().await?;
        let body = Query {
            filter,
            max_records: Some(self.page_size),
        };
        let first = format!("{root}/{entity}/query");
        let reply = self
            .http
            .send(operation, || self.request(Method::POST, &first).json(&body))
            .await?;
        let mut page: QueryPage<T> = decode(operation, &reply.body)?;
        let mut rows = Vec::new();
        loop {
            rows.append(&mut page.items);
            let Some(next) = page.page_details.next_page_url.take() else {
                return Ok(rows);
            };
            // The credentials go with the request: never to anywhere but the zone.
            if !next
                .to_ascii_lowercase()
                .starts_with(&format!("{}/", root.to_ascii_lowercase()))
            {
                return Err(RemoteError::new(
                    VENDOR,
                    operation,
                    RemoteErrorKind::Decode,
                    format!("the next page is outside the zone's API ({next}); not followed"),
                ));
            }
            let reply = self
                .http
                .send(operation, || self.request(Method::GET, &next))
                .await?;
            page = decode(operation, &reply.body)?;
        }
    }

    async fn patch(&self, operation: &str, path: &str, body: Value) -> Result<(), RemoteError> {
        let url = format!("{}/{path}", self.zone().await?);
        self.http
            .send(operation, || self.request(Method::PATCH, &url).json(&body))
            .await?;
        Ok(())
    }

    /// A create with no idempotency key: `find` is asked first, and again before any resend.
    async fn create<T>(
        &self,
        operation: &str,
        path: &str,
        body: Value,
        find: impl AsyncFn() -> Result<Option<T>, RemoteError>,
    ) -> Result<Created<T>, RemoteError> {
        let url = format!("{}/{path}", self.zone().await?);
        self.http
            .send_create(
                operation,
                || self.request(Method::POST, &url).json(&body),
                find,
            )
            .await
    }

    async fn find_company(&self, company: &str) -> Result<Company, RemoteError> {
        let found: Vec<Company> = self
            .query("find company", "Companies", vec![company_filter(company)?])
            .await?;
        pick_company(found, company)
    }

    async fn find_contract(&self, company: &Company, name: &str) -> Result<Contract, RemoteError> {
        let found: Vec<Contract> = self
            .query(
                "find contract",
                "Contracts",
                vec![
                    Filter::eq("companyID", company.id),
                    Filter::eq("contractName", name.trim()),
                ],
            )
            .await?;
        pick_contract(found, company, name)
    }

    /// The catalogue's services named by `products` (ignoring case), read once per run for all
    /// clients; products not in the catalogue are left out.
    async fn services(&self, products: &[String]) -> Result<Vec<Service>, RemoteError> {
        let missing: Vec<&String> = {
            let known = self.services.lock().unwrap_or_else(PoisonError::into_inner);
            products
                .iter()
                .filter(|p| !known.contains_key(&p.to_lowercase()))
                .collect()
        };
        if !missing.is_empty() {
            let names = missing
                .iter()
                .map(|p| Filter::eq("name", p.as_str()))
                .collect();
            let found: Vec<Service> = self
                .query("find services", "Services", vec![Filter::any(names)])
                .await?;
            let mut known = self.services.lock().unwrap_or_else(PoisonError::into_inner);
            for service in found {
                known.insert(service.name.to_lowercase(), service);
            }
        }
        let known = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(products
            .iter()
            .filter_map(|p| known.get(&p.to_lowercase()).cloned())
            .collect())
    }

    async fn service(&self, product: &str) -> Result<Service, RemoteError> {
        self.services(&[product.to_owned()])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                RemoteError::new(
                    VENDOR,
                    "find service",
                    RemoteErrorKind::NotFound,
                    format!(
                        "service {product:?} is not in the Autotask catalogue \
                         (Admin > Products and Services > Services)"
                    ),
                )
            })
    }

    async fn contacts_of(&self, company_id: i64) -> Result<Vec<Contact>, RemoteError> {
        self.query(
            "list contacts",
            "Contacts",
            vec![Filter::eq("companyID", company_id)],
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
        let mut filter = vec![
            Filter::eq("companyID", company_id),
            Filter::eq("isActive", 1),
            Filter::eq("firstName", fields.first_name.trim()),
        ];
        if !fields.last_name.trim().is_empty() {
            filter.push(Filter::eq("lastName", fields.last_name.trim()));
        }
        let found: Vec<Contact> = self.query("look for contact", "Contacts", filter).await?;
        Ok(found
            .into_iter()
            .find(|c| c.is_active != 0 && contact_fields(c).key() == *key)
            .map(|c| c.id))
    }

    async fn contract_services(
        &self,
        operation: &str,
        contract_id: i64,
        service_id: Option<i64>,
    ) -> Result<Vec<ContractService>, RemoteError> {
        let mut filter = vec![Filter::eq("contractID", contract_id)];
        if let Some(service_id) = service_id {
            filter.push(Filter::eq("serviceID", service_id));
        }
        self.query(operation, "ContractServices", filter).await
    }

    /// Units in force today, by contract service: the latest unit period covering today.
    async fn units_today(
        &self,
        operation: &str,
        contract_id: i64,
        contract_service_id: Option<i64>,
    ) -> Result<HashMap<i64, Decimal>, RemoteError> {
        let today = today();
        let mut filter = vec![
            Filter::eq("contractID", contract_id),
            Filter::compare("lte", "startDate", today.as_str()),
            Filter::compare("gte", "endDate", today.as_str()),
        ];
        if let Some(id) = contract_service_id {
            filter.push(Filter::eq("contractServiceID", id));
        }
        let periods: Vec<ContractServiceUnit> = self
            .query(operation, "ContractServiceUnits", filter)
            .await?;
        Ok(units_in_force(&periods, &today))
    }

    /// Brings a contract service's units to `target` with one adjustment of the difference
    /// from what Autotask holds now (none when they are there already).
    async fn set_units(
        &self,
        contract_id: i64,
        service: &ContractService,
        target: u32,
    ) -> Result<(), RemoteError> {
        let operation = format!("adjust units of contract service {}", service.id);
        let held = self
            .units_today(&operation, contract_id, Some(service.id))
            .await?
            .get(&service.id)
            .copied()
            .unwrap_or_default();
        let target = Decimal::from(target);
        let change = (target - held).to_i64().ok_or_else(|| {
            RemoteError::new(
                VENDOR,
                &operation,
                RemoteErrorKind::Decode,
                format!("contract service {} holds {held} units", service.id),
            )
        })?;
        if change == 0 {
            return Ok(());
        }
        let body = serde_json::to_value(ContractServiceAdjustment {
            id: 0,
            contract_id,
            contract_service_id: service.id,
            service_id: service.service_id,
            unit_change: change,
            effective_date: today(),
            adjusted_unit_price: None,
        })
        .map_err(|e| {
            RemoteError::new(VENDOR, &operation, RemoteErrorKind::Decode, e.to_string())
        })?;
        // An adjustment cannot be read back: whether a lost one landed is read from the units.
        let find = {
            let (this, service_id) = (self.clone(), service.id);
            let operation = operation.clone();
            move || -> Lookup<()> {
                let (this, operation) = (this.clone(), operation.clone());
                Box::pin(async move {
                    let now = this
                        .units_today(&operation, contract_id, Some(service_id))
                        .await?
                        .get(&service_id)
                        .copied()
                        .unwrap_or_default();
                    Ok((now == target).then_some(()))
                })
            }
        };
        self.create(
            &operation,
            &format!("Contracts/{contract_id}/ServiceAdjustments"),
            body,
            find,
        )
        .await?;
        Ok(())
    }

    async fn create_contact(
        &self,
        account: &AccountRef,
        key: &ContactKey,
        after: &ContactFields,
    ) -> Result<Applied, RemoteError> {
        let company_id = numeric_id("company", &account.company_id)?;
        let operation = format!("create contact in company {company_id}");
        // The look-up owns what it reads (cloning the client is cheap): `apply`'s future must
        // be `Send`, which rustc cannot prove for a borrowing look-up behind `AsyncFn`.
        let find = {
            let (this, key, after) = (self.clone(), key.clone(), after.clone());
            move || -> Lookup<i64> {
                let (this, key, after) = (this.clone(), key.clone(), after.clone());
                Box::pin(async move { this.find_contact(company_id, &key, &after).await })
            }
        };
        if let Some(id) = find().await? {
            return Ok(adopted(id));
        }
        let body =
            serde_json::to_value(new_contact(company_id, after, &self.mark)).map_err(|e| {
                RemoteError::new(VENDOR, &operation, RemoteErrorKind::Decode, e.to_string())
            })?;
        match self
            .create(
                &operation,
                &format!("Companies/{company_id}/Contacts"),
                body,
                find,
            )
            .await?
        {
            Created::Sent(reply) => Ok(written(decode::<ItemId>(&operation, &reply.body)?.item_id)),
            Created::Found(id) => Ok(adopted(id)),
        }
    }

    async fn update_contact(
        &self,
        account: &AccountRef,
        id: &str,
        before: &ContactFields,
        after: &ContactFields,
        reactivate: bool,
    ) -> Result<Applied, RemoteError> {
        let company_id = numeric_id("company", &account.company_id)?;
        let contact_id = numeric_id("contact", id)?;
        let mut body = serde_json::Map::new();
        body.insert("id".into(), json!(contact_id));
        if reactivate {
            body.insert("isActive".into(), json!(1));
        }
        if before.first_name != after.first_name {
            body.insert("firstName".into(), json!(after.first_name.trim()));
        }
        if before.last_name != after.last_name {
            body.insert("lastName".into(), json!(after.last_name.trim()));
        }
        for (field, was, now) in [
            ("emailAddress", &before.email, &after.email),
            ("title", &before.title, &after.title),
            ("phone", &before.phone, &after.phone),
        ] {
            if was != now {
                let value = now.as_deref().map(str::trim).filter(|v| !v.is_empty());
                body.insert(field.into(), json!(value));
            }
        }
        if body.len() > 1 {
            self.patch(
                &format!("update contact {contact_id}"),
                &format!("Companies/{company_id}/Contacts"),
                Value::Object(body),
            )
            .await?;
        }
        Ok(written(contact_id))
    }

    async fn deactivate_contact(
        &self,
        account: &AccountRef,
        id: &str,
    ) -> Result<Applied, RemoteError> {
        let company_id = numeric_id("company", &account.company_id)?;
        let contact_id = numeric_id("contact", id)?;
        self.patch(
            &format!("deactivate contact {contact_id}"),
            &format!("Companies/{company_id}/Contacts"),
            json!({"id": contact_id, "isActive": 0}),
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
        let contract_id = contract_of(account, "add service")?;
        let service = self.service(product).await?;
        let operation = format!("add service {product} to contract {contract_id}");
        let find = {
            let (this, operation, service_id) = (self.clone(), operation.clone(), service.id);
            move || -> Lookup<ContractService> {
                let (this, operation) = (this.clone(), operation.clone());
                Box::pin(async move {
                    Ok(this
                        .contract_services(&operation, contract_id, Some(service_id))
                        .await?
                        .into_iter()
                        .next())
                })
            }
        };
        // A contract holds a service once. One already there is rollcall's own without units
        // (cancelled, or a create cut short before its units): it is taken up again.
        let (contract_service, applied) = match find().await? {
            Some(existing) => {
                self.update_prices(contract_id, &existing, after).await?;
                let id = existing.id;
                (existing, adopted(id))
            }
            None => {
                let body = serde_json::to_value(ContractService {
                    id: 0,
                    contract_id,
                    service_id: service.id,
                    unit_price: after.unit_price,
                    adjusted_price: None,
                    invoice_description: Some(after.invoice_description.clone()),
                    internal_description: Some(self.mark.clone()),
                })
                .map_err(|e| {
                    RemoteError::new(VENDOR, &operation, RemoteErrorKind::Decode, e.to_string())
                })?;
                match self
                    .create(
                        &operation,
                        &format!("Contracts/{contract_id}/Services"),
                        body,
                        find,
                    )
                    .await?
                {
                    Created::Sent(reply) => {
                        let id = decode::<ItemId>(&operation, &reply.body)?.item_id;
                        let made = ContractService {
                            id,
                            contract_id,
                            service_id: service.id,
                            ..ContractService::default()
                        };
                        (made, written(id))
                    }
                    Created::Found(existing) => {
                        let id = existing.id;
                        (existing, adopted(id))
                    }
                }
            }
        };
        self.set_units(contract_id, &contract_service, after.quantity)
            .await?;
        Ok(applied)
    }

    /// Sets the price and invoice text of a contract service where they differ from `after`:
    /// the only two fields Autotask lets change after creation.
    async fn update_prices(
        &self,
        contract_id: i64,
        service: &ContractService,
        after: &AdditionFields,
    ) -> Result<(), RemoteError> {
        let mut body = serde_json::Map::new();
        body.insert("id".into(), json!(service.id));
        if service.price() != after.unit_price {
            body.insert(
                "adjustedPrice".into(),
                rollcall_core::json_number(after.unit_price),
            );
        }
        if service.invoice_description.as_deref().unwrap_or_default() != after.invoice_description {
            body.insert(
                "invoiceDescription".into(),
                json!(after.invoice_description),
            );
        }
        if body.len() > 1 {
            self.patch(
                &format!("update contract service {}", service.id),
                &format!("Contracts/{contract_id}/Services"),
                Value::Object(body),
            )
            .await?;
        }
        Ok(())
    }

    async fn update_addition(
        &self,
        account: &AccountRef,
        id: &str,
        before: &AdditionFields,
        after: &AdditionFields,
    ) -> Result<Applied, RemoteError> {
        let service_id = numeric_id("contract service", id)?;
        let operation = format!("update contract service {service_id}");
        let contract_id = contract_of(account, &operation)?;
        let service = self
            .query::<ContractService>(
                &operation,
                "ContractServices",
                vec![Filter::eq("id", service_id)],
            )
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                RemoteError::new(
                    VENDOR,
                    &operation,
                    RemoteErrorKind::NotFound,
                    format!("contract service {service_id} no longer exists"),
                )
            })?;
        self.update_prices(contract_id, &service, after).await?;
        if before.quantity != after.quantity {
            self.set_units(contract_id, &service, after.quantity)
                .await?;
        }
        Ok(written(service_id))
    }

    /// Autotask cannot remove a service from a contract through the API: its units go to 0
    /// from today, which ends its billing.
    async fn cancel_addition(
        &self,
        account: &AccountRef,
        id: &str,
    ) -> Result<Applied, RemoteError> {
        let service_id = numeric_id("contract service", id)?;
        let operation = format!("cancel contract service {service_id}");
        let contract_id = contract_of(account, &operation)?;
        let service = self
            .query::<ContractService>(
                &operation,
                "ContractServices",
                vec![Filter::eq("id", service_id)],
            )
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                RemoteError::new(
                    VENDOR,
                    &operation,
                    RemoteErrorKind::NotFound,
                    format!("contract service {service_id} no longer exists"),
                )
            })?;
        self.set_units(contract_id, &service, 0).await?;
        Ok(written(service_id))
    }
}

impl Autotask {
    /// A client's state from what was read of it.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        &self,
        company: &Company,
        contract: Option<&Contract>,
        contacts: &[Contact],
        on_contract: &[ContractService],
        units: &HashMap<i64, Decimal>,
        services: &[Service],
        products: &[String],
    ) -> Result<ClientState, RemoteError> {
        let contacts = contacts
            .iter()
            .map(|c| ActualContact {
                id: c.id.to_string(),
                fields: contact_fields(c),
                active: c.is_active != 0,
                marked: c.external_id.as_deref() == Some(self.mark.as_str()),
            })
            .collect();
        let mut additions = Vec::new();
        for contract_service in on_contract {
            // Report the product as the pipeline spells it: names ignore case.
            let Some(product) = services
                .iter()
                .find(|s| s.id == contract_service.service_id)
                .and_then(|s| products.iter().find(|p| p.eq_ignore_ascii_case(&s.name)))
            else {
                continue;
            };
            let held = units.get(&contract_service.id).copied().unwrap_or_default();
            let marked =
                contract_service.internal_description.as_deref() == Some(self.mark.as_str());
            // Rollcall's own service without units is one it cancelled (or whose units a
            // crash cut short): not billed, so not a line to compare.
            if marked && held.is_zero() {
                continue;
            }
            additions.push(ActualAddition {
                id: contract_service.id.to_string(),
                product: product.clone(),
                fields: AdditionFields {
                    quantity: whole_units(contract_service, product, held)?,
                    unit_price: contract_service.price(),
                    invoice_description: contract_service
                        .invoice_description
                        .clone()
                        .unwrap_or_default(),
                },
                marked,
            });
        }
        Ok(ClientState {
            account: AccountRef {
                company_id: company.id.to_string(),
                agreement_id: contract.map(|c| c.id.to_string()),
            },
            invoice: None,
            contacts,
            additions,
        })
    }

    /// Every account's state, each entity read once for all of them (`in` filters of up to
    /// 500 values). An account whose company or contract is not found exactly once is left
    /// out: its own read then says why.
    async fn read_together(
        &self,
        accounts: &[BillingAccount],
        products: &[String],
    ) -> Result<ReadAhead, RemoteError> {
        let mut by_company = Vec::new();
        for account in accounts {
            by_company.push(company_filter(&account.company)?);
        }
        let mut companies: Vec<Company> = Vec::new();
        for chunk in by_company.chunks(IN_LIMIT) {
            companies.extend(
                self.query::<Company>(
                    "read companies",
                    "Companies",
                    vec![Filter::any(chunk.to_vec())],
                )
                .await?,
            );
        }
        let mut resolved = Vec::new();
        for account in accounts {
            let named: Vec<Company> = companies
                .iter()
                .filter(|c| company_matches(c, &account.company))
                .cloned()
                .collect();
            if let Ok(company) = pick_company(named, &account.company) {
                resolved.push((account, company));
            }
        }
        let company_ids: Vec<i64> = resolved.iter().map(|(_, c)| c.id).collect();
        let contracts: Vec<Contract> = self
            .query_in(
                "read contracts",
                "Contracts",
                "companyID",
                &company_ids,
                vec![],
            )
            .await?;
        let contacts: Vec<Contact> = self
            .query_in(
                "read contacts",
                "Contacts",
                "companyID",
                &company_ids,
                vec![],
            )
            .await?;
        let mut ready = Vec::new();
        for (account, company) in resolved {
            let contract = match &account.agreement {
                Some(name) => {
                    let named = contracts
                        .iter()
                        .filter(|c| {
                            c.company_id == company.id
                                && c.contract_name.trim().to_lowercase()
                                    == name.trim().to_lowercase()
                        })
                        .cloned()
                        .collect();
                    match pick_contract(named, &company, name) {
                        Ok(contract) => Some(contract),
                        Err(_) => continue,
                    }
                }
                None => None,
            };
            ready.push((account, company, contract));
        }
        let contract_ids: Vec<i64> = ready
            .iter()
            .filter_map(|(_, _, c)| c.as_ref().map(|c| c.id))
            .collect();
        let (services, on_contracts, units) = if products.is_empty() || contract_ids.is_empty() {
            Default::default()
        } else {
            let today = today();
            let periods: Vec<ContractServiceUnit> = self
                .query_in(
                    "read units",
                    "ContractServiceUnits",
                    "contractID",
                    &contract_ids,
                    vec![
                        Filter::compare("lte", "startDate", today.as_str()),
                        Filter::compare("gte", "endDate", today.as_str()),
                    ],
                )
                .await?;
            (
                self.services(products).await?,
                self.query_in::<ContractService>(
                    "list contract services",
                    "ContractServices",
                    "contractID",
                    &contract_ids,
                    vec![],
                )
                .await?,
                units_in_force(&periods, &today),
            )
        };
        let mut states = HashMap::new();
        for (account, company, contract) in ready {
            let of_company: Vec<Contact> = contacts
                .iter()
                .filter(|c| c.company_id == company.id)
                .cloned()
                .collect();
            let on_contract: Vec<ContractService> = match &contract {
                Some(contract) if !products.is_empty() => on_contracts
                    .iter()
                    .filter(|s| s.contract_id == contract.id)
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
            let state = self.assemble(
                &company,
                contract.as_ref(),
                &of_company,
                &on_contract,
                &units,
                &services,
                products,
            )?;
            states.insert(account_key(account), (products.to_vec(), state));
        }
        Ok(states)
    }

    /// Every record whose `field` is one of `values`, in requests of up to 500 values.
    async fn query_in<T: DeserializeOwned>(
        &self,
        operation: &str,
        entity: &str,
        field: &str,
        values: &[i64],
        also: Vec<Filter>,
    ) -> Result<Vec<T>, RemoteError> {
        let mut rows = Vec::new();
        for chunk in values.chunks(IN_LIMIT) {
            let mut filter = vec![Filter::compare("in", field, chunk.to_vec())];
            filter.extend(also.iter().cloned());
            rows.extend(self.query(operation, entity, filter).await?);
        }
        Ok(rows)
    }
}

#[async_trait]
impl BillingSystem for Autotask {
    fn kind(&self) -> &'static str {
        VENDOR
    }

    fn field_limits(&self) -> rollcall_core::FieldLimits {
        crate::model::LIMITS
    }

    /// The catalogue is read once for every client of the run, and for two clients or more
    /// every client's company, contract, contacts, contract services and units are read
    /// together, a page per 500 records, instead of five requests per client.
    async fn prepare(
        &self,
        accounts: &[BillingAccount],
        products: &[String],
    ) -> Result<(), RemoteError> {
        if !products.is_empty() {
            self.services(products).await?;
        }
        if accounts.len() >= 2 {
            let states = self.read_together(accounts, products).await?;
            *self
                .prefetched
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = states;
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(vendor = VENDOR, company = %account.company))]
    async fn read(
        &self,
        account: &BillingAccount,
        products: &[String],
    ) -> Result<ClientState, RemoteError> {
        // A state read ahead answers one read only: any later read (after applying, to verify)
        // goes to Autotask again.
        let ahead = self
            .prefetched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&account_key(account));
        if let Some((read_for, mut state)) = ahead
            && products
                .iter()
                .all(|p| read_for.iter().any(|r| r.eq_ignore_ascii_case(p)))
        {
            // Read for every product of the pipeline; the client bills some of them.
            state
                .additions
                .retain(|a| products.iter().any(|p| p.eq_ignore_ascii_case(&a.product)));
            return Ok(state);
        }
        let company = self.find_company(&account.company).await?;
        let contract = match &account.agreement {
            Some(name) => Some(self.find_contract(&company, name).await?),
            None => None,
        };
        let contacts = self.contacts_of(company.id).await?;
        let (services, on_contract, units) = match contract.as_ref() {
            Some(contract) if !products.is_empty() => (
                self.services(products).await?,
                self.contract_services("list contract services", contract.id, None)
                    .await?,
                self.units_today("read units", contract.id, None).await?,
            ),
            _ => Default::default(),
        };
        self.assemble(
            &company,
            contract.as_ref(),
            &contacts,
            &on_contract,
            &units,
            &services,
            products,
        )
    }

    #[tracing::instrument(skip_all, fields(vendor = VENDOR, change = change.kind()))]
    async fn apply(&self, account: &AccountRef, change: &Change) -> Result<Applied, RemoteError> {
        self.apply_one(account, change)
            .await
            .map_err(|e| naming_the_change(e, change))
    }
}

impl Autotask {
    async fn apply_one(
        &self,
        account: &AccountRef,
        change: &Change,
    ) -> Result<Applied, RemoteError> {
        match change {
            Change::CreateContact { key, after } => self.create_contact(account, key, after).await,
            Change::UpdateContact {
                id, before, after, ..
            } => self.update_contact(account, id, before, after, false).await,
            Change::ReactivateContact {
                id, before, after, ..
            } => self.update_contact(account, id, before, after, true).await,
            Change::DeactivateContact { id, .. } => self.deactivate_contact(account, id).await,
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
                "Autotask bills through recurring service contracts; invoices are its own to raise",
            )),
        }
    }
}

/// `error` naming the change it stopped: Autotask's ids alone (a contact's, a contract
/// service's) do not tell the person reading it which of their people or products it was.
fn naming_the_change(mut error: RemoteError, change: &Change) -> RemoteError {
    let subject = change.subject();
    if !subject.is_empty() && !error.operation.contains(&subject) {
        error.operation = format!("{}, for {subject:?}", error.operation);
    }
    error
}

/// Values in one `in` filter, and conditions in one `or`: Autotask's limit per query.
const IN_LIMIT: usize = 500;

/// What a read ahead is kept under: the account as the pipeline names it.
fn account_key(account: &BillingAccount) -> (String, Option<String>) {
    (
        account.company.trim().to_lowercase(),
        account
            .agreement
            .as_deref()
            .map(|a| a.trim().to_lowercase()),
    )
}

/// The condition that finds a pipeline's company: `id:N`, or its name.
fn company_filter(company: &str) -> Result<Filter, RemoteError> {
    Ok(match company.trim().strip_prefix("id:") {
        Some(id) => Filter::eq("id", numeric_id("company", id)?),
        None => Filter::eq("companyName", company.trim()),
    })
}

fn company_matches(found: &Company, company: &str) -> bool {
    match company.trim().strip_prefix("id:") {
        Some(id) => id.trim().parse() == Ok(found.id),
        None => found.company_name.trim().to_lowercase() == company.trim().to_lowercase(),
    }
}

/// The one active company of those found for `company`.
fn pick_company(found: Vec<Company>, company: &str) -> Result<Company, RemoteError> {
    let operation = "find company";
    let mut active: Vec<Company> = found.into_iter().filter(|c| c.is_active).collect();
    match active.len() {
        1 => Ok(active.remove(0)),
        0 => Err(RemoteError::new(
            VENDOR,
            operation,
            RemoteErrorKind::NotFound,
            format!("no active company {company:?} exists in Autotask (CRM > Companies)"),
        )),
        n => Err(RemoteError::new(
            VENDOR,
            operation,
            RemoteErrorKind::Rejected,
            format!(
                "{n} active companies are named {company:?} (ids {}); write the client's \
                 company as `id:N` so rollcall knows which",
                ids(active.iter().map(|c| c.id))
            ),
        )),
    }
}

/// The one active recurring service contract of those found under `name`.
fn pick_contract(
    found: Vec<Contract>,
    company: &Company,
    name: &str,
) -> Result<Contract, RemoteError> {
    let operation = "find contract";
    let total = found.len();
    let mut open: Vec<Contract> = found
        .into_iter()
        .filter(|c| c.contract_type == RECURRING_SERVICE && c.status == 1)
        .collect();
    let company = &company.company_name;
    match open.len() {
        1 => Ok(open.remove(0)),
        0 if total > 0 => Err(RemoteError::new(
            VENDOR,
            operation,
            RemoteErrorKind::NotFound,
            format!(
                "the contract {name:?} of company {company:?} is not an active recurring \
                 service contract; seats are billed as units of its services"
            ),
        )),
        0 => Err(RemoteError::new(
            VENDOR,
            operation,
            RemoteErrorKind::NotFound,
            format!("company {company:?} has no contract named {name:?}"),
        )),
        n => Err(RemoteError::new(
            VENDOR,
            operation,
            RemoteErrorKind::Rejected,
            format!(
                "company {company:?} has {n} active recurring service contracts named \
                 {name:?} (ids {}); rename all but one so rollcall knows which carries the seats",
                ids(open.iter().map(|c| c.id))
            ),
        )),
    }
}

/// Units in force on `today`, by contract service: the latest period covering it. Compared by
/// date: the API's filter compares instants, and a period ending today at midnight still
/// covers today.
fn units_in_force(periods: &[ContractServiceUnit], today: &str) -> HashMap<i64, Decimal> {
    let mut latest: HashMap<i64, &ContractServiceUnit> = HashMap::new();
    for period in periods {
        if !(day(&period.start_date) <= day(today) && day(today) <= day(&period.end_date)) {
            continue;
        }
        let newer = latest
            .get(&period.contract_service_id)
            .is_none_or(|have| day(&have.start_date) <= day(&period.start_date));
        if newer {
            latest.insert(period.contract_service_id, period);
        }
    }
    latest.into_iter().map(|(id, p)| (id, p.units)).collect()
}

/// Turns an Autotask error body (`{"errors": ["…", …]}`) into one line; a business-rule
/// refusal also says that it was not retried and what to do.
pub fn describe_error(status: StatusCode, body: &[u8]) -> String {
    if let Some(errors) = business_rule(status, body) {
        let said = errors.join("; ");
        return format!(
            "Autotask refused it by a business rule (its HTTP 500 here is no outage, so it was \
             not retried): {}. What to do: {REFUSAL_HINT}.",
            said.trim_end_matches('.')
        );
    }
    if let Ok(error) = serde_json::from_slice::<ErrorBody>(body)
        && !error.errors.is_empty()
    {
        return error
            .errors
            .iter()
            .map(|e| e.trim())
            .collect::<Vec<_>>()
            .join("; ");
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

fn check_url(field: &'static str, url: &str) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| ConfigError::Url {
        field,
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::Url {
            field,
            url: url.to_owned(),
            reason: "the scheme must be https (or http for the sandbox)".to_owned(),
        });
    }
    Ok(())
}

fn ids(ids: impl Iterator<Item = i64>) -> String {
    ids.map(|id| id.to_string()).collect::<Vec<_>>().join(", ")
}

fn numeric_id(what: &str, id: &str) -> Result<i64, RemoteError> {
    id.trim().parse().map_err(|_| {
        RemoteError::new(
            VENDOR,
            format!("parse {what} id"),
            RemoteErrorKind::Rejected,
            format!("{what} id {id:?} is not an Autotask id (a whole number)"),
        )
    })
}

fn contract_of(account: &AccountRef, operation: &str) -> Result<i64, RemoteError> {
    let Some(id) = account.agreement_id.as_deref() else {
        return Err(RemoteError::new(
            VENDOR,
            operation,
            RemoteErrorKind::Rejected,
            format!(
                "company {} has no contract configured, and Autotask bills seats as units on a \
                 recurring service contract: name it as the client's `agreement`",
                account.company_id
            ),
        ));
    };
    numeric_id("contract", id)
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

/// Today (UTC) as Autotask writes dates.
fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%dT00:00:00Z").to_string()
}

fn new_contact(company_id: i64, fields: &ContactFields, mark: &str) -> Contact {
    let text = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Contact {
        id: 0,
        company_id,
        first_name: fields.first_name.trim().to_owned(),
        last_name: fields.last_name.trim().to_owned(),
        email_address: text(&fields.email),
        phone: text(&fields.phone),
        title: text(&fields.title),
        is_active: 1,
        external_id: Some(mark.to_owned()),
    }
}

fn contact_fields(contact: &Contact) -> ContactFields {
    let text = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    ContactFields {
        first_name: contact.first_name.clone(),
        last_name: contact.last_name.clone(),
        email: text(&contact.email_address),
        title: text(&contact.title),
        phone: text(&contact.phone),
    }
}

fn whole_units(
    service: &ContractService,
    product: &str,
    units: Decimal,
) -> Result<u32, RemoteError> {
    Some(units)
        .filter(|u| u.fract().is_zero())
        .and_then(|u| u.to_u32())
        .ok_or_else(|| {
            RemoteError::new(
                VENDOR,
                "read units",
                RemoteErrorKind::Decode,
                format!(
                    "contract service {} ({product}) holds {units} units, which is not a whole \
                     number of seats; correct it in Autotask",
                    service.id
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_error_joins_autotask_errors() {
        let body = br#"{"errors":["firstName: value is too long","lastName is required"]}"#;
        assert_eq!(
            describe_error(StatusCode::BAD_REQUEST, body),
            "firstName: value is too long; lastName is required"
        );
        assert_eq!(describe_error(StatusCode::BAD_GATEWAY, b""), "Bad Gateway");
    }

    #[test]
    fn a_500_naming_a_broken_rule_is_a_refusal_with_what_to_do() {
        let status = StatusCode::INTERNAL_SERVER_ERROR;
        for said in [
            "lastName is required.",
            "Value does not exist for the required field lastName.",
            "String value exceeds maximum length (field:firstName).",
            "A contact with this email address already exists.",
            "Duplicate value for externalID.",
            "'9' is not a valid picklist value for the field contactType.",
            "The company is inactive.",
            "When assigning a Resource, you must assign both a assignedResourceID and \
             assignedResourceRoleID.",
        ] {
            let body = json!({ "errors": [said] }).to_string();
            assert_eq!(
                classify_error(status, body.as_bytes()),
                Some(RemoteErrorKind::Rejected),
                "{said}"
            );
            let text = describe_error(status, body.as_bytes());
            assert!(text.contains(said.trim_end_matches('.')), "{text}");
            assert!(
                text.contains("not retried") && text.contains("run again"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_500_without_a_rule_in_its_words_is_still_an_outage() {
        let status = StatusCode::INTERNAL_SERVER_ERROR;
        for body in [
            "",
            "<html><body><h2>500 - Internal server error.</h2></body></html>",
            r#"{"errors":[]}"#,
            r#"{"errors":["   "]}"#,
            r#"{"Message":"An error has occurred."}"#,
            r#"{"errors":["Something went wrong."]}"#,
            // Autotask's own failure, though a rule word ("must") is in it.
            r#"{"errors":["An unexpected error has occurred. If the problem persists you must contact Autotask Support and reference Error ID: 1166"]}"#,
            r#"{"errors":["Execution Timeout Expired."]}"#,
        ] {
            assert_eq!(classify_error(status, body.as_bytes()), None, "{body}");
            assert!(
                !describe_error(status, body.as_bytes()).contains("not retried"),
                "{body}"
            );
        }
        // Other statuses keep their own kinds.
        let rule = br#"{"errors":["lastName is required."]}"#;
        assert_eq!(classify_error(StatusCode::BAD_GATEWAY, rule), None);
        assert_eq!(classify_error(StatusCode::BAD_REQUEST, rule), None);
    }

    #[test]
    fn fractional_units_are_refused_naming_the_contract_service() {
        let service = ContractService {
            id: 41,
            ..ContractService::default()
        };
        let err = whole_units(&service, "M365-BP", Decimal::new(25, 1)).expect_err("2.5 seats");
        assert_eq!(err.kind, RemoteErrorKind::Decode);
        assert!(
            err.message.contains("contract service 41 (M365-BP)"),
            "{err}"
        );
    }
}
