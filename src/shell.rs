//! The wasm shell: reads `Env` into a validated [`Config`] once per isolate, builds the origin
//! transport for each request, calls the gate, renders its [`ApiReply`] and writes its decision
//! record to the optional Analytics Engine binding. No decisions here.

use flashgate_core::config::{Config, OriginConfig};
use flashgate_core::error::{ApiError, ApiReply};
use flashgate_core::gate::{ApiRequest, DecisionRecord, Gate, Limiter, Siteverify, ENTRY_HEADER};
use flashgate_core::origin::http::{decode_response, HttpConfig};
use flashgate_core::origin::resp::{Connector, RespOrigin, SlotMap};
use flashgate_core::origin::{Acks, Cmd, Origin, OriginError, Value};
use futures_util::future::{select, Either};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use worker::*;

/// Cloudflare's rate-limiting binding (`[[ratelimits]]`), optional.
const RATE_LIMITER: &str = "RATE_LIMITER";
/// The pages worker (`wrangler.pages.toml`: Workers Static Assets from `static/`), a service
/// binding. Requests outside `/api/` that reach this worker are handed to it; where the zone
/// routes those paths to the pages worker directly, the binding is never used.
const PAGES: &str = "PAGES";
/// A Workers Analytics Engine dataset (`[[analytics_engine_datasets]]`), optional: one data
/// point per purchase decision.
const DECISIONS: &str = "DECISIONS";

/// What an isolate sets up once: the gate (or why its configuration is invalid) and which
/// optional bindings exist. An isolate runs one version of the worker, whose bindings do not
/// change, so an absent binding costs no lookup per request.
struct Isolate {
    gate: std::result::Result<Gate, String>,
    rate_limiter: bool,
    decisions: bool,
}

thread_local! {
    static ISOLATE: RefCell<Option<Rc<Isolate>>> = const { RefCell::new(None) };
    static SLOTS: SlotMap = SlotMap::default();
    /// Whether a failed Analytics Engine write was logged already (once per isolate).
    static DECISIONS_FAILED: Cell<bool> = const { Cell::new(false) };
}

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

fn isolate(env: &Env) -> Rc<Isolate> {
    ISOLATE.with(|i| {
        i.borrow_mut()
            .get_or_insert_with(|| {
                let cfg = Config::from_lookup(|name| env.var(name).ok().map(|v| v.to_string()));
                Rc::new(Isolate {
                    gate: cfg.map(Gate::new),
                    rate_limiter: env.rate_limiter(RATE_LIMITER).is_ok(),
                    decisions: env.analytics_engine(DECISIONS).is_ok(),
                })
            })
            .clone()
    })
}

/// `/api/*` is the gate. This worker has no `[assets]`, so no asset router runs before it:
/// anything else goes on to the pages worker.
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    if req.path().starts_with("/api/") {
        return handle_api(req, &env).await;
    }
    match env.service(PAGES) {
        Ok(pages) => pages.fetch_request(req).await,
        Err(_) => {
            let mut r = Response::error(
                "flashgate answers /api/* only; the sale pages are the flashgate-pages worker \
                 (wrangler.pages.toml), bound here as PAGES or routed on the zone",
                404,
            )?;
            r.headers_mut()
                .set("content-type", "text/plain; charset=utf-8")?;
            Ok(r)
        }
    }
}

async fn handle_api(mut req: Request, env: &Env) -> Result<Response> {
    let now = Date::now().as_millis() as i64;
    let iso = isolate(env);
    let gate = match &iso.gate {
        Ok(g) => g,
        Err(msg) => {
            console_error!("{{\"msg\":\"config\",\"error\":{:?}}}", msg);
            return render(ApiError::internal().to_reply());
        }
    };
    let h = req.headers().clone();
    let method = req.method().to_string();
    let declared: Option<usize> = h.get("content-length")?.and_then(|v| v.parse().ok());
    let body = if method == "GET"
        || method == "HEAD"
        || declared.is_some_and(|n| n > gate.config.max_body_bytes)
    {
        Vec::new()
    } else {
        req.bytes().await.unwrap_or_default()
    };
    let (auth, cookie, ct, key) = (
        h.get("authorization")?,
        h.get("cookie")?,
        h.get("content-type")?,
        h.get("idempotency-key")?,
    );
    let (entry, remote_ip) = (h.get(ENTRY_HEADER)?, h.get("cf-connecting-ip")?);
    let signature = h.get(flashgate_core::shop::SIGNATURE_HEADER)?;
    let path = req.path();
    let url = req.inner().url();
    let api = ApiRequest {
        method: &method,
        path: &path,
        query: query_of(&url),
        authorization: auth.as_deref(),
        cookie: cookie.as_deref(),
        content_type: ct.as_deref(),
        idempotency_key: key.as_deref(),
        entry: entry.as_deref(),
        remote_ip: remote_ip.as_deref(),
        signature: signature.as_deref(),
        body: &body,
        declared_len: declared,
        roll: js_sys::Math::random(),
    };
    let origin = AnyOrigin::new(&gate.config.origin);
    let clock = || Date::now().as_millis() as i64;
    let limiter = BindingLimiter(if iso.rate_limiter {
        env.rate_limiter(RATE_LIMITER).ok()
    } else {
        None
    });
    let handled = gate
        .serve(&origin, &limiter, &FetchSiteverify, &api, now, &clock)
        .await;
    if let Some(line) = handled.log {
        console_log!("{}", serde_json::to_string(&line).unwrap_or_default());
    }
    if let (true, Some(record)) = (iso.decisions, &handled.record) {
        write_decision(env, record);
    }
    render(handled.reply)
}

/// One data point in the `DECISIONS` dataset. A failed write never fails the answer; the
/// first failure in an isolate is logged.
fn write_decision(env: &Env, r: &DecisionRecord) {
    let written = env.analytics_engine(DECISIONS).and_then(|ds| {
        AnalyticsEngineDataPointBuilder::new()
            .indexes([r.index()])
            .blobs(r.blobs())
            .doubles(r.doubles())
            .write_to(&ds)
    });
    if let Err(e) = written {
        if !DECISIONS_FAILED.with(|f| f.replace(true)) {
            console_error!("{{\"msg\":\"analytics\",\"error\":{:?}}}", e.to_string());
        }
    }
}

/// The query of a URL as the runtime serialises it (WHATWG): before the fragment (the first
/// `#`), after the first `?`; neither the scheme, the host nor the path holds a bare `?` or
/// `#`. Read here rather than through `Request::url`, whose `url` crate (with its IDNA and
/// Unicode tables) added about 75 KiB of the 330 KiB gzip bundle, for one split.
fn query_of(url: &str) -> Option<&str> {
    let url = url.split_once('#').map_or(url, |(u, _)| u);
    url.split_once('?').map(|(_, q)| q)
}

fn render(r: ApiReply) -> Result<Response> {
    let mut resp = Response::from_bytes(r.body.into_bytes())?.with_status(r.status);
    let headers = resp.headers_mut();
    for (k, v) in r.headers {
        if k == "set-cookie" {
            headers.append(k, &v)?;
        } else {
            headers.set(k, &v)?;
        }
    }
    Ok(resp)
}

/// Cloudflare's rate-limiting binding, when `[[ratelimits]]` binds `RATE_LIMITER`.
struct BindingLimiter(Option<RateLimiter>);

impl Limiter for BindingLimiter {
    async fn allow(&self, key: &str) -> std::result::Result<bool, String> {
        match &self.0 {
            None => Ok(true),
            Some(l) => l
                .limit(key.to_string())
                .await
                .map(|o| o.success)
                .map_err(|e| e.to_string()),
        }
    }
}

/// Why a bounded POST got no answer: the request could not be built (nothing was sent), the
/// fetch failed or its body could not be read (it may have arrived), or the time ran out.
enum PostFailed {
    Build(String),
    Send(String),
    Read(String),
    Timeout(u64),
}

/// POSTs `body` to `url` with `headers` over `fetch`, aborted after `timeout_ms`: the status
/// and the body's text.
async fn post(
    url: &str,
    headers: &[(&str, &str)],
    body: String,
    timeout_ms: u64,
) -> std::result::Result<(u16, String), PostFailed> {
    let h = Headers::new();
    for (k, v) in headers {
        h.set(k, v).map_err(|e| PostFailed::Build(e.to_string()))?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(h)
        .with_body(Some(body.into()));
    let request =
        Request::new_with_init(url, &init).map_err(|e| PostFailed::Build(e.to_string()))?;
    let abort = AbortController::default();
    let signal = abort.signal();
    let work = std::pin::pin!(async {
        let mut resp = Fetch::Request(request)
            .send_with_signal(&signal)
            .await
            .map_err(|e| PostFailed::Send(e.to_string()))?;
        let text = resp
            .text()
            .await
            .map_err(|e| PostFailed::Read(e.to_string()))?;
        Ok((resp.status_code(), text))
    });
    let timer = std::pin::pin!(Delay::from(Duration::from_millis(timeout_ms)));
    match select(work, timer).await {
        Either::Left((r, _)) => r,
        Either::Right(((), _)) => {
            abort.abort();
            Err(PostFailed::Timeout(timeout_ms))
        }
    }
}

/// How long one siteverify call may take before it counts as unanswered.
const SITEVERIFY_TIMEOUT_MS: u64 = 3000;

/// Turnstile's siteverify over `fetch`, bounded by [`SITEVERIFY_TIMEOUT_MS`].
struct FetchSiteverify;

impl Siteverify for FetchSiteverify {
    async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: String,
    ) -> std::result::Result<(u16, String), String> {
        let r = post(
            url,
            &[("content-type", content_type)],
            body,
            SITEVERIFY_TIMEOUT_MS,
        )
        .await;
        r.map_err(|e| match e {
            PostFailed::Build(m) | PostFailed::Send(m) | PostFailed::Read(m) => m,
            PostFailed::Timeout(ms) => format!("no answer within {ms} ms"),
        })
    }

    /// `crypto.randomUUID()`.
    fn idempotency_key(&self) -> String {
        let uuid = || -> Option<String> {
            let crypto = js_sys::Reflect::get(&js_sys::global(), &"crypto".into()).ok()?;
            let f = js_sys::Reflect::get(&crypto, &"randomUUID".into()).ok()?;
            let f: js_sys::Function = wasm_bindgen::JsCast::dyn_into(f).ok()?;
            f.call0(&crypto).ok()?.as_string()
        };
        uuid().unwrap_or_else(|| {
            let r = || (js_sys::Math::random() * 4_294_967_296.0) as u32;
            format!(
                "{:08x}-{:04x}-4{:03x}-a{:03x}-{:08x}{:04x}",
                r(),
                r() & 0xffff,
                r() & 0xfff,
                r() & 0xfff,
                r(),
                r() & 0xffff
            )
        })
    }
}

/// Worker TCP sockets for the RESP transport.
struct SocketConnector;

impl Connector for SocketConnector {
    type Stream = Socket;

    async fn connect(&self, host: &str, port: u16, tls: bool) -> std::io::Result<Socket> {
        let transport = if tls {
            SecureTransport::On
        } else {
            SecureTransport::Off
        };
        let socket = ConnectionBuilder::new()
            .secure_transport(transport)
            .connect(host, port)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        socket
            .opened()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(socket)
    }

    fn sleep(&self, ms: u64) -> impl std::future::Future<Output = ()> {
        Delay::from(Duration::from_millis(ms))
    }
}

/// The JSON command API over `fetch`.
struct HttpOrigin(HttpConfig);

impl Origin for HttpOrigin {
    async fn call(&self, cmd: &Cmd) -> std::result::Result<Value, OriginError> {
        let r = self.0.request(cmd);
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, text) = post(&r.url, &headers, r.body, self.0.timeout_ms)
            .await
            .map_err(|e| match e {
                PostFailed::Build(m) => OriginError::not_sent("request").caused_by_msg(m),
                PostFailed::Send(m) => OriginError::may_have_run("fetch").caused_by_msg(m),
                PostFailed::Read(m) => {
                    OriginError::may_have_run("reading the reply").caused_by_msg(m)
                }
                PostFailed::Timeout(ms) => {
                    OriginError::may_have_run(format!("no reply within {ms} ms"))
                }
            })?;
        decode_response(self.0.dialect, status, &text)
    }

    fn sleep(&self, ms: u64) -> impl std::future::Future<Output = ()> {
        Delay::from(Duration::from_millis(ms))
    }

    fn replica_acks(&self) -> Option<Acks> {
        self.0.acks
    }
}

/// The configured transport, built per request (Workers I/O objects cannot outlive one).
enum AnyOrigin {
    Resp(RespOrigin<SocketConnector>),
    Http(HttpOrigin),
}

impl AnyOrigin {
    fn new(c: &OriginConfig) -> AnyOrigin {
        match c {
            OriginConfig::Resp(r) => AnyOrigin::Resp(RespOrigin::new(
                SocketConnector,
                r.clone(),
                SLOTS.with(|s| s.clone()),
            )),
            OriginConfig::Http(h) => AnyOrigin::Http(HttpOrigin(h.clone())),
        }
    }
}

impl Origin for AnyOrigin {
    async fn call(&self, cmd: &Cmd) -> std::result::Result<Value, OriginError> {
        match self {
            AnyOrigin::Resp(o) => o.call(cmd).await,
            AnyOrigin::Http(o) => o.call(cmd).await,
        }
    }

    fn replica_acks(&self) -> Option<Acks> {
        match self {
            AnyOrigin::Resp(o) => o.replica_acks(),
            AnyOrigin::Http(o) => o.replica_acks(),
        }
    }

    async fn call_then_wait(
        &self,
        cmd: &Cmd,
        acks: Acks,
    ) -> std::result::Result<(Value, u32), OriginError> {
        match self {
            AnyOrigin::Resp(o) => o.call_then_wait(cmd, acks).await,
            AnyOrigin::Http(o) => o.call_then_wait(cmd, acks).await,
        }
    }

    fn sleep(&self, ms: u64) -> impl std::future::Future<Output = ()> {
        Delay::from(Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::query_of;

    #[test]
    fn the_query_is_what_url_would_say() {
        for (url, query) in [
            (
                "https://shop.example/api/events/e/live?minutes=5",
                Some("minutes=5"),
            ),
            (
                "https://shop.example/api/x?a=1&b=/c?d#frag?x",
                Some("a=1&b=/c?d"),
            ),
            ("https://shop.example/api/x?", Some("")),
            ("https://shop.example/api/x", None),
            ("https://shop.example/api/x#f?g", None),
        ] {
            assert_eq!(query_of(url), query, "{url}");
        }
    }
}
