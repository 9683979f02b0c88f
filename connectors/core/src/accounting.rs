//! The accounting-target kit: the invoice flow every accounting connector (QuickBooks Online,
//! Xero) follows, written once.
//!
//! The flow is the same for every accounting package; only the queries and field names differ.
//! [`prepare`] reads every customer and the period's invoices in pages when a run bills enough
//! clients for pages to pay; [`read`] finds the client's customer and the period's invoice (from
//! those pages, or one lookup each); [`apply`] creates a customer or an invoice, or updates one.
//! Every create looks the reference (or the customer) up first, so a retried or crashed create
//! lands on what the first attempt made instead of making a second one; the vendor adds its own
//! idempotency key on the request itself. A connector implements [`AccountingTarget`] and its
//! [`BillingSystem`](crate::BillingSystem) delegates `prepare`, `read` and `apply` here.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use crate::invoice::period_of;
use crate::{
    AccountRef, ActualInvoice, Applied, BillingAccount, BillingPeriod, Change, ClientState,
    InvoiceFields, InvoiceTarget, RemoteError, RemoteErrorKind,
};

/// Below this many clients, reading each one's customer and invoice costs fewer calls than
/// reading every page (one client reads in two calls).
pub const PREPARE_FROM: usize = 2;

/// What an accounting package answers to: its queries, writes and field mappings. Everything
/// else (the order of lookups, reconcile-before-create, which products an update manages) is
/// the kit's.
#[async_trait]
pub trait AccountingTarget: Send + Sync {
    /// A customer (Xero: contact) as the vendor returns it.
    type Customer: Clone + Send + Sync;
    /// An invoice as the vendor returns it.
    type Invoice: Clone + Send + Sync;

    /// The vendor as errors name it (`RemoteError::vendor`).
    const VENDOR: &'static str;
    /// The vendor as messages to people name it (`QuickBooks`).
    const NAME: &'static str;
    /// What the vendor calls a customer (`customer`, `contact`).
    const CUSTOMER: &'static str;

    /// The run's prefetched customers and invoices (kept by the connector, filled by the kit).
    fn cache(&self) -> &PeriodCache<Self::Customer, Self::Invoice>;

    /// Every customer, in pages.
    async fn list_customers(&self) -> Result<Vec<Self::Customer>, RemoteError>;
    /// Every invoice dated in the period, in pages.
    async fn list_period_invoices(
        &self,
        period: &BillingPeriod,
    ) -> Result<Vec<Self::Invoice>, RemoteError>;
    /// The key an invoice is found by in the cache ([`Self::reference_key`] of its reference).
    fn invoice_key(invoice: &Self::Invoice) -> Option<String>;
    /// The key the invoice with this period reference carries.
    fn reference_key(reference: &str) -> String;

    /// Whether a customer is the one a pipeline names by `id:N`, email or name.
    fn customer_matches(customer: &Self::Customer, wanted: &str) -> bool;
    /// One customer by `id:N`, by email (a value with `@`) or by name.
    async fn find_customer(&self, wanted: &str) -> Result<Option<Self::Customer>, RemoteError>;
    /// The invoice that carries this period reference.
    async fn find_invoice(&self, reference: &str) -> Result<Option<Self::Invoice>, RemoteError>;
    fn customer_id(customer: &Self::Customer) -> String;
    fn invoice_id(invoice: &Self::Invoice) -> String;
    /// The invoice as the planner sees it: this client's lines only.
    fn to_actual(
        invoice: &Self::Invoice,
        target: &InvoiceTarget,
        products: &[String],
    ) -> ActualInvoice;

    /// Creates a customer no lookup found.
    async fn create_customer(
        &self,
        name: &str,
        email: Option<&str>,
    ) -> Result<Applied, RemoteError>;
    /// Creates the period's invoice no lookup found, for an existing customer.
    async fn create_invoice(
        &self,
        account: &AccountRef,
        reference: &str,
        site: Option<&str>,
        managed: &[String],
        after: &InvoiceFields,
    ) -> Result<Applied, RemoteError>;
    /// Writes this client's lines (`managed` products, `site`'s label) onto an invoice, keeping
    /// every other line, and refuses an invoice that is no longer a draft.
    async fn update_invoice(
        &self,
        id: &str,
        site: Option<&str>,
        managed: &[String],
        after: &InvoiceFields,
    ) -> Result<Applied, RemoteError>;
}

/// Every customer and the period's invoices (by key), read in pages at the start of a run.
#[derive(Debug)]
pub struct PeriodCache<C, I> {
    inner: Mutex<Option<Prefetched<C, I>>>,
}

#[derive(Debug)]
struct Prefetched<C, I> {
    period: BillingPeriod,
    customers: Vec<C>,
    invoices: HashMap<String, I>,
}

impl<C, I> Default for PeriodCache<C, I> {
    fn default() -> Self {
        PeriodCache {
            inner: Mutex::new(None),
        }
    }
}

impl<C, I> PeriodCache<C, I> {
    /// Drops what was read, so later reads ask the vendor (after a write changed it).
    pub fn forget(&self) {
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Reads every customer and the period's invoices when the run bills enough clients.
pub async fn prepare<T: AccountingTarget>(
    target: &T,
    accounts: &[BillingAccount],
) -> Result<(), RemoteError> {
    let Some(period) = period_of(accounts) else {
        return Ok(());
    };
    if accounts.len() < PREPARE_FROM {
        return Ok(());
    }
    let customers = target.list_customers().await?;
    let invoices = target
        .list_period_invoices(&period)
        .await?
        .into_iter()
        .filter_map(|i| T::invoice_key(&i).map(|k| (k, i)))
        .collect();
    *target
        .cache()
        .inner
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(Prefetched {
        period,
        customers,
        invoices,
    });
    Ok(())
}

/// The client's customer and the period's invoice: from the run's pages when they cover the
/// period, otherwise one lookup each (customer first).
pub async fn read<T: AccountingTarget>(
    target: &T,
    account: &BillingAccount,
    products: &[String],
) -> Result<ClientState, RemoteError> {
    let invoice_target = account.invoice.as_ref().ok_or_else(|| {
        RemoteError::new(
            T::VENDOR,
            "read",
            RemoteErrorKind::Rejected,
            format!(
                "{} bills by invoice, but no billing period was given",
                T::NAME
            ),
        )
    })?;
    let wanted = invoice_target
        .bill_to
        .as_deref()
        .unwrap_or(&account.company);
    let cached = {
        let prefetched = target
            .cache()
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        prefetched
            .as_ref()
            .filter(|p| p.period == invoice_target.period)
            .map(|p| {
                (
                    p.customers
                        .iter()
                        .find(|c| T::customer_matches(c, wanted))
                        .cloned(),
                    p.invoices
                        .get(&T::reference_key(&invoice_target.reference))
                        .cloned(),
                )
            })
    };
    let (customer, invoice) = match cached {
        Some(found) => found,
        None => (
            target.find_customer(wanted).await?,
            target.find_invoice(&invoice_target.reference).await?,
        ),
    };
    Ok(ClientState {
        account: AccountRef {
            company_id: customer.as_ref().map(T::customer_id).unwrap_or_default(),
            agreement_id: None,
        },
        contacts: vec![],
        additions: vec![],
        invoice: invoice.map(|i| T::to_actual(&i, invoice_target, products)),
    })
}

/// Applies one change: creates reconcile with what a lookup finds first, updates manage the
/// products on either side of the change.
pub async fn apply<T: AccountingTarget>(
    target: &T,
    account: &AccountRef,
    change: &Change,
) -> Result<Applied, RemoteError> {
    match change {
        Change::CreateCustomer { name, email } => {
            if let Some(found) = target.find_customer(name).await? {
                return Ok(Applied {
                    remote_id: T::customer_id(&found),
                    reconciled: true,
                });
            }
            target.create_customer(name, email.as_deref()).await
        }
        Change::CreateInvoice {
            reference,
            site,
            after,
        } => {
            let managed: Vec<String> = after.lines.iter().map(|l| l.product.clone()).collect();
            // A sister site, or an earlier attempt whose answer was lost, may have made it.
            if let Some(existing) = target.find_invoice(reference).await? {
                let id = T::invoice_id(&existing);
                let applied = target
                    .update_invoice(&id, site.as_deref(), &managed, after)
                    .await?;
                return Ok(Applied {
                    reconciled: true,
                    ..applied
                });
            }
            if account.company_id.is_empty() {
                return Err(RemoteError::new(
                    T::VENDOR,
                    "create invoice",
                    RemoteErrorKind::NotFound,
                    format!("the client has no {} in {} yet", T::CUSTOMER, T::NAME),
                ));
            }
            target
                .create_invoice(account, reference, site.as_deref(), &managed, after)
                .await
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
            target
                .update_invoice(id, site.as_deref(), &managed, after)
                .await
        }
        other => Err(RemoteError::new(
            T::VENDOR,
            other.kind(),
            RemoteErrorKind::Rejected,
            format!(
                "{} bills by invoice: it has no agreements or per-person contacts",
                T::NAME
            ),
        )),
    }
}
