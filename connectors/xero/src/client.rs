//! The Xero Accounting API as a [`BillingSystem`] that bills by invoice.
//!
//! Creates carry an `Idempotency-Key` derived from what they create, so a retry after a lost
//! answer (this run's or the next one's) is answered with the first result instead of a second
//! invoice; before any create the reference is looked up as well. Xero has no optimistic
//! concurrency token: an update re-reads the invoice first and refuses if it is no longer a
//! draft.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::ACCEPT;
use rollcall_core::http::{HttpClient, HttpSettings, RateLimit};
use rollcall_core::invoice::merge_lines;
use rollcall_core::oauth::{OAuthSession, TokenVault};
use rollcall_core::{
    AccountRef, ActualInvoice, Applied, BillingAccount, BillingModel, BillingPeriod, BillingSystem,
    Change, ClientState, InvoiceFields, InvoiceLine, RemoteError, RemoteErrorKind,
    json_number as number,
};
use rust_decimal::RoundingStrategy;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::{Config, LineAmountTypes};
use crate::model::{self, describe_error, line_item, quoted, text};

pub const VENDOR: &str = "Xero";

/// Xero's longest line description.
const DESCRIPTION_LIMIT: usize = 4000;
/// Rows asked for per page.
const PAGE_SIZE: usize = 1000;
/// Below this many clients, reading each one's contact and invoice costs fewer calls than
/// reading every page.
const PREPARE_FROM: usize = 2;

/// Every client's contact and period invoice, read in pages at the start of a run.
#[derive(Debug, Default)]
struct Prefetched {
    period: Option<BillingPeriod>,
    contacts: Vec<Value>,
    invoices: HashMap<String, Value>,
}

/// A Xero organisation reached through one OAuth connection.
pub struct Xero {
    http: HttpClient,
    api: String,
    session: OAuthSession,
    line_amount_types: LineAmountTypes,
    account_code: Option<String>,
    tax_type: Option<String>,
    prefetched: Mutex<Option<Prefetched>>,
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
            prefetched: Mutex::new(None),
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

    async fn find_contact(&self, wanted: &str) -> Result<Option<Value>, RemoteError> {
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
        *self
            .prefetched
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
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

    fn to_actual(
        found: &Value,
        target: &rollcall_core::InvoiceTarget,
        products: &[String],
    ) -> ActualInvoice {
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

    fn invoice_text_limit(&self) -> Option<usize> {
        Some(DESCRIPTION_LIMIT)
    }

    async fn prepare(
        &self,
        accounts: &[BillingAccount],
        _products: &[String],
    ) -> Result<(), RemoteError> {
        let Some(period) = rollcall_core::invoice::period_of(accounts) else {
            return Ok(());
        };
        if accounts.len() < PREPARE_FROM {
            return Ok(());
        }
        let contacts = self.list("read contacts", "Contacts", None).await?;
        let filter = format!(
            "Type==\"ACCREC\"&&Date>=DateTime({})&&Date<=DateTime({})",
            period.start.format("%Y,%m,%d"),
            period.end.format("%Y,%m,%d")
        );
        let invoices = self
            .list("read invoices", "Invoices", Some(filter))
            .await?
            .into_iter()
            .filter_map(|i| text(&i, "Reference").map(|r| (r.to_owned(), i.clone())))
            .collect();
        *self
            .prefetched
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Prefetched {
            period: Some(period),
            contacts,
            invoices,
        });
        Ok(())
    }

    async fn read(
        &self,
        account: &BillingAccount,
        products: &[String],
    ) -> Result<ClientState, RemoteError> {
        let target = account.invoice.as_ref().ok_or_else(|| {
            RemoteError::new(
                VENDOR,
                "read",
                RemoteErrorKind::Rejected,
                "Xero bills by invoice, but no billing period was given",
            )
        })?;
        let wanted = target.bill_to.as_deref().unwrap_or(&account.company);
        let cached = {
            let prefetched = self
                .prefetched
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            prefetched
                .as_ref()
                .filter(|p| p.period == Some(target.period))
                .map(|p| {
                    (
                        p.contacts
                            .iter()
                            .find(|c| Self::contact_matches(c, wanted))
                            .cloned(),
                        p.invoices.get(&target.reference).cloned(),
                    )
                })
        };
        let (contact, invoice) = match cached {
            Some(found) => found,
            None => (
                self.find_contact(wanted).await?,
                self.find_invoice(&target.reference).await?,
            ),
        };
        Ok(ClientState {
            account: AccountRef {
                company_id: contact
                    .as_ref()
                    .and_then(|c| text(c, "ContactID"))
                    .unwrap_or_default()
                    .to_owned(),
                agreement_id: None,
            },
            contacts: vec![],
            additions: vec![],
            invoice: invoice.map(|i| Self::to_actual(&i, target, products)),
        })
    }

    #[tracing::instrument(skip_all, fields(vendor = VENDOR, change = change.kind()))]
    async fn apply(&self, account: &AccountRef, change: &Change) -> Result<Applied, RemoteError> {
        match change {
            Change::CreateCustomer { name, email } => {
                if let Some(found) = self.find_contact(name).await? {
                    return Ok(Applied {
                        remote_id: text(&found, "ContactID").unwrap_or_default().to_owned(),
                        reconciled: true,
                    });
                }
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
            Change::CreateInvoice {
                reference,
                site,
                after,
            } => {
                let managed: Vec<String> = after.lines.iter().map(|l| l.product.clone()).collect();
                if let Some(existing) = self.find_invoice(reference).await? {
                    let id = text(&existing, "InvoiceID").unwrap_or_default().to_owned();
                    let applied = self
                        .update_invoice(&id, site.as_deref(), &managed, after)
                        .await?;
                    return Ok(Applied {
                        reconciled: true,
                        ..applied
                    });
                }
                if account.company_id.is_empty() {
                    return Err(RemoteError::new(
                        VENDOR,
                        "create invoice",
                        RemoteErrorKind::NotFound,
                        "the client has no contact in Xero yet",
                    ));
                }
                let mut invoice = json!({
                    "Type": "ACCREC",
                    "Contact": { "ContactID": account.company_id },
                    "Date": after.date.to_string(),
                    "Reference": reference,
                    "LineAmountTypes": self.line_amount_types,
                    "Status": "DRAFT",
                    "LineItems": self.merged(None, &managed, site.as_deref(), &after.lines),
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
            Change::UpdateInvoice {
                id,
                site,
                before,
                after,
                ..
            } => {
                let mut managed: Vec<String> = before
                    .lines
                    .iter()
                    .chain(&after.lines)
                    .map(|l| l.product.clone())
                    .collect();
                managed.sort();
                managed.dedup();
                self.update_invoice(id, site.as_deref(), &managed, after)
                    .await
            }
            other => Err(RemoteError::new(
                VENDOR,
                other.kind(),
                RemoteErrorKind::Rejected,
                "Xero bills by invoice: it has no agreements or per-person contacts",
            )),
        }
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
