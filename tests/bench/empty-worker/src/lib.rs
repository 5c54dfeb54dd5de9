//! The empty worker: `{"ok":true}` with status 200 for every request, nothing else.
//!
//! With the var `LOG=1` it also writes one `console.log` line per request, the size of the
//! decision line flashgate logs for every purchase attempt, so the benchmark can show what that
//! line alone costs on the same workerd.

use worker::*;

#[event(fetch)]
async fn fetch(_req: Request, env: Env, _ctx: Context) -> Result<Response> {
    if env.var("LOG").is_ok_and(|v| v.to_string() == "1") {
        console_log!(r#"{{"msg":"decision","event":"bench-ns","user":"load-123","code":"not_started","edge":true,"status":409}}"#);
    }
    let mut resp = Response::from_bytes(br#"{"ok":true}"#.to_vec())?;
    resp.headers_mut().set("content-type", "application/json")?;
    Ok(resp)
}
