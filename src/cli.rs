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

use crate::apply::{self, ClientOutcome, OutcomeState};
use crate::config::{self, Pipeline};
use crate::run::{self, FailureClass, PipelinePlan};
use crate::store::Store;
use crate::{demo, pipeline_tests, report};

/// rollcall — bill an MSP's clients per user: read their directories, plan, apply.
#[derive(Debug, Parser)]
#[command(name = "rollcall", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where rollcall keeps its history (an SQLite file).
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
    Retry { id: String },
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a pipeline file: YAML shape, CEL rules, templates, product references.
    Validate { file: PathBuf },
    /// Show what would change, client by client, without writing anything.
    Plan {
        file: PathBuf,
        /// Only this client.
        #[arg(long)]
        client: Option<String>,
        /// `json` prints one object with a `changes` array; save it to apply it later.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Let plans through that remove more seats than the guard allows.
        #[arg(long)]
        allow_drop: bool,
    },
    /// Apply a plan: a fresh one, or a saved one (`--plan`) if the billing system has not changed since.
    Apply {
        file: PathBuf,
        /// A plan saved with `rollcall plan --output json`.
        #[arg(long)]
        plan: Option<PathBuf>,
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        allow_drop: bool,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
        /// How long to wait for a client a worker is syncing.
        #[arg(long, default_value_t = 60)]
        lock_wait_seconds: u64,
    },
    /// Approve rollcall's access to the pipeline's accounting system (QuickBooks, Xero): prints
    /// the consent page's address, waits for the redirect on a loopback port, and keeps the
    /// tokens in the store. Run it again when a run says the connection must be reconnected.
    Connect {
        file: PathBuf,
        /// The loopback port the consent redirects to (register
        /// `http://localhost:PORT/callback` as the app's redirect URI).
        #[arg(long, default_value_t = 8765)]
        port: u16,
        /// How long to wait for the consent, in seconds.
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// Serve signed change notifications (a client's HR system, Entra ID, Xero) and queue a
    /// sync of the client each one is about, debounced; tick the pipelines' schedules; and
    /// (unless `--workers 0`) run workers in this process. Secrets come from the environment:
    /// ROLLCALL_WEBHOOK_SECRET, XERO_WEBHOOK_KEY, ROLLCALL_GRAPH_CLIENT_STATE.
    Serve {
        #[arg(required = true)]
        files: Vec<PathBuf>,
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
        /// every twelve hours and when Graph asks.
        #[arg(long, env = "ROLLCALL_PUBLIC_URL")]
        public_url: Option<String>,
        #[command(flatten)]
        jobs: JobSettings,
    },
    /// Take sync jobs off the queue and run them, each under its client's lock; tick the
    /// pipelines' schedules. Run as many as the vendors' limits allow, on one machine (SQLite
    /// queue) or many (`--queue redis://…`).
    Worker {
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
    /// Create or renew the change subscriptions of every directory that can notify (Entra ID),
    /// pointed at this service's webhooks. `serve --public-url` does it on its own; run this
    /// to set them up or check them. Needs ROLLCALL_GRAPH_CLIENT_STATE, and the service
    /// answering at the URL (the subscription's handshake calls it).
    Subscribe {
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
        file: PathBuf,
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
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Print the key a client's system signs its webhooks with (derived from
    /// ROLLCALL_WEBHOOK_SECRET), and the address to send them to.
    WebhookKey {
        file: PathBuf,
        #[arg(long)]
        client: String,
    },
    /// Plan and apply without asking (for schedules and scripts).
    Run {
        file: PathBuf,
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        allow_drop: bool,
        /// How long to wait for a client a worker is syncing.
        #[arg(long, default_value_t = 60)]
        lock_wait_seconds: u64,
    },
    /// Run the pipeline's test cases (its `tests:` and a sibling NAME.tests.yaml): people in,
    /// expected seats, contacts and invoice lines out. Exits 1 when a case fails.
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Why a person is billed (or not), or why a product's seats moved, in sentences: from
    /// the rules evaluated on the directory now and from the seat ledger of past runs.
    Explain {
        file: PathBuf,
        #[arg(long)]
        client: String,
        /// An id, email, username or display name.
        #[arg(long, conflicts_with = "product", required_unless_present = "product")]
        person: Option<String>,
        /// A product id or catalogue identifier.
        #[arg(long)]
        product: Option<String>,
    },
    /// Changes applied so far, newest first.
    History {
        #[arg(long)]
        client: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
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
        #[arg(long, default_value = "connectwise")]
        target: String,
    },
    /// A recorded run's report: who was billed for what, before → after, money, guards, errors.
    Report {
        run_id: String,
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
        file: PathBuf,
        #[arg(long)]
        client: String,
        /// First day of the period (YYYY-MM-DD).
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Last day of the period (YYYY-MM-DD).
        #[arg(long)]
        to: chrono::NaiveDate,
        #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
        format: ReportFormat,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the JSON Schema of pipeline files (or the reference built from it).
    Schema {
        #[arg(long, value_enum, default_value_t = SchemaFormat::Json)]
        format: SchemaFormat,
    },
    /// Run a vendor sandbox standalone (a stateful fake of its API).
    Sandbox {
        /// Which vendor: connectwise.
        kind: String,
        #[arg(long, default_value_t = 8421)]
        port: u16,
        /// A JSON seed file (companies, agreements, catalog, credentials); default: the demo seed.
        #[arg(long)]
        seed: Option<PathBuf>,
    },
    /// See rollcall work end to end with nothing installed: a sandbox, a plan, an apply, a resync.
    Demo,
}

tokio::task_local! {
    /// The id of this invocation, shared by its logs and the run it records.
    static RUN_ID: String;
}

/// The classified result of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    Invalid,
    Refused,
    Remote,
}

impl Exit {
    pub fn code(self) -> ExitCode {
        match self {
            Exit::Ok => ExitCode::SUCCESS,
            Exit::Invalid => ExitCode::from(1),
            Exit::Refused => ExitCode::from(2),
            Exit::Remote => ExitCode::from(3),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.quiet);
    let _ = QUIET.set(cli.quiet);
    if let Some(period) = &cli.period {
        match config::invoice::parse_bill_day(period) {
            Ok(day) => {
                let _ = BILL_DAY.set(day);
            }
            Err(e) => {
                eprintln!("error: --period: {e} (hint: e.g. --period 2026-11)");
                return Exit::Invalid.code();
            }
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    // One id per invocation: on every log line (the `run` span) and on the changes it records.
    let run_id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!("run", run = %run_id);
    let command = RUN_ID.scope(run_id, tracing::Instrument::instrument(dispatch(cli), span));
    match runtime.block_on(command) {
        Ok(exit) => exit.code(),
        Err(e) => {
            eprintln!("error: {}", clean(&format!("{e:#}")));
            // A store that is not one is refused; a store key that is not one is bad input.
            if matches!(
                e.downcast_ref::<crate::store::StoreError>(),
                Some(crate::store::StoreError::Open { .. })
            ) {
                ExitCode::from(2)
            } else if e.downcast_ref::<crate::seal::KeyError>().is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::from(3)
            }
        }
    }
}

fn init_logging(format: LogFormat, quiet: bool) {
    let default = if quiet { "error" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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

async fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Validate { file } => Ok(validate(&file)),
        Command::Serve {
            files,
            listen,
            debounce_seconds,
            workers,
            public_url,
            jobs,
        } => {
            let Some(pipelines) = load_all(&files) else {
                return Ok(Exit::Invalid);
            };
            let secrets = crate::web::Secrets::from_env();
            if secrets.generic.is_none()
                && secrets.xero.is_none()
                && secrets.graph_client_state.is_none()
            {
                eprintln!(
                    "error: no webhook secret is set, so every notification would be refused (hint: set ROLLCALL_WEBHOOK_SECRET, XERO_WEBHOOK_KEY or ROLLCALL_GRAPH_CLIENT_STATE)"
                );
                return Ok(Exit::Invalid);
            }
            let (store, queue) =
                open_shared(&cli.queue, &cli.store, &cli.store_key_file, jobs.liveness()).await?;
            let parts = crate::web::ServiceParts {
                pipelines,
                store,
                queue,
                secrets,
                debounce: std::time::Duration::from_secs(debounce_seconds),
                metrics: Arc::new(crate::metrics::Metrics::default()),
                public_url,
            };
            let workers = (workers > 0).then(|| jobs.worker_options(workers));
            let service = crate::web::Service::start(parts, workers).await?;
            crate::web::run(service, listen)
                .await
                .with_context(|| format!("cannot serve on {listen}"))?;
            Ok(Exit::Ok)
        }
        Command::Worker {
            files,
            concurrency,
            metrics_listen,
            jobs,
        } => {
            let Some(pipelines) = load_all(&files) else {
                return Ok(Exit::Invalid);
            };
            let (store, queue) =
                open_shared(&cli.queue, &cli.store, &cli.store_key_file, jobs.liveness()).await?;
            let metrics = Arc::new(crate::metrics::Metrics::default());
            crate::queue::worker::start_schedules(&pipelines, &queue, &metrics);
            if let Some(addr) = metrics_listen {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot serve metrics on {addr}"))?;
                let router = crate::web::worker_router(metrics.clone(), queue.clone());
                tokio::spawn(async move { axum::serve(listener, router).await });
            }
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
        Command::Subscribe {
            files,
            public_url,
            renew_before_hours,
        } => {
            let Some(pipelines) = load_all(&files) else {
                return Ok(Exit::Invalid);
            };
            let Some(state) = crate::web::Secrets::from_env().graph_client_state else {
                eprintln!(
                    "error: ROLLCALL_GRAPH_CLIENT_STATE is not set (hint: the secret every notification must carry; `serve` checks it)"
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
        Command::Enqueue { file, client } => {
            let Some(pipeline) = load_for(&file, client.as_deref()) else {
                return Ok(Exit::Invalid);
            };
            let queue = open_queue(&cli.queue, &cli.store, Default::default()).await?;
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
                queue_location(&cli.queue, &cli.store)?
            );
            Ok(Exit::Ok)
        }
        Command::Jobs {
            action,
            failed,
            limit,
            output,
        } => {
            let queue = open_queue(&cli.queue, &cli.store, Default::default()).await?;
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
        Command::WebhookKey { file, client } => {
            let Some(pipeline) = load_for(&file, Some(&client)) else {
                return Ok(Exit::Invalid);
            };
            let Some(secret) = crate::web::Secrets::from_env().generic else {
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
        Command::Connect { file, port, wait } => {
            let Some(pipeline) = load(&file) else {
                return Ok(Exit::Invalid);
            };
            let Some(app) = pipeline.target.oauth() else {
                eprintln!(
                    "error: the `{}` target signs in with the keys in its section; there is nothing to connect (hint: `connect` is for accounting systems that use OAuth: quickbooks, xero)",
                    pipeline.target.kind()
                );
                return Ok(Exit::Invalid);
            };
            let mut store = open_store(&cli.store, &cli.store_key_file).await?;
            // With the queue on Redis, the connection is made for every worker.
            if cli.queue.as_deref().is_some_and(|q| q.starts_with("redis")) {
                let queue = open_queue(&cli.queue, &cli.store, Default::default()).await?;
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
                        cli.store.display()
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
        Command::Plan {
            file,
            client,
            output,
            allow_drop,
        } => {
            let Some(pipeline) = load_for(&file, client.as_deref()) else {
                return Ok(Exit::Invalid);
            };
            let store = open_store(&cli.store, &cli.store_key_file).await?;
            let plan = make_plan(&pipeline, &store, client.as_deref(), allow_drop).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
                Output::Table => print!("{}", report::plan_text_styled(&plan, colour())),
            }
            Ok(plan_exit(&plan))
        }
        Command::Apply {
            file,
            plan,
            client,
            allow_drop,
            yes,
            lock_wait_seconds,
        } => {
            let Some(pipeline) = load_for(&file, client.as_deref()) else {
                return Ok(Exit::Invalid);
            };
            let store = open_store(&cli.store, &cli.store_key_file).await?;
            if plan.is_some() && allow_drop {
                eprintln!(
                    "error: --allow-drop decides what a plan may remove, so it belongs to `rollcall plan`, \
                     not to applying a saved plan (hint: make the plan again with --allow-drop)"
                );
                return Ok(Exit::Invalid);
            }
            let (plan, saved) = match plan {
                Some(path) => match read_saved_plan(&path, &pipeline, client.as_deref()) {
                    Ok(p) => (p, true),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return Ok(Exit::Invalid);
                    }
                },
                None => (
                    make_plan(&pipeline, &store, client.as_deref(), allow_drop).await?,
                    false,
                ),
            };
            print!("{}", report::plan_text_styled(&plan, colour()));
            // An empty plan is still applied: it records the run and refreshes the seat
            // ledger, which the grace period counts from.
            if !plan.is_empty() && !yes && !confirm(&plan)? {
                return Ok(if std::io::stdin().is_terminal() {
                    Exit::Ok
                } else {
                    Exit::Invalid
                });
            }
            // A plan confirmed at a prompt may have waited: check nothing moved meanwhile.
            let verify = saved || !yes;
            let mut store = store;
            let hand = Hand {
                queue: &cli.queue,
                store_path: &cli.store,
                pipeline: &pipeline,
                client: client.as_deref(),
                wait: Duration::from_secs(lock_wait_seconds),
            };
            let Some(outcomes) = hand
                .run(&mut store, async |store| {
                    apply_now(store, &pipeline, &plan, "apply", verify).await
                })
                .await?
            else {
                return Ok(Exit::Remote);
            };
            print!("{}", report::outcome_text(&outcomes));
            print_report_path(&store);
            Ok(plan_exit(&plan).max(outcome_exit(&outcomes)))
        }
        Command::Run {
            file,
            client,
            allow_drop,
            lock_wait_seconds,
        } => {
            let Some(pipeline) = load_for(&file, client.as_deref()) else {
                return Ok(Exit::Invalid);
            };
            let mut store = open_store(&cli.store, &cli.store_key_file).await?;
            let hand = Hand {
                queue: &cli.queue,
                store_path: &cli.store,
                pipeline: &pipeline,
                client: client.as_deref(),
                wait: Duration::from_secs(lock_wait_seconds),
            };
            let Some((plan, outcomes)) = hand
                .run(&mut store, async |store| {
                    let plan = make_plan(&pipeline, store, client.as_deref(), allow_drop).await?;
                    print!("{}", report::plan_text_styled(&plan, colour()));
                    let outcomes = apply_now(store, &pipeline, &plan, "run", false).await?;
                    anyhow::Ok((plan, outcomes))
                })
                .await?
            else {
                return Ok(Exit::Remote);
            };
            if !plan.is_empty() {
                print!("{}", report::outcome_text(&outcomes));
            }
            print_report_path(&store);
            Ok(plan_exit(&plan).max(outcome_exit(&outcomes)))
        }
        Command::History {
            client,
            limit,
            output,
        } => {
            let store = open_store(&cli.store, &cli.store_key_file).await?;
            let rows = store.history(client.as_deref(), limit).await?;
            match output {
                Output::Json => print!("{}", report::json(&rows)?),
                Output::Table => print!("{}", report::history_text(&rows)),
            }
            Ok(Exit::Ok)
        }
        Command::Test { files } => Ok(test(&files)),
        Command::ValueReport {
            file,
            client,
            from,
            to,
            format,
            output,
        } => {
            use crate::report::value_report::{self, ValueReportError};
            let Some(pipeline) = load_for(&file, Some(&client)) else {
                return Ok(Exit::Invalid);
            };
            let Some(c) = pipeline.client(&client) else {
                return Ok(Exit::Invalid);
            };
            let store = open_store(&cli.store, &cli.store_key_file).await?;
            let billing = pipeline
                .target
                .build(&store.build_context())
                .context("cannot set up the billing system's client")?;
            let report = match value_report::build(&pipeline, c, &store, billing.as_ref(), from, to)
                .await
            {
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
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(Exit::Ok)
        }
        Command::Report {
            run_id,
            format,
            template,
            output,
        } => {
            let store = open_store(&cli.store, &cli.store_key_file).await?;
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
        } => {
            let Some(pipeline) = load_for(&file, Some(&client)) else {
                return Ok(Exit::Invalid);
            };
            let Some(c) = pipeline.client(&client) else {
                return Ok(Exit::Invalid);
            };
            let store = open_store(&cli.store, &cli.store_key_file).await?;
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
        Command::Schema { format } => {
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
        Command::Sandbox { kind, port, seed } => {
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
        Command::Demo => demo::run().await,
    }
}

impl PartialOrd for Exit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Exit {
    /// Which outcome a command reports when clients ended differently: a remote failure
    /// outranks a refusal, which outranks bad input, which outranks success.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let rank = |e: &Exit| match e {
            Exit::Ok => 0,
            Exit::Invalid => 1,
            Exit::Refused => 2,
            Exit::Remote => 3,
        };
        rank(self).cmp(&rank(other))
    }
}

/// Loads a pipeline, printing every error; `None` means exit 1. The target's client is built
/// too, so settings it refuses (a URL that is not http(s), a zero rate limit) are the user's
/// to fix (exit 1), not an outage (exit 3).
/// Several pipeline files, each checked; `None` (errors printed) when any is invalid.
fn load_all(files: &[PathBuf]) -> Option<Vec<Arc<Pipeline>>> {
    let mut pipelines = Vec::new();
    for file in files {
        pipelines.push(Arc::new(load(file)?));
    }
    Some(pipelines)
}

fn queue_location(
    queue: &Option<String>,
    store: &Path,
) -> anyhow::Result<crate::queue::QueueLocation> {
    Ok(match queue {
        Some(q) => q.parse()?,
        None => crate::queue::QueueLocation::beside(store),
    })
}

/// A plan-and-apply started by hand (`rollcall run`, `rollcall apply`), which takes its
/// clients' leases as a worker would (invariant 12).
struct Hand<'a> {
    queue: &'a Option<String>,
    store_path: &'a Path,
    pipeline: &'a Pipeline,
    client: Option<&'a str>,
    /// How long to wait for a client a worker is syncing.
    wait: Duration,
}

impl Hand<'_> {
    /// Runs `work` under the leases, every write checked against them; `store` becomes the
    /// store as workers on that queue use it. `Ok(None)` when a worker kept a client past the
    /// wait (the error is printed). No queue file beside the store means no worker has ever
    /// run there: nothing to lock, and no file is created.
    async fn run<T>(
        &self,
        store: &mut Store,
        work: impl AsyncFnOnce(&Store) -> anyhow::Result<T>,
    ) -> anyhow::Result<Option<T>> {
        use crate::queue::locks::{LeaseSet, LeaseSetError};
        let location = queue_location(self.queue, self.store_path)?;
        if let crate::queue::QueueLocation::Sqlite(path) = &location
            && !path.exists()
        {
            return work(store).await.map(Some);
        }
        let queue = open_queue(
            self.queue,
            self.store_path,
            crate::queue::Liveness::default(),
        )
        .await?;
        let key = |c| crate::queue::worker::lease_key(self.pipeline, c);
        let keys = match self.client {
            Some(name) => self.pipeline.client(name).into_iter().map(key).collect(),
            None => self.pipeline.clients.iter().map(key).collect(),
        };
        let holder = format!("rollcall by hand (pid {})", std::process::id());
        let ttl = crate::queue::worker::WorkerOptions::default().lock_ttl;
        let set = match LeaseSet::acquire(queue.locks().await?, keys, &holder, ttl, self.wait).await
        {
            Ok(set) => Arc::new(set),
            Err(e @ LeaseSetError::Busy { .. }) => {
                eprintln!("error: {e}");
                return Ok(None);
            }
            Err(LeaseSetError::Lock(e)) => return Err(e.into()),
        };
        *store = share_tokens(store.clone(), &queue);
        let fence: Arc<dyn crate::apply::WriteFence> = set.clone();
        let result = crate::apply::fenced(fence, work(store)).await;
        set.release().await;
        result.map(Some)
    }
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

/// The store at `path`, with OAuth tokens encrypted when a store key is configured
/// (`crate::seal`).
async fn open_store(path: &Path, key_file: &Option<PathBuf>) -> anyhow::Result<Store> {
    let key = crate::seal::StoreKey::configured(key_file.as_deref())?;
    Ok(Store::open(path).await?.with_key(key.map(Arc::new)))
}

/// The store and the queue, as workers use them together (tokens shared through the queue).
async fn open_shared(
    queue: &Option<String>,
    store: &Path,
    key_file: &Option<PathBuf>,
    liveness: crate::queue::Liveness,
) -> anyhow::Result<(Store, crate::queue::Queue)> {
    let local = open_store(store, key_file).await?;
    let queue = open_queue(queue, store, liveness).await?;
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

pub fn load(file: &Path) -> Option<Pipeline> {
    match config::load(file) {
        Ok(mut p) => match p.target.build(&rollcall_core::BuildContext::in_memory()) {
            Ok(_) => {
                p.bill_day = BILL_DAY.get().copied();
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

fn validate(file: &Path) -> Exit {
    match load(file) {
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

/// Loads a pipeline and checks `--client`, printing what is wrong; `None` means exit 1.
fn load_for(file: &Path, client: Option<&str>) -> Option<Pipeline> {
    let pipeline = load(file)?;
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

/// Set once from `--period`: the day every pipeline loaded by this invocation bills for.
static BILL_DAY: std::sync::OnceLock<chrono::NaiveDate> = std::sync::OnceLock::new();

/// Set once from `--quiet`: progress bars are for a person watching, never for scripts.
static QUIET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Progress bars on stderr: one overall bar and a line per client at work.
struct Bars {
    multi: indicatif::MultiProgress,
    total: indicatif::ProgressBar,
    clients: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

impl Bars {
    /// Bars only when stderr is a terminal and `--quiet` was not given.
    fn new(pipeline: &Pipeline, only: Option<&str>) -> Option<Bars> {
        // Bars are drawn on stderr, but only for a person watching: stdout a terminal too,
        // so `rollcall plan … > plan.txt` stays quiet.
        if QUIET.get().copied().unwrap_or(true)
            || !std::io::stderr().is_terminal()
            || !std::io::stdout().is_terminal()
        {
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

    fn finish(self) {
        self.total.finish_and_clear();
        let _ = self.multi.clear();
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
}

/// Colour only for a person at a terminal who has not asked for none (no-color.org).
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn print_report_path(store: &Store) {
    if let Ok(id) = RUN_ID.try_with(Clone::clone) {
        let path = store.report_path(&id);
        if path.exists() {
            println!("report: {}", path.display());
        }
    }
}

/// A recorded run's report in `format`.
pub async fn render_report(
    store: &Store,
    run_id: &str,
    format: ReportFormat,
    template: Option<&str>,
) -> anyhow::Result<String> {
    use crate::report::run_report;
    let Some(run) = store.report(run_id).await? else {
        anyhow::bail!(
            "no recorded run `{run_id}` in {} (hint: `rollcall history` lists run ids)",
            store.report_path(run_id).display()
        );
    };
    let history = store.reports(&run.plan.pipeline).await?;
    let report = run_report::build(&run, &history);
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
    if let Err(e) = std::fs::write(file, text) {
        eprintln!("error: cannot write {}: {e}", file.display());
        return Exit::Invalid;
    }
    println!(
        "wrote {}: edit it, then `rollcall validate {0}`, `rollcall test {0}` and `rollcall plan {0}`",
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

fn test(files: &[PathBuf]) -> Exit {
    let mut exit = Exit::Ok;
    for file in files {
        let Some(pipeline) = load(file) else {
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

/// A plan with no progress shown: for the service and scripts.
pub async fn quiet_plan(
    pipeline: &Pipeline,
    store: &Store,
    client: Option<&str>,
) -> anyhow::Result<PipelinePlan> {
    let billing = pipeline
        .target
        .build(&store.build_context())
        .context("cannot set up the billing system's client")?;
    Ok(run::plan_pipeline(pipeline, billing, store, client, false, &run::Quiet).await)
}

pub async fn make_plan(
    pipeline: &Pipeline,
    store: &Store,
    client: Option<&str>,
    allow_drop: bool,
) -> anyhow::Result<PipelinePlan> {
    let billing = pipeline
        .target
        .build(&store.build_context())
        .context("cannot set up the billing system's client")?;
    let bars = Bars::new(pipeline, client);
    let progress: &dyn run::Progress = match &bars {
        Some(b) => b,
        None => &run::Quiet,
    };
    let plan = run::plan_pipeline(pipeline, billing, store, client, allow_drop, progress).await;
    if let Some(b) = bars {
        b.finish();
    }
    Ok(plan)
}

pub async fn apply_now(
    store: &Store,
    pipeline: &Pipeline,
    plan: &PipelinePlan,
    command: &str,
    verify: bool,
) -> anyhow::Result<Vec<ClientOutcome>> {
    let billing = pipeline
        .target
        .build(&store.build_context())
        .context("cannot set up the billing system's client")?;
    // The invocation's id names its first apply; a second apply in one invocation (the demo)
    // is a run of its own.
    let invocation = RUN_ID.try_with(Clone::clone).ok();
    let run_id = match invocation {
        Some(id) if !store.has_run(&id).await? => id,
        _ => uuid::Uuid::now_v7().to_string(),
    };
    store.begin_run(&run_id, &pipeline.name, command).await?;
    let bars = Bars::new(pipeline, None);
    let progress: &dyn run::Progress = match &bars {
        Some(b) => b,
        None => &run::Quiet,
    };
    let outcomes =
        apply::apply_plan(plan, Arc::clone(&billing), store, &run_id, verify, progress).await?;
    if let Some(b) = bars {
        b.finish();
    }
    store.save_report(&run_id, plan, &outcomes).await?;
    // Every run leaves its report beside the store; a failure to write it is not the run's.
    match render_report(store, &run_id, ReportFormat::Html, None).await {
        Ok(html) => {
            let path = store.report_path(&run_id);
            let written = crate::store_file::write_private(&path, html.as_bytes());
            match written {
                Ok(()) => tracing::info!(report = %path.display(), "Wrote the run report."),
                Err(e) => tracing::warn!(error = %e, "Cannot write the run report."),
            }
        }
        Err(e) => tracing::warn!(error = %e, "Cannot render the run report."),
    }
    store
        .finish_run(
            &run_id,
            &format!("{:?}", outcome_exit(&outcomes)).to_lowercase(),
        )
        .await?;
    Ok(outcomes)
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
    let kept: Vec<String> = plan.clients.iter().map(|c| c.client.clone()).collect();
    plan.changes.retain(|ch| kept.contains(&ch.client));
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

/// The exit code a plan calls for on its own.
pub fn plan_exit(plan: &PipelinePlan) -> Exit {
    plan.clients
        .iter()
        .map(|c| match (&c.failure, &c.refusal) {
            (Some(f), _) if f.class == FailureClass::Invalid => Exit::Invalid,
            (Some(_), _) => Exit::Remote,
            (None, Some(_)) => Exit::Refused,
            // A final invoice the bill no longer matches waits for a person, like a refusal.
            (None, None) if !c.conflicts.is_empty() => Exit::Refused,
            (None, None) => Exit::Ok,
        })
        .max()
        .unwrap_or(Exit::Ok)
}

pub fn outcome_exit(outcomes: &[ClientOutcome]) -> Exit {
    outcomes
        .iter()
        .map(|o| match o.state {
            OutcomeState::Done | OutcomeState::Skipped { .. } => Exit::Ok,
            OutcomeState::Stale { .. } => Exit::Refused,
            OutcomeState::Failed { .. } => Exit::Remote,
        })
        .max()
        .unwrap_or(Exit::Ok)
}
