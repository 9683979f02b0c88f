//! The `rollcall` command line: parses arguments, runs one command, and decides the exit code.
//!
//! Exit codes belong here and nowhere else: 0 ok, 1 invalid input (the user's to fix),
//! 2 refused by a guard (or a saved plan gone stale), 3 a remote system failed.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use rollcall_core::text::clean;

use crate::config::{self, Pipeline};
pub use crate::engine::Verdict as Exit;
use crate::engine::{Engine, EngineError, Options, Synced};
use crate::run::{self, PipelinePlan};
use crate::store::Store;
use crate::{demo, pipeline_tests, report};

/// rollcall — bill an MSP's clients per user: read their directories, plan, apply.
#[derive(Debug, Parser)]
#[command(name = "rollcall", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where rollcall keeps its history: an SQLite file, or a PostgreSQL database
    /// (`postgres://user@host/db`) that rollcall processes on many machines share.
    #[arg(
        long,
        global = true,
        env = "ROLLCALL_STORE",
        default_value = ".rollcall/state.db"
    )]
    store: PathBuf,
    /// A file holding the key OAuth tokens are encrypted with in the store and in Redis: 32
    /// random bytes in base64 (`openssl rand -base64 32`). Or give the key itself in
    /// ROLLCALL_STORE_KEY. Without either, tokens are stored in clear.
    #[arg(long, global = true, env = "ROLLCALL_STORE_KEY_FILE")]
    store_key_file: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// The job queue `serve`, `worker`, `enqueue` and `jobs` share: `redis://HOST:PORT` for
    /// workers on many machines, or an SQLite file (default: `queue.db` beside the store).
    #[arg(long, global = true, env = "ROLLCALL_QUEUE")]
    queue: Option<String>,
    /// The billing period accounting targets invoice: a month (`2026-11`) or a day in it.
    /// Default: the month of the day the run plans.
    #[arg(long, global = true, env = "ROLLCALL_PERIOD")]
    period: Option<String>,
}

/// How queued jobs run: shared by `serve` and `worker`.
#[derive(Debug, Clone, clap::Args)]
struct JobSettings {
    /// Attempts each job gets (with backoff) before it is left failed.
    #[arg(long, default_value_t = 3)]
    attempts: usize,
    /// A client lock's lease: a killed worker's client is free again after this.
    #[arg(long, default_value_t = 30)]
    lock_ttl_seconds: u64,
    /// How often a worker proves it is alive; after three missed beats its jobs go to
    /// another worker.
    #[arg(long, default_value_t = 5)]
    heartbeat_seconds: u64,
    /// The first retry's wait; each later one waits longer.
    #[arg(long, default_value_t = 2)]
    retry_backoff_seconds: u64,
}

impl JobSettings {
    fn liveness(&self) -> crate::queue::Liveness {
        crate::queue::Liveness {
            heartbeat: std::time::Duration::from_secs(self.heartbeat_seconds.max(1)),
            missed: 3,
        }
    }

    fn worker_options(&self, concurrency: usize) -> crate::queue::worker::WorkerOptions {
        let lock_ttl = std::time::Duration::from_secs(self.lock_ttl_seconds.max(1));
        crate::queue::worker::WorkerOptions {
            name: crate::queue::worker::unique_name("worker"),
            concurrency,
            attempts: self.attempts.max(1),
            lock_ttl,
            lock_wait: lock_ttl * 2,
            retry_backoff: std::time::Duration::from_secs(self.retry_backoff_seconds.max(1)),
        }
    }
}

#[derive(Debug, Subcommand)]
enum JobsAction {
    /// Queue a failed job again (as a new job).
    Retry {
        /// The job's id, as `rollcall jobs` lists it.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum StoreAction {
    /// Copy every table of an SQLite store into a PostgreSQL store, then check both hold the
    /// same rows. Stop rollcall first: runs during the copy would be missing from it.
    Copy {
        /// The SQLite store file (e.g. .rollcall/state.db).
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL store: postgres://user@host/db (made and migrated if new).
        #[arg(long)]
        to: PathBuf,
        /// Replace everything the target holds (it is refused when not empty).
        #[arg(long)]
        force: bool,
    },
    /// Check the store (`--store`): its schema version, that every table is there and, on
    /// SQLite, the file's integrity. Exits 2 with what to do when something is wrong.
    Check,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum SchemaFormat {
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ReportFormat {
    Html,
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum PlanOutput {
    Table,
    Json,
    Markdown,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a pipeline file: YAML shape, CEL rules, templates, product references.
    Validate {
        /// The pipeline file (YAML).
        file: PathBuf,
    },
    /// Show what would change, client by client, without writing anything.
    Plan {
        /// The pipeline file (YAML).
        file: PathBuf,
        /// Only this client (by name, any case).
        #[arg(long)]
        client: Option<String>,
        /// `json` prints one object with a `changes` array; save it to apply it later.
        /// `markdown` is a summary per client for a pull-request comment.
        #[arg(long, value_enum, default_value_t = PlanOutput::Table)]
        output: PlanOutput,
        /// Let plans through that remove more seats than the guard allows.
        #[arg(long)]
        allow_drop: bool,
    },
    /// Apply a plan: a fresh one, or a saved one (`--plan`) if the billing system has not changed since.
    Apply {
        /// The pipeline file (YAML).
        file: PathBuf,
        /// A plan saved with `rollcall plan --output json`.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Only this client (by name, any case).
        #[arg(long)]
        client: Option<String>,
        /// Let a fresh plan remove more seats than the guard allows (not with --plan: make
        /// the plan with `rollcall plan --allow-drop`).
        #[arg(long)]
        allow_drop: bool,
        /// Do not ask for confirmation (needed when not at a terminal: scripts, CI).
        #[arg(long, short)]
        yes: bool,
        /// How long to wait for a client a worker is syncing.
        #[arg(long, default_value_t = 60)]
        lock_wait_seconds: u64,
    },
    /// Approve rollcall's access to the pipeline's billing system, for one that signs in with
    /// OAuth (the accounting systems): prints
    /// the consent page's address, waits for the redirect on a loopback port, and keeps the
    /// tokens in the store. Run it again when a run says the connection must be reconnected.
    Connect {
        /// The pipeline file (YAML).
        file: PathBuf,
        /// The loopback port the consent redirects to (register
        /// `http://localhost:PORT/callback` as the app's redirect URI).
        #[arg(long, default_value_t = 8765)]
        port: u16,
        /// How long to wait for the consent, in seconds.
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// Serve signed change notifications (a client's HR system, a directory or billing system
    /// that pushes its changes) and queue a
    /// sync of the client each one is about, debounced; tick the pipelines' schedules; and
    /// (unless `--workers 0`) run workers in this process; with ROLLCALL_CONSOLE_TOKEN, serve
    /// the console under /console. Secrets come from the environment:
    /// ROLLCALL_WEBHOOK_SECRET, and each connector's webhook secret (docs/deploy.md lists them;
    /// the service warns at start of one its pipelines need that is unset).
    Serve {
        /// The pipeline files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The address and port to listen on (`0.0.0.0:8080` for every interface).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Notifications for one client within this many seconds make one sync.
        #[arg(long, default_value_t = 5)]
        debounce_seconds: u64,
        /// Jobs this process runs at once; 0 leaves them to `rollcall worker` processes.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// The address directories reach this service at (`https://rollcall.example.com`):
        /// with it, their change subscriptions are created and renewed (`rollcall subscribe`)
        /// every twelve hours and when the directory asks.
        #[arg(long, env = "ROLLCALL_PUBLIC_URL")]
        public_url: Option<String>,
        #[command(flatten)]
        jobs: JobSettings,
    },
    /// Take sync jobs off the queue and run them, each under its client's lock; tick the
    /// pipelines' schedules. Run as many as the vendors' limits allow, on one machine (SQLite
    /// queue) or many (`--queue redis://…`).
    Worker {
        /// The pipeline files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Jobs run at once.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Serve `/healthz` and `/metrics` for this worker here.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        #[command(flatten)]
        jobs: JobSettings,
    },
    /// Create or renew the change subscriptions of every directory that can notify,
    /// pointed at this service's webhooks. `serve --public-url` does it on its own; run this
    /// to set them up or check them. Needs the secret the subscriptions carry (its webhook's,
    /// as `serve` checks it), and the service
    /// answering at the URL (the subscription's handshake calls it).
    Subscribe {
        /// The pipeline files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The address the service is reached at, as in `serve --public-url`.
        #[arg(long, env = "ROLLCALL_PUBLIC_URL")]
        public_url: String,
        /// Renew subscriptions that expire within this many hours.
        #[arg(long, default_value_t = 72)]
        renew_before_hours: u64,
    },
    /// Queue a sync of one client, or of every client of the pipeline.
    Enqueue {
        /// The pipeline file (YAML).
        file: PathBuf,
        /// Only this client (default: every client of the pipeline).
        #[arg(long)]
        client: Option<String>,
    },
    /// The queue's jobs, newest first: status, attempts, and why failed ones failed.
    Jobs {
        #[command(subcommand)]
        action: Option<JobsAction>,
        /// Only failed jobs.
        #[arg(long)]
        failed: bool,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// A table, or JSON for scripts.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Print the key a client's system signs its webhooks with (derived from
    /// ROLLCALL_WEBHOOK_SECRET), and the address to send them to.
    WebhookKey {
        /// The pipeline file (YAML).
        file: PathBuf,
        /// The client whose key to print.
        #[arg(long)]
        client: String,
    },
    /// Plan and apply without asking (for schedules and scripts).
    Run {
        /// The pipeline file (YAML).
        file: PathBuf,
        /// Only this client (by name, any case).
        #[arg(long)]
        client: Option<String>,
        /// Let plans through that remove more seats than the guard allows.
        #[arg(long)]
        allow_drop: bool,
        /// How long to wait for a client a worker is syncing.
        #[arg(long, default_value_t = 60)]
        lock_wait_seconds: u64,
    },
    /// Run the pipeline's test cases (its `tests:` and a sibling NAME.tests.yaml): people in,
    /// expected seats, contacts and invoice lines out. Exits 1 when a case fails.
    Test {
        /// The pipeline files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Why a person is billed (or not), or why a product's seats moved, in sentences: from
    /// the rules evaluated on the directory now and from the seat ledger of past runs.
    Explain {
        /// The pipeline file (YAML).
        file: PathBuf,
        /// The client the person or product belongs to.
        #[arg(long)]
        client: String,
        /// An id, email, username or display name.
        #[arg(long, conflicts_with = "product", required_unless_present = "product")]
        person: Option<String>,
        /// A product id or catalogue identifier.
        #[arg(long)]
        product: Option<String>,
    },
    /// Changes applied so far, newest first, each with the id of the run that made it.
    History {
        /// Only this client's changes.
        #[arg(long)]
        client: Option<String>,
        /// At most this many changes.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// A table, or JSON for scripts.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Recent runs, newest first: id (for `rollcall report`), trigger, outcome, seats, money.
    Runs {
        /// At most this many runs.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// A table, or JSON for scripts.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Write a commented starter pipeline for a directory and a billing system.
    Init {
        /// Where to write it (refuses to overwrite).
        file: PathBuf,
        /// The kind of directory: file, or any registered directory connector.
        #[arg(long, default_value = "file")]
        source: String,
        /// The kind of billing system.
        #[arg(long, default_value = config::connectors::DEFAULT_TARGET)]
        target: String,
    },
    /// A recorded run's report: who was billed for what, before → after, money, guards, errors.
    Report {
        /// The run's id, as `rollcall runs` lists it.
        run_id: String,
        /// HTML (a self-contained page), CSV (a row per client and product) or JSON.
        #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
        format: ReportFormat,
        /// A handlebars template to use instead of the shipped one (HTML only).
        #[arg(long, env = "ROLLCALL_REPORT_TEMPLATE")]
        template: Option<PathBuf>,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// The client value report: for one client and period, the people billed and the tickets
    /// opened and closed for each (needs a PSA's service desk).
    ValueReport {
        /// The pipeline file (YAML).
        file: PathBuf,
        /// The client to report on.
        #[arg(long)]
        client: String,
        /// First day of the period (YYYY-MM-DD).
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Last day of the period (YYYY-MM-DD).
        #[arg(long)]
        to: chrono::NaiveDate,
        /// HTML, CSV or JSON. HTML is not printed to a terminal: give --output, or it is
        /// written to a file whose name is printed.
        #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
        format: ReportFormat,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the JSON Schema of pipeline files (or the reference built from it).
    Schema {
        /// JSON Schema, or the Markdown reference built from it (docs/reference.md).
        #[arg(long, value_enum, default_value_t = SchemaFormat::Json)]
        format: SchemaFormat,
    },
    /// Run a vendor sandbox standalone (a stateful fake of its API).
    Sandbox {
        // Which connector's sandbox, by its kind as a pipeline names it: listed from the registry.
        #[arg(help = config::connectors::sandbox_help())]
        kind: String,
        /// The port on 127.0.0.1 to listen on.
        #[arg(long, default_value_t = 8421)]
        port: u16,
        /// A JSON seed file (companies, agreements, catalog, credentials); default: the demo seed.
        #[arg(long)]
        seed: Option<PathBuf>,
    },
    /// See rollcall work end to end with nothing installed: a sandbox, a plan, an apply, a resync.
    Demo,
    /// Plans waiting for a person (refused by a guard, or held by the pipeline's approval
    /// policy), and the decisions made on earlier ones. With an id: that one and its plan.
    Approvals {
        /// One approval (its id, or the id's first characters), shown with its plan.
        id: Option<String>,
        /// Only approvals in this state: pending, approved, rejected, superseded, expired.
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// A table, or JSON for scripts.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Apply exactly the plan of a pending approval, if the billing system has not changed
    /// since it was made (otherwise the approval is superseded and the client planned again).
    Approve {
        /// The approval's id (or its first characters), as `rollcall approvals` lists it.
        id: String,
        /// The pipeline file, when it is no longer where the plan was made from.
        #[arg(long)]
        pipeline: Option<PathBuf>,
        /// Do not ask for confirmation (needed when not at a terminal).
        #[arg(long, short)]
        yes: bool,
        /// The day the plan takes effect (YYYY-MM-DD): when later than today, nothing is
        /// written now, and the client's first sync on or after that day applies the plan.
        #[arg(long)]
        effective: Option<String>,
        /// How long to wait for a client another sync holds.
        #[arg(long, default_value_t = 60)]
        lock_wait_seconds: u64,
    },
    /// The store itself: copy an SQLite store to PostgreSQL, or check a store.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Reject a pending approval: nothing is written for it.
    Reject {
        /// The approval's id (or its first characters).
        id: String,
        /// Why, for the record and the people notified.
        #[arg(long)]
        reason: String,
        /// The pipeline file, when it is no longer where the plan was made from (for its
        /// notification channels).
        #[arg(long)]
        pipeline: Option<PathBuf>,
    },
}

/// What this invocation's options say about every run it makes: passed down, never global.
#[derive(Debug, Clone)]
struct Invocation {
    /// The id of this invocation, shared by its logs and the first run it records.
    run_id: String,
    /// `--period`: the day every pipeline loaded by this invocation bills for.
    bill_day: Option<chrono::NaiveDate>,
    /// `--quiet`: progress bars are for a person watching, never for scripts.
    quiet: bool,
    /// `--store`.
    store: PathBuf,
    /// `--store-key-file`.
    store_key_file: Option<PathBuf>,
    /// `--queue`.
    queue: Option<String>,
}

impl Invocation {
    /// How a sync started at a terminal or by cron runs.
    fn by_hand<'a>(
        &'a self,
        command: &'a str,
        allow_drop: bool,
        lock_wait_seconds: u64,
        bars: &'a Option<Bars>,
    ) -> Options<'a> {
        Options {
            command,
            allow_drop,
            lock_wait: Duration::from_secs(lock_wait_seconds),
            run_id: Some(&self.run_id),
            progress: Bars::show(bars),
            ..Options::default()
        }
    }
}

/// The exit code of a command's verdict.
fn exit_code(exit: Exit) -> ExitCode {
    match exit {
        Exit::Ok => ExitCode::SUCCESS,
        Exit::Invalid => ExitCode::from(1),
        Exit::Refused => ExitCode::from(2),
        Exit::Remote => ExitCode::from(3),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.quiet);
    let bill_day = match cli.period.as_deref().map(config::invoice::parse_bill_day) {
        None => None,
        Some(Ok(day)) => Some(day),
        Some(Err(e)) => {
            eprintln!("error: --period: {e} (hint: e.g. --period 2026-11)");
            return exit_code(Exit::Invalid);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    // One id per invocation: on every log line (the `run` span) and on the changes it records.
    let invocation = Invocation {
        run_id: uuid::Uuid::now_v7().to_string(),
        bill_day,
        quiet: cli.quiet,
        store: cli.store.clone(),
        store_key_file: cli.store_key_file.clone(),
        queue: cli.queue.clone(),
    };
    let span = tracing::info_span!("run", run = %invocation.run_id);
    let command = tracing::Instrument::instrument(dispatch(cli, invocation), span);
    match runtime.block_on(command) {
        Ok(exit) => exit_code(exit),
        Err(e) => {
            eprintln!("error: {}", clean(&format!("{e:#}")));
            // A store that is not one is refused; a store key that is not one is bad input.
            if matches!(
                e.downcast_ref::<crate::store::StoreError>(),
                Some(crate::store::StoreError::Open { .. })
            ) {
                exit_code(Exit::Refused)
            } else if e.downcast_ref::<crate::seal::KeyError>().is_some() {
                exit_code(Exit::Invalid)
            } else {
                exit_code(Exit::Remote)
            }
        }
    }
}

fn init_logging(format: LogFormat, quiet: bool) {
    let default = if quiet { "error" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a terminal: a log file or journal keeps the escape codes as noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Directory text reaches logs: control characters are removed on the way out, so
        // colour codes cannot be kept either.
        .with_ansi(false)
        .with_writer(|| crate::sanitise::CleanStderr);
    match format {
        LogFormat::Text => builder.with_target(false).compact().init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

/// The table of commands: each is one function below, which calls the engine or a query and
/// prints.
async fn dispatch(cli: Cli, inv: Invocation) -> anyhow::Result<Exit> {
    let day = inv.bill_day;
    match cli.command {
        Command::Validate { file } => Ok(validate(day, &file)),
        Command::Serve {
            files,
            listen,
            debounce_seconds,
            workers,
            public_url,
            jobs,
        } => {
            serve(
                &inv,
                files,
                listen,
                debounce_seconds,
                workers,
                public_url,
                jobs,
            )
            .await
        }
        Command::Worker {
            files,
            concurrency,
            metrics_listen,
            jobs,
        } => worker(&inv, files, concurrency, metrics_listen, jobs).await,
        Command::Subscribe {
            files,
            public_url,
            renew_before_hours,
        } => subscribe(&inv, files, public_url, renew_before_hours).await,
        Command::Enqueue { file, client } => enqueue(&inv, file, client).await,
        Command::Jobs {
            action,
            failed,
            limit,
            output,
        } => jobs(&inv, action, failed, limit, output).await,
        Command::WebhookKey { file, client } => webhook_key(&inv, file, client).await,
        Command::Connect { file, port, wait } => connect(&inv, file, port, wait).await,
        Command::Plan {
            file,
            client,
            output,
            allow_drop,
        } => plan(&inv, file, client, output, allow_drop).await,
        Command::Apply {
            file,
            plan,
            client,
            allow_drop,
            yes,
            lock_wait_seconds,
        } => apply(&inv, file, plan, client, allow_drop, yes, lock_wait_seconds).await,
        Command::Run {
            file,
            client,
            allow_drop,
            lock_wait_seconds,
        } => run(&inv, file, client, allow_drop, lock_wait_seconds).await,
        Command::History {
            client,
            limit,
            output,
        } => history(&inv, client, limit, output).await,
        Command::Runs { limit, output } => runs(&inv, limit, output).await,
        Command::Test { files } => Ok(test(day, &files)),
        Command::ValueReport {
            file,
            client,
            from,
            to,
            format,
            output,
        } => value_report(&inv, file, client, from, to, format, output).await,
        Command::Report {
            run_id,
            format,
            template,
            output,
        } => report(&inv, run_id, format, template, output).await,
        Command::Init {
            file,
            source,
            target,
        } => Ok(init(&file, &source, &target)),
        Command::Explain {
            file,
            client,
            person,
            product,
        } => explain(&inv, file, client, person, product).await,
        Command::Schema { format } => schema(format),
        Command::Sandbox { kind, port, seed } => sandbox(kind, port, seed).await,
        Command::Demo => demo::run().await,
        Command::Approvals {
            id,
            state,
            limit,
            output,
        } => approvals(&inv, id, state, limit, output).await,
        Command::Approve {
            id,
            pipeline,
            yes,
            effective,
            lock_wait_seconds,
        } => approve(&inv, id, pipeline, yes, effective, lock_wait_seconds).await,
        Command::Reject {
            id,
            reason,
            pipeline,
        } => reject(&inv, id, reason, pipeline).await,
        Command::Store { action } => store_command(&inv, action).await,
    }
}

/// `rollcall store copy` and `rollcall store check` ([`crate::store_admin`]).
async fn store_command(inv: &Invocation, action: StoreAction) -> anyhow::Result<Exit> {
    use crate::store_admin::{AdminError, check, copy};
    let outcome = match action {
        StoreAction::Copy { from, to, force } => copy(&from, &to, force).await.map(|counts| {
            for (table, n) in &counts {
                println!("{table:<18} {n:>8} row(s)");
            }
            println!(
                "Copied {} to {}; row counts match. Point --store / ROLLCALL_STORE at it.",
                from.display(),
                crate::db::display(&to)
            );
            true
        }),
        StoreAction::Check => check(&inv.store).await.map(|c| {
            println!("store:          {} ({})", c.location, c.backend);
            let version = c.version.map_or("none".into(), |v| v.to_string());
            println!(
                "schema version: {version} (this rollcall: {})",
                crate::store::SCHEMA_VERSION
            );
            for (table, n) in &c.counts {
                println!("{table:<18} {n:>8} row(s)");
            }
            for p in &c.problems {
                eprintln!("error: {p}");
            }
            if c.problems.is_empty() {
                println!("ok");
            }
            c.problems.is_empty()
        }),
    };
    match outcome {
        Ok(true) => Ok(Exit::Ok),
        Ok(false) => Ok(Exit::Refused),
        Err(AdminError::Refused(why)) => {
            eprintln!("error: {why}");
            Ok(Exit::Refused)
        }
        Err(e) => Err(e.into()),
    }
}

async fn serve(
    inv: &Invocation,
    files: Vec<PathBuf>,
    listen: SocketAddr,
    debounce_seconds: u64,
    workers: usize,
    public_url: Option<String>,
    jobs: JobSettings,
) -> anyhow::Result<Exit> {
    let Some(pipelines) = load_all(inv.bill_day, &files) else {
        return Ok(Exit::Invalid);
    };
    let secrets = crate::web::Secrets::from_env();
    if secrets.is_empty()
        && crate::web::console::Settings::from_env()
            .off_because()
            .is_some()
    {
        eprintln!(
            "error: no webhook secret is set, so every notification would be refused, and the console is off (hint: set {}, and ROLLCALL_CONSOLE_TOKEN for the console)",
            crate::web::secret_names()
        );
        return Ok(Exit::Invalid);
    }
    let (store, queue) = open_shared(inv, jobs.liveness()).await?;
    let parts = crate::web::ServiceParts {
        pipelines,
        store,
        queue,
        secrets,
        debounce: std::time::Duration::from_secs(debounce_seconds),
        metrics: Arc::new(crate::metrics::Metrics::default()),
        public_url,
    };
    say_started(
        &format!("listening on http://{listen}, {workers} worker(s)"),
        &parts.pipelines,
        &queue_location(&inv.queue, &inv.store)?,
        &inv.store,
        inv.quiet,
    );
    let workers = (workers > 0).then(|| jobs.worker_options(workers));
    let service = crate::web::Service::start(parts, workers).await?;
    crate::web::run(service, listen)
        .await
        .with_context(|| format!("cannot serve on {listen}"))?;
    Ok(Exit::Ok)
}

async fn worker(
    inv: &Invocation,
    files: Vec<PathBuf>,
    concurrency: usize,
    metrics_listen: Option<SocketAddr>,
    jobs: JobSettings,
) -> anyhow::Result<Exit> {
    let Some(pipelines) = load_all(inv.bill_day, &files) else {
        return Ok(Exit::Invalid);
    };
    let (store, queue) = open_shared(inv, jobs.liveness()).await?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    crate::queue::worker::start_schedules(&pipelines, &queue, &metrics);
    if let Some(addr) = metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        let router = crate::web::worker_router(metrics.clone(), queue.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
    }
    say_started(
        &format!(
            "{concurrency} job(s) at once, metrics {}",
            metrics_listen.map_or("off".to_owned(), |a| format!("on http://{a}"))
        ),
        &pipelines,
        &queue_location(&inv.queue, &inv.store)?,
        &inv.store,
        inv.quiet,
    );
    let runner = crate::queue::worker::JobRunner::new(
        pipelines,
        store,
        queue,
        jobs.worker_options(concurrency),
        metrics,
    )
    .await?;
    crate::queue::worker::run(runner, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .context("the worker stopped")?;
    Ok(Exit::Ok)
}

async fn subscribe(
    inv: &Invocation,
    files: Vec<PathBuf>,
    public_url: String,
    renew_before_hours: u64,
) -> anyhow::Result<Exit> {
    let Some(pipelines) = load_all(inv.bill_day, &files) else {
        return Ok(Exit::Invalid);
    };
    let Some(state) = crate::web::Secrets::from_env()
        .subscription_state()
        .cloned()
    else {
        let names: Vec<_> = crate::web::subscription_settings()
            .iter()
            .map(|s| s.env)
            .collect();
        eprintln!(
            "error: {} is not set (hint: the secret every notification must carry; `serve` checks it)",
            names.join(" or ")
        );
        return Ok(Exit::Invalid);
    };
    let results = crate::web::subscribe::ensure_all(
        &pipelines,
        &public_url,
        &state,
        std::time::Duration::from_secs(renew_before_hours * 3600),
    )
    .await;
    if results.is_empty() {
        println!("No client's directory can send change notifications.");
        return Ok(Exit::Ok);
    }
    let mut table = comfy_table::Table::new();
    table.set_header([
        "pipeline", "client", "resource", "action", "expires", "error",
    ]);
    for r in &results {
        match &r.states {
            Ok(states) => {
                for s in states {
                    table.add_row([
                        r.pipeline.clone(),
                        r.client.clone(),
                        s.resource.clone(),
                        s.action.clone(),
                        s.expires.map(|e| e.to_rfc3339()).unwrap_or_default(),
                        s.error.clone().unwrap_or_default(),
                    ]);
                }
            }
            Err(e) => {
                table.add_row([
                    r.pipeline.clone(),
                    r.client.clone(),
                    "*".into(),
                    "failed".into(),
                    String::new(),
                    e.clone(),
                ]);
            }
        }
    }
    println!("{table}");
    Ok(if crate::web::subscribe::all_ok(&results) {
        Exit::Ok
    } else {
        Exit::Remote
    })
}

async fn enqueue(inv: &Invocation, file: PathBuf, client: Option<String>) -> anyhow::Result<Exit> {
    let Some(pipeline) = load_for(inv.bill_day, &file, client.as_deref()) else {
        return Ok(Exit::Invalid);
    };
    let queue = open_queue(&inv.queue, &inv.store, Default::default()).await?;
    // `load_for` has checked that the client exists.
    let names: Vec<String> = match client.as_deref().and_then(|c| pipeline.client(c)) {
        Some(one) => vec![one.name.clone()],
        None => pipeline.clients.iter().map(|c| c.name.clone()).collect(),
    };
    let queued = names.len();
    for name in names {
        let job = crate::queue::SyncJob {
            pipeline: pipeline.name.clone(),
            client: name,
            trigger: crate::queue::Trigger::Manual,
        };
        queue.push(job, None).await?;
    }
    println!(
        "Queued {queued} sync job(s) on {}.",
        queue_location(&inv.queue, &inv.store)?
    );
    Ok(Exit::Ok)
}

async fn jobs(
    inv: &Invocation,
    action: Option<JobsAction>,
    failed: bool,
    limit: u32,
    output: Output,
) -> anyhow::Result<Exit> {
    let queue = open_queue(&inv.queue, &inv.store, Default::default()).await?;
    match action {
        Some(JobsAction::Retry { id }) => match queue.retry(&id).await {
            Ok(job) => {
                println!(
                    "Queued {} / {} again ({}).",
                    job.pipeline, job.client, job.trigger
                );
                Ok(Exit::Ok)
            }
            Err(
                e @ (crate::queue::QueueError::NoSuchJob(_)
                | crate::queue::QueueError::NotFailed { .. }),
            ) => {
                eprintln!("error: {e}");
                Ok(Exit::Invalid)
            }
            Err(e) => Err(e.into()),
        },
        None => {
            let rows = queue.list(failed, limit).await?;
            print_jobs(&rows, output)?;
            Ok(Exit::Ok)
        }
    }
}

async fn webhook_key(inv: &Invocation, file: PathBuf, client: String) -> anyhow::Result<Exit> {
    let Some(pipeline) = load_for(inv.bill_day, &file, Some(&client)) else {
        return Ok(Exit::Invalid);
    };
    let Some(secret) = crate::web::Secrets::from_env().generic().cloned() else {
        eprintln!(
            "error: ROLLCALL_WEBHOOK_SECRET is not set (hint: the service's secret, the same one `rollcall serve` runs with)"
        );
        return Ok(Exit::Invalid);
    };
    let name = pipeline
        .client(&client)
        .map(|c| c.name.clone())
        .unwrap_or(client);
    println!(
        "POST /hooks/clients/{}/{} with header X-Rollcall-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">\nkey: {}",
        pipeline.name,
        name,
        crate::web::signature::client_key(secret.expose(), &pipeline.name, &name)
    );
    Ok(Exit::Ok)
}

async fn connect(inv: &Invocation, file: PathBuf, port: u16, wait: u64) -> anyhow::Result<Exit> {
    let Some(pipeline) = load(inv.bill_day, &file) else {
        return Ok(Exit::Invalid);
    };
    let Some(app) = pipeline.target.oauth() else {
        eprintln!(
            "error: the `{}` target signs in with the keys in its section; there is nothing to connect (hint: `connect` is for billing systems that sign in with OAuth, the accounting systems)",
            pipeline.target.kind()
        );
        return Ok(Exit::Invalid);
    };
    let mut store = open_store(inv).await?;
    // With the queue on Redis, the connection is made for every worker.
    if inv.queue.as_deref().is_some_and(|q| q.starts_with("redis")) {
        let queue = open_queue(&inv.queue, &inv.store, Default::default()).await?;
        store = share_tokens(store, &queue);
    }
    struct Print;
    impl crate::connect::ShowConsent for Print {
        fn show(&self, url: &str) {
            println!("Open this address in a browser and approve access:\n\n  {url}\n");
            println!("Waiting for the consent…");
            let _ = std::io::stdout().flush();
        }
    }
    match crate::connect::connect(
        &app,
        &store,
        port,
        std::time::Duration::from_secs(wait),
        &Print,
    )
    .await
    {
        Ok(tenant) => {
            println!(
                "Connected `{}` (organisation {tenant}). Its tokens are kept in {} and refreshed as they rotate.",
                app.connection,
                crate::db::display(&inv.store)
            );
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprintln!("error: connect: {e}");
            Ok(match e {
                crate::connect::ConnectError::Remote(_) => Exit::Remote,
                _ => Exit::Invalid,
            })
        }
    }
}

async fn plan(
    inv: &Invocation,
    file: PathBuf,
    client: Option<String>,
    output: PlanOutput,
    allow_drop: bool,
) -> anyhow::Result<Exit> {
    let Some(pipeline) = load_for(inv.bill_day, &file, client.as_deref()) else {
        return Ok(Exit::Invalid);
    };
    let engine = Engine::new(open_store(inv).await?).await?;
    let bars = Bars::new(&pipeline, client.as_deref(), inv.quiet);
    let options = Options {
        allow_drop,
        progress: Bars::show(&bars),
        ..Options::default()
    };
    let plan = engine.plan(&pipeline, client.as_deref(), &options).await;
    Bars::finish(bars);
    let plan = plan?;
    match output {
        PlanOutput::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        PlanOutput::Table => report::print_plan(&plan, colour())?,
        PlanOutput::Markdown => print!("{}", report::markdown::plan(&plan)),
    }
    let exit = Exit::of_plan(&plan);
    free_at_exit(plan);
    Ok(exit)
}

/// Leaves `value` to the end of the process rather than freeing it now: the CLI exits once a
/// command's result is printed, and the system takes back all its memory at once, whereas
/// freeing a plan of 100,000 changes allocation by allocation was a sixth of `rollcall plan`'s
/// time (issue 18). Only for a command's final result, in a process about to end.
fn free_at_exit<T>(value: T) {
    std::mem::forget(value);
}

async fn approvals(
    inv: &Invocation,
    id: Option<String>,
    state: Option<String>,
    limit: u32,
    output: Output,
) -> anyhow::Result<Exit> {
    use crate::approvals::{Approvals, cli};
    let state = match state
        .as_deref()
        .map(str::parse::<crate::approvals::ApprovalState>)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --state: {e}");
            return Ok(Exit::Invalid);
        }
    };
    let approvals = Approvals::open(&open_store(inv).await?).await?;
    match id {
        Some(id) => match approvals.get(&id).await {
            Ok((a, plan)) => match output {
                Output::Json => print!(
                    "{}",
                    report::json(&serde_json::json!({ "approval": a, "plan": plan }))?
                ),
                Output::Table => {
                    print!("{}", cli::detail(&a));
                    report::print_plan(&plan, colour())?;
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(Exit::Invalid);
            }
        },
        None => {
            let list = approvals.list(state, limit).await?;
            match output {
                Output::Json => print!("{}", report::json(&list)?),
                Output::Table => print!("{}", cli::table(&list)),
            }
        }
    }
    Ok(Exit::Ok)
}

async fn approve(
    inv: &Invocation,
    id: String,
    pipeline: Option<PathBuf>,
    yes: bool,
    effective: Option<String>,
    lock_wait_seconds: u64,
) -> anyhow::Result<Exit> {
    use crate::approvals::{self, ApprovalError, Approvals, cli};
    let effective = match effective.as_deref().map(approvals::parse_day).transpose() {
        Ok(day) => day,
        Err(e) => {
            eprintln!("error: --effective: {e}");
            return Ok(Exit::Invalid);
        }
    };
    let (approval, plan) = match Approvals::open(&open_store(inv).await?)
        .await?
        .get(&id)
        .await
    {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::Invalid);
        }
    };
    let file = pipeline.unwrap_or_else(|| PathBuf::from(&approval.pipeline_file));
    let Some(pipeline) = load(inv.bill_day, &file) else {
        return Ok(Exit::Invalid);
    };
    print!("{}", cli::detail(&approval));
    report::print_plan(&plan, colour())?;
    // What is asked is whether to apply the refused changes.
    let mut asked = plan.clone();
    for c in &mut asked.clients {
        c.refusal = None;
    }
    if !yes && !confirm(&asked)? {
        return Ok(if std::io::stdin().is_terminal() {
            Exit::Ok
        } else {
            Exit::Invalid
        });
    }
    let engine = hand_engine(inv).await?;
    let options = Options {
        lock_wait: Duration::from_secs(lock_wait_seconds),
        run_id: Some(&inv.run_id),
        ..Options::default()
    };
    match approvals::approve(
        &engine,
        &pipeline,
        &approval.id,
        &cli::who(),
        effective,
        &options,
    )
    .await
    {
        Ok(decided) => {
            print!("{}", cli::decided(&decided));
            Ok(decided.verdict())
        }
        Err(ApprovalError::Engine(e @ EngineError::Busy(_))) => {
            eprintln!("error: {e}");
            Ok(Exit::Remote)
        }
        Err(ApprovalError::Engine(e)) => Err(e.into()),
        Err(ApprovalError::Store(e)) => Err(e.into()),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(Exit::Invalid)
        }
    }
}

async fn reject(
    inv: &Invocation,
    id: String,
    reason: String,
    pipeline: Option<PathBuf>,
) -> anyhow::Result<Exit> {
    use crate::approvals::{Approvals, cli};
    if reason.trim().is_empty() {
        eprintln!(
            "error: --reason is empty (hint: say why, for the record and the people notified)"
        );
        return Ok(Exit::Invalid);
    }
    let approvals = Approvals::open(&open_store(inv).await?).await?;
    let (found, _) = match approvals.get(&id).await {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::Invalid);
        }
    };
    // The pipeline is only for its notification channels: a moved or broken file does not
    // keep anyone from saying no.
    let file = pipeline.unwrap_or_else(|| PathBuf::from(&found.pipeline_file));
    let pipeline = config::load(&file).ok();
    match approvals
        .reject(&found.id, &cli::who(), reason.trim(), pipeline.as_ref())
        .await
    {
        Ok(a) => {
            println!(
                "approval {} rejected; nothing was written for client `{}`",
                a.id, a.client
            );
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(Exit::Invalid)
        }
    }
}

async fn apply(
    inv: &Invocation,
    file: PathBuf,
    plan: Option<PathBuf>,
    client: Option<String>,
    allow_drop: bool,
    yes: bool,
    lock_wait_seconds: u64,
) -> anyhow::Result<Exit> {
    let Some(pipeline) = load_for(inv.bill_day, &file, client.as_deref()) else {
        return Ok(Exit::Invalid);
    };
    let engine = hand_engine(inv).await?;
    if plan.is_some() && allow_drop {
        eprintln!(
            "error: --allow-drop decides what a plan may remove, so it belongs to `rollcall plan`, \
             not to applying a saved plan (hint: make the plan again with --allow-drop)"
        );
        return Ok(Exit::Invalid);
    }
    let bars = Bars::new(&pipeline, client.as_deref(), inv.quiet);
    let options = inv.by_hand("apply", allow_drop, lock_wait_seconds, &bars);
    let (plan, saved) = match plan {
        Some(path) => match read_saved_plan(&path, &pipeline, client.as_deref()) {
            Ok(p) => (p, true),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(Exit::Invalid);
            }
        },
        // Without a prompt, the plan is made under the leases, as `run` makes it.
        None if yes => {
            let synced = engine.sync(&pipeline, client.as_deref(), &options).await;
            Bars::finish(bars);
            return print_synced(synced, true, true);
        }
        None => (
            engine.plan(&pipeline, client.as_deref(), &options).await?,
            false,
        ),
    };
    report::print_plan(&plan, colour())?;
    // An empty plan is still applied: it records the run and refreshes the seat
    // ledger, which the grace period counts from.
    if !plan.is_empty() && !yes && !confirm(&plan)? {
        return Ok(if std::io::stdin().is_terminal() {
            Exit::Ok
        } else {
            Exit::Invalid
        });
    }
    // A saved plan, or one confirmed at a prompt, may have waited: under the leases,
    // each client's billing state is read again and must be the one planned from.
    let options = Options {
        verify: saved || !yes,
        ..options
    };
    let synced = engine.apply(&pipeline, plan, &options).await;
    Bars::finish(bars);
    print_synced(synced, false, true)
}

async fn run(
    inv: &Invocation,
    file: PathBuf,
    client: Option<String>,
    allow_drop: bool,
    lock_wait_seconds: u64,
) -> anyhow::Result<Exit> {
    let Some(pipeline) = load_for(inv.bill_day, &file, client.as_deref()) else {
        return Ok(Exit::Invalid);
    };
    let engine = hand_engine(inv).await?;
    let bars = Bars::new(&pipeline, client.as_deref(), inv.quiet);
    let options = inv.by_hand("run", allow_drop, lock_wait_seconds, &bars);
    let synced = engine.sync(&pipeline, client.as_deref(), &options).await;
    Bars::finish(bars);
    print_synced(synced, true, false)
}

async fn history(
    inv: &Invocation,
    client: Option<String>,
    limit: u32,
    output: Output,
) -> anyhow::Result<Exit> {
    let store = open_store(inv).await?;
    let rows = store.history(client.as_deref(), limit).await?;
    match output {
        Output::Json => print!("{}", report::json(&rows)?),
        Output::Table => print!("{}", report::history_text(&rows)),
    }
    Ok(Exit::Ok)
}

async fn value_report(
    inv: &Invocation,
    file: PathBuf,
    client: String,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    format: ReportFormat,
    output: Option<PathBuf>,
) -> anyhow::Result<Exit> {
    use crate::report::value_report::{self, ValueReportError};
    let Some((pipeline, store)) = one_client(inv, &file, &client).await? else {
        return Ok(Exit::Invalid);
    };
    let c = pipeline
        .client(&client)
        .context("the client was checked on loading")?;
    let billing = pipeline
        .target
        .build(&store.build_context().for_pipeline(&pipeline.name))
        .context("cannot set up the billing system's client")?;
    let report = match value_report::build(&pipeline, c, &store, billing.as_ref(), from, to).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(match e {
                ValueReportError::Remote(_) | ValueReportError::Store(_) => Exit::Remote,
                ValueReportError::NoServiceDesk(_) | ValueReportError::Period { .. } => {
                    Exit::Invalid
                }
            });
        }
    };
    let text = match format {
        ReportFormat::Html => value_report::html(&report, value_report::TEMPLATE)
            .map_err(|e| anyhow::anyhow!("the report template failed: {e}"))?,
        ReportFormat::Csv => value_report::csv(&report),
        ReportFormat::Json => report::json(&report)?,
    };
    if !report.note.is_empty() {
        eprintln!("note: {}", report.note);
    }
    let output = output.or_else(|| {
        (format == ReportFormat::Html && std::io::stdout().is_terminal())
            .then(|| value_report::file_name(&report))
    });
    match output {
        Some(path) => {
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("report: {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(Exit::Ok)
}

async fn runs(inv: &Invocation, limit: u32, output: Output) -> anyhow::Result<Exit> {
    let store = open_store(inv).await?;
    let runs = crate::runs::recent(&store, limit).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&runs)?),
        Output::Table => print!("{}", crate::runs::text(&runs)),
    }
    Ok(Exit::Ok)
}

async fn report(
    inv: &Invocation,
    run_id: String,
    format: ReportFormat,
    template: Option<PathBuf>,
    output: Option<PathBuf>,
) -> anyhow::Result<Exit> {
    let store = open_store(inv).await?;
    let template = match template {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: cannot read the template {}: {e}", path.display());
                return Ok(Exit::Invalid);
            }
        },
        None => None,
    };
    match render_report(&store, &run_id, format, template.as_deref()).await {
        Ok(text) => {
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(Exit::Invalid)
        }
    }
}

async fn explain(
    inv: &Invocation,
    file: PathBuf,
    client: String,
    person: Option<String>,
    product: Option<String>,
) -> anyhow::Result<Exit> {
    let Some((pipeline, store)) = one_client(inv, &file, &client).await? else {
        return Ok(Exit::Invalid);
    };
    let c = pipeline
        .client(&client)
        .context("the client was checked on loading")?;
    let answer = match (person, product) {
        (Some(p), _) => crate::explain::person(&pipeline, c, &store, &p).await,
        (None, Some(x)) => crate::explain::product(&pipeline, c, &store, &x).await,
        (None, None) => unreachable!("clap requires --person or --product"),
    };
    match answer {
        // Names, groups and rules from the directory: cleaned for the terminal.
        Ok(text) => {
            print!("{}", clean(&text));
            Ok(Exit::Ok)
        }
        Err(e @ crate::explain::ExplainError::Directory(_)) => {
            eprintln!("error: {}", clean(&e.to_string()));
            Ok(Exit::Remote)
        }
        Err(e) => {
            eprintln!("error: {}", clean(&e.to_string()));
            Ok(Exit::Invalid)
        }
    }
}

fn schema(format: SchemaFormat) -> anyhow::Result<Exit> {
    match format {
        SchemaFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&config::schema())?)
        }
        SchemaFormat::Markdown => {
            print!("{}", config::reference::markdown(&config::schema()))
        }
    }
    Ok(Exit::Ok)
}

async fn sandbox(kind: String, port: u16, seed: Option<PathBuf>) -> anyhow::Result<Exit> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match config::connectors::run_sandbox(&kind, addr, seed.as_deref()) {
        Some(fut) => {
            fut.await.map_err(|e| anyhow::anyhow!(e))?;
            Ok(Exit::Ok)
        }
        None => {
            eprintln!(
                "error: no sandbox named `{kind}` (hint: one of {})",
                config::connectors::SANDBOXES.join(", ")
            );
            Ok(Exit::Invalid)
        }
    }
}

/// Several pipeline files, each checked; `None` (errors printed) when any is invalid.
fn load_all(bill_day: Option<chrono::NaiveDate>, files: &[PathBuf]) -> Option<Vec<Arc<Pipeline>>> {
    let mut pipelines = Vec::new();
    for file in files {
        pipelines.push(Arc::new(load(bill_day, file)?));
    }
    Some(pipelines)
}

/// The line a long-running process prints when it starts, so whoever started it (a person,
/// systemd's journal, `docker logs`) sees what it serves and where its state is.
fn say_started(
    what: &str,
    pipelines: &[Arc<Pipeline>],
    queue: &crate::queue::QueueLocation,
    store: &Path,
    quiet: bool,
) {
    let names: Vec<String> = pipelines
        .iter()
        .map(|p| format!("{} ({} client(s))", p.name, p.clients.len()))
        .collect();
    if !quiet {
        eprintln!(
            "rollcall {}: {what}; queue {queue}; store {}; pipelines {}",
            env!("CARGO_PKG_VERSION"),
            crate::db::display(store),
            names.join(", ")
        );
    }
}

fn queue_location(
    queue: &Option<String>,
    store: &Path,
) -> anyhow::Result<crate::queue::QueueLocation> {
    Ok(match queue {
        Some(q) => q.parse()?,
        // A PostgreSQL store has no directory to keep a queue file in.
        None if crate::db::is_postgres(store) => anyhow::bail!(
            "the store is on PostgreSQL, so there is no queue file beside it (hint: name the \
             queue: --queue redis://HOST:6379, or --queue sqlite:PATH for one machine)"
        ),
        None => crate::queue::QueueLocation::beside(store),
    })
}

/// The engine a run started by hand (`rollcall run`, `rollcall apply`) syncs with: leases in
/// the store always, and in the queue's lock store too when a queue is named or one is beside
/// the store (workers may be syncing there). No queue file beside the store means no worker
/// has run there: none is created.
async fn hand_engine(inv: &Invocation) -> anyhow::Result<Engine> {
    let (queue, store_path) = (&inv.queue, &inv.store);
    let store = open_store(inv).await?;
    if queue.is_none() && crate::db::is_postgres(store_path) {
        // Workers sharing a PostgreSQL store take their leases in it: the store's lease is
        // enough, and no local queue file is made.
        return Ok(Engine::new(store).await?);
    }
    let location = queue_location(queue, store_path)?;
    if let crate::queue::QueueLocation::Sqlite(path) = &location
        && !path.exists()
    {
        return Ok(Engine::new(store).await?);
    }
    let queue = open_queue(queue, store_path, crate::queue::Liveness::default()).await?;
    let locks = queue.locks().await?;
    Ok(Engine::new(share_tokens(store, &queue))
        .await?
        .with_locks(locks))
}

/// Prints what a sync came to and returns its verdict; a client another sync kept past the
/// wait is a remote failure (exit 3), with nothing written.
fn print_synced(
    synced: Result<Synced, EngineError>,
    show_plan: bool,
    outcomes_of_empty_plan: bool,
) -> anyhow::Result<Exit> {
    let synced = match synced {
        Ok(s) => s,
        Err(e @ EngineError::Busy(_)) => {
            eprintln!("error: {e}");
            return Ok(Exit::Remote);
        }
        Err(e) => return Err(e.into()),
    };
    if show_plan {
        report::print_plan(&synced.plan, colour())?;
    }
    if outcomes_of_empty_plan || !synced.plan.is_empty() {
        print!("{}", report::outcome_text(&synced.outcomes));
    }
    if let Some(path) = &synced.report {
        println!("report: {}", path.display());
    }
    for held in &synced.approvals {
        println!("{held}");
    }
    let verdict = synced.verdict();
    free_at_exit(synced);
    Ok(verdict)
}

/// Opens the queue; on Redis, vendor rate limits are then shared by every worker.
async fn open_queue(
    queue: &Option<String>,
    store: &Path,
    liveness: crate::queue::Liveness,
) -> anyhow::Result<crate::queue::Queue> {
    let location = queue_location(queue, store)?;
    let queue = crate::queue::Queue::open(&location, liveness)
        .await
        .with_context(|| format!("cannot open the queue {location}"))?;
    if let Some(conn) = queue.redis() {
        rollcall_core::http::share_rate_limits(Arc::new(
            crate::queue::limiter::RedisRateLimiter::new(conn),
        ));
    }
    Ok(queue)
}

/// The store at `--store`, with OAuth tokens encrypted when a store key is configured
/// (`crate::seal`).
async fn open_store(inv: &Invocation) -> anyhow::Result<Store> {
    let key = crate::seal::StoreKey::configured(inv.store_key_file.as_deref())?;
    Ok(Store::open(&inv.store).await?.with_key(key.map(Arc::new)))
}

/// The store and the queue, as workers use them together (tokens shared through the queue).
async fn open_shared(
    inv: &Invocation,
    liveness: crate::queue::Liveness,
) -> anyhow::Result<(Store, crate::queue::Queue)> {
    let local = open_store(inv).await?;
    let queue = open_queue(&inv.queue, &inv.store, liveness).await?;
    Ok((share_tokens(local, &queue), queue))
}

/// The store as workers on this queue use it: with the queue on Redis, OAuth tokens move to
/// Redis too, so every worker refreshes them under one lock.
fn share_tokens(store: Store, queue: &crate::queue::Queue) -> Store {
    match queue.redis() {
        Some(conn) => {
            let local = store.token_vault();
            let key = store.key();
            store.with_token_vault(Arc::new(
                crate::queue::vault::RedisVault::new(conn, Some(local)).with_key(key),
            ))
        }
        None => store,
    }
}

fn print_jobs(rows: &[crate::queue::JobRow], output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        print!("{}", report::json(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("No jobs.");
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table.set_header([
        "id", "status", "attempts", "pipeline", "client", "trigger", "error",
    ]);
    for r in rows {
        let (pipeline, client, trigger) = match &r.job {
            Some(j) => (j.pipeline.clone(), j.client.clone(), j.trigger.to_string()),
            None => ("?".into(), "?".into(), "?".into()),
        };
        table.add_row(
            [
                r.id.clone(),
                r.status.clone(),
                r.attempts.to_string(),
                pipeline,
                client,
                trigger,
                r.error.clone().unwrap_or_default(),
            ]
            .map(|text| clean(&text).into_owned()),
        );
    }
    println!("{table}");
    Ok(())
}

/// Loads a pipeline to bill `bill_day` (`--period`), printing every error; `None` means exit 1.
/// The target's client is built too, so settings it refuses (a URL that is not http(s), a
/// zero rate limit) are the user's to fix (exit 1), not an outage (exit 3).
pub fn load(bill_day: Option<chrono::NaiveDate>, file: &Path) -> Option<Pipeline> {
    match config::load(file) {
        Ok(mut p) => match p.target.build(&rollcall_core::BuildContext::in_memory()) {
            Ok(_) => {
                p.bill_day = bill_day;
                Some(p)
            }
            Err(e) => {
                eprintln!(
                    "error: {}: target: {} (hint: fix the `target:` section; `rollcall schema` lists its keys)",
                    file.display(),
                    e.message
                );
                None
            }
        },
        Err(errors) => {
            eprintln!("{errors}");
            None
        }
    }
}

fn validate(bill_day: Option<chrono::NaiveDate>, file: &Path) -> Exit {
    match load(bill_day, file) {
        Some(p) => {
            println!(
                "ok: {}: pipeline `{}`, target {}, {} product(s), {} client(s)",
                file.display(),
                p.name,
                p.target.kind(),
                p.products.len(),
                p.clients.len()
            );
            Exit::Ok
        }
        None => Exit::Invalid,
    }
}

/// What a command about one client starts from: its pipeline (the client checked to be in
/// it, or `None` with what is wrong printed) and the store.
async fn one_client(
    inv: &Invocation,
    file: &Path,
    client: &str,
) -> anyhow::Result<Option<(Pipeline, Store)>> {
    let Some(pipeline) = load_for(inv.bill_day, file, Some(client)) else {
        return Ok(None);
    };
    Ok(Some((pipeline, open_store(inv).await?)))
}

/// Loads a pipeline and checks `--client`, printing what is wrong; `None` means exit 1.
fn load_for(
    bill_day: Option<chrono::NaiveDate>,
    file: &Path,
    client: Option<&str>,
) -> Option<Pipeline> {
    let pipeline = load(bill_day, file)?;
    if let Some(name) = client
        && pipeline.client(name).is_none()
    {
        let known: Vec<&str> = pipeline.clients.iter().map(|c| c.name.as_str()).collect();
        eprintln!(
            "error: no client named `{name}` in {} (hint: one of {})",
            file.display(),
            known.join(", ")
        );
        return None;
    }
    Some(pipeline)
}

/// Progress bars on stderr: one overall bar and a line per client at work.
struct Bars {
    multi: indicatif::MultiProgress,
    total: indicatif::ProgressBar,
    clients: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

impl Bars {
    /// Bars only when stderr is a terminal and `--quiet` was not given.
    fn new(pipeline: &Pipeline, only: Option<&str>, quiet: bool) -> Option<Bars> {
        // Bars are drawn on stderr, but only for a person watching: stdout a terminal too,
        // so `rollcall plan … > plan.txt` stays quiet.
        if quiet || !std::io::stderr().is_terminal() || !std::io::stdout().is_terminal() {
            return None;
        }
        let n = pipeline
            .clients
            .iter()
            .filter(|c| only.is_none_or(|o| c.name.eq_ignore_ascii_case(o)))
            .count();
        let multi = indicatif::MultiProgress::new();
        let total = multi.add(indicatif::ProgressBar::new(n as u64));
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} clients {elapsed}",
        ) {
            total.set_style(style.progress_chars("=> "));
        }
        total.set_prefix(pipeline.name.clone());
        Some(Bars {
            multi,
            total,
            clients: Default::default(),
        })
    }

    /// What a run reports its progress to: these bars, or nobody.
    fn show(bars: &Option<Bars>) -> &dyn run::Progress {
        match bars {
            Some(b) => b,
            None => &run::Quiet,
        }
    }

    fn finish(bars: Option<Bars>) {
        if let Some(b) = bars {
            b.total.finish_and_clear();
            let _ = b.multi.clear();
        }
    }
}

impl run::Progress for Bars {
    fn phase(&self, client: &str, phase: &str) {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bar = clients.entry(client.to_owned()).or_insert_with(|| {
            let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        bar.set_message(format!("{client}: {phase}"));
    }

    fn done(&self, client: &str) {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(bar) = clients.remove(client) {
            bar.finish_and_clear();
        }
        self.total.inc(1);
    }

    fn stage(&self, _stage: &str) {
        self.total.reset();
    }
}

/// Colour only for a person at a terminal who has not asked for none (no-color.org).
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A recorded run's report in `format`.
pub async fn render_report(
    store: &Store,
    run_id: &str,
    format: ReportFormat,
    template: Option<&str>,
) -> anyhow::Result<String> {
    use crate::report::run_report;
    let Some(report) = crate::engine::recorded_report(store, run_id).await? else {
        anyhow::bail!(
            "no recorded run `{run_id}` in {} (hint: `rollcall history` lists run ids)",
            store.report_path(run_id).display()
        );
    };
    Ok(match format {
        ReportFormat::Html => run_report::html(&report, template.unwrap_or(run_report::TEMPLATE))
            .map_err(|e| anyhow::anyhow!("the report template failed: {e}"))?,
        ReportFormat::Csv => run_report::csv(&report),
        ReportFormat::Json => report::json(&report)?,
    })
}

fn init(file: &Path, source: &str, target: &str) -> Exit {
    use config::connectors::{DIRECTORY_STARTERS, TARGET_STARTERS};
    let pick = |list: &[(&'static str, &'static str)], kind: &str, what: &str| {
        let found = list.iter().find(|(k, _)| *k == kind).map(|(_, s)| *s);
        if found.is_none() {
            let kinds: Vec<&str> = list.iter().map(|(k, _)| *k).collect();
            eprintln!(
                "error: no {what} named `{kind}` (hint: one of {})",
                kinds.join(", ")
            );
        }
        found
    };
    let (Some(directory), Some(billing)) = (
        pick(DIRECTORY_STARTERS, source, "directory"),
        pick(TARGET_STARTERS, target, "billing system"),
    ) else {
        return Exit::Invalid;
    };
    if file.exists() {
        eprintln!(
            "error: {} exists; not overwriting it (hint: choose another name)",
            file.display()
        );
        return Exit::Invalid;
    }
    let text = starter(source, directory, billing);
    if let Err(e) = std::fs::write(file, &text) {
        eprintln!("error: cannot write {}: {e}", file.display());
        return Exit::Invalid;
    }
    println!("wrote {}", file.display());
    let needed = config::variables::required(&text);
    if !needed.is_empty() {
        let exports: Vec<String> = needed.iter().map(|n| format!("{n}=…")).collect();
        println!(
            "its secrets are read from the environment; set them first:\n  export {}",
            exports.join(" ")
        );
    }
    println!(
        "then: rollcall validate {0}; rollcall test {0}; rollcall plan {0}",
        file.display()
    );
    Exit::Ok
}

/// A starter pipeline: every section present, commented, valid once its secrets are set.
fn starter(source: &str, directory: &str, billing: &str) -> String {
    let directory = if directory.is_empty() {
        format!("{source}: {{}}   # see `rollcall schema` for this directory's keys\n")
    } else {
        directory.to_owned()
    };
    let billing = if billing.is_empty() {
        "  {}\n".to_owned()
    } else {
        billing.to_owned()
    };
    format!(
        r#"# yaml-language-server: $schema=https://rollcall.invalid/rollcall.schema.json
# A rollcall pipeline. `rollcall schema` prints every key; mappings/examples/ has more.
name: my-msp
currency: USD

# Where clients are billed.
target:
{billing}
# What you bill. `seats` is a CEL predicate over a person: who takes a seat.
products:
  - id: helpdesk
    identifier: HELPDESK-USER        # the item in your billing system's catalogue
    name: Per-user helpdesk
    unit_price: 35.00
    description: "{{{{product}}}}, {{{{quantity}}}} users: {{{{names}}}}"
  - id: m365
    identifier: M365-BP
    name: Microsoft 365 Business Premium
    seats: "'M365 Users' in groups"
    unit_cost: 20.00
    markup_percent: 15

# Rules for every client unless a client overrides them.
defaults:
  counted: "enabled"               # who a client pays for at all
  shadow: true                     # plan and report only, until you have reviewed a few plans
  guard:
    max_seat_drop_percent: 50      # refuse plans that remove more than this share of seats

clients:
  - name: Acme
    company: ACME                  # the company identifier in the billing system
    agreement: Managed Services    # the agreement that carries the seats
    directory:
      {directory}
# People in, billing out: `rollcall test` runs these.
tests:
  - name: only the M365 group takes M365 seats
    people:
      - {{ given_name: Ada, surname: Lovelace, email: ada@acme.example, groups: [M365 Users] }}
      - {{ given_name: Alan, surname: Turing, email: alan@acme.example }}
    expect:
      seats: {{ helpdesk: 2, m365: 1 }}
"#
    )
}

fn test(bill_day: Option<chrono::NaiveDate>, files: &[PathBuf]) -> Exit {
    let mut exit = Exit::Ok;
    for file in files {
        let Some(pipeline) = load(bill_day, file) else {
            exit = Exit::Invalid;
            continue;
        };
        let cases = match std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|text| pipeline_tests::load_cases(&text, file).map_err(|e| e.to_string()))
        {
            Ok(cases) => cases,
            Err(e) => {
                eprintln!("{e}");
                exit = Exit::Invalid;
                continue;
            }
        };
        if cases.is_empty() {
            eprintln!(
                "error: {} has no test cases (hint: add a `tests:` section or {})",
                file.display(),
                file.with_extension("tests.yaml").display()
            );
            exit = Exit::Invalid;
            continue;
        }
        println!("{}", file.display());
        let results = pipeline_tests::run_cases(&pipeline, &cases);
        print!("{}", pipeline_tests::report(&results));
        if results.iter().any(|r| !r.differences.is_empty()) {
            exit = Exit::Invalid;
        }
    }
    exit
}

fn read_saved_plan(
    path: &Path,
    pipeline: &Pipeline,
    client: Option<&str>,
) -> anyhow::Result<PipelinePlan> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the plan {}", path.display()))?;
    let mut plan: PipelinePlan = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}:{}: not a rollcall plan: {e} (hint: save one with `rollcall plan FILE --output json > plan.json`)",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    if plan.format != run::PLAN_FORMAT {
        anyhow::bail!(
            "{}: plan format {} is not supported (this rollcall reads {})",
            path.display(),
            plan.format,
            run::PLAN_FORMAT
        );
    }
    if plan.pipeline != pipeline.name {
        anyhow::bail!(
            "{}: the plan was made for pipeline `{}`, not `{}` (hint: apply it with the pipeline it was made from)",
            path.display(),
            plan.pipeline,
            pipeline.name
        );
    }
    if let Some(name) = client {
        plan.clients.retain(|c| c.client.eq_ignore_ascii_case(name));
        plan.changes.retain(|c| c.client.eq_ignore_ascii_case(name));
    }
    // What the pipeline says now wins over what was saved: a client since switched to
    // shadow mode, or removed, is not written.
    plan.clients
        .retain(|c| pipeline.client(&c.client).is_some());
    for c in &mut plan.clients {
        if let Some(now) = pipeline.client(&c.client) {
            c.shadow = now.shadow;
        }
    }
    let kept: std::collections::HashSet<&str> =
        plan.clients.iter().map(|c| c.client.as_str()).collect();
    plan.changes.retain(|ch| kept.contains(&*ch.client));
    Ok(plan)
}

fn confirm(plan: &PipelinePlan) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        eprintln!(
            "error: not applying without confirmation (hint: pass --yes when not on a terminal)"
        );
        return Ok(false);
    }
    let clients = plan
        .clients
        .iter()
        .filter(|c| c.may_apply() && plan.changes_for(&c.client).next().is_some())
        .count();
    let n: usize = plan
        .clients
        .iter()
        .filter(|c| c.may_apply())
        .map(|c| plan.changes_for(&c.client).count())
        .sum();
    print!("Apply {n} change(s) to {clients} client(s)? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}
