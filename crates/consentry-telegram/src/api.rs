//! A thin Bot API client over reqwest: the dozen methods the bot calls, Telegram's error
//! envelope, `429 retry_after`, back-off on network errors and 5xx, and in-memory file downloads
//! capped at the Bot API's 20 MB.
//!
//! The token is part of every URL, so no URL is ever logged: reqwest errors are stripped of
//! theirs (`without_url`) before they are formatted.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The Bot API's download limit for `getFile` (20 MB).
pub const MAX_DOWNLOAD_BYTES: u64 = 20 * 1024 * 1024;

/// How the client retries.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Timeout of one request (getUpdates adds its long-poll timeout to this).
    pub request_timeout: Duration,
    /// Retries after a network error, a timeout or a 5xx (with exponential back-off).
    pub max_retries: u32,
    /// First back-off delay; doubled each retry up to `backoff_max`.
    pub backoff_base: Duration,
    /// Longest back-off delay.
    pub backoff_max: Duration,
    /// How many 429 answers one call waits out before giving up.
    pub max_429_retries: u32,
    /// Longest `retry_after` honoured in one wait (a longer one is waited in full, but never
    /// more than this per attempt — Telegram's values are seconds to a few minutes).
    pub max_retry_after: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            request_timeout: Duration::from_secs(15),
            max_retries: 4,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_429_retries: 6,
            max_retry_after: Duration::from_secs(300),
        }
    }
}

/// A failed Bot API call.
#[derive(Debug)]
pub enum ApiError {
    /// Telegram answered `ok: false`.
    Telegram {
        /// `error_code` (400, 403, ...).
        code: i64,
        /// `description`.
        description: String,
    },
    /// Still rate-limited after `max_429_retries` waits.
    RateLimited {
        /// The last `retry_after`, seconds.
        retry_after: u64,
    },
    /// Network error or timeout after all retries.
    Network(String),
    /// An answer that is not the Bot API's JSON envelope, or a result of the wrong shape.
    Decode(String),
    /// A download larger than the limit.
    TooLarge {
        /// Bytes announced or received before stopping.
        size: u64,
    },
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Telegram { code, description } => write!(f, "Bot API error {code}: {description}"),
            ApiError::RateLimited { retry_after } => {
                write!(f, "still rate-limited (retry_after {retry_after} s)")
            }
            ApiError::Network(e) => write!(f, "network error: {e}"),
            ApiError::Decode(e) => write!(f, "unexpected answer: {e}"),
            ApiError::TooLarge { size } => write!(f, "file too large ({size} bytes)"),
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// True for Telegram's "the message is already gone" answers to deleteMessage.
    pub fn is_message_gone(&self) -> bool {
        matches!(self, ApiError::Telegram { code: 400, description } if description.contains("not found"))
    }
}

#[derive(Debug, Deserialize)]
struct Envelope {
    ok: bool,
    result: Option<Value>,
    error_code: Option<i64>,
    description: Option<String>,
    parameters: Option<ResponseParameters>,
}

#[derive(Debug, Deserialize)]
struct ResponseParameters {
    retry_after: Option<u64>,
}

/// A Telegram user.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Bots too can post.
    #[serde(default)]
    pub is_bot: bool,
    /// First name.
    #[serde(default)]
    pub first_name: String,
    /// Last name.
    pub last_name: Option<String>,
    /// @username without the @.
    pub username: Option<String>,
    /// IETF language tag of the user's client.
    pub language_code: Option<String>,
}

/// A chat.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Chat {
    /// Id (negative for groups and channels).
    pub id: i64,
    /// "private", "group", "supergroup" or "channel".
    #[serde(rename = "type")]
    pub kind: String,
    /// Title of groups and channels.
    pub title: Option<String>,
    /// Public @username.
    pub username: Option<String>,
}

/// One size of a photo, or a thumbnail.
#[derive(Clone, Debug, Deserialize)]
pub struct PhotoSize {
    /// For getFile.
    pub file_id: String,
    /// Stable across bots and time: the verdict cache key.
    pub file_unique_id: String,
    /// Width.
    #[serde(default)]
    pub width: u32,
    /// Height.
    #[serde(default)]
    pub height: u32,
    /// Size in bytes, when known.
    pub file_size: Option<u64>,
}

/// A file attached as a document.
#[derive(Clone, Debug, Deserialize)]
pub struct Document {
    /// For getFile.
    pub file_id: String,
    /// Cache key.
    pub file_unique_id: String,
    /// MIME type given by the sender.
    pub mime_type: Option<String>,
    /// Size in bytes.
    pub file_size: Option<u64>,
    /// Thumbnail.
    #[serde(alias = "thumb")]
    pub thumbnail: Option<PhotoSize>,
}

/// A sticker.
#[derive(Clone, Debug, Deserialize)]
pub struct Sticker {
    /// For getFile.
    pub file_id: String,
    /// Cache key.
    pub file_unique_id: String,
    /// TGS (Lottie) sticker.
    #[serde(default)]
    pub is_animated: bool,
    /// WebM sticker.
    #[serde(default)]
    pub is_video: bool,
    /// Size in bytes.
    pub file_size: Option<u64>,
    /// Thumbnail.
    #[serde(alias = "thumb")]
    pub thumbnail: Option<PhotoSize>,
}

/// An animation, video or video note: only its thumbnail is hashed (no video hashing yet).
#[derive(Clone, Debug, Deserialize)]
pub struct VideoLike {
    /// For getFile.
    pub file_id: String,
    /// Cache key.
    pub file_unique_id: String,
    /// Thumbnail (the first frame, as Telegram renders it).
    #[serde(alias = "thumb")]
    pub thumbnail: Option<PhotoSize>,
}

/// A message (only the fields the bot reads).
#[derive(Clone, Debug, Deserialize)]
pub struct Message {
    /// Id inside its chat.
    pub message_id: i64,
    /// The chat.
    pub chat: Chat,
    /// Sender (absent in channels).
    pub from: Option<User>,
    /// Sender chat: the channel itself, or the group for anonymous admins.
    pub sender_chat: Option<Chat>,
    /// Text.
    pub text: Option<String>,
    /// Photo sizes.
    pub photo: Option<Vec<PhotoSize>>,
    /// Document.
    pub document: Option<Document>,
    /// Sticker.
    pub sticker: Option<Sticker>,
    /// Animation (GIF / MP4 without sound).
    pub animation: Option<VideoLike>,
    /// Video.
    pub video: Option<VideoLike>,
    /// Round video note.
    pub video_note: Option<VideoLike>,
    /// Album id.
    pub media_group_id: Option<String>,
    /// The message this one replies to.
    pub reply_to_message: Option<Box<Message>>,
}

/// `getFile`'s answer.
#[derive(Clone, Debug, Deserialize)]
pub struct TgFile {
    /// Id.
    pub file_id: String,
    /// Size in bytes, when known.
    pub file_size: Option<u64>,
    /// Path for the download URL; absent when the file cannot be downloaded.
    pub file_path: Option<String>,
}

/// `getChatMember`'s answer (status only).
#[derive(Clone, Debug, Deserialize)]
pub struct ChatMember {
    /// "creator", "administrator", "member", "restricted", "left" or "kicked".
    pub status: String,
}

/// The Bot API client. Cheap to clone.
#[derive(Clone)]
pub struct BotApi {
    http: reqwest::Client,
    base: String,
    file_base: String,
    opts: ApiOptions,
}

impl std::fmt::Debug for BotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotApi").field("token", &"<redacted>").field("opts", &self.opts).finish()
    }
}

fn net_err(e: reqwest::Error) -> String {
    let timeout = e.is_timeout();
    let e = e.without_url();
    if timeout {
        format!("timeout ({e})")
    } else {
        e.to_string()
    }
}

impl BotApi {
    /// A client for `api_url` (`https://api.telegram.org` in production) and `token`.
    pub fn new(api_url: &str, token: &str, opts: ApiOptions) -> Result<BotApi, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ApiError::Network(net_err(e)))?;
        let root = api_url.trim_end_matches('/');
        Ok(BotApi {
            http,
            base: format!("{root}/bot{token}"),
            file_base: format!("{root}/file/bot{token}"),
            opts,
        })
    }

    /// The retry settings.
    pub fn options(&self) -> &ApiOptions {
        &self.opts
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let d = self.opts.backoff_base.saturating_mul(1u32 << attempt.min(16));
        d.min(self.opts.backoff_max)
    }

    /// Calls `method` with JSON `params`, retrying network errors / 5xx `max_retries` times and
    /// waiting out 429s.
    pub async fn call<T: DeserializeOwned>(&self, method: &str, params: &Value) -> Result<T, ApiError> {
        self.call_with(method, params, self.opts.request_timeout, self.opts.max_retries).await
    }

    async fn call_with<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &Value,
        timeout: Duration,
        max_retries: u32,
    ) -> Result<T, ApiError> {
        let url = format!("{}/{method}", self.base);
        let mut failures = 0u32;
        let mut waits_429 = 0u32;
        loop {
            let attempt = self.http.post(&url).json(params).timeout(timeout).send().await;
            let transient = match attempt {
                Err(e) => net_err(e),
                Ok(resp) => {
                    let status = resp.status();
                    match resp.bytes().await {
                        Err(e) => net_err(e),
                        Ok(body) => match serde_json::from_slice::<Envelope>(&body) {
                            Ok(env) if env.ok => {
                                let result = env.result.unwrap_or(Value::Null);
                                return serde_json::from_value(result)
                                    .map_err(|e| ApiError::Decode(format!("{method}: {e}")));
                            }
                            Ok(env) => {
                                let code = env.error_code.unwrap_or(i64::from(status.as_u16()));
                                if code == 429 {
                                    let secs = env.parameters.and_then(|p| p.retry_after).unwrap_or(1);
                                    if waits_429 >= self.opts.max_429_retries {
                                        return Err(ApiError::RateLimited { retry_after: secs });
                                    }
                                    waits_429 += 1;
                                    let wait = Duration::from_secs(secs).min(self.opts.max_retry_after);
                                    tracing::warn!(
                                        method,
                                        retry_after = secs,
                                        "429 from the Bot API: waiting"
                                    );
                                    tokio::time::sleep(wait).await;
                                    continue;
                                }
                                if code >= 500 {
                                    format!("{code}: {}", env.description.unwrap_or_default())
                                } else {
                                    return Err(ApiError::Telegram {
                                        code,
                                        description: env.description.unwrap_or_default(),
                                    });
                                }
                            }
                            Err(_) if status.is_server_error() => format!("HTTP {status}"),
                            Err(e) => return Err(ApiError::Decode(format!("{method}: HTTP {status}: {e}"))),
                        },
                    }
                }
            };
            if failures >= max_retries {
                return Err(ApiError::Network(format!("{method}: {transient}")));
            }
            let wait = self.backoff(failures);
            failures += 1;
            tracing::warn!(method, error = %transient, wait_ms = wait.as_millis() as u64, "Bot API call failed: retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// `getMe`: the bot's own user.
    pub async fn get_me(&self) -> Result<User, ApiError> {
        self.call("getMe", &json!({})).await
    }

    /// `getUpdates` (long polling, `timeout` seconds), no retries (the poll loop backs off).
    /// Each update is returned as raw JSON so that one malformed update cannot hide the others.
    pub async fn get_updates(
        &self,
        offset: i64,
        timeout_secs: u64,
        limit: u32,
    ) -> Result<Vec<Value>, ApiError> {
        let params = json!({
            "offset": offset,
            "timeout": timeout_secs,
            "limit": limit,
            "allowed_updates": ["message", "edited_message", "channel_post", "edited_channel_post"],
        });
        let t = self.opts.request_timeout + Duration::from_secs(timeout_secs);
        self.call_with("getUpdates", &params, t, 0).await
    }

    /// `getFile`.
    pub async fn get_file(&self, file_id: &str) -> Result<TgFile, ApiError> {
        self.call("getFile", &json!({ "file_id": file_id })).await
    }

    /// Downloads `file_path` into memory, refusing more than `max_bytes` (by Content-Length, and
    /// while reading). Retries network errors like [`BotApi::call`].
    pub async fn download(&self, file_path: &str, max_bytes: u64) -> Result<Vec<u8>, ApiError> {
        let url = format!("{}/{}", self.file_base, file_path.trim_start_matches('/'));
        let mut failures = 0u32;
        loop {
            let err = match self.download_once(&url, max_bytes).await {
                Ok(b) => return Ok(b),
                Err(ApiError::Network(e)) => e,
                Err(e) => return Err(e),
            };
            if failures >= self.opts.max_retries {
                return Err(ApiError::Network(format!("download: {err}")));
            }
            let wait = self.backoff(failures);
            failures += 1;
            tracing::warn!(error = %err, wait_ms = wait.as_millis() as u64, "file download failed: retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn download_once(&self, url: &str, max_bytes: u64) -> Result<Vec<u8>, ApiError> {
        let mut resp = self
            .http
            .get(url)
            .timeout(self.opts.request_timeout)
            .send()
            .await
            .map_err(|e| ApiError::Network(net_err(e)))?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(ApiError::Network(format!("HTTP {status}")));
        }
        if !status.is_success() {
            return Err(ApiError::Telegram {
                code: i64::from(status.as_u16()),
                description: "file download refused".into(),
            });
        }
        if let Some(len) = resp.content_length() {
            if len > max_bytes {
                return Err(ApiError::TooLarge { size: len });
            }
        }
        let mut buf = Vec::with_capacity(resp.content_length().unwrap_or(64 * 1024).min(max_bytes) as usize);
        while let Some(chunk) = resp.chunk().await.map_err(|e| ApiError::Network(net_err(e)))? {
            if (buf.len() + chunk.len()) as u64 > max_bytes {
                return Err(ApiError::TooLarge { size: (buf.len() + chunk.len()) as u64 });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }

    /// `deleteMessage`.
    pub async fn delete_message(&self, chat_id: i64, message_id: i64) -> Result<bool, ApiError> {
        self.call("deleteMessage", &json!({ "chat_id": chat_id, "message_id": message_id })).await
    }

    /// `banChatMember` (until `until_date`, 0 = forever).
    pub async fn ban_chat_member(
        &self,
        chat_id: i64,
        user_id: i64,
        until_date: i64,
    ) -> Result<bool, ApiError> {
        self.call(
            "banChatMember",
            &json!({ "chat_id": chat_id, "user_id": user_id, "until_date": until_date }),
        )
        .await
    }

    /// `restrictChatMember`: no permission at all until `until_date` (Unix seconds).
    pub async fn restrict_chat_member(
        &self,
        chat_id: i64,
        user_id: i64,
        until_date: i64,
    ) -> Result<bool, ApiError> {
        let no = false;
        let permissions = json!({
            "can_send_messages": no, "can_send_audios": no, "can_send_documents": no,
            "can_send_photos": no, "can_send_videos": no, "can_send_video_notes": no,
            "can_send_voice_notes": no, "can_send_polls": no, "can_send_other_messages": no,
            "can_add_web_page_previews": no,
        });
        self.call(
            "restrictChatMember",
            &json!({
                "chat_id": chat_id, "user_id": user_id, "permissions": permissions,
                "use_independent_chat_permissions": true, "until_date": until_date,
            }),
        )
        .await
    }

    /// `sendMessage` (plain text, no link previews).
    pub async fn send_message(
        &self,
        chat_id: i64,
        text: &str,
        reply_to: Option<i64>,
    ) -> Result<Value, ApiError> {
        let mut p =
            json!({ "chat_id": chat_id, "text": text, "link_preview_options": { "is_disabled": true } });
        if let Some(m) = reply_to {
            p["reply_parameters"] = json!({ "message_id": m, "allow_sending_without_reply": true });
        }
        self.call("sendMessage", &p).await
    }

    /// `getChatMember`.
    pub async fn get_chat_member(&self, chat_id: i64, user_id: i64) -> Result<ChatMember, ApiError> {
        self.call("getChatMember", &json!({ "chat_id": chat_id, "user_id": user_id })).await
    }
}
