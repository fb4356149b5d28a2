//! Set-up shared by the bot's integration tests.

use consentry_server::AppState;
use consentry_store::{Actor, Scope};
use consentry_telegram::{Matcher, Remote};

/// A `consentry serve` of `app` on a fresh loopback socket, and a remote-mode matcher for it
/// with a key of scope `lookup`. The server runs until the test's runtime ends.
pub async fn remote_matcher(app: &AppState) -> Matcher {
    let key = app.store().create_api_key(&Actor::system(), "bot", &[Scope::Lookup]).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(consentry_server::serve(listener, app.clone(), std::future::pending()));
    Matcher::Remote(Remote::new(&url, &key.secret).unwrap())
}
