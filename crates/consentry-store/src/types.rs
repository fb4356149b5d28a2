//! The store's data types. Everything here is hashes, ids and metadata: never image bytes.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consentry_pdq::Hash256;

use crate::error::StoreError;

/// A point in time, milliseconds since the Unix epoch (UTC). Stored as a 64-bit integer on both
/// backends so that SQL is identical and comparisons are exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
    /// From milliseconds since the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }
    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }
    /// This time plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms since epoch", self.0)
    }
}

/// Who did something, as written to the audit log: `system`, `api-key:12`, `case-owner:42`,
/// `moderator:alice`, or any other label the caller chooses. Never a secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Actor(String);

impl Actor {
    /// The service itself (migrations, maintenance).
    pub fn system() -> Self {
        Actor("system".into())
    }
    /// A request authenticated with API key `id`.
    pub fn api_key(id: i64) -> Self {
        Actor(format!("api-key:{id}"))
    }
    /// A survivor acting on her own case, identified by the case's internal id (neither the
    /// number, half of her credentials, nor the PIN goes into the log).
    pub fn case_owner(case_id: i64) -> Self {
        Actor(format!("case-owner:{case_id}"))
    }
    /// Any other label (e.g. `moderator:alice`, `cli`).
    pub fn named(label: impl Into<String>) -> Self {
        Actor(label.into())
    }
    /// The label as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $v),+ }
        impl $name {
            /// Every variant.
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// The stored text form.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($s => Ok($name::$v),)+
                    other => Err(StoreError::InvalidInput(format!(
                        concat!("unknown ", stringify!($name), " `{}`"), other))),
                }
            }
        }
    };
}

text_enum!(
    /// What a bank is for.
    BankPurpose {
        /// Hashes submitted by (or for) the people in the images, through cases.
        SurvivorProtected = "survivor-protected",
        /// Hashes of known abusive material from moderators or imported lists.
        KnownAbuse = "known-abuse",
        /// Anything else (tests, staging lists).
        Other = "other",
    }
);

text_enum!(
    /// The kind of signal an entry holds. Video and exact-file hashes get their own variants
    /// later.
    SignalType {
        /// Meta's 256-bit PDQ perceptual hash.
        Pdq = "pdq",
        /// The derivative matcher's signature (`consentry-derive`: global PDQ plus local
        /// keypoints), which also catches cropped, padded and partly replaced copies.
        Derive = "derive",
    }
);

text_enum!(
    /// Where an entry came from (`Case` entries also carry the case id).
    EntrySourceKind {
        /// Submitted through a case.
        Case = "case",
        /// Added by a moderator.
        Moderator = "moderator",
        /// Bulk-imported from a hash list.
        Import = "import",
    }
);

text_enum!(
    /// The life cycle of a case.
    CaseStatus {
        /// Created; its hashes already match.
        Received = "received",
        /// Reviewed and confirmed by staff.
        Active = "active",
        /// Withdrawn by its owner or staff: its entries no longer match.
        Withdrawn = "withdrawn",
    }
);

text_enum!(
    /// What an API key may do. `Admin` implies every other scope.
    Scope {
        /// Manage banks, keys, cases.
        Admin = "admin",
        /// Add, disable and remove entries.
        Curate = "curate",
        /// Look hashes up.
        Lookup = "lookup",
        /// Submit cases.
        Submit = "submit",
    }
);

/// A signal value, typed by its signal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SignalValue {
    /// A PDQ hash.
    Pdq(Hash256),
    /// A derivative signature in its serialized form (`consentry_derive::Signature::to_bytes`,
    /// at most [`consentry_derive::MAX_SIGNATURE_BYTES`] for signatures made by its extractor).
    /// Build it with [`SignalValue::derive_from_bytes`], [`SignalValue::derive_from_base64`] or
    /// [`SignalValue::from_signature`]; the store also decodes it before storing it.
    Derive(Arc<[u8]>),
}

impl SignalValue {
    /// Its signal type.
    pub fn signal_type(&self) -> SignalType {
        match self {
            SignalValue::Pdq(_) => SignalType::Pdq,
            SignalValue::Derive(_) => SignalType::Derive,
        }
    }
    /// The stored bytes (32 bytes, Meta's order, for PDQ; the serialized signature for Derive).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SignalValue::Pdq(h) => h.to_bytes().to_vec(),
            SignalValue::Derive(b) => b.to_vec(),
        }
    }
    /// Decodes stored bytes. Derive values are checked again when they are used
    /// ([`SignalValue::derive_signature`]), not here: one bad row must not stop a reload.
    pub fn from_bytes(signal: SignalType, bytes: &[u8]) -> Result<Self, StoreError> {
        match signal {
            SignalType::Pdq => {
                let arr: [u8; 32] = bytes.try_into().map_err(|_| {
                    StoreError::Internal(format!("stored PDQ value has {} bytes, not 32", bytes.len()))
                })?;
                Ok(SignalValue::Pdq(Hash256::from_bytes(arr)))
            }
            SignalType::Derive => Ok(SignalValue::Derive(bytes.into())),
        }
    }
    /// The PDQ hash, if this is one.
    pub fn as_pdq(&self) -> Option<Hash256> {
        match self {
            SignalValue::Pdq(h) => Some(*h),
            SignalValue::Derive(_) => None,
        }
    }
    /// A derive value from user-supplied serialized bytes: `InvalidInput` unless they decode.
    pub fn derive_from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        consentry_derive::Signature::from_bytes(bytes)
            .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        Ok(SignalValue::Derive(bytes.into()))
    }
    /// A derive value from the base64 text form (`consentry derive` output, the API's `value`):
    /// `InvalidInput` unless it decodes.
    pub fn derive_from_base64(text: &str) -> Result<Self, StoreError> {
        let sig = consentry_derive::Signature::from_base64(text)
            .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        Ok(SignalValue::from_signature(&sig))
    }
    /// The derive value of a signature.
    pub fn from_signature(sig: &consentry_derive::Signature) -> Self {
        SignalValue::Derive(sig.to_bytes().into())
    }
    /// The decoded signature, if this is a derive value (an error if its bytes do not decode).
    pub fn derive_signature(
        &self,
    ) -> Option<Result<consentry_derive::Signature, consentry_derive::DecodeError>> {
        match self {
            SignalValue::Derive(b) => Some(consentry_derive::Signature::from_bytes(b)),
            SignalValue::Pdq(_) => None,
        }
    }
    /// The text form: lowercase hex for PDQ, base64 of the serialized signature for Derive.
    pub fn to_text(&self) -> String {
        match self {
            SignalValue::Pdq(h) => h.to_hex(),
            SignalValue::Derive(b) => match consentry_derive::Signature::from_bytes(b) {
                Ok(sig) => sig.to_base64(),
                Err(_) => String::new(),
            },
        }
    }
    /// Parses the text form of `signal` (see [`SignalValue::to_text`]); `InvalidInput` when it is
    /// not one.
    pub fn parse(signal: SignalType, text: &str) -> Result<Self, StoreError> {
        match signal {
            SignalType::Pdq => Hash256::from_hex(text.trim())
                .map(SignalValue::Pdq)
                .map_err(|e| StoreError::InvalidInput(format!("not a PDQ hash: {e}"))),
            SignalType::Derive => SignalValue::derive_from_base64(text),
        }
    }
}

/// A bank of entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bank {
    /// Database id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// A disabled bank's entries do not match.
    pub enabled: bool,
    /// What the bank is for.
    pub purpose: BankPurpose,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// Fields for a new bank.
#[derive(Clone, Debug)]
pub struct NewBank {
    /// Unique, 1..=100 characters.
    pub name: String,
    /// Free text, up to 2000 characters.
    pub description: String,
    /// Starts enabled or not.
    pub enabled: bool,
    /// What the bank is for.
    pub purpose: BankPurpose,
}

/// A partial update of a bank (`None` leaves a field unchanged). Enabling and disabling go
/// through [`crate::Store::set_bank_enabled`] because they change what matches.
#[derive(Clone, Debug, Default)]
pub struct BankUpdate {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New purpose.
    pub purpose: Option<BankPurpose>,
}

/// Where an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntrySource {
    /// Submitted through case `case_id`.
    Case(i64),
    /// Added by a moderator.
    Moderator,
    /// Bulk-imported.
    Import,
}

impl EntrySource {
    /// The kind without the case id.
    pub fn kind(&self) -> EntrySourceKind {
        match self {
            EntrySource::Case(_) => EntrySourceKind::Case,
            EntrySource::Moderator => EntrySourceKind::Moderator,
            EntrySource::Import => EntrySourceKind::Import,
        }
    }
}

/// One hash in a bank.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Database id; never reused, so the in-memory index can key on it.
    pub id: i64,
    /// Bank it belongs to.
    pub bank_id: i64,
    /// The value (its signal type is `value.signal_type()`).
    pub value: SignalValue,
    /// PDQ quality 0..=100, when known.
    pub quality: Option<i32>,
    /// Provenance.
    pub source: EntrySource,
    /// Free metadata (JSON). Never image bytes.
    pub metadata: serde_json::Value,
    /// When it was added.
    pub added_at: Timestamp,
    /// When it was disabled; `None` while enabled.
    pub disabled_at: Option<Timestamp>,
}

/// A new entry added by a moderator or an import.
#[derive(Clone, Debug)]
pub struct NewEntry {
    /// Target bank.
    pub bank_id: i64,
    /// The value.
    pub value: SignalValue,
    /// PDQ quality, if known (checked against the policy's minimum).
    pub quality: Option<i32>,
    /// `Moderator` or `Import` (case entries are created through cases).
    pub source: EntrySourceKind,
    /// Free metadata; `Value::Null` means `{}`.
    pub metadata: serde_json::Value,
}

/// One line of a bulk import.
#[derive(Clone, Debug)]
pub struct BulkLine {
    /// 1-based line number in the caller's input, reported back with errors.
    pub line: u64,
    /// The value.
    pub value: SignalValue,
    /// PDQ quality, if the line had one.
    pub quality: Option<i32>,
    /// Free metadata for this line.
    pub metadata: serde_json::Value,
}

/// A rejected line of a bulk import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: u64,
    /// Why it was rejected.
    pub reason: String,
}

/// What a bulk import did: the good lines were committed together, the bad ones reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BulkReport {
    /// (line, new entry id) for every line stored.
    pub added: Vec<(u64, i64)>,
    /// Every line rejected, with the reason.
    pub rejected: Vec<LineError>,
}

/// A case: a survivor's submission, identified by its number, authenticated by its PIN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Database id (internal; the survivor only sees the number).
    pub id: i64,
    /// Human-friendly unguessable number, 12 characters without separators.
    pub number: String,
    /// Status.
    pub status: CaseStatus,
    /// The bank its entries are in.
    pub bank_id: i64,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last status change.
    pub updated_at: Timestamp,
    /// When it was withdrawn.
    pub withdrawn_at: Option<Timestamp>,
}

impl Case {
    /// The number grouped for people: `K7M2-9QXA-4HRT`.
    pub fn display_number(&self) -> String {
        crate::secrets::format_case_number(&self.number)
    }
}

/// One hash submitted with a case.
#[derive(Clone, Debug)]
pub struct CaseHash {
    /// The value: a PDQ hash or a derivative signature.
    pub value: SignalValue,
    /// Its quality, if the hasher reported one.
    pub quality: Option<i32>,
}

impl CaseHash {
    /// A PDQ hash with its optional quality.
    pub fn pdq(hash: Hash256, quality: Option<i32>) -> Self {
        CaseHash { value: SignalValue::Pdq(hash), quality }
    }
}

/// A new case.
#[derive(Clone, Debug)]
pub struct NewCase {
    /// The (survivor-protected) bank that receives its entries.
    pub bank_id: i64,
    /// Its hashes (at least one).
    pub hashes: Vec<CaseHash>,
    /// Metadata stored on each entry (e.g. the client that hashed). Never image bytes.
    pub metadata: serde_json::Value,
}

/// The result of creating a case. `pin` is the only time the PIN exists in clear (its `Debug`
/// output redacts it, so logging the value does not leak it).
pub struct CreatedCase {
    /// The case.
    pub case: Case,
    /// The PIN, 10 digits. Show it once; it is stored only as an Argon2id hash.
    pub pin: String,
    /// Its entries.
    pub entries: Vec<Entry>,
}

impl fmt::Debug for CreatedCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedCase")
            .field("case", &self.case)
            .field("pin", &"<redacted>")
            .field("entries", &self.entries)
            .finish()
    }
}

/// A case with its entries, as shown to the survivor after PIN verification.
#[derive(Clone, Debug)]
pub struct CaseView {
    /// The case.
    pub case: Case,
    /// Its entries.
    pub entries: Vec<Entry>,
    /// How often they matched, over every day the store still keeps.
    pub matches: CaseMatches,
}

/// How often a case's entries matched: counts only, never who looked them up (a source is an API
/// key's or a chat's name, which a survivor is not shown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaseMatches {
    /// The whole case (`entries` and `sources` are distinct counts over all its entries); `None`
    /// when nothing matched.
    pub total: Option<StatsRow>,
    /// One row per entry that matched ([`StatsKey::Entry`]).
    pub by_entry: Vec<StatsRow>,
}

impl CaseMatches {
    /// The row of entry `id`, if it matched.
    pub fn entry(&self, id: i64) -> Option<&StatsRow> {
        self.by_entry.iter().find(|r| matches!(r.key, StatsKey::Entry { id: e, .. } if e == id))
    }
}

/// An API key (the secret is not here: it was shown once at creation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// Database id.
    pub id: i64,
    /// Label.
    pub name: String,
    /// Public prefix of the secret (identifies the key in logs, not a secret).
    pub prefix: String,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Revocation time.
    pub revoked_at: Option<Timestamp>,
}

impl ApiKey {
    /// Whether the key grants `scope` (`Admin` grants everything).
    pub fn allows(&self, scope: Scope) -> bool {
        self.revoked_at.is_none() && (self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin))
    }
}

/// The result of creating an API key. `secret` exists in clear only here (`Debug` redacts it).
pub struct CreatedApiKey {
    /// The key.
    pub key: ApiKey,
    /// The secret to hand to the client (`csk_<prefix>_<64 hex>`).
    pub secret: String,
}

impl fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedApiKey").field("key", &self.key).field("secret", &"<redacted>").finish()
    }
}

/// One audit log record. The log is append-only (enforced by triggers on both backends).
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    /// Database id (increasing).
    pub id: i64,
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: String,
    /// What (`bank.create`, `entry.disable`, `case.withdraw`, ...).
    pub action: String,
    /// On what (`bank:3`, `entry:17`, `case:42`, ...).
    pub target: String,
    /// Details (JSON). Never secrets or image bytes.
    pub details: serde_json::Value,
}

/// One record of the change feed: entry `entry_id` starts or stops matching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Position in the feed: consecutive integers, visible in commit order.
    pub seq: i64,
    /// The entry.
    pub entry_id: i64,
    /// What to do with it.
    pub op: ChangeOp,
    /// What caused it (`entry.add`, `bank.disable`, `case.withdraw`, ...).
    pub cause: String,
    /// When.
    pub at: Timestamp,
}

/// What a change does to the in-memory index. Ops are absolute (not toggles), so replaying a
/// change twice is harmless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    /// The entry matches from now on, with this value.
    Activate(SignalValue),
    /// The entry no longer matches.
    Deactivate(SignalType),
}

/// Every entry that currently matches for one signal, and the feed position it corresponds to:
/// apply `changes_since(seq)` on top of it.
#[derive(Clone, Debug)]
pub struct ActiveSet {
    /// The last change included.
    pub seq: i64,
    /// (entry id, value), ordered by id.
    pub entries: Vec<(i64, SignalValue)>,
}

/// A webhook event to deliver.
#[derive(Clone, Debug)]
pub struct NewWebhook {
    /// Target URL.
    pub url: String,
    /// Event type (`match`, ...).
    pub event_type: String,
    /// Body (JSON). Hashes, ids, distances only.
    pub payload: serde_json::Value,
}

/// What happened to a case, as a case event names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaseEventKind {
    /// The case was opened with its codes.
    Created,
    /// Staff gave it a new status other than withdrawn (e.g. `active`).
    Status,
    /// The survivor or staff withdrew it (its codes stopped matching).
    Withdrawn,
}

impl CaseEventKind {
    /// `created`, `status` or `withdrawn`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseEventKind::Created => "created",
            CaseEventKind::Status => "status",
            CaseEventKind::Withdrawn => "withdrawn",
        }
    }
}

/// A change to a case, handed to the [`CaseOutbox`] inside the transaction that makes it.
#[derive(Clone, Debug)]
pub struct CaseEvent {
    /// What happened.
    pub kind: CaseEventKind,
    /// The case as it is after the change.
    pub case: Case,
    /// Its bank's name.
    pub bank: String,
    /// How many codes (entries) the case holds.
    pub codes: usize,
}

/// Turns a case change into the webhook events to persist with it, in the same transaction: a
/// committed change always has its events in the outbox and a rolled-back one never does, and a
/// request that changes nothing (a second withdrawal) makes none. Set with
/// [`Store::set_case_outbox`](crate::Store::set_case_outbox).
pub type CaseOutbox = Arc<dyn Fn(&CaseEvent) -> Vec<NewWebhook> + Send + Sync>;

/// Delivery state of an outbox row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookState {
    /// Waiting for (another) attempt.
    Pending,
    /// Delivered.
    Delivered,
    /// Given up.
    Dead,
}

/// A webhook outbox row.
#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    /// Database id.
    pub id: i64,
    /// Target URL.
    pub url: String,
    /// Event type.
    pub event_type: String,
    /// Body.
    pub payload: serde_json::Value,
    /// When enqueued.
    pub created_at: Timestamp,
    /// Failed attempts so far.
    pub attempts: i32,
    /// Earliest time of the next attempt.
    pub next_attempt_at: Timestamp,
    /// Lease token while claimed (pass it back to `mark_*`).
    pub lease_token: Option<i64>,
    /// Lease expiry while claimed.
    pub lease_until: Option<Timestamp>,
    /// State.
    pub state: WebhookState,
    /// Last delivery error.
    pub last_error: Option<String>,
}

/// The UTC day of `t`, as days since 1970-01-01: the unit match counts are kept in.
pub fn day_of(t: Timestamp) -> i64 {
    t.0.div_euclid(86_400_000)
}

/// The day number ([`day_of`]) of a `YYYY-MM-DD` date (proleptic Gregorian, UTC); `None` for
/// anything else.
pub fn parse_day(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|c| c.is_ascii_digit());
    if !(digits(y, 4) && digits(m, 2) && digits(d, 2)) {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days_in_month = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month[(m - 1) as usize] {
        return None;
    }
    // Days from 1970-01-01 of a civil date (H. Hinnant's algorithm, years starting in March).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// `YYYY-MM-DD` of a day number ([`day_of`]).
pub fn format_day(day: i64) -> String {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Most rows [`Store::match_stats`](crate::Store::match_stats) returns at once.
pub const STATS_MAX_ROWS: u32 = 10_000;

/// Days a [`StatsQuery::for_days`] covers when it is not given its first day.
pub const STATS_DEFAULT_DAYS: i64 = 30;

/// Matches of one entry by one source on one day, added to the stored counts by
/// [`Store::record_matches`](crate::Store::record_matches).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchTally {
    /// The entry that matched.
    pub entry_id: i64,
    /// Who looked it up: an API key's name, `telegram:<chat id>`, ... (at most 200 characters).
    pub source: String,
    /// [`day_of`] the matches.
    pub day: i64,
    /// How many lookups matched it.
    pub matches: i64,
    /// The first of them.
    pub first_at: Timestamp,
    /// The last of them.
    pub last_at: Timestamp,
}

/// What [`Store::match_stats`](crate::Store::match_stats) sums the counts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatsGroup {
    /// One row per bank.
    Bank,
    /// One row per entry.
    Entry,
    /// One row per source.
    Source,
    /// One row per UTC day, oldest first.
    Day,
    /// One row per signal type.
    Signal,
}

impl StatsGroup {
    /// Every grouping, in the order of their names.
    pub const ALL: [StatsGroup; 5] =
        [StatsGroup::Bank, StatsGroup::Day, StatsGroup::Entry, StatsGroup::Signal, StatsGroup::Source];

    /// The name (`bank`, `entry`, `source`, `day`, `signal`).
    pub fn as_str(self) -> &'static str {
        match self {
            StatsGroup::Bank => "bank",
            StatsGroup::Entry => "entry",
            StatsGroup::Source => "source",
            StatsGroup::Day => "day",
            StatsGroup::Signal => "signal",
        }
    }
}

impl FromStr for StatsGroup {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        StatsGroup::ALL.into_iter().find(|g| g.as_str() == s).ok_or_else(|| {
            StoreError::InvalidInput(format!("unknown grouping `{s}` (bank, day, entry, signal or source)"))
        })
    }
}

/// Which match counts [`Store::match_stats`](crate::Store::match_stats) sums, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsQuery {
    /// One row per what.
    pub group: StatsGroup,
    /// Only this bank's entries.
    pub bank_id: Option<i64>,
    /// Only this entry.
    pub entry_id: Option<i64>,
    /// Only this source.
    pub source: Option<String>,
    /// Only this case's entries.
    pub case_id: Option<i64>,
    /// First day counted ([`day_of`]), inclusive.
    pub since_day: i64,
    /// Last day counted, inclusive.
    pub until_day: i64,
    /// At most this many rows (the most matches first; days oldest first).
    pub limit: u32,
}

impl StatsQuery {
    /// Every count from day `since_day` to `until_day` (inclusive), summed by `group`, no filter,
    /// at most 100 rows.
    pub fn over(group: StatsGroup, since_day: i64, until_day: i64) -> StatsQuery {
        StatsQuery {
            group,
            bank_id: None,
            entry_id: None,
            source: None,
            case_id: None,
            since_day,
            until_day,
            limit: 100,
        }
    }

    /// [`over`](Self::over) the days from `since` to `until`, written `YYYY-MM-DD` (UTC,
    /// inclusive): `until` is `today` ([`day_of`]) when not given, `since` the first of the
    /// [`STATS_DEFAULT_DAYS`] days ending at `until`. A text that is not a date, or a range that
    /// ends before it starts, is `InvalidInput` saying which.
    pub fn for_days(
        group: StatsGroup,
        since: Option<&str>,
        until: Option<&str>,
        today: i64,
    ) -> Result<StatsQuery, StoreError> {
        let day = |text: Option<&str>, name: &str, default: i64| match text {
            None => Ok(default),
            Some(t) => parse_day(t).ok_or_else(|| {
                StoreError::InvalidInput(format!("`{name}` is not a date written YYYY-MM-DD: `{t}`"))
            }),
        };
        let until = day(until, "until", today)?;
        let since = day(since, "since", until - (STATS_DEFAULT_DAYS - 1))?;
        if since > until {
            return Err(StoreError::InvalidInput("`since` is after `until`".into()));
        }
        Ok(StatsQuery::over(group, since, until))
    }
}

/// What a row of [`StatsRow`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatsKey {
    /// A bank (by id: the bank may have been renamed or deleted since).
    Bank(i64),
    /// An entry, with its bank.
    Entry {
        /// The entry.
        id: i64,
        /// Its bank.
        bank_id: i64,
    },
    /// A source.
    Source(String),
    /// A UTC day ([`day_of`]).
    Day(i64),
    /// A signal type.
    Signal(SignalType),
}

/// Summed match counts of one bank, entry, source, day or signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsRow {
    /// What the row is about.
    pub key: StatsKey,
    /// Lookups that matched.
    pub matches: i64,
    /// Distinct entries matched.
    pub entries: i64,
    /// Distinct sources that matched them.
    pub sources: i64,
    /// Distinct days with a match.
    pub days: i64,
    /// The first match.
    pub first_at: Timestamp,
    /// The last match.
    pub last_at: Timestamp,
}

pub(crate) fn scopes_to_text(scopes: &BTreeSet<Scope>) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

pub(crate) fn scopes_from_text(text: &str) -> Result<BTreeSet<Scope>, StoreError> {
    text.split(',').filter(|s| !s.is_empty()).map(Scope::from_str).collect()
}

#[cfg(test)]
mod day_tests {
    use super::*;

    #[test]
    fn dates_and_day_numbers_agree() {
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2026-12-06"), Some(20_793));
        assert_eq!(parse_day("2000-02-29"), Some(11_016));
        assert_eq!(parse_day("1969-12-31"), Some(-1));
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-01",
            "26-01-01",
            "2026-01-32",
            "x",
            "",
            "2026-01-01-2",
            "+026-01-01",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
        // Every day of four centuries goes there and back, one day after the other.
        let mut last = parse_day("1899-12-31").unwrap();
        for day in last + 1..last + 146_097 {
            let text = format_day(day);
            assert_eq!(parse_day(&text), Some(day), "{text}");
            assert_eq!(day, last + 1);
            last = day;
        }
        assert_eq!(format_day(day_of(Timestamp(1_765_000_000_000))), "2025-12-06");
    }

    #[test]
    fn a_range_of_days_from_dates_with_defaults() {
        let today = parse_day("2026-12-06").unwrap();
        let q = StatsQuery::for_days(StatsGroup::Entry, None, None, today).unwrap();
        assert_eq!((q.group, q.since_day, q.until_day, q.limit), (StatsGroup::Entry, today - 29, today, 100));
        let q = StatsQuery::for_days(StatsGroup::Day, None, Some("2026-01-31"), today).unwrap();
        assert_eq!(
            (format_day(q.since_day), format_day(q.until_day)),
            ("2026-01-02".into(), "2026-01-31".into())
        );
        let q =
            StatsQuery::for_days(StatsGroup::Bank, Some("2026-12-06"), Some("2026-12-06"), today).unwrap();
        assert_eq!(q.since_day, q.until_day);
        let msg = |r: Result<StatsQuery, StoreError>| match r {
            Err(StoreError::InvalidInput(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(
            msg(StatsQuery::for_days(StatsGroup::Bank, Some("2026-02-30"), None, today)).contains("`since`")
        );
        assert!(msg(StatsQuery::for_days(StatsGroup::Bank, None, Some("today"), today)).contains("`until`"));
        assert!(
            msg(StatsQuery::for_days(StatsGroup::Bank, Some("2026-12-07"), None, today)).contains("after")
        );
    }
}
