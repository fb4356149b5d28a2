//! `consentry serve`: the matching service (HTTP API over a store), and `consentry keys`: API
//! keys of that store.
//!
//! With no arguments `serve` opens (or creates) an SQLite store in `./consentry-data` and listens
//! on 127.0.0.1:8080. `--database-url postgres://…` uses PostgreSQL instead; several `serve`
//! processes on one database see each other's writes within a second. Logs go to stderr
//! (`RUST_LOG` filters them, `--log-format json` for machines); SIGTERM or Ctrl-C stops
//! accepting connections, finishes the requests in flight and delivers the due webhooks.
//!
//! The first admin key: `consentry keys create --scope admin --name NAME` prints the secret
//! once (the store keeps only a salted hash). `serve` reminds you when the store has no key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use consentry_server::{AppState, RateLimit, ServerConfig, WebhookConfig};
use consentry_store::{
    day_of, format_day, Actor, Scope, StatsGroup, StatsKey, StatsQuery, Store, StoreLocation, StoreOptions,
    Timestamp,
};

/// Where the store is (shared by `serve` and `keys`).
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Data directory of the embedded SQLite store (created if missing). Default:
    /// `$CONSENTRY_DATA_DIR`, else `./consentry-data`.
    #[arg(long, value_name = "DIR", conflicts_with = "database_url")]
    data_dir: Option<PathBuf>,

    /// PostgreSQL URL (`postgres://user@host:5432/db`) instead of SQLite. Also read from
    /// `$CONSENTRY_DATABASE_URL`.
    #[arg(long, value_name = "URL", env = "CONSENTRY_DATABASE_URL")]
    database_url: Option<String>,

    /// PostgreSQL schema holding the tables (created if missing); default: the search path.
    #[arg(long, value_name = "NAME", requires = "database_url")]
    schema: Option<String>,
}

impl StoreArgs {
    fn location(&self) -> StoreLocation {
        match &self.database_url {
            Some(url) => match StoreLocation::from_url(url) {
                StoreLocation::Postgres { url, .. } => {
                    StoreLocation::Postgres { url, schema: self.schema.clone() }
                }
                other => other,
            },
            None => {
                let dir = self
                    .data_dir
                    .clone()
                    .or_else(|| std::env::var_os("CONSENTRY_DATA_DIR").map(PathBuf::from))
                    .unwrap_or_else(|| PathBuf::from("consentry-data"));
                StoreLocation::Sqlite(dir.join(consentry_store::SQLITE_FILE_NAME))
            }
        }
    }

    fn describe(&self) -> String {
        match self.location() {
            StoreLocation::Sqlite(p) => format!("SQLite {}", p.display()),
            StoreLocation::Postgres { schema, .. } => {
                format!("PostgreSQL{}", schema.map(|s| format!(" (schema {s})")).unwrap_or_default())
            }
        }
    }

    async fn open(&self) -> Result<Store> {
        Store::open(self.location(), StoreOptions::default())
            .await
            .with_context(|| format!("cannot open the store ({})", self.describe()))
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,

    /// Address to listen on (port 0 picks a free port; the address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,

    /// URL that receives a signed `match` event for every lookup that matches (repeatable).
    /// The HMAC-SHA256 key is read from `$CONSENTRY_WEBHOOK_SECRET` (required with --webhook).
    #[arg(long = "webhook", value_name = "URL")]
    webhooks: Vec<String>,

    /// URL of the helpline's own system that receives a signed `case` event when a case is
    /// opened, withdrawn or given a status by staff (repeatable; same key as --webhook). Case
    /// events name the case, so they never go to the --webhook URLs.
    #[arg(long = "case-webhook", value_name = "URL")]
    case_webhooks: Vec<String>,

    /// Requests per second allowed per API key (burst: 2 s worth); 0 = unlimited.
    #[arg(long, default_value_t = 0.0, value_name = "N")]
    key_rate_limit: f64,

    /// Requests per minute allowed per client address on the survivor case endpoints
    /// (burst: the same number); 0 = unlimited.
    #[arg(long, default_value_t = 30.0, value_name = "N")]
    case_rate_limit: f64,

    /// Take the client address from `X-Forwarded-For` (only behind a reverse proxy).
    #[arg(long)]
    trust_forwarded_for: bool,

    /// Largest request body (images, JSON) in MiB.
    #[arg(long, default_value_t = 20, value_name = "MIB")]
    max_body_mib: usize,

    /// Seconds a request may take (bulk imports excepted).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    request_timeout: u64,

    /// Descriptor keys through which the derivative matcher makes no correspondence: none,
    /// ramp (flat and pure-ramp patches), ramp1 (those and their 1-bit neighbours), ramp2 (and
    /// their 2-bit neighbours; the default), or a count (up to 1024) of the most common keys per
    /// table plus the ramp keys (learnt for the 16 × 18-bit key layout in use until 2026-12-05;
    /// under today's layout it stops what ramp2 stops). More keys
    /// stopped: faster derivative lookups over large banks, fewer chance matches, a little less
    /// recall on some transforms (bench/RESULTS.md).
    #[arg(long, value_name = "STOP")]
    derive_stop_keys: Option<consentry_derive::StopKeys>,

    /// Whether the derivative matcher also tries an uploaded image's keypoints mirrored left to
    /// right (mirrored, then cropped or captioned copies). On by default; `false` halves the
    /// keypoint search of derivative lookups over large banks (bench/RESULTS.md).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    derive_mirrored: bool,

    /// Days the change feed is kept (0: forever). A replica further behind reloads its index
    /// from the entries, which are never deleted by this.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    keep_changes_days: u32,

    /// Days of match counts kept (0: forever, the default). They name who looked an entry up
    /// (API keys, Telegram chats), so a deployment may want to keep them only for a while.
    #[arg(long, default_value_t = 0, value_name = "DAYS")]
    keep_match_counts_days: u32,

    /// Days the codes of a withdrawn case are kept, disabled (0: forever, the default); after
    /// that they are deleted for good, and the case keeps only its number and status.
    #[arg(long, default_value_t = 0, value_name = "DAYS")]
    keep_withdrawn_days: u32,

    /// Leave out of a survivor's case status how often her hashes matched (shown by default:
    /// counts only, never where), e.g. for a helpline that gives such news in person.
    #[arg(long)]
    hide_case_matches: bool,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print its secret (shown only this once).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// Label of the key.
        #[arg(long)]
        name: String,
        /// Scopes (repeatable or comma-separated): admin, curate, lookup, submit.
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    /// List the API keys (never their secrets).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke an API key by id.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        /// Key id (from `keys list`).
        id: i64,
    },
}

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// Logs go to stderr through a writer thread, so a slow log consumer never holds a request up
/// (no line is dropped: when its queue is full, logging waits). The returned guard flushes the
/// queue when dropped, at the end of `run_serve`.
fn init_logs(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let (writer, guard) =
        tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
    guard
}

pub fn run_serve(args: ServeArgs) -> Result<ExitCode> {
    let _logs = init_logs(args.log_format);
    let secret = std::env::var("CONSENTRY_WEBHOOK_SECRET").unwrap_or_default();
    if !(args.webhooks.is_empty() && args.case_webhooks.is_empty()) && secret.len() < 16 {
        bail!("--webhook and --case-webhook need an HMAC key of at least 16 characters in $CONSENTRY_WEBHOOK_SECRET");
    }
    for u in args.webhooks.iter().chain(&args.case_webhooks) {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            bail!("webhook URL `{u}` is not http(s)");
        }
    }
    let rate = |per_second: f64, burst: f64| {
        (per_second > 0.0).then(|| RateLimit { per_second, burst: burst.ceil().max(1.0) as u32 })
    };
    // A number of days, 0 meaning forever.
    let days = |n: u32| (n > 0).then(|| Duration::from_secs(u64::from(n) * 86_400));
    let config = ServerConfig {
        max_body_bytes: args.max_body_mib.max(1) << 20,
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        webhooks: WebhookConfig {
            urls: args.webhooks.clone(),
            case_urls: args.case_webhooks.clone(),
            secret: secret.into_bytes(),
            ..WebhookConfig::default()
        },
        key_rate_limit: rate(args.key_rate_limit, args.key_rate_limit * 2.0),
        case_rate_limit: rate(args.case_rate_limit / 60.0, args.case_rate_limit),
        trust_forwarded_for: args.trust_forwarded_for,
        derive_params: consentry_derive::Params {
            stop_keys: args.derive_stop_keys.unwrap_or(consentry_derive::Params::default().stop_keys),
            mirrored: args.derive_mirrored,
            ..consentry_derive::Params::default()
        },
        keep_changes: days(args.keep_changes_days),
        keep_match_counts_days: (args.keep_match_counts_days > 0).then_some(args.keep_match_counts_days),
        keep_withdrawn: days(args.keep_withdrawn_days),
        case_matches_shown: !args.hide_case_matches,
        ..ServerConfig::default()
    };
    let rt = runtime()?;
    rt.block_on(async move {
        let store = args.store.open().await?;
        tracing::info!(store = %args.store.describe(), "store opened");
        if store.list_api_keys().await?.iter().all(|k| k.revoked_at.is_some()) {
            tracing::warn!(
                "this store has no API key yet: create one with `consentry keys create --scope admin --name NAME` \
                 (same --data-dir/--database-url); only the survivor case endpoints and /health work without one"
            );
        }
        let state = AppState::start(store.clone(), config).await.context("cannot load the index")?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, entries = state.index().len(), webhooks = args.webhooks.len(), "listening");
        // One machine-readable line on stdout, for scripts and tests (port 0).
        println!("consentry listening on http://{addr}");
        consentry_server::serve(listener, state, consentry_server::shutdown_signal()).await?;
        store.close().await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_keys(args: KeysArgs) -> Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async move {
        match args.command {
            KeysCommand::Create { store, name, scopes } => {
                let scopes = scopes
                    .iter()
                    .map(|s| s.trim().parse::<Scope>().map_err(|e| anyhow::anyhow!("{e} (expected admin, curate, lookup or submit)")))
                    .collect::<Result<Vec<_>>>()?;
                let st = store.open().await?;
                let created = st.create_api_key(&Actor::named("cli"), &name, &scopes).await?;
                st.close().await;
                eprintln!(
                    "API key {} `{}` created with scopes {}. The secret below is shown only now; the store keeps only a salted hash:",
                    created.key.id,
                    created.key.name,
                    created.key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
                );
                println!("{}", created.secret);
            }
            KeysCommand::List { store } => {
                let st = store.open().await?;
                println!("id\tname\tprefix\tscopes\trevoked");
                for k in st.list_api_keys().await? {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        k.id,
                        k.name,
                        k.prefix,
                        k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
                        if k.revoked_at.is_some() { "yes" } else { "no" }
                    );
                }
                st.close().await;
            }
            KeysCommand::Revoke { store, id } => {
                let st = store.open().await?;
                let k = st.revoke_api_key(&Actor::named("cli"), id).await?;
                st.close().await;
                eprintln!("API key {} `{}` revoked", k.id, k.name);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `consentry stats`: the match counts that `consentry serve` and the embedded bot keep (how often
/// each entry matched, per UTC day and source), summed, as `GET /v1/stats/matches` does, read
/// straight from the store (a running server writes its counts once a second).
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Sum by bank, entry, source (API key name or telegram:<chat id>), day or signal.
    #[arg(long, default_value = "bank")]
    by: String,
    /// Only this bank's entries.
    #[arg(long)]
    bank: Option<String>,
    /// Only this entry.
    #[arg(long)]
    entry: Option<i64>,
    /// Only this source.
    #[arg(long)]
    source: Option<String>,
    /// Only the entries of this case (its id, as in the entries' `source`).
    #[arg(long)]
    case: Option<i64>,
    /// First day, YYYY-MM-DD (UTC); default: 30 days ending with --until.
    #[arg(long)]
    since: Option<String>,
    /// Last day, YYYY-MM-DD (UTC); default: today.
    #[arg(long)]
    until: Option<String>,
    /// Most rows (the most matches first; days oldest first).
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

pub fn run_stats(args: StatsArgs) -> Result<ExitCode> {
    let group: StatsGroup = args.by.parse()?;
    let mut q =
        StatsQuery::for_days(group, args.since.as_deref(), args.until.as_deref(), day_of(Timestamp::now()))?;
    q.limit = args.limit;
    q.entry_id = args.entry;
    q.source = args.source;
    q.case_id = args.case;
    let rt = runtime()?;
    rt.block_on(async move {
        let st = args.store.open().await?;
        if let Some(name) = &args.bank {
            q.bank_id = Some(st.get_bank_by_name(name).await.with_context(|| format!("bank `{name}`"))?.id);
        }
        let rows = st.match_stats(&q).await;
        let banks = st.list_banks().await;
        st.close().await;
        let (rows, banks) = (rows?, banks?);
        let bank_name =
            |id: i64| banks.iter().find(|b| b.id == id).map_or("-".to_owned(), |b| b.name.clone());
        let key_columns = match group {
            StatsGroup::Entry => "entry_id\tbank",
            g => g.as_str(),
        };
        println!("{key_columns}\tmatches\tentries\tsources\tdays\tfirst\tlast");
        for r in rows {
            let key = match r.key {
                StatsKey::Bank(id) => bank_name(id),
                StatsKey::Entry { id, bank_id } => format!("{id}\t{}", bank_name(bank_id)),
                StatsKey::Source(s) => s,
                StatsKey::Day(d) => format_day(d),
                StatsKey::Signal(s) => s.as_str().to_owned(),
            };
            println!(
                "{key}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.matches,
                r.entries,
                r.sources,
                r.days,
                format_day(day_of(r.first_at)),
                format_day(day_of(r.last_at))
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
