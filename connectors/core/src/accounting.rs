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

#[cfg(test)]
mod tests {
    //! The kit against a fake accounting package that keeps customers and invoices in memory
    //! and records every call the kit makes, so each promise is checked by what was asked of
    //! the vendor, in what order, and what the books hold afterwards.

    use std::sync::atomic::{AtomicU32, Ordering};

    use chrono::NaiveDate;
    use rust_decimal::Decimal;

    use super::*;
    use crate::invoice::{InvoiceLine, InvoiceStatus, client_lines, merge_lines};
    use crate::{ContactFields, ContactKey};

    #[derive(Debug, Clone, PartialEq)]
    struct Customer {
        id: String,
        name: String,
        email: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Invoice {
        id: String,
        customer: String,
        reference: String,
        draft: bool,
        /// As the vendor keeps them: a site's lines carry its label.
        lines: Vec<InvoiceLine>,
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Call {
        ListCustomers,
        ListInvoices(BillingPeriod),
        FindCustomer(String),
        FindInvoice(String),
        CreateCustomer {
            name: String,
            email: Option<String>,
        },
        CreateInvoice {
            customer: String,
            reference: String,
            site: Option<String>,
            managed: Vec<String>,
        },
        UpdateInvoice {
            id: String,
            site: Option<String>,
            managed: Vec<String>,
        },
    }

    #[derive(Default)]
    struct Books {
        cache: PeriodCache<Customer, Invoice>,
        customers: Mutex<Vec<Customer>>,
        invoices: Mutex<Vec<Invoice>>,
        calls: Mutex<Vec<Call>>,
        ids: AtomicU32,
        /// The next invoice create is committed, but its answer never arrives.
        lose_next_answer: Mutex<bool>,
        /// Every look-up fails, as when the vendor is down.
        lookups_fail: Mutex<bool>,
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    impl Books {
        fn calls(&self) -> Vec<Call> {
            lock(&self.calls).clone()
        }

        fn forget_calls(&self) {
            lock(&self.calls).clear();
        }

        fn record(&self, call: Call) {
            lock(&self.calls).push(call);
        }

        fn id(&self, prefix: &str) -> String {
            format!("{prefix}{}", self.ids.fetch_add(1, Ordering::SeqCst) + 1)
        }

        fn invoices(&self) -> Vec<Invoice> {
            lock(&self.invoices).clone()
        }

        fn lookup(&self) -> Result<(), RemoteError> {
            if *lock(&self.lookups_fail) {
                return Err(RemoteError::new(
                    Self::VENDOR,
                    "look up",
                    RemoteErrorKind::Server { status: 503 },
                    "down",
                ));
            }
            Ok(())
        }

        fn add_customer(&self, name: &str) -> String {
            let id = self.id("c");
            lock(&self.customers).push(Customer {
                id: id.clone(),
                name: name.into(),
                email: None,
            });
            id
        }

        fn add_invoice(&self, customer: &str, reference: &str, lines: Vec<InvoiceLine>) -> String {
            let id = self.id("i");
            lock(&self.invoices).push(Invoice {
                id: id.clone(),
                customer: customer.into(),
                reference: reference.into(),
                draft: true,
                lines,
            });
            id
        }
    }

    #[async_trait]
    impl AccountingTarget for Books {
        type Customer = Customer;
        type Invoice = Invoice;
        const VENDOR: &'static str = "books";
        const NAME: &'static str = "Books";
        const CUSTOMER: &'static str = "client record";

        fn cache(&self) -> &PeriodCache<Customer, Invoice> {
            &self.cache
        }

        async fn list_customers(&self) -> Result<Vec<Customer>, RemoteError> {
            self.record(Call::ListCustomers);
            self.lookup()?;
            Ok(lock(&self.customers).clone())
        }

        async fn list_period_invoices(
            &self,
            period: &BillingPeriod,
        ) -> Result<Vec<Invoice>, RemoteError> {
            self.record(Call::ListInvoices(*period));
            self.lookup()?;
            Ok(self.invoices())
        }

        fn invoice_key(invoice: &Invoice) -> Option<String> {
            Some(Self::reference_key(&invoice.reference))
        }

        fn reference_key(reference: &str) -> String {
            reference.trim().to_lowercase()
        }

        fn customer_matches(customer: &Customer, wanted: &str) -> bool {
            match wanted.strip_prefix("id:") {
                Some(id) => customer.id == id,
                None if wanted.contains('@') => customer.email.as_deref() == Some(wanted),
                None => customer.name.eq_ignore_ascii_case(wanted),
            }
        }

        async fn find_customer(&self, wanted: &str) -> Result<Option<Customer>, RemoteError> {
            self.record(Call::FindCustomer(wanted.into()));
            self.lookup()?;
            Ok(lock(&self.customers)
                .iter()
                .find(|c| Self::customer_matches(c, wanted))
                .cloned())
        }

        async fn find_invoice(&self, reference: &str) -> Result<Option<Invoice>, RemoteError> {
            self.record(Call::FindInvoice(reference.into()));
            self.lookup()?;
            Ok(self
                .invoices()
                .into_iter()
                .find(|i| Self::invoice_key(i) == Some(Self::reference_key(reference))))
        }

        fn customer_id(customer: &Customer) -> String {
            customer.id.clone()
        }

        fn invoice_id(invoice: &Invoice) -> String {
            invoice.id.clone()
        }

        fn to_actual(
            invoice: &Invoice,
            target: &InvoiceTarget,
            products: &[String],
        ) -> ActualInvoice {
            let remote = invoice.lines.iter().map(|l| {
                (
                    l.product.clone(),
                    l.description.clone(),
                    l.quantity,
                    l.unit_price,
                )
            });
            ActualInvoice {
                id: invoice.id.clone(),
                number: None,
                status: if invoice.draft {
                    InvoiceStatus::Draft
                } else {
                    InvoiceStatus::Final("SENT".into())
                },
                fields: InvoiceFields {
                    reference: invoice.reference.clone(),
                    date: target.date,
                    due_date: target.due_date,
                    lines: client_lines(remote, products, target.site.as_deref()),
                },
            }
        }

        async fn create_customer(
            &self,
            name: &str,
            email: Option<&str>,
        ) -> Result<Applied, RemoteError> {
            self.record(Call::CreateCustomer {
                name: name.into(),
                email: email.map(Into::into),
            });
            let id = self.add_customer(name);
            if let Some(c) = lock(&self.customers).iter_mut().find(|c| c.id == id) {
                c.email = email.map(Into::into);
            }
            Ok(Applied {
                remote_id: id,
                reconciled: false,
            })
        }

        async fn create_invoice(
            &self,
            account: &AccountRef,
            reference: &str,
            site: Option<&str>,
            managed: &[String],
            after: &InvoiceFields,
        ) -> Result<Applied, RemoteError> {
            self.record(Call::CreateInvoice {
                customer: account.company_id.clone(),
                reference: reference.into(),
                site: site.map(Into::into),
                managed: managed.to_vec(),
            });
            let lines = merge_lines::<InvoiceLine>(&[], &after.lines, managed, site, Clone::clone);
            let id = self.add_invoice(&account.company_id, reference, lines);
            if std::mem::take(&mut *lock(&self.lose_next_answer)) {
                return Err(RemoteError::new(
                    Self::VENDOR,
                    "create invoice",
                    RemoteErrorKind::ResponseLost,
                    "the answer was lost after the invoice was made",
                ));
            }
            Ok(Applied {
                remote_id: id,
                reconciled: false,
            })
        }

        async fn update_invoice(
            &self,
            id: &str,
            site: Option<&str>,
            managed: &[String],
            after: &InvoiceFields,
        ) -> Result<Applied, RemoteError> {
            self.record(Call::UpdateInvoice {
                id: id.into(),
                site: site.map(Into::into),
                managed: managed.to_vec(),
            });
            let mut invoices = lock(&self.invoices);
            let invoice = invoices.iter_mut().find(|i| i.id == id).ok_or_else(|| {
                RemoteError::new(
                    Self::VENDOR,
                    "update invoice",
                    RemoteErrorKind::NotFound,
                    id,
                )
            })?;
            if !invoice.draft {
                return Err(RemoteError::new(
                    Self::VENDOR,
                    "update invoice",
                    RemoteErrorKind::Conflict,
                    "sent",
                ));
            }
            let remote: Vec<(String, String, InvoiceLine)> = invoice
                .lines
                .iter()
                .map(|l| (l.product.clone(), l.description.clone(), l.clone()))
                .collect();
            invoice.lines = merge_lines(&remote, &after.lines, managed, site, Clone::clone);
            Ok(Applied {
                remote_id: id.into(),
                reconciled: false,
            })
        }
    }

    const REFERENCE: &str = "rollcall ACME 2026-11";

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).expect("date")
    }

    fn november() -> BillingPeriod {
        BillingPeriod {
            start: day(1),
            end: day(30),
        }
    }

    fn target(period: BillingPeriod, site: Option<&str>) -> InvoiceTarget {
        InvoiceTarget {
            period,
            reference: REFERENCE.into(),
            date: period.start,
            due_date: None,
            bill_to: site.map(|_| "Acme Group".to_owned()),
            site: site.map(Into::into),
        }
    }

    fn account(company: &str) -> BillingAccount {
        BillingAccount {
            company: company.into(),
            agreement: None,
            invoice: Some(target(november(), None)),
        }
    }

    fn line(product: &str, quantity: i64, description: &str) -> InvoiceLine {
        InvoiceLine {
            product: product.into(),
            quantity: Decimal::from(quantity),
            unit_price: Decimal::new(2200, 2),
            description: description.into(),
        }
    }

    fn fields(lines: Vec<InvoiceLine>) -> InvoiceFields {
        InvoiceFields {
            reference: REFERENCE.into(),
            date: day(1),
            due_date: None,
            lines,
        }
    }

    fn create_invoice(site: Option<&str>, lines: Vec<InvoiceLine>) -> Change {
        Change::CreateInvoice {
            reference: REFERENCE.into(),
            site: site.map(Into::into),
            after: Box::new(fields(lines)),
        }
    }

    fn of(customer: &str) -> AccountRef {
        AccountRef {
            company_id: customer.into(),
            agreement_id: None,
        }
    }

    fn products(lines: &[InvoiceLine]) -> Vec<(&str, Decimal, &str)> {
        lines
            .iter()
            .map(|l| (l.product.as_str(), l.quantity, l.description.as_str()))
            .collect()
    }

    #[tokio::test]
    async fn a_customer_is_looked_up_before_it_is_made_and_one_found_is_adopted() {
        let books = Books::default();
        let change = Change::CreateCustomer {
            name: "Acme".into(),
            email: Some("billing@acme.example".into()),
        };
        let made = apply(&books, &of(""), &change).await.expect("create");
        assert!(!made.reconciled);
        assert_eq!(
            books.calls(),
            vec![
                Call::FindCustomer("Acme".into()),
                Call::CreateCustomer {
                    name: "Acme".into(),
                    email: Some("billing@acme.example".into())
                },
            ]
        );
        // Again, as after a lost answer or a crash: the first one is taken, none is made.
        books.forget_calls();
        let again = apply(&books, &of(""), &change).await.expect("again");
        assert_eq!(again.remote_id, made.remote_id);
        assert!(again.reconciled);
        assert_eq!(books.calls(), vec![Call::FindCustomer("Acme".into())]);
        assert_eq!(lock(&books.customers).len(), 1);
    }

    #[tokio::test]
    async fn an_invoice_is_made_only_after_its_customer_and_on_that_customer() {
        let books = Books::default();
        let invoice = create_invoice(None, vec![line("M365", 3, "3 users")]);
        let err = apply(&books, &of(""), &invoice)
            .await
            .expect_err("no customer yet");
        assert_eq!(err.kind, RemoteErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            "books: create invoice: the client has no client record in Books yet"
        );
        assert!(
            !books
                .calls()
                .iter()
                .any(|c| matches!(c, Call::CreateInvoice { .. })),
            "{:?}",
            books.calls()
        );
        assert!(books.invoices().is_empty());

        // The plan's order: the customer first, then the invoice on the id it was given.
        books.forget_calls();
        let customer = apply(
            &books,
            &of(""),
            &Change::CreateCustomer {
                name: "Acme".into(),
                email: None,
            },
        )
        .await
        .expect("customer");
        apply(&books, &of(&customer.remote_id), &invoice)
            .await
            .expect("invoice");
        let calls = books.calls();
        let made_customer = calls
            .iter()
            .position(|c| matches!(c, Call::CreateCustomer { .. }))
            .expect("customer made");
        let made_invoice = calls
            .iter()
            .position(|c| matches!(c, Call::CreateInvoice { .. }))
            .expect("invoice made");
        assert!(made_customer < made_invoice, "{calls:?}");
        assert_eq!(books.invoices().len(), 1);
        assert_eq!(books.invoices()[0].customer, customer.remote_id);
    }

    #[tokio::test]
    async fn an_invoice_create_retried_after_a_lost_answer_updates_the_one_made() {
        let books = Books::default();
        let acme = books.add_customer("Acme");
        *lock(&books.lose_next_answer) = true;
        let invoice = create_invoice(None, vec![line("M365", 3, "3 users")]);
        let err = apply(&books, &of(&acme), &invoice)
            .await
            .expect_err("answer lost");
        assert_eq!(err.kind, RemoteErrorKind::ResponseLost);
        assert_eq!(books.invoices().len(), 1, "it was made all the same");

        let retried = apply(&books, &of(&acme), &invoice).await.expect("retried");
        assert!(retried.reconciled);
        let invoices = books.invoices();
        assert_eq!(invoices.len(), 1, "not made twice: {invoices:?}");
        assert_eq!(retried.remote_id, invoices[0].id);
        // Every create was preceded by a look-up of the period's reference.
        assert_eq!(
            books.calls(),
            vec![
                Call::FindInvoice(REFERENCE.into()),
                Call::CreateInvoice {
                    customer: acme.clone(),
                    reference: REFERENCE.into(),
                    site: None,
                    managed: vec!["M365".into()],
                },
                Call::FindInvoice(REFERENCE.into()),
                Call::UpdateInvoice {
                    id: invoices[0].id.clone(),
                    site: None,
                    managed: vec!["M365".into()],
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_sister_site_invoice_made_after_the_read_ahead_is_found_not_made_again() {
        let books = Books::default();
        books.add_customer("Acme Group");
        let head = BillingAccount {
            invoice: Some(target(november(), Some("Head office"))),
            ..account("Acme Group")
        };
        let branch = BillingAccount {
            invoice: Some(target(november(), Some("Branch"))),
            ..account("Acme Group")
        };
        prepare(&books, &[head.clone(), branch.clone()])
            .await
            .expect("prepare");
        let head_state = read(&books, &head, &["M365".into()]).await.expect("head");
        let branch_state = read(&books, &branch, &["M365".into()])
            .await
            .expect("branch");
        assert!(head_state.invoice.is_none() && branch_state.invoice.is_none());

        apply(
            &books,
            &head_state.account,
            &create_invoice(Some("Head office"), vec![line("M365", 3, "3 users")]),
        )
        .await
        .expect("head office");
        // The branch's plan was made before that invoice existed; its create must find it.
        let applied = apply(
            &books,
            &branch_state.account,
            &create_invoice(Some("Branch"), vec![line("M365", 2, "2 users")]),
        )
        .await
        .expect("branch");
        assert!(applied.reconciled);
        let invoices = books.invoices();
        assert_eq!(invoices.len(), 1, "{invoices:?}");
        assert_eq!(
            products(&invoices[0].lines),
            vec![
                ("M365", Decimal::from(3), "Head office: 3 users"),
                ("M365", Decimal::from(2), "Branch: 2 users"),
            ]
        );
    }

    #[tokio::test]
    async fn a_look_up_that_fails_stops_the_create() {
        let books = Books::default();
        let acme = books.add_customer("Acme");
        *lock(&books.lookups_fail) = true;
        let err = apply(
            &books,
            &of(&acme),
            &create_invoice(None, vec![line("M365", 3, "3 users")]),
        )
        .await
        .expect_err("down");
        assert_eq!(err.kind, RemoteErrorKind::Server { status: 503 });
        let err = apply(
            &books,
            &of(""),
            &Change::CreateCustomer {
                name: "Globex".into(),
                email: None,
            },
        )
        .await
        .expect_err("down");
        assert_eq!(err.message, "down");
        assert_eq!(
            books.calls(),
            vec![
                Call::FindInvoice(REFERENCE.into()),
                Call::FindCustomer("Globex".into())
            ],
            "nothing made without knowing what is there"
        );
        assert!(books.invoices().is_empty());
        assert_eq!(lock(&books.customers).len(), 1);
    }

    #[tokio::test]
    async fn an_update_manages_the_products_on_either_side_and_keeps_every_other_line() {
        let books = Books::default();
        let acme = books.add_customer("Acme");
        let id = books.add_invoice(
            &acme,
            REFERENCE,
            vec![
                line("M365", 3, "3 users"),
                line("PROJECT", 1, "Cabling, typed by a person"),
                line("BACKUP", 2, "2 users"),
                line("E3", 1, "1 user"),
            ],
        );
        // BACKUP leaves the plan, E3 is not in it at all, EDR arrives.
        let before = fields(vec![
            line("M365", 3, "3 users"),
            line("BACKUP", 2, "2 users"),
        ]);
        let after = fields(vec![line("M365", 4, "4 users"), line("EDR", 4, "4 users")]);
        apply(
            &books,
            &of(&acme),
            &Change::UpdateInvoice {
                id: id.clone(),
                reference: REFERENCE.into(),
                site: None,
                before: Box::new(before),
                after: Box::new(after),
            },
        )
        .await
        .expect("update");
        assert_eq!(
            books.calls(),
            vec![Call::UpdateInvoice {
                id,
                site: None,
                managed: vec!["BACKUP".into(), "EDR".into(), "M365".into()],
            }]
        );
        assert_eq!(
            products(&books.invoices()[0].lines),
            vec![
                ("PROJECT", Decimal::from(1), "Cabling, typed by a person"),
                ("E3", Decimal::from(1), "1 user"),
                ("M365", Decimal::from(4), "4 users"),
                ("EDR", Decimal::from(4), "4 users"),
            ]
        );
    }

    #[tokio::test]
    async fn a_create_that_finds_the_invoice_manages_only_its_own_products() {
        let books = Books::default();
        let acme = books.add_customer("Acme");
        // Made by hand before rollcall's first run, with the period's reference on it.
        books.add_invoice(
            &acme,
            REFERENCE,
            vec![line("PROJECT", 1, "Cabling"), line("M365", 9, "guess")],
        );
        let applied = apply(
            &books,
            &of(&acme),
            &create_invoice(None, vec![line("M365", 3, "3 users")]),
        )
        .await
        .expect("create");
        assert!(applied.reconciled);
        assert_eq!(
            products(&books.invoices()[0].lines),
            vec![
                ("PROJECT", Decimal::from(1), "Cabling"),
                ("M365", Decimal::from(3), "3 users"),
            ]
        );
    }

    #[tokio::test]
    async fn a_final_invoice_found_by_a_create_is_refused_not_replaced() {
        let books = Books::default();
        let acme = books.add_customer("Acme");
        books.add_invoice(&acme, REFERENCE, vec![line("M365", 2, "2 users")]);
        lock(&books.invoices)[0].draft = false;
        let err = apply(
            &books,
            &of(&acme),
            &create_invoice(None, vec![line("M365", 3, "3 users")]),
        )
        .await
        .expect_err("sent");
        assert_eq!(err.kind, RemoteErrorKind::Conflict);
        assert_eq!(books.invoices().len(), 1, "no second invoice beside it");
    }

    #[tokio::test]
    async fn what_an_invoice_target_cannot_do_is_refused_in_the_shared_words() {
        let books = Books::default();
        let err = read(
            &books,
            &BillingAccount {
                invoice: None,
                ..account("Acme")
            },
            &[],
        )
        .await
        .expect_err("no period");
        assert_eq!(err.kind, RemoteErrorKind::Rejected);
        assert_eq!(
            err.to_string(),
            "books: read: Books bills by invoice, but no billing period was given"
        );
        let person = ContactFields {
            first_name: "Ada".into(),
            ..ContactFields::default()
        };
        for change in [
            Change::CreateContact {
                key: ContactKey("ada".into()),
                after: Box::new(person),
            },
            Change::CreateAddition {
                product: "M365".into(),
                after: Box::new(crate::AdditionFields {
                    quantity: 1,
                    unit_price: Decimal::ONE,
                    invoice_description: String::new(),
                }),
            },
        ] {
            let err = apply(&books, &of("c1"), &change)
                .await
                .expect_err("not an invoice");
            assert_eq!(err.kind, RemoteErrorKind::Rejected);
            assert_eq!(
                err.to_string(),
                format!(
                    "books: {}: Books bills by invoice: it has no agreements or per-person contacts",
                    change.kind()
                )
            );
        }
        assert!(books.calls().is_empty(), "{:?}", books.calls());
    }

    #[tokio::test]
    async fn pages_are_read_ahead_only_for_enough_clients_of_a_period_and_answer_their_reads() {
        let books = Books::default();
        let acme = books.add_customer("Acme");
        books.add_customer("Globex");
        let id = books.add_invoice(&acme, REFERENCE, vec![line("M365", 3, "3 users")]);

        prepare(&books, &[account("Acme")]).await.expect("one");
        let without_period = BillingAccount {
            invoice: None,
            ..account("Acme")
        };
        prepare(&books, &[without_period.clone(), without_period])
            .await
            .expect("no period");
        assert!(books.calls().is_empty(), "{:?}", books.calls());

        prepare(&books, &[account("Acme"), account("Globex")])
            .await
            .expect("two");
        assert_eq!(
            books.calls(),
            vec![Call::ListCustomers, Call::ListInvoices(november())]
        );
        books.forget_calls();
        let state = read(&books, &account("Acme"), &["M365".into()])
            .await
            .expect("read");
        assert!(books.calls().is_empty(), "answered from the pages");
        assert_eq!(state.account.company_id, acme);
        assert_eq!(
            state.invoice.as_ref().map(|i| i.id.as_str()),
            Some(id.as_str())
        );

        // Another period is not in the pages: the customer, then the invoice, are looked up.
        let december = BillingPeriod {
            start: NaiveDate::from_ymd_opt(2026, 12, 1).expect("date"),
            end: NaiveDate::from_ymd_opt(2026, 12, 31).expect("date"),
        };
        let later = BillingAccount {
            invoice: Some(target(december, None)),
            ..account("Acme")
        };
        read(&books, &later, &[]).await.expect("december");
        assert_eq!(
            books.calls(),
            vec![
                Call::FindCustomer("Acme".into()),
                Call::FindInvoice(REFERENCE.into())
            ]
        );

        // Once forgotten (after a write), reads ask the vendor again.
        books.cache().forget();
        books.forget_calls();
        read(&books, &account("Globex"), &[]).await.expect("globex");
        assert_eq!(books.calls().len(), 2, "{:?}", books.calls());
    }

    #[tokio::test]
    async fn a_site_is_read_under_its_parent_customer_with_only_its_own_lines() {
        let books = Books::default();
        let parent = books.add_customer("Acme Group");
        books.add_customer("Branch");
        books.add_invoice(
            &parent,
            REFERENCE,
            vec![
                line("M365", 3, "Head office: 3 users"),
                line("M365", 2, "Branch: 2 users"),
                line("PROJECT", 1, "Branch: cabling"),
            ],
        );
        let branch = BillingAccount {
            invoice: Some(target(november(), Some("Branch"))),
            ..account("Branch")
        };
        let state = read(&books, &branch, &["M365".into()]).await.expect("read");
        assert_eq!(books.calls()[0], Call::FindCustomer("Acme Group".into()));
        assert_eq!(state.account.company_id, parent);
        let invoice = state.invoice.expect("invoice");
        assert_eq!(
            products(&invoice.fields.lines),
            vec![("M365", Decimal::from(2), "2 users")]
        );
    }
}
