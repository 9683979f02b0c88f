//! The Xero Accounting API as a [`BillingSystem`] that bills by invoice.
//!
//! Creates carry an `Idempotency-Key` derived from what they create, so a retry after a lost
//! answer (this run's or the next one's) is answered with the first result instead of a second
//! invoice; before any create the reference is looked up as well. Xero has no optimistic
//! concurrency token: an update re-reads the invoice first and refuses if it is no longer a
//! draft.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::ACCEPT;
use rollcall_core::accounting::{self, AccountingTarget, PeriodCache};
use rollcall_core::http::{HttpClient, HttpSettings, RateLimit};
use rollcall_core::invoice::merge_lines;
use rollcall_core::oauth::{OAuthSession, TokenVault};
use rollcall_core::{
    AccountRef, ActualInvoice, Applied, BillingAccount, BillingModel, BillingPeriod, BillingSystem,
    Change, ClientState, InvoiceFields, InvoiceLine, InvoiceTarget, RemoteError, RemoteErrorKind,
    json_number as number,
};
use rust_decimal::RoundingStrategy;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::{Config, LineAmountTypes};
use crate::model::{self, describe_error, line_item, quoted, text};

pub const VENDOR: &str = "Xero";

/// Rows asked for per page.
const PAGE_SIZE: usize = 1000;

/// A Xero organisation reached through one OAuth connection.
pub struct Xero {
    http: HttpClient,
    api: String,
    session: OAuthSession,
    line_amount_types: LineAmountTypes,
    account_code: Option<String>,
    tax_type: Option<String>,
    /// Every contact and the period's invoices (by `Reference`), read in pages at the start of
    /// a run; forgotten after every write.
    prefetched: PeriodCache<Value, Value>,
    /// What `X-DayLimit-Remaining` last said; -1 before the first answer.
    day_remaining: AtomicI64,
}

impl std::fmt::Debug for Xero {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xero")
            .field("api", &self.api)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

fn key(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for p in parts {
        hash.update(p.as_bytes());
        hash.update([0]);
    }
    let hex: String = hash
        .finalize()
        .iter()
        .take(24)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("rollcall-{hex}")
}

impl Xero {
    pub fn new(config: &Config, vault: Arc<dyn TokenVault>) -> Result<Self, RemoteError> {
        let base = config.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(RemoteError::new(
                VENDOR,
                "configure",
                RemoteErrorKind::Rejected,
                format!("url `{base}` is not an http(s) address"),
            ));
        }
        let mut settings = HttpSettings::new(VENDOR, describe_error);
        settings.limit_scope = format!("{VENDOR}:{base}:{}", config.connection);
        // Xero counts a rolling minute: a burst of b plus the steady rate must stay within
        // `requests_per_minute`, so the steady rate is that less the burst.
        let limit = config.requests_per_minute.max(1);
        let burst = NonZeroU32::new(limit.min(5)).unwrap_or(NonZeroU32::MIN);
        let per_minute =
            NonZeroU32::new(limit.saturating_sub(burst.get()).max(1)).unwrap_or(NonZeroU32::MIN);
        settings.rate_limit = Some(RateLimit::per_minute(per_minute, burst));
        settings.max_concurrent = Some(5);
        Ok(Xero {
            http: HttpClient::new(settings)?,
            api: format!("{base}/api.xro/2.0"),
            session: OAuthSession::new(vault, config.connection.clone(), config.token_endpoint()),
            line_amount_types: config.line_amount_types,
            account_code: config.account_code.clone(),
            tax_type: config.tax_type.clone(),
            prefetched: PeriodCache::default(),
            day_remaining: AtomicI64::new(-1),
        })
    }

    pub fn calls(&self) -> u64 {
        self.http.calls()
    }

    async fn call(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, RemoteError> {
        if self.day_remaining.load(Ordering::Relaxed) == 0 {
            return Err(RemoteError::new(
                VENDOR,
                operation,
                RemoteErrorKind::Throttled { retry_after: None },
                "Xero's daily limit of calls for this organisation is spent; the next run after midnight UTC goes on",
            ));
        }
        let url = format!("{}/{path}", self.api);
        let reply = self
            .session
            .send(&self.http, operation, |tokens| {
                let mut request = self
                    .http
                    .request(method.clone(), &url)
                    .bearer_auth(&tokens.access_token)
                    .header(
                        "xero-tenant-id",
                        tokens.tenant.as_deref().unwrap_or_default(),
                    )
                    .header(ACCEPT, "application/json")
                    .query(query);
                if let Some(k) = idempotency_key {
                    request = request.header("Idempotency-Key", k);
                }
                match body {
                    Some(b) => request.json(b),
                    None => request,
                }
            })
            .await?;
        if let Some(left) = reply
            .headers
            .get("x-daylimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
        {
            self.day_remaining.store(left, Ordering::Relaxed);
        }
        serde_json::from_slice(&reply.body).map_err(|e| {
            RemoteError::new(
                VENDOR,
                operation,
                RemoteErrorKind::Decode,
                format!("the answer is not JSON: {e}"),
            )
        })
    }

    /// Every row of a collection matching `filter`, page by page.
    async fn list(
        &self,
        operation: &str,
        collection: &str,
        filter: Option<String>,
    ) -> Result<Vec<Value>, RemoteError> {
        let mut out = Vec::new();
        for page in 1u32.. {
            let mut query = vec![
                ("page", page.to_string()),
                ("pageSize", PAGE_SIZE.to_string()),
            ];
            if let Some(f) = &filter {
                query.push(("where", f.clone()));
            }
            let answer = self
                .call(operation, Method::GET, collection, &query, None, None)
                .await?;
            let rows = answer
                .get(collection)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let more = model::more_pages(&answer, page, rows.len(), PAGE_SIZE)
                .map_err(|e| RemoteError::new(VENDOR, operation, RemoteErrorKind::Decode, e))?;
            out.extend(rows);
            if !more {
                break;
            }
        }
        Ok(out)
    }

    fn contact_filter(wanted: &str) -> Option<String> {
        let wanted = wanted.trim();
        if wanted.starts_with("id:") {
            None
        } else if wanted.contains('@') {
            Some(format!("EmailAddress=={}", quoted(wanted)))
        } else {
            Some(format!("Name=={}", quoted(wanted)))
        }
    }

    fn contact_matches(contact: &Value, wanted: &str) -> bool {
        let wanted = wanted.trim();
        match wanted.strip_prefix("id:") {
            Some(id) => {
                text(contact, "ContactID").is_some_and(|c| c.eq_ignore_ascii_case(id.trim()))
            }
            None if wanted.contains('@') => {
                text(contact, "EmailAddress").is_some_and(|e| e.eq_ignore_ascii_case(wanted))
            }
            None => text(contact, "Name").is_some_and(|n| n.eq_ignore_ascii_case(wanted)),
        }
    }

    async fn read_invoice(&self, id: &str) -> Result<Value, RemoteError> {
        let answer = self
            .call(
                "read invoice",
                Method::GET,
                &format!("Invoices/{id}"),
                &[],
                None,
                None,
            )
            .await?;
        answer
            .get("Invoices")
            .and_then(|i| i.get(0))
            .cloned()
            .ok_or_else(|| {
                RemoteError::new(
                    VENDOR,
                    "read invoice",
                    RemoteErrorKind::NotFound,
                    format!("invoice {id}"),
                )
            })
    }

    fn line_json(&self, line: &InvoiceLine) -> Value {
        let amount = (line.quantity * line.unit_price)
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        let mut item = json!({
            "Description": line.description,
            "Quantity": number(line.quantity),
            "UnitAmount": number(line.unit_price),
            "ItemCode": line.product,
            "LineAmount": number(amount),
        });
        if let Some(a) = &self.account_code {
            item["AccountCode"] = json!(a);
        }
        if let Some(t) = &self.tax_type {
            item["TaxType"] = json!(t);
        }
        item
    }

    fn merged(
        &self,
        invoice: Option<&Value>,
        managed: &[String],
        site: Option<&str>,
        wanted: &[InvoiceLine],
    ) -> Vec<Value> {
        let remote: Vec<(String, String, Value)> = invoice
            .and_then(|i| i.get("LineItems"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|l| match line_item(l) {
                Some((code, description, _, _)) => (code, description, l.clone()),
                None => (String::new(), String::new(), l.clone()),
            })
            .collect();
        merge_lines(&remote, wanted, managed, site, |l| self.line_json(l))
    }

    fn forget_prefetched(&self) {
        self.prefetched.forget();
    }
}

#[async_trait]
impl BillingSystem for Xero {
    fn kind(&self) -> &'static str {
        "xero"
    }

    fn billing_model(&self) -> BillingModel {
        BillingModel::Invoice
    }

    fn manages_contacts(&self) -> bool {
        false
    }

    fn field_limits(&self) -> rollcall_core::FieldLimits {
        crate::model::LIMITS
    }

    async fn prepare(
        &self,
        accounts: &[BillingAccount],
        _products: &[String],
    ) -> Result<(), RemoteError> {
        accounting::prepare(self, accounts).await
    }

    async fn read(
        &self,
        account: &BillingAccount,
        products: &[String],
    ) -> Result<ClientState, RemoteError> {
        accounting::read(self, account, products).await
    }

    #[tracing::instrument(skip_all, fields(vendor = VENDOR, change = change.kind()))]
    async fn apply(&self, account: &AccountRef, change: &Change) -> Result<Applied, RemoteError> {
        accounting::apply(self, account, change).await
    }
}

#[async_trait]
impl AccountingTarget for Xero {
    type Customer = Value;
    type Invoice = Value;

    const VENDOR: &'static str = VENDOR;
    const NAME: &'static str = "Xero";
    const CUSTOMER: &'static str = "contact";

    fn cache(&self) -> &PeriodCache<Value, Value> {
        &self.prefetched
    }

    async fn list_customers(&self) -> Result<Vec<Value>, RemoteError> {
        self.list("read contacts", "Contacts", None).await
    }

    async fn list_period_invoices(
        &self,
        period: &BillingPeriod,
    ) -> Result<Vec<Value>, RemoteError> {
        let filter = format!(
            "Type==\"ACCREC\"&&Date>=DateTime({})&&Date<=DateTime({})",
            period.start.format("%Y,%m,%d"),
            period.end.format("%Y,%m,%d")
        );
        self.list("read invoices", "Invoices", Some(filter)).await
    }

    fn invoice_key(invoice: &Value) -> Option<String> {
        text(invoice, "Reference").map(str::to_owned)
    }

    fn reference_key(reference: &str) -> String {
        reference.to_owned()
    }

    fn customer_matches(contact: &Value, wanted: &str) -> bool {
        Self::contact_matches(contact, wanted)
    }

    async fn find_customer(&self, wanted: &str) -> Result<Option<Value>, RemoteError> {
        if let Some(id) = wanted.trim().strip_prefix("id:") {
            return match self
                .call(
                    "read contact",
                    Method::GET,
                    &format!("Contacts/{}", id.trim()),
                    &[],
                    None,
                    None,
                )
                .await
            {
                Ok(answer) => Ok(answer.get("Contacts").and_then(|c| c.get(0)).cloned()),
                Err(e) if e.kind == RemoteErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            };
        }
        let found = self
            .list("find contact", "Contacts", Self::contact_filter(wanted))
            .await?;
        Ok(found.into_iter().find(|c| Self::contact_matches(c, wanted)))
    }

    async fn find_invoice(&self, reference: &str) -> Result<Option<Value>, RemoteError> {
        let filter = format!("Type==\"ACCREC\"&&Reference=={}", quoted(reference));
        Ok(self
            .list("find invoice", "Invoices", Some(filter))
            .await?
            .into_iter()
            .next())
    }

    fn customer_id(contact: &Value) -> String {
        text(contact, "ContactID").unwrap_or_default().to_owned()
    }

    fn invoice_id(invoice: &Value) -> String {
        text(invoice, "InvoiceID").unwrap_or_default().to_owned()
    }

    fn to_actual(found: &Value, target: &InvoiceTarget, products: &[String]) -> ActualInvoice {
        let site = target.site.as_deref();
        let lines = rollcall_core::invoice::client_lines(
            found
                .get("LineItems")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(line_item),
            products,
            site,
        );
        ActualInvoice {
            id: text(found, "InvoiceID").unwrap_or_default().to_owned(),
            number: text(found, "InvoiceNumber").map(str::to_owned),
            status: model::status(found),
            fields: InvoiceFields {
                reference: target.reference.clone(),
                date: model::date(text(found, "DateString").or_else(|| text(found, "Date")))
                    .unwrap_or(target.date),
                due_date: model::date(
                    text(found, "DueDateString").or_else(|| text(found, "DueDate")),
                ),
                lines,
            },
        }
    }

    async fn create_customer(
        &self,
        name: &str,
        email: Option<&str>,
    ) -> Result<Applied, RemoteError> {
        let mut contact = json!({ "Name": name });
        if let Some(e) = email {
            contact["EmailAddress"] = json!(e);
        }
        let body = json!({ "Contacts": [contact] });
        let answer = self
            .call(
                "create contact",
                Method::PUT,
                "Contacts",
                &[],
                Some(&body),
                Some(&key(&["contact", name])),
            )
            .await?;
        self.forget_prefetched();
        created(&answer, "Contacts", "ContactID")
    }

    async fn create_invoice(
        &self,
        account: &AccountRef,
        reference: &str,
        site: Option<&str>,
        managed: &[String],
        after: &InvoiceFields,
    ) -> Result<Applied, RemoteError> {
        let mut invoice = json!({
            "Type": "ACCREC",
            "Contact": { "ContactID": account.company_id },
            "Date": after.date.to_string(),
            "Reference": reference,
            "LineAmountTypes": self.line_amount_types,
            "Status": "DRAFT",
            "LineItems": self.merged(None, managed, site, &after.lines),
        });
        if let Some(due) = after.due_date {
            invoice["DueDate"] = json!(due.to_string());
        }
        let body = json!({ "Invoices": [invoice] });
        let answer = self
            .call(
                "create invoice",
                Method::PUT,
                "Invoices",
                &[],
                Some(&body),
                Some(&key(&["invoice", reference, &body.to_string()])),
            )
            .await?;
        self.forget_prefetched();
        created(&answer, "Invoices", "InvoiceID")
    }

    async fn update_invoice(
        &self,
        id: &str,
        site: Option<&str>,
        managed: &[String],
        after: &InvoiceFields,
    ) -> Result<Applied, RemoteError> {
        let current = self.read_invoice(id).await?;
        if let rollcall_core::InvoiceStatus::Final(status) = model::status(&current) {
            return Err(RemoteError::new(
                VENDOR,
                "update invoice",
                RemoteErrorKind::Conflict,
                format!(
                    "invoice {} is {status} now; rollcall changes only drafts",
                    text(&current, "InvoiceNumber").unwrap_or(id)
                ),
            ));
        }
        let mut invoice = json!({
            "InvoiceID": id,
            "Date": after.date.to_string(),
            "LineItems": self.merged(Some(&current), managed, site, &after.lines),
        });
        if let Some(due) = after.due_date {
            invoice["DueDate"] = json!(due.to_string());
        }
        let body = json!({ "Invoices": [invoice] });
        let updated = text(&current, "UpdatedDateUTC")
            .unwrap_or_default()
            .to_owned();
        let idempotency = key(&["update", id, &updated, &body.to_string()]);
        self.call(
            "update invoice",
            Method::POST,
            &format!("Invoices/{id}"),
            &[],
            Some(&body),
            Some(&idempotency),
        )
        .await?;
        self.forget_prefetched();
        Ok(Applied {
            remote_id: id.to_owned(),
            reconciled: false,
        })
    }
}

fn created(answer: &Value, collection: &str, id: &str) -> Result<Applied, RemoteError> {
    answer
        .get(collection)
        .and_then(|c| c.get(0))
        .and_then(|c| text(c, id))
        .map(|id| Applied {
            remote_id: id.to_owned(),
            reconciled: false,
        })
        .ok_or_else(|| {
            RemoteError::new(
                VENDOR,
                format!("create {collection}"),
                RemoteErrorKind::Decode,
                format!("the answer carries no {id}"),
            )
        })
}
