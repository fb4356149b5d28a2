//! `consentry protect` and `consentry case`, the real binary against a real `consentry serve`:
//! photos hashed here, only codes sent, a case number and PIN back; status with what was caught,
//! withdrawal; and what leaves the machine, recorded by a stand-in service.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consentry_pdq::Hash256;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::derive_cli::scene_png;
use crate::serve::{create_key, matches, start, BIN};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `consentry ARGS` with `stdin` as its standard input and without `$CONSENTRY_PIN` unless
/// `pin_env` gives it.
async fn consentry(args: &[&str], cwd: &Path, pin_env: Option<&str>, stdin: &str) -> Run {
    let env: Vec<(&str, &str)> = pin_env.map(|pin| ("CONSENTRY_PIN", pin)).into_iter().collect();
    consentry_with(args, cwd, &env, stdin).await
}

/// Runs `consentry ARGS` with `env` set and `$CONSENTRY_PIN` and `$CONSENTRY_API_KEY` unset
/// unless `env` gives them.
async fn consentry_with(args: &[&str], cwd: &Path, env: &[(&str, &str)], stdin: &str) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd).env_remove("CONSENTRY_PIN").env_remove("CONSENTRY_API_KEY");
    cmd.envs(env.iter().copied());
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn consentry");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The photos of these tests: two scenes, a flat image (too plain to hash usefully), a file that
/// is not an image, and a copy of the first scene.
fn photos(dir: &Path) {
    std::fs::write(dir.join("a.png"), scene_png(320, 240, 11)).unwrap();
    std::fs::write(dir.join("b.png"), scene_png(300, 260, 12)).unwrap();
    std::fs::write(dir.join("a-again.png"), scene_png(320, 240, 11)).unwrap();
    let flat = image_of_one_colour(200, 150);
    std::fs::write(dir.join("flat.png"), flat).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a photo").unwrap();
}

fn image_of_one_colour(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(&vec![120u8; (w * h * 3) as usize]).unwrap();
    out
}

fn field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("no `{name}` in {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protect_opens_a_case_that_status_and_withdraw_reach() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    photos(dir);
    let data = dir.join("data");
    let data_arg = data.to_str().unwrap();
    let mut server = start(&["--data-dir", data_arg], &[]).await;
    let base = server.base.clone();

    let p = consentry(
        &[
            "protect",
            "--server",
            &base,
            "--save",
            "codes.csv",
            "a.png",
            "b.png",
            "flat.png",
            "notes.txt",
            "a-again.png",
        ],
        dir,
        None,
        "",
    )
    .await;
    // The plain and the non-image files are left out (exit status 1), the copy sent once.
    assert_eq!(p.code, Some(1), "{}", p.stderr);
    assert!(p.stderr.contains("flat.png: left out: quality"), "{}", p.stderr);
    assert!(p.stderr.contains("notes.txt: left out"), "{}", p.stderr);
    assert!(p.stderr.contains("a-again.png: the same photo as one before"), "{}", p.stderr);
    let number = field(&p.stdout, "Case number: ").to_owned();
    let pin = field(&p.stdout, "PIN: ").to_owned();
    assert_eq!((number.len(), pin.len()), (14, 10), "{}", p.stdout);

    // The saved codes are the page's file: per photo its PDQ line (the hash `consentry hash`
    // prints) and its derivative signature, under the file's name.
    let csv = std::fs::read_to_string(dir.join("codes.csv")).unwrap();
    let lines: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(lines[0], ["hash", "quality", "path", "signal_type"]);
    assert_eq!(lines.len(), 5, "{csv}");
    let hash_cmd = consentry(&["hash", "a.png", "b.png"], dir, None, "").await;
    assert_eq!(hash_cmd.code, Some(0), "{}", hash_cmd.stderr);
    for (photo, hash_line) in ["a.png", "b.png"].iter().zip(hash_cmd.stdout.lines()) {
        let cols: Vec<&str> = hash_line.split('\t').collect();
        let pdq = lines.iter().find(|l| l[2] == *photo && l[3] == "pdq").expect(photo);
        assert_eq!((pdq[0], pdq[1]), (cols[0], cols[1]), "{photo}");
        let derive = lines.iter().find(|l| l[2] == *photo && l[3] == "derive").expect(photo);
        let sig = consentry_derive::Signature::from_base64(derive[0]).unwrap();
        assert_eq!(sig.pdq.to_hex(), cols[0]);
    }

    // The case's codes match: a lookup of photo a's hash finds it in the survivors' bank.
    let a_hash = Hash256::from_hex(lines.iter().find(|l| l[2] == "a.png").unwrap()[0]).unwrap();
    let key = create_key(&data, "lookup");
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches(&c, &base, &key, &a_hash).await == 0 {
        assert!(Instant::now() < deadline, "the case's hash never matched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Status, the PIN from the environment, the number typed any way: one copy stopped.
    let compact = number.replace('-', "").to_lowercase();
    let s = consentry(&["case", "status", "--server", &base, &compact], dir, Some(&pin), "").await;
    assert_eq!(s.code, Some(0), "{}", s.stderr);
    assert!(s.stdout.starts_with(&format!("Case {number}: received\n")), "{}", s.stdout);
    assert!(s.stdout.contains("Codes active: 4 of 4\n"), "{}", s.stdout);
    assert!(s.stdout.contains("Copies stopped: 1, in 1 place(s); the last on "), "{}", s.stdout);
    assert!(!s.stdout.contains(&pin) && !s.stderr.contains(&pin), "the PIN is not echoed");

    // A wrong PIN on standard input; a withdrawal without --yes: clear errors, nothing changes.
    let s = consentry(&["case", "status", "--server", &base, &number], dir, None, "0000000000\n").await;
    assert_eq!(s.code, Some(2));
    assert!(s.stderr.contains("unknown case number or wrong PIN"), "{}", s.stderr);
    let w = consentry(&["case", "withdraw", "--server", &base, &number], dir, Some(&pin), "").await;
    assert_eq!(w.code, Some(2));
    assert!(w.stderr.contains("--yes"), "{}", w.stderr);
    assert_eq!(matches(&c, &base, &key, &a_hash).await, 1);

    // Withdrawn, with the PIN on standard input: the codes stop matching.
    let w =
        consentry(&["case", "withdraw", "--yes", "--server", &base, &number], dir, None, &format!("{pin}\n"))
            .await;
    assert_eq!(w.code, Some(0), "{}", w.stderr);
    assert!(w.stdout.contains("withdrawn"), "{}", w.stdout);
    let deadline = Instant::now() + Duration::from_secs(2);
    while matches(&c, &base, &key, &a_hash).await != 0 {
        assert!(Instant::now() < deadline, "the withdrawn hash still matches");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = consentry(&["case", "status", "--server", &base, &number], dir, Some(&pin), "").await;
    assert!(s.stdout.contains(": withdrawn\n") && s.stdout.contains("Codes active: 0 of 4"), "{}", s.stdout);
    // Once the service's retention deleted a withdrawn case's codes, the status says so.
    let store = consentry_store::Store::open_data_dir(&data).await.unwrap();
    let cut = consentry_store::Timestamp(consentry_store::Timestamp::now().0 + 1);
    let retention = consentry_store::Actor::named("test");
    assert_eq!(store.purge_withdrawn_cases(&retention, cut, 100).await.unwrap(), 4);
    store.close().await;
    let s = consentry(&["case", "status", "--server", &base, &number], dir, Some(&pin), "").await;
    assert!(s.stdout.contains("Codes: deleted from the service\n"), "{}", s.stdout);

    // A service that cannot be reached: the codes are saved all the same, and the error says
    // they were not sent.
    server.child.kill().await.unwrap();
    let p = consentry(&["protect", "--server", &base, "--save", "later.csv", "a.png"], dir, None, "").await;
    assert_eq!(p.code, Some(2));
    assert!(p.stderr.contains("the codes were not sent"), "{}", p.stderr);
    assert_eq!(std::fs::read_to_string(dir.join("later.csv")).unwrap().lines().count(), 3);
    assert!(p.stdout.is_empty());
}

/// What `consentry protect` sends, as a stand-in service receives it: codes only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protect_sends_codes_only() {
    use axum::{extract::State, routing::post, Json, Router};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    photos(dir);
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = Router::new()
        .route(
            "/v1/cases",
            post(|State(got): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>| async move {
                got.lock().unwrap().push(body);
                (
                    axum::http::StatusCode::CREATED,
                    Json(json!({"case_number": "AAAA-BBBB-CCCC", "pin": "0123456789"})),
                )
            }),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let p = consentry(&["protect", "--server", &base, "a.png", "b.png"], dir, None, "").await;
    assert_eq!(p.code, Some(0), "{}", p.stderr);
    assert_eq!(p.stdout, "Case number: AAAA-BBBB-CCCC\nPIN: 0123456789\n");
    let bodies = got.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    let hashes = bodies[0]["hashes"].as_array().unwrap();
    assert_eq!(bodies[0].as_object().unwrap().len(), 1, "nothing but the codes: {}", bodies[0]);
    assert_eq!(hashes.len(), 4);
    for pair in hashes.chunks(2) {
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&pair[0]), ["hash", "quality"]);
        assert_eq!(keys(&pair[1]), ["hash", "signal"]);
        assert_eq!(pair[1]["signal"], "derive");
    }
    let text = bodies[0].to_string();
    assert!(!text.contains("a.png") && !text.contains("b.png"), "no file name leaves the machine");

    // A refusal is shown with the service's own message.
    let refusing = Router::new().route(
        "/v1/cases",
        post(|| async {
            (
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                Json(json!({"error": {"code": "too_many_hashes", "message": "a case holds at most 1000 hashes"}})),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, refusing).await.unwrap() });
    let p = consentry(&["protect", "--server", &base, "a.png"], dir, None, "").await;
    assert_eq!(p.code, Some(2));
    assert!(p.stderr.contains("a case holds at most 1000 hashes"), "{}", p.stderr);
}

/// A helpline's staff review cases with `consentry cases` and a curate key, through the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_review_cases_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    photos(dir);
    let data = dir.join("data");
    let server = start(&["--data-dir", data.to_str().unwrap()], &[]).await;
    let base = server.base.clone();
    let p = consentry(&["protect", "--server", &base, "a.png", "b.png"], dir, None, "").await;
    assert_eq!(p.code, Some(0), "{}", p.stderr);
    let number = field(&p.stdout, "Case number: ").to_owned();
    let pin = field(&p.stdout, "PIN: ").to_owned();
    let curate = create_key(&data, "curate");
    let staff = |args: Vec<&str>, key: &str| {
        let mut all = vec!["cases"];
        all.extend(args);
        let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
        let key = key.to_owned();
        async move {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            consentry_with(&args, dir, &[("CONSENTRY_API_KEY", &key)], "").await
        }
    };

    // No key, a key without the curate scope: clear refusals.
    let r = consentry(&["cases", "list", "--server", &base], dir, None, "").await;
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("no API key: set $CONSENTRY_API_KEY"), "{}", r.stderr);
    let lookup = create_key(&data, "lookup");
    let r = staff(vec!["list", "--server", &base], &lookup).await;
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("curate"), "{}", r.stderr);

    // The new case is listed to review, and shown with its codes.
    let r = staff(vec!["list", "--server", &base, "--status", "received"], &curate).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let rows: Vec<Vec<&str>> = r.stdout.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows[0], ["case_number", "status", "bank", "opened", "changed"]);
    assert_eq!(&rows[1][..3], [number.as_str(), "received", "survivors"], "{}", r.stdout);
    assert_eq!(rows.len(), 2);
    let r = staff(vec!["show", "--server", &base, &number], &curate).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.starts_with(&format!("Case {number}: received (bank survivors)\n")), "{}", r.stdout);
    assert!(
        r.stdout.contains("Codes: 4 (4 active)\n") && r.stdout.contains("No copy found so far."),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("PIN: 0 wrong attempt(s)"), "{}", r.stdout);
    let r = staff(vec!["show", "--server", &base, "AAAA-BBBB-CCCC"], &curate).await;
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("AAAA-BBBB-CCCC"), "{}", r.stderr);

    // Confirmed: the survivor's status says so, and it is no longer among those to review.
    let r = staff(vec!["confirm", "--server", &base, &number], &curate).await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), format!("Case {number}: active\n").as_str()),
        "{}",
        r.stderr
    );
    let s = consentry(&["case", "status", "--server", &base, &number], dir, Some(&pin), "").await;
    assert!(s.stdout.starts_with(&format!("Case {number}: active\n")), "{}", s.stdout);
    let r = staff(vec!["list", "--server", &base, "--status", "received"], &curate).await;
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);

    // A new PIN: the old one no longer opens the case, the new one does.
    let r = staff(vec!["new-pin", "--server", &base, &number], &curate).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let new_pin = field(&r.stdout, "PIN: ").to_owned();
    assert_ne!(new_pin, pin);
    let s = consentry(&["case", "status", "--server", &base, &number], dir, Some(&pin), "").await;
    assert!(s.stderr.contains("unknown case number or wrong PIN"), "{}", s.stderr);
    let s = consentry(&["case", "status", "--server", &base, &number], dir, Some(&new_pin), "").await;
    assert_eq!(s.code, Some(0), "{}", s.stderr);

    // Withdrawn on her behalf, only with --yes.
    let r = staff(vec!["withdraw", "--server", &base, &number], &curate).await;
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    let r = staff(vec!["withdraw", "--yes", "--server", &base, &number], &curate).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = staff(vec!["show", "--server", &base, &number], &curate).await;
    assert!(
        r.stdout.contains(": withdrawn (bank survivors)") && r.stdout.contains("(0 active)"),
        "{}",
        r.stdout
    );
    // Each change is in the audit log under the staff's key.
    let store = consentry_store::Store::open_data_dir(&data).await.unwrap();
    let actions: Vec<(String, String)> = store
        .audit_events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with("case.") && e.actor.starts_with("api-key:"))
        .map(|e| (e.action, e.actor))
        .collect();
    let keys = store.list_api_keys().await.unwrap();
    store.close().await;
    let curate_id = keys.iter().find(|k| k.scopes.contains(&consentry_store::Scope::Curate)).unwrap().id;
    let by_key = format!("api-key:{curate_id}");
    let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(names, ["case.status", "case.pin_reset", "case.withdraw"], "{actions:?}");
    assert!(actions.iter().all(|(_, actor)| *actor == by_key), "{actions:?}");
}
