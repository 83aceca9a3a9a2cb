//! Serves the function in `handler.rs` on `$PORT`: CloudEvents in and out (see
//! `cloudevent.rs` and `http.rs`).

mod cloudevent;
mod handler;
mod http;

fn main() -> std::io::Result<()> {
    http::serve(env!("CARGO_PKG_NAME"), |request| {
        cloudevent::serve(request, handler::handle)
    })
}
