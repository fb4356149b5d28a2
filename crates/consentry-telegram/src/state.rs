//! The bot's own state, in one small JSON file written atomically (temporary file, fsync,
//! rename): the update offset and the updates handled above it, each chat's settings, its
//! review queue and community bank (hashes only), repeat-poster strikes and counters.
//!
//! The file is rewritten after every handled update, so a restart or a crash resumes exactly
//! where the bot stopped: updates below `offset` and those in `done` are never handled again, the
//! others are asked from Telegram again (which keeps them until a higher offset confirms them).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::texts::Lang;

/// What happens to the sender of a matching image (the message is always deleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Delete only.
    None,
    /// Restrict the sender for a day (a week on the second strike, ban on the third).
    Restrict,
    /// Ban the sender at once.
    Ban,
    /// First strike: delete only; second: restrict for a day; third and later: ban.
    #[default]
    Escalate,
}

impl Action {
    /// Parses `none` / `restrict` / `ban` / `escalate`.
    pub fn parse(s: &str) -> Option<Action> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "delete" => Some(Action::None),
            "restrict" | "mute" => Some(Action::Restrict),
            "ban" => Some(Action::Ban),
            "escalate" => Some(Action::Escalate),
            _ => None,
        }
    }
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Restrict => "restrict",
            Action::Ban => "ban",
            Action::Escalate => "escalate",
        }
    }
}

/// What a chat does with a match whose only evidence is local (the derive signal's keypoints or
/// top band; the photo's global PDQ hash did not match): weaker evidence than a PDQ match, and
/// the one that can also match another photo of the same face.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DerivePolicy {
    /// Like any match: delete, and sanction per the chat's action.
    #[default]
    Act,
    /// Delete, but count no strike and sanction no one.
    Delete,
    /// Leave the message and send the match to the log chat for the admins (deleted as under
    /// `Delete` when the chat has no log chat: a match is never dropped unseen).
    Report,
}

impl DerivePolicy {
    /// Parses `act` / `delete` / `report`.
    pub fn parse(s: &str) -> Option<DerivePolicy> {
        match s.to_ascii_lowercase().as_str() {
            "act" => Some(DerivePolicy::Act),
            "delete" => Some(DerivePolicy::Delete),
            "report" | "review" => Some(DerivePolicy::Report),
            _ => None,
        }
    }
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            DerivePolicy::Act => "act",
            DerivePolicy::Delete => "delete",
            DerivePolicy::Report => "report",
        }
    }
}

/// One hash reported by a member, waiting for an admin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Review {
    /// Number shown to admins (`/approve 3`).
    pub id: u64,
    /// PDQ hash (hex) of the reported image.
    pub hash: String,
    /// Its 8 dihedral hashes (hex), for matching rotated / mirrored copies.
    pub dihedral: Vec<String>,
    /// The reported message.
    pub message_id: i64,
    /// Who reported it.
    pub reporter_id: i64,
    /// When (Unix seconds).
    pub at: i64,
}

/// A hash in a chat's own bank (approved by one of its admins).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatBankEntry {
    /// PDQ hash (hex).
    pub hash: String,
    /// Review it came from.
    pub review_id: u64,
    /// Admin who approved it.
    pub approved_by: i64,
    /// When (Unix seconds).
    pub at: i64,
}

/// A chat's settings and counters.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ChatState {
    /// `None` means the configured default.
    pub action: Option<Action>,
    /// `None` means the configured default.
    pub notice: Option<bool>,
    /// Matches on local evidence only (`None`: the configured default).
    pub derive: Option<DerivePolicy>,
    /// Where match reports go.
    pub log_chat: Option<i64>,
    /// Language of the bot's texts in this chat (`None`: configured default).
    pub lang: Option<Lang>,
    /// Images looked at.
    pub scanned: u64,
    /// Images that matched.
    pub matched: u64,
    /// Messages deleted.
    pub deleted: u64,
    /// Last match (Unix seconds).
    pub last_match_at: Option<i64>,
    /// Review queue.
    pub reviews: Vec<Review>,
    /// The chat's own bank.
    pub bank: Vec<ChatBankEntry>,
    /// Strikes per user id.
    pub strikes: BTreeMap<i64, Strikes>,
}

/// A repeat poster's record in one chat.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct Strikes {
    /// Matching posts (an album counts once).
    pub count: u32,
    /// The album of the last strike, so that its other items do not count again.
    pub last_media_group: Option<String>,
    /// Last strike (Unix seconds).
    pub last_at: i64,
}

/// Everything in the state file.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Persisted {
    /// Format version.
    pub version: u32,
    /// Every update below this was handled (the next getUpdates offset).
    pub offset: i64,
    /// Updates at or above `offset` already handled (a batch interrupted by a restart).
    pub done: BTreeSet<i64>,
    /// Per-chat state.
    pub chats: BTreeMap<i64, ChatState>,
    /// Next review number.
    pub next_review_id: u64,
}

/// The state file and its in-memory copy.
#[derive(Debug)]
pub struct StateFile {
    path: Option<PathBuf>,
    data: Mutex<Persisted>,
    writer: tokio::sync::Mutex<()>,
}

impl StateFile {
    /// Opens (or starts) the state file at `path`. A file that does not parse is an error, never
    /// silently replaced (it holds the offset and the chats' settings).
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<StateFile> {
        let path = path.as_ref().to_path_buf();
        let data = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Persisted { version: 1, ..Persisted::default() }
            }
            Err(e) => return Err(e),
        };
        Ok(StateFile { path: Some(path), data: Mutex::new(data), writer: tokio::sync::Mutex::new(()) })
    }

    /// A state that is never written (for tools and benchmarks).
    pub fn in_memory() -> StateFile {
        StateFile { path: None, data: Mutex::new(Persisted::default()), writer: tokio::sync::Mutex::new(()) }
    }

    /// Reads or changes the state (in memory; call [`StateFile::save`] to persist).
    pub fn with<R>(&self, f: impl FnOnce(&mut Persisted) -> R) -> R {
        let mut g = self.data.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Reads or changes one chat's state.
    pub fn chat<R>(&self, chat_id: i64, f: impl FnOnce(&mut ChatState) -> R) -> R {
        self.with(|p| f(p.chats.entry(chat_id).or_default()))
    }

    /// Writes the current state to disk (atomically; concurrent calls are serialised and each
    /// writes a state at least as new as when it was called).
    pub async fn save(&self) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let _w = self.writer.lock().await;
        let bytes = self.with(|p| serde_json::to_vec(p)).map_err(std::io::Error::other)?;
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(std::io::Error::other)?
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
