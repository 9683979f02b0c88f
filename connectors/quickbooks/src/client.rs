//! The QuickBooks Online Accounting API (v3) as a [`BillingSystem`] that bills by invoice.
//!
//! Reads find the client's customer and the period's invoice (by the `DocNumber` derived from
//! its reference). Writes are made safe to repeat three ways: a lookup before every create, the
//! `requestid` parameter QuickBooks deduplicates on (derived from the content, so a retry after
//! a crash sends the same one), and `SyncToken` optimistic concurrency on updates, re-read and
//! retried when another writer got there first.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode};
use rollcall_core::accounting::{self, AccountingTarget, PeriodCache};
use rollcall_core::http::{HttpClient, HttpSettings, RateLimit};
use rollcall_core::invoice::{merge_lines, site_prefix};
use rollcall_core::json_number as number;
use rollcall_core::oauth::{OAuthSession, TokenVault};
use rollcall_core::{
    AccountRef, ActualInvoice, Applied, BillingAccount, BillingModel, BillingPeriod, BillingSystem,
    Change, ClientState, InvoiceFields, InvoiceLine, InvoiceTarget, RemoteError, RemoteErrorKind,
};
use rust_decimal::RoundingStrategy;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::model::{self, STALE_OBJECT, quoted, rows, sales_line, text};

pub const VENDOR: &str = "QuickBooks Online";

/// Rows per query page (QuickBooks' maximum).
const PAGE: usize = 1000;
/// Attempts at an update that keeps meeting a newer `SyncToken`.
const STALE_ATTEMPTS: u32 = 4;

/// The `DocNumber` an invoice with this period reference carries: QuickBooks allows 21
/// characters, too few for a readable reference, so the full reference goes in `PrivateNote`
/// and the number is a digest of it — the same for every run, worker and retry.
pub fn doc_number(reference: &str) -> String {
    let digest = Sha256::digest(reference.as_bytes());
    let hex: String = digest.iter().take(7).map(|b| format!("{b:02X}")).collect();
    format!("RC{hex}")
}

/// A QuickBooks Online company reached through one OAuth connection.
pub struct QuickBooks {
    http: HttpClient,
    base: String,
    realm: Option<String>,
    minor_version: u32,
    tax_code: Option<String>,
    session: OAuthSession,
    /// Items by lower-cased name: (id, name). Items do not change during a run.
    items: Mutex<HashMap<String, (String, String)>>,
    /// Every customer and the period's invoices (by `DocNumber`), read in pages at the start
    /// of a run.
    prefetched: PeriodCache<Value, Value>,
}

/// Whether a customer is the one a pipeline names by `id:N`, email or display name.
fn customer_matches(customer: &Value, wanted: &str) -> bool {
    let wanted = wanted.trim();
    match wanted.strip_prefix("id:") {
        Some(id) => text(customer, "Id") == Some(id.trim()),
        None if wanted.contains('@') => customer
            .get("PrimaryEmailAddr")
            .and_then(|e| text(e, "Address"))
            .is_some_and(|e| e.eq_ignore_ascii_case(wanted)),
        None => text(customer, "DisplayName").is_some_and(|n| n.eq_ignore_ascii_case(wanted)),
    }
}

impl std::fmt::Debug for QuickBooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuickBooks")
            .field("base", &self.base)
            .field("realm", &self.realm)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl QuickBooks {
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
        // Intuit counts each minute on its own: a burst of b at a window's start plus the steady
        // rate must stay within the limit, so the steady rate is the limit less the burst.
        let limit = config.requests_per_minute.max(1);
        let burst = NonZeroU32::new(limit.min(10)).unwrap_or(NonZeroU32::MIN);
        let per_minute =
            NonZeroU32::new(limit.saturating_sub(burst.get()).max(1)).unwrap_or(NonZeroU32::MIN);
        settings.rate_limit = Some(RateLimit::per_minute(per_minute, burst));
        settings.max_concurrent = Some(config.max_concurrent.max(1) as usize);
        Ok(QuickBooks {
            http: HttpClient::new(settings)?,
            base,
            realm: config.realm_id.clone(),
            minor_version: config.minor_version,
            tax_code: config.tax_code.clone(),
            session: OAuthSession::new(vault, config.connection.clone(), config.token_endpoint()),
            items: Mutex::new(HashMap::new()),
            prefetched: PeriodCache::default(),
        })
    }

    /// Requests sent so far.
    pub fn calls(&self) -> u64 {
        self.http.calls()
    }

    /// One call to the company's API, with a live access token; a 401 refreshes the token
    /// (once across runs, through the vault) and tries again once.
    async fn call(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, RemoteError> {
        let url = format!("{}/v3/company/", self.base);
        let mut params: Vec<(&str, String)> =
            vec![("minorversion", self.minor_version.to_string())];
        params.extend(query.iter().cloned());
        let reply = self
            .session
            .send(&self.http, operation, |tokens| {
                // The realm chosen at connect time, unless the pipeline names one.
                let realm = self
                    .realm
                    .clone()
                    .or_else(|| tokens.tenant.clone())
                    .unwrap_or_default();
                let request = self
                    .http
                    .request(method.clone(), &format!("{url}{realm}/{path}"))
                    .bearer_auth(&tokens.access_token)
                    .header(ACCEPT, "application/json")
                    .query(&params);
                match body {
                    Some(b) => request.json(b),
                    None => request,
                }
            })
            .await?;
        serde_json::from_slice(&reply.body).map_err(|e| {
            RemoteError::new(
                VENDOR,
                operation,
                RemoteErrorKind::Decode,
                format!("the answer is not JSON: {e}"),
            )
        })
    }

    /// Every row a query matches, page by page.
    async fn query(
        &self,
        operation: &str,
        entity: &str,
        filter: &str,
    ) -> Result<Vec<Value>, RemoteError> {
        let mut out = Vec::new();
        loop {
            let q = format!(
                "select * from {entity}{filter} STARTPOSITION {} MAXRESULTS {PAGE}",
                out.len() + 1
            );
            let answer = self
                .call(operation, Method::GET, "query", &[("query", q)], None)
                .await?;
            let page = rows(&answer, entity);
            let full = crate::model::page_is_full(&answer, out.len() + 1, page.len(), PAGE)
                .map_err(|e| RemoteError::new(VENDOR, operation, RemoteErrorKind::Decode, e))?;
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    async fn read_invoice(&self, id: &str) -> Result<Value, RemoteError> {
        let answer = self
            .call(
                "read invoice",
                Method::GET,
                &format!("invoice/{id}"),
                &[],
                None,
            )
            .await?;
        answer.get("Invoice").cloned().ok_or_else(|| {
            RemoteError::new(
                VENDOR,
                "read invoice",
                RemoteErrorKind::Decode,
                "no Invoice in the answer",
            )
        })
    }

    /// The item a product code names: (id, name).
    async fn item(&self, code: &str) -> Result<(String, String), RemoteError> {
        let key = code.to_lowercase();
        if let Some(found) = self
            .items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(found.clone());
        }
        let found = self
            .query(
                "find item",
                "Item",
                &format!(" where Name = {}", quoted(code)),
            )
            .await?;
        let item = found.first().ok_or_else(|| {
            RemoteError::new(
                VENDOR,
                "find item",
                RemoteErrorKind::NotFound,
                format!("no item named `{code}` in QuickBooks; create it (Sales → Products and services) or fix the product's identifier"),
            )
        })?;
        let pair = (
            text(item, "Id").unwrap_or_default().to_owned(),
            text(item, "Name").unwrap_or(code).to_owned(),
        );
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, pair.clone());
        Ok(pair)
    }

    async fn line_json(&self, line: &InvoiceLine) -> Result<Value, RemoteError> {
        let (id, name) = self.item(&line.product).await?;
        let amount = (line.quantity * line.unit_price)
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        let mut detail = json!({
            "ItemRef": { "value": id, "name": name },
            "Qty": number(line.quantity),
            "UnitPrice": number(line.unit_price),
        });
        if let Some(tax) = &self.tax_code {
            detail["TaxCodeRef"] = json!({ "value": tax });
        }
        Ok(json!({
            "DetailType": "SalesItemLineDetail",
            "Amount": number(amount),
            "Description": line.description,
            "SalesItemLineDetail": detail,
        }))
    }

    /// The invoice's lines with this client's replaced: everything else kept as it came.
    async fn merged_lines(
        &self,
        invoice: Option<&Value>,
        managed: &[String],
        site: Option<&str>,
        wanted: &[InvoiceLine],
    ) -> Result<Vec<Value>, RemoteError> {
        let remote: Vec<(String, String, Value)> = invoice
            .and_then(|i| i.get("Line"))
            .and_then(Value::as_array)
            .map(|lines| {
                lines
                    .iter()
                    // Subtotal lines are QuickBooks' own; it adds them again.
                    .filter(|l| text(l, "DetailType") != Some("SubTotalLineDetail"))
                    .map(|l| match sales_line(l) {
                        Some((product, description, _, _)) => (product, description, l.clone()),
                        None => (String::new(), String::new(), l.clone()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut built = HashMap::new();
        for line in wanted {
            let labelled = label(line, site);
            built.insert(
                labelled.description.clone() + &labelled.product,
                self.line_json(&labelled).await?,
            );
        }
        Ok(merge_lines(&remote, wanted, managed, site, |l| {
            built
                .get(&(l.description.clone() + &l.product))
                .cloned()
                .unwrap_or(Value::Null)
        }))
    }
}

fn label(line: &InvoiceLine, site: Option<&str>) -> InvoiceLine {
    match site {
        Some(s) if !line.description.starts_with(&site_prefix(s)) => InvoiceLine {
            description: format!("{}{}", site_prefix(s), line.description),
            ..line.clone()
        },
        _ => line.clone(),
    }
}

/// A `requestid` from the parts that make a request what it is: the same request, retried by
/// this run or the next, carries the same id, so QuickBooks applies it once.
fn request_id(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for p in parts {
        hash.update(p.as_bytes());
        hash.update([0]);
    }
    hash.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn created_id(answer: &Value, entity: &str) -> Result<Applied, RemoteError> {
    let id = answer
        .get(entity)
        .and_then(|e| text(e, "Id"))
        .ok_or_else(|| {
            RemoteError::new(
                VENDOR,
                format!("create {entity}"),
                RemoteErrorKind::Decode,
                "the answer carries no Id",
            )
        })?;
    Ok(Applied {
        remote_id: id.to_owned(),
        reconciled: false,
    })
}

fn to_date(v: Option<&str>) -> Option<chrono::NaiveDate> {
    v.and_then(|d| chrono::NaiveDate::parse_from_str(d.get(..10).unwrap_or(d), "%Y-%m-%d").ok())
}

#[async_trait]
impl BillingSystem for QuickBooks {
    fn kind(&self) -> &'static str {
        "quickbooks"
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
impl AccountingTarget for QuickBooks {
    type Customer = Value;
    type Invoice = Value;

    const VENDOR: &'static str = VENDOR;
    const NAME: &'static str = "QuickBooks";
    const CUSTOMER: &'static str = "customer";

    fn cache(&self) -> &PeriodCache<Value, Value> {
        &self.prefetched
    }

    async fn list_customers(&self) -> Result<Vec<Value>, RemoteError> {
        self.query("read customers", "Customer", "").await
    }

    async fn list_period_invoices(
        &self,
        period: &BillingPeriod,
    ) -> Result<Vec<Value>, RemoteError> {
        let filter = format!(
            " where TxnDate >= '{}' and TxnDate <= '{}'",
            period.start, period.end
        );
        self.query("read invoices", "Invoice", &filter).await
    }

    fn invoice_key(invoice: &Value) -> Option<String> {
        text(invoice, "DocNumber").map(str::to_owned)
    }

    fn reference_key(reference: &str) -> String {
        doc_number(reference)
    }

    fn customer_matches(customer: &Value, wanted: &str) -> bool {
        customer_matches(customer, wanted)
    }

    /// A customer by `id:N`, by email (a value with `@`), or by display name.
    async fn find_customer(&self, wanted: &str) -> Result<Option<Value>, RemoteError> {
        let wanted = wanted.trim();
        if let Some(id) = wanted.strip_prefix("id:") {
            return match self
                .call(
                    "read customer",
                    Method::GET,
                    &format!("customer/{}", id.trim()),
                    &[],
                    None,
                )
                .await
            {
                Ok(answer) => Ok(answer.get("Customer").cloned()),
                Err(e) if e.kind == RemoteErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            };
        }
        let filter = if wanted.contains('@') {
            format!(" where PrimaryEmailAddr = {}", quoted(wanted))
        } else {
            format!(" where DisplayName = {}", quoted(wanted))
        };
        let found = self.query("find customer", "Customer", &filter).await?;
        Ok(found.into_iter().next())
    }

    async fn find_invoice(&self, reference: &str) -> Result<Option<Value>, RemoteError> {
        let filter = format!(" where DocNumber = {}", quoted(&doc_number(reference)));
        Ok(self
            .query("find invoice", "Invoice", &filter)
            .await?
            .into_iter()
            .next())
    }

    fn customer_id(customer: &Value) -> String {
        text(customer, "Id").unwrap_or_default().to_owned()
    }

    fn invoice_id(invoice: &Value) -> String {
        text(invoice, "Id").unwrap_or_default().to_owned()
    }

    fn to_actual(found: &Value, target: &InvoiceTarget, products: &[String]) -> ActualInvoice {
        let site = target.site.as_deref();
        let lines = rollcall_core::invoice::client_lines(
            found
                .get("Line")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(sales_line),
            products,
            site,
        );
        ActualInvoice {
            id: text(found, "Id").unwrap_or_default().to_owned(),
            number: text(found, "DocNumber").map(str::to_owned),
            status: model::status(found),
            fields: InvoiceFields {
                reference: target.reference.clone(),
                date: to_date(text(found, "TxnDate")).unwrap_or(target.date),
                due_date: to_date(text(found, "DueDate")),
                lines,
            },
        }
    }

    async fn create_customer(
        &self,
        name: &str,
        email: Option<&str>,
    ) -> Result<Applied, RemoteError> {
        let mut body = json!({ "DisplayName": name });
        if let Some(email) = email {
            body["PrimaryEmailAddr"] = json!({ "Address": email });
        }
        let answer = self
            .call(
                "create customer",
                Method::POST,
                "customer",
                &[("requestid", request_id(&["customer", name]))],
                Some(&body),
            )
            .await?;
        created_id(&answer, "Customer")
    }

    async fn create_invoice(
        &self,
        account: &AccountRef,
        reference: &str,
        site: Option<&str>,
        managed: &[String],
        after: &InvoiceFields,
    ) -> Result<Applied, RemoteError> {
        let lines = self.merged_lines(None, managed, site, &after.lines).await?;
        let mut body = json!({
            "CustomerRef": { "value": account.company_id },
            "DocNumber": doc_number(reference),
            "PrivateNote": reference,
            "TxnDate": after.date.to_string(),
            "Line": lines,
        });
        if let Some(due) = after.due_date {
            body["DueDate"] = json!(due.to_string());
        }
        let request_id = request_id(&["invoice", reference, &body.to_string()]);
        let answer = self
            .call(
                "create invoice",
                Method::POST,
                "invoice",
                &[("requestid", request_id)],
                Some(&body),
            )
            .await?;
        created_id(&answer, "Invoice")
    }

    /// Writes the invoice's lines (a sparse update with the current `SyncToken`), re-reading
    /// and trying again when someone else updated it first.
    async fn update_invoice(
        &self,
        id: &str,
        site: Option<&str>,
        managed: &[String],
        after: &InvoiceFields,
    ) -> Result<Applied, RemoteError> {
        for attempt in 1..=STALE_ATTEMPTS {
            let current = self.read_invoice(id).await?;
            if let rollcall_core::InvoiceStatus::Final(status) = model::status(&current) {
                return Err(RemoteError::new(
                    VENDOR,
                    "update invoice",
                    RemoteErrorKind::Conflict,
                    format!(
                        "invoice {} is {status} now; rollcall does not change a final invoice",
                        text(&current, "DocNumber").unwrap_or(id)
                    ),
                ));
            }
            let lines = self
                .merged_lines(Some(&current), managed, site, &after.lines)
                .await?;
            let sync = text(&current, "SyncToken").unwrap_or("0").to_owned();
            let mut body = json!({
                "Id": id,
                "SyncToken": sync,
                "sparse": true,
                "TxnDate": after.date.to_string(),
                "Line": lines,
            });
            if let Some(due) = after.due_date {
                body["DueDate"] = json!(due.to_string());
            }
            let request_id = request_id(&["update", id, &sync, &body.to_string()]);
            match self
                .call(
                    "update invoice",
                    Method::POST,
                    "invoice",
                    &[("requestid", request_id)],
                    Some(&body),
                )
                .await
            {
                Ok(_) => {
                    return Ok(Applied {
                        remote_id: id.to_owned(),
                        reconciled: false,
                    });
                }
                Err(e)
                    if e.kind == RemoteErrorKind::Rejected
                        && e.message.contains(STALE_OBJECT)
                        && attempt < STALE_ATTEMPTS =>
                {
                    tracing::info!(
                        invoice = id,
                        attempt,
                        "The invoice changed meanwhile; reading it again."
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Err(RemoteError::new(
            VENDOR,
            "update invoice",
            RemoteErrorKind::Rejected,
            format!(
                "invoice {id} kept changing under rollcall ({STALE_ATTEMPTS} stale-object errors); run again"
            ),
        ))
    }
}

/// Turns a QuickBooks fault into one line: message, detail and code of each error.
pub fn describe_error(status: StatusCode, body: &[u8]) -> String {
    if let Ok(fault) = serde_json::from_slice::<model::FaultBody>(body) {
        let parts: Vec<String> = fault
            .fault
            .errors
            .iter()
            .map(|e| {
                let mut s = format!("{} ({})", e.message, e.code);
                if !e.detail.is_empty() {
                    s.push_str(&format!(": {}", e.detail));
                }
                if !e.element.is_empty() {
                    s.push_str(&format!(" [{}]", e.element));
                }
                s
            })
            .collect();
        if !parts.is_empty() {
            return format!("{} {}", fault.fault.kind, parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(body);
    format!("{status}: {}", text.chars().take(300).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decimal;

    #[test]
    fn doc_numbers_fit_quickbooks_and_differ_by_reference() {
        let a = doc_number("rollcall Acme 2026-11");
        assert!(a.len() <= 21, "{a}");
        assert_ne!(a, doc_number("rollcall Acme 2026-12"));
        assert_eq!(a, doc_number("rollcall Acme 2026-11"));
    }

    #[test]
    fn faults_name_message_code_and_detail() {
        let body = br#"{"Fault":{"Error":[{"Message":"Stale Object Error","Detail":"Stale Object Error : You and Ann were working on this at the same time.","code":"5010","element":""}],"type":"ValidationFault"},"time":"2026-11-25T10:00:00.000-08:00"}"#;
        let text = describe_error(StatusCode::BAD_REQUEST, body);
        assert!(
            text.contains("5010") && text.contains("Stale Object Error"),
            "{text}"
        );
    }

    #[test]
    fn numbers_are_exact() {
        assert_eq!(
            number("1234567890.123456789".parse().expect("d")).to_string(),
            "1234567890.123456789"
        );
    }

    #[test]
    fn decimals_arrive_from_numbers_and_strings() {
        assert_eq!(
            decimal(Some(&json!("2.5"))),
            Some("2.5".parse().expect("d"))
        );
        assert_eq!(
            decimal(Some(&serde_json::from_str::<Value>("12.50").expect("n"))),
            Some("12.50".parse().expect("d"))
        );
    }
}
