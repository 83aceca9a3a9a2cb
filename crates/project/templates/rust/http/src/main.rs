//! Serves the function in `handler.rs` over HTTP on `$PORT` (see `http.rs`).

mod handler;
mod http;

fn main() -> std::io::Result<()> {
    http::serve(env!("CARGO_PKG_NAME"), handler::handle)
}
