//! The review service: a web page where fraud analysts work the queue of open alerts (from
//! ClickHouse), look at one alert in detail (the transaction, its score and model, the rule hits
//! and SHAP reasons, the origin account's history) and confirm or dismiss it. A verdict is
//! published as a `Label` marked ANALYST on the labels topic ([`verdicts`]), which the sink lands
//! and the trainer learns from; the alert then leaves every analyst's queue.
//!
//! Nobody reads an alert or gives a verdict without logging in ([`auth`]): users from a file of
//! Argon2id hashes, sessions that expire, a CSRF token on every form, `SameSite=Strict` cookies.

pub mod alerts;
pub mod auth;
pub mod pages;
pub mod verdicts;

use alerts::QueueQuery;
use auth::{Auth, Session, COOKIE};
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::kafka::KafkaArgs;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use verdicts::{Verdict, Verdicts};

/// The service's settings (flattened into the `review serve` command).
#[derive(Debug, Clone, clap::Args)]
pub struct ReviewConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// Where the page is served.
    #[arg(
        long,
        env = "FRAUDSTREAM_REVIEW_ADDR",
        default_value = "127.0.0.1:8088"
    )]
    pub listen: SocketAddr,
    /// Users who may log in: lines of `name:<Argon2id hash>` (make one with `review hash-password`).
    #[arg(long, env = "FRAUDSTREAM_REVIEW_USERS")]
    pub users: PathBuf,
    /// How long a login lasts (minutes).
    #[arg(
        long,
        env = "FRAUDSTREAM_REVIEW_SESSION_MINUTES",
        default_value_t = 480
    )]
    pub session_minutes: u64,
    /// Where verdicts go (the topic the sink lands labels from).
    #[arg(long, env = "FRAUDSTREAM_LABELS_TOPIC", default_value = fraudstream_schemas::topics::LABELS)]
    pub labels_topic: String,
}

/// What every request handler shares.
pub struct App {
    pub auth: Auth,
    pub verdicts: Verdicts,
    pub clickhouse: clickhouse::Client,
    pub metrics: Metrics,
}

pub struct Metrics {
    pub registry: prometheus::Registry,
    pub verdicts: prometheus::IntCounterVec,
    pub logins: prometheus::IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, fraudstream_common::CommonError> {
        let r = fraudstream_common::server::Registrar::new("review")?;
        let verdicts = r.counter_vec(
            "verdicts_total",
            "Verdicts published, by verdict",
            &["verdict"],
        )?;
        let logins = r.counter_vec("logins_total", "Log-in attempts, by result", &["result"])?;
        Ok(Metrics {
            registry: r.registry,
            verdicts,
            logins,
        })
    }
}

/// Serves the page until `stop` resolves; returns the bound address through `bound`.
pub async fn serve(
    cfg: &ReviewConfig,
    metrics: Metrics,
    bound: tokio::sync::oneshot::Sender<SocketAddr>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let auth = Auth::from_file(&cfg.users, Duration::from_secs(cfg.session_minutes * 60))?;
    cfg.clickhouse.migrate().await?;
    let app = Arc::new(App {
        auth,
        verdicts: Verdicts::new(&cfg.kafka, &cfg.labels_topic)?,
        clickhouse: cfg.clickhouse.client(),
        metrics,
    });
    let router = Router::new()
        .route("/", get(queue_page))
        .route("/queue/rows", get(queue_rows))
        .route("/alerts/{id}", get(alert_page))
        .route("/alerts/{id}/verdict", post(give_verdict))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot serve the page on {}: {e} (set --listen)",
                cfg.listen
            )
        })?;
    let _ = bound.send(listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await?;
    Ok(())
}

/// The session of the request's cookie; `None` means log in first.
fn session(app: &App, headers: &HeaderMap) -> Option<(String, Session)> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    let id = auth::cookie(cookies, COOKIE)?;
    app.auth.session(id).map(|s| (id.to_string(), s))
}

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

fn failed(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "review request failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(pages::page(
            "Unavailable",
            None,
            &format!(
                "<p>ClickHouse or Kafka did not answer: {}</p>",
                pages::esc(&e.to_string())
            ),
        )),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Notice {
    #[serde(default)]
    notice: Option<String>,
}

async fn queue_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<QueueQuery>,
    Query(n): Query<Notice>,
) -> Response {
    let Some((_, s)) = session(&app, &headers) else {
        return to_login();
    };
    match open_alerts(&app, &q).await {
        Ok((rows, total)) => Html(pages::page(
            "Open alerts",
            Some((&s.user, &s.csrf)),
            &pages::queue(&q, &rows, total, n.notice.as_deref()),
        ))
        .into_response(),
        Err(e) => failed(e),
    }
}

/// A page of the queue, less the alerts closed through this process that ClickHouse does not
/// show as closed yet (the sink lands a verdict within a batch).
async fn open_alerts(
    app: &App,
    q: &QueueQuery,
) -> Result<(Vec<alerts::QueueRow>, u64), clickhouse::error::Error> {
    let (mut rows, total) = alerts::queue(&app.clickhouse, q).await?;
    let hidden = app
        .verdicts
        .drop_given(&mut rows, |r| &r.transaction_id)
        .await;
    Ok((rows, total.saturating_sub(hidden as u64)))
}

async fn queue_rows(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<QueueQuery>,
) -> Response {
    if session(&app, &headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match open_alerts(&app, &q).await {
        Ok((rows, total)) => (
            [("x-open-alerts", total.to_string())],
            Html(pages::queue_rows(&rows)),
        )
            .into_response(),
        Err(e) => failed(e),
    }
}

async fn alert_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some((_, s)) = session(&app, &headers) else {
        return to_login();
    };
    let ch = &app.clickhouse;
    let loaded = async {
        let Some(alert) = alerts::detail(ch, &id).await? else {
            return Ok(None);
        };
        let tx = alerts::transaction(ch, &id).await?;
        let history = alerts::history(ch, &alert.name_orig).await?;
        let labels = alerts::labels(ch, &id).await?;
        Ok::<_, clickhouse::error::Error>(Some((alert, tx, history, labels)))
    };
    match loaded.await {
        Ok(Some((alert, tx, history, labels))) => Html(pages::page(
            &format!("Alert {id}"),
            Some((&s.user, &s.csrf)),
            &pages::detail(&alert, tx.as_ref(), &history, &labels, &s.csrf),
        ))
        .into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Html(pages::page(
                "Not found",
                Some((&s.user, &s.csrf)),
                "<p>No such alert.</p>",
            )),
        )
            .into_response(),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
struct VerdictForm {
    csrf: String,
    verdict: String,
    #[serde(default)]
    note: String,
}

async fn give_verdict(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<VerdictForm>,
) -> Response {
    let Some((_, s)) = session(&app, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if form.csrf != s.csrf {
        return (
            StatusCode::FORBIDDEN,
            "the form's CSRF token does not match your session",
        )
            .into_response();
    }
    let is_fraud = match form.verdict.as_str() {
        "fraud" => true,
        "legit" => false,
        _ => return (StatusCode::BAD_REQUEST, "verdict must be fraud or legit").into_response(),
    };
    let verdict = Verdict {
        is_fraud,
        analyst: s.user.clone(),
    };
    match app
        .verdicts
        .give(&app.clickhouse, &id, verdict, form.note.trim())
        .await
    {
        Ok((v, new)) => {
            let what = if v.is_fraud {
                "confirmed fraud"
            } else {
                "dismissed"
            };
            let notice = if new {
                app.metrics
                    .verdicts
                    .with_label_values(&[if v.is_fraud { "fraud" } else { "legit" }])
                    .inc();
                format!("{id}: {what}.")
            } else {
                format!("{id} was already closed: {what} by {}.", v.analyst)
            };
            Redirect::to(&format!("/?notice={}", url_encode(&notice))).into_response()
        }
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
}

async fn login_page() -> Html<String> {
    Html(pages::login(None))
}

async fn login(State(app): State<Arc<App>>, Form(form): Form<LoginForm>) -> Response {
    match app.auth.login(&form.user, &form.password) {
        Some((id, _)) => {
            app.metrics.logins.with_label_values(&["ok"]).inc();
            (
                [(
                    header::SET_COOKIE,
                    format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/"),
                )],
                Redirect::to("/"),
            )
                .into_response()
        }
        None => {
            app.metrics.logins.with_label_values(&["refused"]).inc();
            (
                StatusCode::UNAUTHORIZED,
                Html(pages::login(Some("Unknown user or wrong password."))),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Some((id, s)) = session(&app, &headers) {
        if s.csrf == form.csrf {
            app.auth.logout(&id);
        }
    }
    (
        [(header::SET_COOKIE, format!("{COOKIE}=; Max-Age=0; Path=/"))],
        Redirect::to("/login"),
    )
        .into_response()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
