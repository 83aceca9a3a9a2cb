//! The function: serval calls `handle` with every HTTP request.

use crate::http::{Request, Response};

/// Answers a request: `request` has `method`, `path`, `query`, `headers` (lower-case
/// names; `header(name)`), `body`, and `query_param(name)`.
pub fn handle(request: &Request) -> Response {
    if request.method == "POST" {
        return Response::new(200)
            .header(
                "content-type",
                request
                    .header("content-type")
                    .unwrap_or("application/octet-stream"),
            )
            .body(request.body.clone());
    }
    let name = request
        .query_param("name")
        .unwrap_or_else(|| "World".to_string());
    Response::text(200, format!("Hello, {name}!\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_name() {
        let response = handle(&Request::new("GET", "/?name=serval"));
        assert_eq!(response.status, 200);
        assert_eq!(response.body_text(), "Hello, serval!\n");
    }

    #[test]
    fn greets_the_world_without_a_name() {
        assert_eq!(
            handle(&Request::new("GET", "/")).body_text(),
            "Hello, World!\n"
        );
    }

    #[test]
    fn echoes_a_post() {
        let mut request = Request::new("POST", "/");
        request.body = b"hi".to_vec();
        assert_eq!(handle(&request).body, b"hi");
    }
}
