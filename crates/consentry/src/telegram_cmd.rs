//! `consentry telegram`: the Telegram moderation bot (crate `consentry-telegram`).
//!
//! The bot token comes from an environment variable (`$CONSENTRY_TELEGRAM_TOKEN` by default) or
//! the `token` key of a TOML config file (`--config`), never from a flag (flags show in `ps`).
//! Matching: the embedded store (`--data-dir` / `--database-url`, the same banks `consentry
//! serve` uses) or a remote `consentry serve` (`--server URL`, API key in `$CONSENTRY_API_KEY`).
//! Long polling by default; webhook mode with `--webhook-listen ADDR --webhook-url URL` (secret
//! token in `$CONSENTRY_WEBHOOK_SECRET`, else random).
//! SIGTERM or Ctrl-C: the updates in flight are finished, the offset saved, queued messages sent.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use consentry_server::{AppState, ServerConfig};
use consentry_store::{Store, StoreLocation, StoreOptions};
use consentry_telegram::{
    Action, ApiOptions, BotApi, BotConfig, DerivePolicy, Lang, Matcher, Remote, StateFile,
};
use serde::Deserialize;

/// Arguments of `consentry telegram`.
#[derive(Debug, clap::Args)]
pub struct TelegramArgs {
    /// TOML config file. Keys: token, api_url, data_dir, database_url, schema, server, api_key,
    /// state, action, notice, hide_case_matches, derive_policy, lang, radius, lookup_patience,
    /// webhook_listen, webhook_url, webhook_secret. Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Environment variable holding the bot token (from @BotFather).
    #[arg(long, value_name = "VAR", default_value = "CONSENTRY_TELEGRAM_TOKEN")]
    token_env: String,

    /// Bot API server (a local telegram-bot-api server, or a fake one in tests).
    #[arg(long, value_name = "URL")]
    api_url: Option<String>,

    /// Data directory of the embedded SQLite store (default `$CONSENTRY_DATA_DIR`, else
    /// `./consentry-data`) — the same one `consentry serve` uses.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["database_url", "server"])]
    data_dir: Option<PathBuf>,

    /// PostgreSQL URL instead of SQLite (also `$CONSENTRY_DATABASE_URL`).
    #[arg(long, value_name = "URL", env = "CONSENTRY_DATABASE_URL", conflicts_with = "server")]
    database_url: Option<String>,

    /// PostgreSQL schema.
    #[arg(long, value_name = "NAME")]
    schema: Option<String>,

    /// Match against a remote `consentry serve` at this URL instead of the embedded store.
    #[arg(long, value_name = "URL")]
    server: Option<String>,

    /// Environment variable holding the API key (scope `lookup`) for `--server`.
    #[arg(long, value_name = "VAR", default_value = "CONSENTRY_API_KEY")]
    api_key_env: String,

    /// The bot's state file (update offset, chat settings, review queues). Default:
    /// `telegram-state.json` in the data directory, or in the current directory with `--server`.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,

    /// Default policy of chats that have not chosen one: none, restrict, ban, escalate.
    #[arg(long, value_name = "POLICY")]
    action: Option<String>,

    /// No neutral notice in the chat after a removal (chats can turn it back on).
    #[arg(long)]
    no_notice: bool,

    /// Leave out of a survivor's `/status` how often her hashes matched (shown by default:
    /// counts only, never where).
    #[arg(long)]
    hide_case_matches: bool,

    /// Default for matches on derivative evidence alone (keypoints or top band; the photo's own
    /// hash did not match) in chats that have not chosen (`/policy derive`): act (like any
    /// match), delete (no sanction), report (leave it, report to the log chat).
    #[arg(long, value_name = "POLICY")]
    derive_policy: Option<String>,

    /// Default language of chats: en or fr.
    #[arg(long, value_name = "LANG")]
    lang: Option<String>,

    /// Match radius (Hamming distance; PDQ's default 31).
    #[arg(long, value_name = "N")]
    radius: Option<u32>,

    /// How long to keep retrying a lookup while the store or the server cannot be reached
    /// before a photo is left unchecked, in seconds (default 120).
    #[arg(long, value_name = "SECONDS")]
    lookup_patience: Option<u64>,

    /// Webhook mode instead of long polling: serve Telegram's POSTs on this address (e.g.
    /// `127.0.0.1:8443`, behind a reverse proxy terminating HTTPS). Needs `--webhook-url`.
    #[arg(long, value_name = "ADDR", requires = "webhook_url")]
    webhook_listen: Option<String>,

    /// Public HTTPS URL Telegram POSTs updates to (registered with setWebhook); its path is the
    /// route served on `--webhook-listen`.
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,

    /// Environment variable holding the webhook secret token (A-Z a-z 0-9 _ -, at most 256). If
    /// unset, a random one is made at each start (the webhook is registered again anyway).
    #[arg(long, value_name = "VAR", default_value = "CONSENTRY_WEBHOOK_SECRET")]
    webhook_secret_env: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    token: Option<String>,
    api_url: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    schema: Option<String>,
    server: Option<String>,
    api_key: Option<String>,
    state: Option<PathBuf>,
    action: Option<String>,
    notice: Option<bool>,
    hide_case_matches: Option<bool>,
    derive_policy: Option<String>,
    lang: Option<String>,
    radius: Option<u32>,
    lookup_patience: Option<u64>,
    webhook_listen: Option<String>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
}

/// A random webhook secret (32 hex digits from the OS's random source).
fn random_secret() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom for a webhook secret: set $CONSENTRY_WEBHOOK_SECRET")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn init_logs() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn env_nonempty(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|s| !s.trim().is_empty()).map(|s| s.trim().to_owned())
}

/// Runs the bot until SIGTERM / Ctrl-C.
pub fn run(args: TelegramArgs) -> Result<ExitCode> {
    init_logs();
    let file: FileConfig = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("{}: invalid config", p.display()))?
        }
        None => FileConfig::default(),
    };
    let Some(token) = env_nonempty(&args.token_env).or(file.token.clone()) else {
        bail!("no bot token: set ${} (the token @BotFather gave you) or `token` in --config", args.token_env);
    };
    let api_url =
        args.api_url.clone().or(file.api_url.clone()).unwrap_or_else(|| "https://api.telegram.org".into());
    let mut config = BotConfig::default();
    if let Some(a) = args.action.as_ref().or(file.action.as_ref()) {
        config.default_action = Action::parse(a)
            .with_context(|| format!("unknown policy `{a}` (none, restrict, ban, escalate)"))?;
    }
    config.default_notice = !args.no_notice && file.notice.unwrap_or(true);
    config.show_case_matches = !(args.hide_case_matches || file.hide_case_matches.unwrap_or(false));
    if let Some(p) = args.derive_policy.as_ref().or(file.derive_policy.as_ref()) {
        config.default_derive = DerivePolicy::parse(p)
            .with_context(|| format!("unknown derive policy `{p}` (act, delete, report)"))?;
    }
    if let Some(l) = args.lang.as_ref().or(file.lang.as_ref()) {
        config.default_lang = Lang::parse(l).with_context(|| format!("unknown language `{l}` (en, fr)"))?;
    }
    if let Some(r) = args.radius.or(file.radius) {
        if r > 64 {
            bail!("--radius {r}: at most 64");
        }
        config.radius = r;
    }
    if let Some(secs) = args.lookup_patience.or(file.lookup_patience) {
        config.lookup_patience = std::time::Duration::from_secs(secs);
    }
    let server = args.server.clone().or(file.server.clone());
    let database_url = args.database_url.clone().or(file.database_url.clone());
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir.clone())
        .or_else(|| std::env::var_os("CONSENTRY_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("consentry-data"));
    let state_path = args.state.clone().or(file.state.clone()).unwrap_or_else(|| {
        if server.is_some() || database_url.is_some() {
            PathBuf::from("telegram-state.json")
        } else {
            data_dir.join("telegram-state.json")
        }
    });
    let webhook_listen = args.webhook_listen.clone().or(file.webhook_listen.clone());
    let webhook_url = args.webhook_url.clone().or(file.webhook_url.clone());
    let webhook = match (webhook_listen, webhook_url) {
        (None, None) => None,
        (Some(listen), Some(url)) => {
            let addr: std::net::SocketAddr = listen
                .parse()
                .with_context(|| format!("--webhook-listen `{listen}`: not an address:port"))?;
            consentry_telegram::webhook::route_of(&url).map_err(|e| anyhow::anyhow!("--webhook-url: {e}"))?;
            let secret = match env_nonempty(&args.webhook_secret_env).or(file.webhook_secret.clone()) {
                Some(s) => s,
                None => random_secret()?,
            };
            if !consentry_telegram::webhook::valid_secret(&secret) {
                bail!("the webhook secret must be 1-256 characters A-Z a-z 0-9 _ -");
            }
            Some((addr, url, secret))
        }
        _ => bail!("webhook mode needs both --webhook-listen and --webhook-url (or both config keys)"),
    };
    let api = BotApi::new(&api_url, &token, ApiOptions::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let mut store_to_close = None;
        let matcher = match &server {
            Some(url) => {
                let Some(key) = env_nonempty(&args.api_key_env).or(file.api_key.clone()) else {
                    bail!(
                        "--server needs an API key with the lookup scope in ${} (or `api_key` in --config)",
                        args.api_key_env
                    );
                };
                tracing::info!(server = %url, "matching against a remote consentry serve");
                Matcher::Remote(Remote::new(url, &key).map_err(|e| anyhow::anyhow!("{e}"))?)
            }
            None => {
                let location = match &database_url {
                    Some(url) => match StoreLocation::from_url(url) {
                        StoreLocation::Postgres { url, .. } => StoreLocation::Postgres {
                            url,
                            schema: args.schema.clone().or(file.schema.clone()),
                        },
                        other => other,
                    },
                    None => {
                        std::fs::create_dir_all(&data_dir)
                            .with_context(|| format!("cannot create {}", data_dir.display()))?;
                        StoreLocation::Sqlite(data_dir.join(consentry_store::SQLITE_FILE_NAME))
                    }
                };
                let store =
                    Store::open(location, StoreOptions::default()).await.context("cannot open the store")?;
                store_to_close = Some(store.clone());
                let state =
                    AppState::start(store, ServerConfig::default()).await.context("cannot load the index")?;
                tracing::info!(entries = state.index().len(), "embedded store and index loaded");
                Matcher::Embedded(state)
            }
        };
        if let Some(dir) = state_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let state = Arc::new(
            StateFile::open(&state_path)
                .with_context(|| format!("cannot open the state file {}", state_path.display()))?,
        );
        tracing::info!(state = %state_path.display(), offset = state.with(|p| p.offset), "state loaded");
        // Embedded: the match counts of the last second are written at exit.
        let embedded = match &matcher {
            Matcher::Embedded(s) => Some(s.clone()),
            Matcher::Remote(_) => None,
        };
        match webhook {
            None => {
                consentry_telegram::run(api, matcher, state, config, consentry_server::shutdown_signal())
                    .await?
            }
            Some((addr, url, secret)) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                let webhook = consentry_telegram::Webhook { listener, url, secret };
                consentry_telegram::run_webhook(
                    api,
                    matcher,
                    state,
                    config,
                    webhook,
                    consentry_server::shutdown_signal(),
                )
                .await?
            }
        }
        if let Some(app) = embedded {
            if let Err(e) = app.flush_match_counts().await {
                tracing::warn!(error = %e, "match counts of the last second not written");
            }
        }
        if let Some(s) = store_to_close {
            s.close().await;
        }
        Ok(ExitCode::SUCCESS)
    })
}
