//! Everything the bot says, in English and French. Plain text (no Markdown, so that names and
//! titles need no escaping). Nothing here ever asks anyone to send an image.

use serde::{Deserialize, Serialize};

use crate::matcher::Caught;

/// A language of the bot's texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// French.
    Fr,
}

impl Lang {
    /// `en`/`fr` or an IETF tag such as `fr-CA`; anything else is `None`.
    pub fn parse(s: &str) -> Option<Lang> {
        let s = s.trim().to_ascii_lowercase();
        if s == "en" || s.starts_with("en-") {
            Some(Lang::En)
        } else if s == "fr" || s.starts_with("fr-") {
            Some(Lang::Fr)
        } else {
            None
        }
    }
    /// `en` or `fr`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fr => "fr",
        }
    }
}

macro_rules! pick {
    ($l:expr, $en:expr, $fr:expr) => {
        match $l {
            Lang::En => $en,
            Lang::Fr => $fr,
        }
    };
}

/// `/start` and `/help` in a group or channel.
pub fn help_group(l: Lang) -> String {
    pick!(
        l,
        "consentry removes images that match hashes of photos protected from non-consensual sharing, \
         and images this chat's admins have confirmed.\n\n\
         Everyone: /report (reply to an image) sends it to the admins for review.\n\
         Admins: /status, /policy [none|restrict|ban|escalate|notice on|off|derive act|delete|report], /logchat <chat id>|off, /banks, \
         /approve <n>, /reject <n>, /lang en|fr.",
        "consentry supprime les images qui correspondent aux empreintes de photos protégées contre la diffusion \
         sans consentement, et celles que les admins de ce groupe ont confirmées.\n\n\
         Tout le monde : /report (en réponse à une image) la transmet aux admins.\n\
         Admins : /status, /policy [none|restrict|ban|escalate|notice on|off|derive act|delete|report], /logchat <id du chat>|off, /banks, \
         /approve <n>, /reject <n>, /lang en|fr."
    )
    .to_owned()
}

/// `/start` and `/help` in a private chat.
pub fn help_private(l: Lang) -> String {
    pick!(
        l,
        "consentry helps stop intimate images from being shared without consent.\n\n\
         Hash your photos on your own device (consentry hash, or the protect page): only the hashes, \
         64 hexadecimal characters each, ever leave it. Never send the photos themselves — not here, not anywhere.\n\n\
         /protect <hash> [<hash> ...] opens a case and gives you a case number and a PIN.\n\
         /status <case number> <PIN> shows your case.\n\
         /withdraw <case number> <PIN> withdraws it.",
        "consentry aide à empêcher la diffusion d'images intimes sans consentement.\n\n\
         Calculez les empreintes de vos photos sur votre propre appareil (consentry hash, ou la page de protection) : \
         seules les empreintes, 64 caractères hexadécimaux chacune, en sortent. N'envoyez jamais les photos elles-mêmes, \
         ni ici ni ailleurs.\n\n\
         /protect <empreinte> [<empreinte> ...] ouvre un dossier et vous donne un numéro de dossier et un code PIN.\n\
         /status <numéro> <PIN> affiche votre dossier.\n\
         /withdraw <numéro> <PIN> le retire."
    )
    .to_owned()
}

/// Answer to an image sent in a private chat (it is not downloaded).
pub fn no_images_here(l: Lang) -> String {
    pick!(
        l,
        "Please do not send images. I never need them: hash your photos on your own device and send me only the hashes with /protect. /help explains how.",
        "Merci de ne pas envoyer d'images. Je n'en ai jamais besoin : calculez les empreintes sur votre appareil et envoyez-moi seulement les empreintes avec /protect. /help explique comment."
    )
    .to_owned()
}

/// Neutral notice after a removal.
pub fn removed_notice(l: Lang) -> String {
    pick!(
        l,
        "A message was removed: it matched an image protected from non-consensual sharing.",
        "Un message a été supprimé : il correspondait à une image protégée contre la diffusion sans consentement."
    )
    .to_owned()
}

/// Report to the admin log chat (never the image).
#[derive(Debug)]
pub struct MatchReport<'a> {
    /// Moderated chat's title.
    pub chat_title: &'a str,
    /// Moderated chat id.
    pub chat_id: i64,
    /// Bank name.
    pub bank: &'a str,
    /// Hamming distance.
    pub distance: u32,
    /// Sender description.
    pub sender: &'a str,
    /// Link to the (deleted) message.
    pub link: &'a str,
    /// What was done.
    pub outcome: &'a str,
}

/// The log chat report.
pub fn match_report(l: Lang, r: &MatchReport<'_>) -> String {
    pick!(
        l,
        format!(
            "consentry: match in {} ({})\nbank: {}\ndistance: {}\nsender: {}\nmessage: {}\naction: {}",
            r.chat_title, r.chat_id, r.bank, r.distance, r.sender, r.link, r.outcome
        ),
        format!(
            "consentry : correspondance dans {} ({})\nbanque : {}\ndistance : {}\nexpéditeur : {}\nmessage : {}\naction : {}",
            r.chat_title, r.chat_id, r.bank, r.distance, r.sender, r.link, r.outcome
        )
    )
}

/// Outcome words for the report.
pub fn outcome(l: Lang, deleted: bool, sanction: &str) -> String {
    let d = if deleted {
        pick!(l, "deleted", "supprimé")
    } else {
        pick!(l, "NOT deleted (missing rights?)", "NON supprimé (droits manquants ?)")
    };
    format!("{d}; {sanction}")
}

/// Outcome of a match held for the admins (`/policy derive report`).
pub fn held_for_admins(l: Lang) -> String {
    pick!(
        l,
        "NOT deleted: derivative evidence only, left for the admins (/policy derive)",
        "NON supprimé : indices dérivés seuls, laissé aux admins (/policy derive)"
    )
    .to_owned()
}

/// Admin-only command used by someone else.
pub fn admins_only(l: Lang) -> String {
    pick!(
        l,
        "Only this chat's admins can use this command.",
        "Seuls les admins de ce chat peuvent utiliser cette commande."
    )
    .to_owned()
}

/// `/status` in a group.
#[allow(clippy::too_many_arguments)]
pub fn group_status(
    l: Lang,
    scanned: u64,
    matched: u64,
    deleted: u64,
    last: Option<i64>,
    index: &str,
    action: &str,
    notice: bool,
    log_chat: Option<i64>,
    queue: usize,
    bank: usize,
) -> String {
    let last = last.map(|t| format!("{t} (Unix)")).unwrap_or_else(|| "—".into());
    let log = log_chat.map(|c| c.to_string()).unwrap_or_else(|| "—".into());
    pick!(
        l,
        format!(
            "Images checked: {scanned}\nMatches: {matched}\nMessages deleted: {deleted}\nLast match: {last}\n\
             Protected hashes: {index}\nPolicy: {action}, notice {}\nLog chat: {log}\nReview queue: {queue}\nThis chat's bank: {bank}",
            if notice { "on" } else { "off" }
        ),
        format!(
            "Images vérifiées : {scanned}\nCorrespondances : {matched}\nMessages supprimés : {deleted}\nDernière correspondance : {last}\n\
             Empreintes protégées : {index}\nPolitique : {action}, avis {}\nChat de journal : {log}\nFile de revue : {queue}\nBanque de ce chat : {bank}",
            if notice { "activé" } else { "désactivé" }
        )
    )
}

/// `/policy` answer.
pub fn policy(l: Lang, action: &str, notice: bool, derive: &str) -> String {
    pick!(
        l,
        format!(
            "Policy: {action} (none = delete only; restrict; ban; escalate = delete, then restrict, then ban), notice {}.\n\
             Matches on derivative evidence alone (keypoints or top band; the photo's own hash did not match): {derive} \
             (act = as above; delete = delete without sanction; report = leave the message and report it to the log chat).\n\
             Change: /policy none|restrict|ban|escalate, /policy notice on|off, /policy derive act|delete|report",
            if notice { "on" } else { "off" }
        ),
        format!(
            "Politique : {action} (none = suppression seule ; restrict ; ban ; escalate = suppression, puis restriction, puis bannissement), avis {}.\n\
             Correspondances sur indices dérivés seuls (points clés ou bandeau du haut ; le hash de la photo elle-même ne correspond pas) : {derive} \
             (act = comme ci-dessus ; delete = suppression sans sanction ; report = message laissé et signalé au chat de rapports).\n\
             Changer : /policy none|restrict|ban|escalate, /policy notice on|off, /policy derive act|delete|report",
            if notice { "activé" } else { "désactivé" }
        )
    )
}

/// `/logchat` answers.
pub fn logchat_set(l: Lang, chat: Option<i64>) -> String {
    match chat {
        Some(c) => pick!(
            l,
            format!("Match reports now go to chat {c}."),
            format!("Les rapports vont maintenant au chat {c}.")
        ),
        None => pick!(l, "Match reports are off.", "Les rapports sont désactivés.").to_owned(),
    }
}

/// `/logchat` usage and refusals.
pub fn logchat_usage(l: Lang) -> String {
    pick!(
        l,
        "Usage: /logchat <chat id> (you must be an admin there too, and the bot a member) or /logchat off.",
        "Usage : /logchat <id du chat> (vous devez aussi y être admin, et le bot membre) ou /logchat off."
    )
    .to_owned()
}

/// `/banks` answer lines.
pub fn banks(l: Lang, lines: &[String], chat_bank: usize) -> String {
    let head = pick!(l, "Banks matched here:", "Banques utilisées ici :");
    let own = pick!(
        l,
        format!("this chat's bank: {chat_bank} hashes"),
        format!("banque de ce chat : {chat_bank} empreintes")
    );
    format!("{head}\n{}\n{own}", lines.join("\n"))
}

/// `/report` answers.
pub fn report_usage(l: Lang) -> String {
    pick!(
        l,
        "Reply to an image with /report to send it to the admins.",
        "Répondez à une image avec /report pour la transmettre aux admins."
    )
    .to_owned()
}
/// Queued for review.
pub fn report_queued(l: Lang, id: u64) -> String {
    pick!(
        l,
        format!("Thank you. The admins will review it (report #{id})."),
        format!("Merci. Les admins vont l'examiner (signalement n°{id}).")
    )
}
/// Already queued or in the bank.
pub fn report_known(l: Lang) -> String {
    pick!(l, "Thank you: this image is already known.", "Merci : cette image est déjà connue.").to_owned()
}
/// Could not read the image.
pub fn report_failed(l: Lang) -> String {
    pick!(l, "Sorry, I could not read that image.", "Désolé, je n'ai pas pu lire cette image.").to_owned()
}
/// For the log chat.
pub fn report_for_admins(l: Lang, id: u64, chat_id: i64, hash: &str, link: &str) -> String {
    pick!(
        l,
        format!("consentry: report #{id} in chat {chat_id}: hash {hash}, message {link}. /approve {id} or /reject {id} in that chat."),
        format!("consentry : signalement n°{id} dans le chat {chat_id} : empreinte {hash}, message {link}. /approve {id} ou /reject {id} dans ce chat.")
    )
}

/// `/approve` done.
pub fn approved(l: Lang, id: u64) -> String {
    pick!(
        l,
        format!("Report #{id} approved: the image was removed and joins this chat's bank."),
        format!("Signalement n°{id} approuvé : l'image a été supprimée et rejoint la banque de ce chat.")
    )
}
/// `/reject` done.
pub fn rejected(l: Lang, id: u64) -> String {
    pick!(l, format!("Report #{id} rejected."), format!("Signalement n°{id} rejeté."))
}
/// Unknown review number; lists the queue.
pub fn review_queue(l: Lang, ids: &[u64]) -> String {
    if ids.is_empty() {
        return pick!(l, "The review queue is empty.", "La file de revue est vide.").to_owned();
    }
    let list = ids.iter().map(|i| format!("#{i}")).collect::<Vec<_>>().join(", ");
    pick!(
        l,
        format!("Pending reports: {list}. Use /approve <n> or /reject <n>."),
        format!("Signalements en attente : {list}. Utilisez /approve <n> ou /reject <n>.")
    )
}

/// `/lang` done.
pub fn lang_set(l: Lang) -> String {
    pick!(l, "Language: English.", "Langue : français.").to_owned()
}

/// `/protect` usage.
pub fn protect_usage(l: Lang) -> String {
    pick!(
        l,
        "Usage: /protect <hash> [<hash> ...] with the 64-character hashes from consentry hash or the protect page. Never send the photos.",
        "Usage : /protect <empreinte> [<empreinte> ...] avec les empreintes de 64 caractères de consentry hash ou de la page de protection. N'envoyez jamais les photos."
    )
    .to_owned()
}
/// A hash that does not parse or is refused.
pub fn protect_bad_hash(l: Lang, index: usize, reason: &str) -> String {
    pick!(
        l,
        format!("Hash #{} is not valid: {reason}. Nothing was stored.", index + 1),
        format!("L'empreinte n°{} n'est pas valide : {reason}. Rien n'a été enregistré.", index + 1)
    )
}
/// Case opened.
pub fn protect_done(l: Lang, number: &str, pin: &str, n: usize) -> String {
    pick!(
        l,
        format!(
            "Case opened with {n} hash(es).\nCase number: {number}\nPIN: {pin}\n\n\
             Keep both somewhere safe: the PIN is shown only now and cannot be recovered. \
             Then delete this message. Matching copies are removed from the chats this bot moderates."
        ),
        format!(
            "Dossier ouvert avec {n} empreinte(s).\nNuméro de dossier : {number}\nPIN : {pin}\n\n\
             Conservez-les en lieu sûr : le PIN n'est affiché qu'une fois et ne peut pas être retrouvé. \
             Supprimez ensuite ce message. Les copies correspondantes sont supprimées des chats que ce bot modère."
        )
    )
}
/// `/status` / `/withdraw` usage in private.
pub fn case_usage(l: Lang) -> String {
    pick!(
        l,
        "Usage: /status <case number> <PIN> or /withdraw <case number> <PIN>.",
        "Usage : /status <numéro> <PIN> ou /withdraw <numéro> <PIN>."
    )
    .to_owned()
}
/// Case status; `caught` adds how often its hashes matched (counts only).
pub fn case_status(
    l: Lang,
    number: &str,
    status: &str,
    active: usize,
    total: usize,
    caught: Option<&Caught>,
) -> String {
    let head = if total == 0 {
        // A withdrawn case whose codes the service's retention deleted.
        pick!(
            l,
            format!("Case {number}: {status}. Its hashes have been deleted from the service."),
            format!(
                "Dossier {number} : {}. Ses empreintes ont été effacées du service.",
                status_word(l, status)
            )
        )
    } else {
        pick!(
            l,
            format!("Case {number}: {status}. {active} of {total} hash(es) active."),
            format!(
                "Dossier {number} : {}. {active} empreinte(s) active(s) sur {total}.",
                status_word(l, status)
            )
        )
    };
    let tail = match caught {
        None => return head,
        Some(Caught { last_day: Some(day), matches, sources }) => {
            let day = consentry_store::format_day(*day);
            pick!(
                l,
                format!("Copies stopped: {matches}, in {sources} place(s); the last on {day} (UTC)."),
                format!("Copies arrêtées : {matches}, à {sources} endroit(s) ; la dernière le {day} (UTC).")
            )
        }
        Some(_) => pick!(l, "No copy found so far.", "Aucune copie trouvée à ce jour.").to_owned(),
    };
    format!("{head} {tail}")
}
/// A case status word (`received`, `active`, `withdrawn`) in the language; unknown ones as they are.
pub fn status_word(l: Lang, status: &str) -> String {
    match (l, status) {
        (Lang::Fr, "received") => "reçu".into(),
        (Lang::Fr, "active") => "actif".into(),
        (Lang::Fr, "withdrawn") => "retiré".into(),
        _ => status.to_owned(),
    }
}
/// Too many cases opened by this user lately.
pub fn protect_rate_limited(l: Lang, per_hour: u32) -> String {
    pick!(
        l,
        format!(
            "You have opened {per_hour} case(s) in the last hour, the most allowed. Please try again later; \
             a case can hold up to 100 hashes."
        ),
        format!(
            "Vous avez ouvert {per_hour} dossier(s) dans l'heure, le maximum autorisé. Réessayez plus tard ; \
             un dossier peut contenir jusqu'à 100 empreintes."
        )
    )
}
/// Withdrawn.
pub fn case_withdrawn(l: Lang, number: &str) -> String {
    pick!(
        l,
        format!("Case {number} withdrawn: its hashes no longer match."),
        format!("Dossier {number} retiré : ses empreintes ne correspondent plus.")
    )
}
/// Wrong number or PIN.
pub fn bad_credentials(l: Lang) -> String {
    pick!(l, "Unknown case number or wrong PIN.", "Numéro de dossier inconnu ou PIN incorrect.").to_owned()
}
/// Locked after too many wrong PINs.
pub fn locked(l: Lang) -> String {
    pick!(
        l,
        "Too many wrong PINs: this case is locked for a while. Try again later.",
        "Trop de PIN incorrects : ce dossier est verrouillé pour un moment. Réessayez plus tard."
    )
    .to_owned()
}
/// Anything else that failed.
pub fn try_later(l: Lang) -> String {
    pick!(
        l,
        "Something went wrong on our side. Please try again later.",
        "Un problème est survenu de notre côté. Réessayez plus tard."
    )
    .to_owned()
}
/// Sanction words.
pub fn sanction(l: Lang, s: &str) -> String {
    match s {
        "none" => pick!(l, "no sanction", "aucune sanction").to_owned(),
        "restrict-day" => {
            pick!(l, "sender restricted for 1 day", "expéditeur restreint pour 1 jour").to_owned()
        }
        "restrict-week" => {
            pick!(l, "sender restricted for 7 days", "expéditeur restreint pour 7 jours").to_owned()
        }
        "ban" => pick!(l, "sender banned", "expéditeur banni").to_owned(),
        "channel" => pick!(
            l,
            "sent as a chat: no sanction possible",
            "envoyé au nom d'un chat : aucune sanction possible"
        )
        .to_owned(),
        "repeat" => {
            pick!(l, "same album as the last strike", "même album que la dernière sanction").to_owned()
        }
        "local-only" => pick!(
            l,
            "no sanction: derivative evidence only (/policy derive)",
            "aucune sanction : indices dérivés seuls (/policy derive)"
        )
        .to_owned(),
        other => format!("{other} ({})", pick!(l, "failed", "échec")),
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn status_words_are_translated_in_french() {
        assert_eq!(status_word(Lang::Fr, "received"), "reçu");
        assert_eq!(status_word(Lang::Fr, "active"), "actif");
        assert_eq!(status_word(Lang::Fr, "withdrawn"), "retiré");
        assert_eq!(status_word(Lang::Fr, "other"), "other");
        assert_eq!(status_word(Lang::En, "received"), "received");
        assert_eq!(
            case_status(Lang::Fr, "AB12", "withdrawn", 0, 2, None),
            "Dossier AB12 : retiré. 0 empreinte(s) active(s) sur 2."
        );
        assert_eq!(
            case_status(Lang::En, "AB12", "active", 2, 2, None),
            "Case AB12: active. 2 of 2 hash(es) active."
        );
        assert_eq!(
            case_status(Lang::En, "AB12", "withdrawn", 0, 0, None),
            "Case AB12: withdrawn. Its hashes have been deleted from the service."
        );
        assert_eq!(
            case_status(Lang::Fr, "AB12", "withdrawn", 0, 0, None),
            "Dossier AB12 : retiré. Ses empreintes ont été effacées du service."
        );
        let none = Caught { matches: 0, sources: 0, last_day: None };
        assert_eq!(
            case_status(Lang::En, "AB12", "active", 2, 2, Some(&none)),
            "Case AB12: active. 2 of 2 hash(es) active. No copy found so far."
        );
        let some = Caught { matches: 7, sources: 2, last_day: Some(20_793) };
        assert_eq!(
            case_status(Lang::Fr, "AB12", "received", 1, 2, Some(&some)),
            "Dossier AB12 : reçu. 1 empreinte(s) active(s) sur 2. Copies arrêtées : 7, à 2 endroit(s) ; \
             la dernière le 2026-12-06 (UTC)."
        );
    }
}
