// consentry protect page: the words on the pages, in English and French.
// The language comes from ?lang=en|fr, else from the browser's preferred languages, else English.
// Nothing is stored on the device (no cookie, no local storage).
'use strict';

window.consentryI18n = (function () {
  const STRINGS = {
    en: {
      skip: 'Skip to main content',
      nav_protect: 'Protect photos',
      nav_status: 'Check a case',
      nav_withdraw: 'Withdraw a case',
      lang_name: 'English',
      footer: 'This page loads nothing from other websites and keeps nothing on your device after you close it.',
      noscript: 'This page needs JavaScript: it computes the codes on your own device.',
      protect_title: 'Protect your photos',
      intro: 'If you fear that intimate photos of you, real or faked, could be shared without your consent, this page helps stop them. It turns each photo you choose into a code (a “hash”) here, on this device. Platforms that work with this service compare the images posted on them with these codes and remove the ones that match.',
      facts_h: 'What happens to your photos',
      sent_h: 'What is sent',
      sent: 'Only the codes: one line of 64 letters and digits per photo, a number saying how detailed the photo is, and a longer code describing small details of the photo, so that cropped, framed or partly altered copies are caught too. A photo cannot be rebuilt from its codes.',
      not_sent_h: 'What is not sent',
      not_sent: 'Your photos. They never leave this device: they are not uploaded, not stored, and nobody sees them. Their file names, your name and your contact details are not sent either.',
      who_h: 'Who receives the codes',
      who: 'The organisation that runs this website ({origin}) adds them to its list of protected images. Platforms that check images against that list see the codes only: never your photos, your case number or who you are.',
      withdraw_h: 'How to withdraw',
      withdraw_how: 'After sending you get a case number and a PIN. With them you can check your case or withdraw it at any time; withdrawn codes stop matching.',
      choose_h: '1. Choose your photos',
      choose_label: 'Choose photos from this device',
      choose_help: 'You can choose many photos at once, or drag them onto this box. They stay on this device.',
      hasher_unavailable: 'In-browser hashing is unavailable on this server: its hasher (WebAssembly) was not built. Nothing can be computed or sent from this page. Please tell the organisation that runs this website.',
      hasher_failed: 'This browser could not start the hasher, so nothing can be computed here. Try an up-to-date browser (Firefox, Chrome, Edge or Safari).',
      progress: '{done} of {total} files processed',
      results_h: '2. Check the codes',
      results_empty: 'No photos chosen yet.',
      thumb: 'Preview of {name}, shown only on this device',
      remove: 'Remove',
      remove_label: 'Remove {name} from the list',
      st_waiting: 'Waiting…',
      st_hashing: 'Computing the code on this device…',
      st_ok: 'Code computed on this device (quality {q} out of 100).',
      st_reduced: 'Large photo: reduced to {w} × {h} pixels on this device before computing the code (quality {q} out of 100).',
      st_low_quality: 'This photo has too little detail for a reliable code (quality {q} out of 100, at least 50 is needed). It will not be sent.',
      st_not_image: 'This file is not a photo this page can read (JPEG, PNG, GIF, WebP, BMP or AVIF). Nothing from it is sent.',
      st_unsupported: 'This browser cannot read {format} photos. Save the photo as JPEG or PNG and choose it again. Nothing from it is sent.',
      st_too_large: 'This image is too large ({mp} megapixels; the limit is 64). Nothing from it is sent.',
      st_decode: 'This file could not be read as an image (it may be damaged). Nothing from it is sent.',
      st_duplicate: 'Same code as another photo in the list: it is sent once.',
      st_sent: 'Sent in case {number}.',
      send_h: '3. Send the codes',
      send_help: 'Only the codes shown above are sent. You will get a case number and a PIN.',
      send: 'Send the codes',
      save: 'Save the codes to a file',
      sending: 'Sending {n} codes…',
      nothing_to_send: 'There is no usable code to send yet.',
      err_network: 'The server could not be reached. Nothing is lost: your codes are still here. Try again in a moment, or save them to a file and send them later.',
      err_server: 'The server did not accept the codes: {message} Your codes are still here: you can try again or save them to a file.',
      saved: 'The codes were saved to the file {file}. It contains the names of your photos: keep it private. A helpline can add the file as it is to its list of protected codes.',
      case_h: 'Your case',
      case_number: 'Case number',
      case_pin: 'PIN',
      case_keep: 'Write down the case number and the PIN now and keep them somewhere safe. The PIN is shown only this once: nobody can recover it. You need both to check or withdraw your case.',
      case_count: 'The codes of {n} photos were received. They are now on the list of protected images.',
      status_title: 'Check your case',
      case_form_intro: 'Enter the case number and the PIN you were given when you sent your codes.',
      f_number: 'Case number',
      f_number_help: '12 letters and digits, for example Y8PH-ZE9R-FDNW',
      f_pin: 'PIN',
      f_pin_help: '10 digits',
      status_submit: 'Check',
      status_codes: 'The codes in this case',
      result_h: 'Case {number}',
      status_received: 'Received: your codes are on the list of protected images.',
      status_active: 'Active: reviewed and confirmed by the service’s staff. Your codes are on the list of protected images.',
      status_withdrawn: 'Withdrawn: your codes no longer match anything.',
      status_dates: 'Sent on {created}. Last change on {updated}.',
      status_hashes: '{active} of {total} codes are active.',
      status_deleted: 'Your codes have been deleted from the service.',
      status_caught: 'Copies of your photos stopped so far: {matches}. Places where they were found: {sources}. Last found on {last}.',
      status_caught_none: 'No copy of your photos has been found so far.',
      code_active: 'active',
      code_inactive: 'not active',
      withdraw_title: 'Withdraw your case',
      withdraw_intro: 'Withdrawing takes your codes off the list of protected images: platforms stop matching them. This cannot be undone, but you can send your photos’ codes again later in a new case.',
      confirm: 'I understand that my codes will stop protecting my photos.',
      withdraw_submit: 'Withdraw my case',
      withdraw_done: 'Case {number} is withdrawn. Its codes no longer match anything.',
      err_fields: 'Enter the case number and the PIN.',
      err_confirm: 'Tick the box to confirm first.',
      err_credentials: 'The case number or the PIN is not right. Check them and try again.',
      err_locked: 'Too many wrong attempts: this case is locked for a while. Try again later.',
      err_unreachable: 'The server could not be reached. Check your connection and try again in a moment.',
      err_other: 'The server answered with an error: {message}',
    },
    fr: {
      skip: 'Aller au contenu principal',
      nav_protect: 'Protéger des photos',
      nav_status: 'Suivre un dossier',
      nav_withdraw: 'Retirer un dossier',
      lang_name: 'Français',
      footer: 'Cette page ne charge rien depuis d’autres sites et ne garde rien sur votre appareil une fois fermée.',
      noscript: 'Cette page a besoin de JavaScript : elle calcule les codes sur votre propre appareil.',
      protect_title: 'Protégez vos photos',
      intro: 'Si vous craignez que des photos intimes de vous, réelles ou truquées, soient diffusées sans votre consentement, cette page aide à l’empêcher. Elle transforme chaque photo choisie en un code (une « empreinte ») ici, sur cet appareil. Les plateformes partenaires de ce service comparent les images publiées chez elles à ces codes et retirent celles qui correspondent.',
      facts_h: 'Ce qui arrive à vos photos',
      sent_h: 'Ce qui est envoyé',
      sent: 'Seulement les codes : une ligne de 64 lettres et chiffres par photo, un nombre qui indique à quel point la photo est détaillée, et un code plus long qui décrit de petits détails de la photo, pour que les copies recadrées, encadrées ou en partie modifiées soient aussi reconnues. On ne peut pas reconstituer une photo à partir de ses codes.',
      not_sent_h: 'Ce qui n’est pas envoyé',
      not_sent: 'Vos photos. Elles ne quittent jamais cet appareil : elles ne sont ni envoyées, ni enregistrées, et personne ne les voit. Les noms des fichiers, votre nom et vos coordonnées ne sont pas envoyés non plus.',
      who_h: 'Qui reçoit les codes',
      who: 'L’organisation qui gère ce site ({origin}) les ajoute à sa liste d’images protégées. Les plateformes qui comparent des images à cette liste ne voient que les codes : jamais vos photos, votre numéro de dossier ni votre identité.',
      withdraw_h: 'Comment retirer vos codes',
      withdraw_how: 'Après l’envoi, vous recevez un numéro de dossier et un code PIN. Avec eux, vous pouvez suivre ou retirer votre dossier à tout moment ; les codes retirés ne correspondent plus à rien.',
      choose_h: '1. Choisissez vos photos',
      choose_label: 'Choisir des photos sur cet appareil',
      choose_help: 'Vous pouvez choisir plusieurs photos à la fois, ou les glisser dans ce cadre. Elles restent sur cet appareil.',
      hasher_unavailable: 'Le calcul des codes dans le navigateur n’est pas disponible sur ce serveur : son module de calcul (WebAssembly) n’a pas été construit. Rien ne peut être calculé ni envoyé depuis cette page. Merci de prévenir l’organisation qui gère ce site.',
      hasher_failed: 'Ce navigateur n’a pas pu démarrer le calcul des codes : rien ne peut être calculé ici. Essayez un navigateur à jour (Firefox, Chrome, Edge ou Safari).',
      progress: '{done} fichiers traités sur {total}',
      results_h: '2. Vérifiez les codes',
      results_empty: 'Aucune photo choisie pour l’instant.',
      thumb: 'Aperçu de {name}, affiché seulement sur cet appareil',
      remove: 'Enlever',
      remove_label: 'Enlever {name} de la liste',
      st_waiting: 'En attente…',
      st_hashing: 'Calcul du code sur cet appareil…',
      st_ok: 'Code calculé sur cet appareil (qualité {q} sur 100).',
      st_reduced: 'Grande photo : réduite à {w} × {h} pixels sur cet appareil avant le calcul du code (qualité {q} sur 100).',
      st_low_quality: 'Cette photo n’a pas assez de détails pour un code fiable (qualité {q} sur 100, il faut au moins 50). Elle ne sera pas envoyée.',
      st_not_image: 'Ce fichier n’est pas une photo lisible par cette page (JPEG, PNG, GIF, WebP, BMP ou AVIF). Rien n’en est envoyé.',
      st_unsupported: 'Ce navigateur ne sait pas lire les photos {format}. Enregistrez la photo en JPEG ou PNG puis choisissez-la à nouveau. Rien n’en est envoyé.',
      st_too_large: 'Cette image est trop grande ({mp} mégapixels ; la limite est 64). Rien n’en est envoyé.',
      st_decode: 'Ce fichier n’a pas pu être lu comme une image (il est peut-être abîmé). Rien n’en est envoyé.',
      st_duplicate: 'Même code qu’une autre photo de la liste : il est envoyé une seule fois.',
      st_sent: 'Envoyé dans le dossier {number}.',
      send_h: '3. Envoyez les codes',
      send_help: 'Seuls les codes affichés ci-dessus sont envoyés. Vous recevrez un numéro de dossier et un code PIN.',
      send: 'Envoyer les codes',
      save: 'Enregistrer les codes dans un fichier',
      sending: 'Envoi de {n} codes…',
      nothing_to_send: 'Il n’y a encore aucun code utilisable à envoyer.',
      err_network: 'Le serveur est injoignable. Rien n’est perdu : vos codes sont toujours là. Réessayez dans un moment, ou enregistrez-les dans un fichier pour les envoyer plus tard.',
      err_server: 'Le serveur n’a pas accepté les codes : {message} Vos codes sont toujours là : vous pouvez réessayer ou les enregistrer dans un fichier.',
      saved: 'Les codes ont été enregistrés dans le fichier {file}. Il contient les noms de vos photos : gardez-le pour vous. Un service d’aide peut ajouter ce fichier tel quel à sa liste de codes protégés.',
      case_h: 'Votre dossier',
      case_number: 'Numéro de dossier',
      case_pin: 'Code PIN',
      case_keep: 'Notez maintenant le numéro de dossier et le code PIN et gardez-les en lieu sûr. Le code PIN n’est affiché qu’une fois : personne ne peut le retrouver. Les deux sont nécessaires pour suivre ou retirer votre dossier.',
      case_count: 'Les codes de {n} photos ont été reçus. Ils sont maintenant sur la liste des images protégées.',
      status_title: 'Suivre votre dossier',
      case_form_intro: 'Saisissez le numéro de dossier et le code PIN reçus lors de l’envoi de vos codes.',
      f_number: 'Numéro de dossier',
      f_number_help: '12 lettres et chiffres, par exemple Y8PH-ZE9R-FDNW',
      f_pin: 'Code PIN',
      f_pin_help: '10 chiffres',
      status_submit: 'Vérifier',
      status_codes: 'Les codes de ce dossier',
      result_h: 'Dossier {number}',
      status_received: 'Reçu : vos codes sont sur la liste des images protégées.',
      status_active: 'Actif : vérifié et confirmé par l’équipe du service. Vos codes sont sur la liste des images protégées.',
      status_withdrawn: 'Retiré : vos codes ne correspondent plus à rien.',
      status_dates: 'Envoyé le {created}. Dernière modification le {updated}.',
      status_hashes: '{active} codes actifs sur {total}.',
      status_deleted: 'Vos codes ont été effacés du service.',
      status_caught: 'Copies de vos photos arrêtées jusqu’ici : {matches}. Endroits où elles ont été trouvées : {sources}. Dernière trouvée le {last}.',
      status_caught_none: 'Aucune copie de vos photos n’a été trouvée jusqu’ici.',
      code_active: 'actif',
      code_inactive: 'inactif',
      withdraw_title: 'Retirer votre dossier',
      withdraw_intro: 'Retirer votre dossier enlève vos codes de la liste des images protégées : les plateformes cessent de les comparer. C’est définitif, mais vous pourrez renvoyer les codes de vos photos plus tard dans un nouveau dossier.',
      confirm: 'Je comprends que mes codes ne protégeront plus mes photos.',
      withdraw_submit: 'Retirer mon dossier',
      withdraw_done: 'Le dossier {number} est retiré. Ses codes ne correspondent plus à rien.',
      err_fields: 'Saisissez le numéro de dossier et le code PIN.',
      err_confirm: 'Cochez d’abord la case de confirmation.',
      err_credentials: 'Le numéro de dossier ou le code PIN n’est pas correct. Vérifiez-les et réessayez.',
      err_locked: 'Trop d’essais erronés : ce dossier est bloqué pour un moment. Réessayez plus tard.',
      err_unreachable: 'Le serveur est injoignable. Vérifiez votre connexion et réessayez dans un moment.',
      err_other: 'Le serveur a répondu par une erreur : {message}',
    },
  };

  function pick() {
    const asked = new URLSearchParams(location.search).get('lang');
    if (asked && STRINGS[asked]) return { lang: asked, explicit: true };
    const prefs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || 'en'];
    for (const l of prefs) {
      const base = String(l || '').slice(0, 2).toLowerCase();
      if (STRINGS[base]) return { lang: base, explicit: false };
    }
    return { lang: 'en', explicit: false };
  }

  const chosen = pick();
  const lang = chosen.lang;

  function t(key, vars) {
    let s = STRINGS[lang][key];
    if (s === undefined) s = STRINGS.en[key];
    if (s === undefined) s = key;
    if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
    return s;
  }

  // Fills every [data-t] element, the title, the language switch and the links between pages.
  function apply() {
    document.documentElement.lang = lang;
    const vars = { origin: location.host || location.origin };
    document.querySelectorAll('[data-t]').forEach((e) => {
      e.textContent = t(e.dataset.t, vars);
    });
    const title = document.body.dataset.title;
    if (title) document.title = t(title) + ' — consentry';
    const other = lang === 'fr' ? 'en' : 'fr';
    const sw = document.getElementById('lang-switch');
    if (sw) {
      sw.textContent = STRINGS[other].lang_name;
      sw.lang = other;
      sw.hreflang = other;
      sw.href = '?lang=' + other;
    }
    if (chosen.explicit) {
      document.querySelectorAll('a[data-keep-lang]').forEach((a) => {
        const u = new URL(a.getAttribute('href'), location.href);
        u.searchParams.set('lang', lang);
        a.href = u.href;
      });
    }
  }

  return { lang, t, apply };
})();
