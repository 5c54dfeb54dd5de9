//! `flashgate load`: a flash-crowd load generator (filled in by the load-tool work).

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {}

pub async fn main(_args: LoadArgs, _origin: &str, _password: Option<String>) -> Result<(), String> {
    Err("flashgate load is not built yet".into())
}
