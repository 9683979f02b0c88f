//! A service ticket on the client's company, on a board the pipeline names: for MSPs whose
//! people work from the PSA's boards rather than chat. The ticket itself is vendor-shaped and
//! opened by the billing system's connector (`ServiceDesk::open_ticket`); this channel only
//! asks for it.

use std::sync::Arc;

use async_trait::async_trait;
use rollcall_core::{BillingSystem, NewTicket};

use super::{Channel, Message, Undelivered};
use crate::config::Pipeline;
use crate::store::Store;

pub struct TicketChannel {
    board: String,
    /// The pipeline's billing system, or why it could not be set up.
    billing: Result<Arc<dyn BillingSystem>, String>,
}

impl TicketChannel {
    pub fn new(pipeline: &Pipeline, store: &Store, board: String) -> TicketChannel {
        let billing = pipeline
            .target
            .build(&store.build_context().for_pipeline(&pipeline.name))
            .map_err(|e| e.message);
        TicketChannel { board, billing }
    }
}

#[async_trait]
impl Channel for TicketChannel {
    fn kind(&self) -> &'static str {
        "ticket"
    }

    async fn deliver(&self, message: &Message) -> Result<(), Undelivered> {
        let billing = self
            .billing
            .as_ref()
            .map_err(|e| Undelivered::permanent(format!("ticket: {e}")))?;
        let desk = billing.service_desk().ok_or_else(|| {
            Undelivered::permanent(format!(
                "ticket: {} has no service desk to open tickets on (hint: use another channel)",
                billing.kind()
            ))
        })?;
        let known = message
            .event
            .account
            .clone()
            .filter(|a| !a.company_id.is_empty());
        let account = match (known, &message.event.billed_as) {
            (Some(a), _) => a,
            // The sync failed before the billing system was read: find the company now.
            (None, Some(billed_as)) => billing
                .read(billed_as, &[])
                .await
                .map(|state| state.account)
                .map_err(|e| {
                    Undelivered::permanent(format!("ticket: cannot find the client's company: {e}"))
                })?,
            (None, None) => {
                return Err(Undelivered::permanent(
                    "ticket: the client's company is not known in the billing system",
                ));
            }
        };
        let account = &account;
        let ticket = NewTicket {
            board: self.board.clone(),
            summary: message.event.title.clone(),
            description: message.text(),
            reference: message.reference(),
        };
        // The connector's HTTP plumbing already retried what may pass, and reconciles a lost
        // answer: its failure is final.
        desk.open_ticket(account, &ticket)
            .await
            .map(|id| tracing::info!(ticket = %id, board = %self.board, "Opened a service ticket."))
            .map_err(|e| Undelivered::permanent(format!("ticket: {e} (hint: {})", e.hint())))
    }
}
