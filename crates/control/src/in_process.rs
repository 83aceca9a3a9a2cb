//! Instances that serve in process ([`serval_runtime::Endpoint::InProcess`]) as the gateway
//! calls them: the runtime's whole-body handler behind the gateway's streaming one.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use serval_gateway::{GatewayBody, GatewayError, InstanceAddr, InstanceHandler, ProxyBody};
use serval_runtime::{Endpoint, InProcessHandler};

/// The largest request body an in-process instance is handed (read whole first).
const MAX_BODY: usize = 10 * 1024 * 1024;

/// Where the gateway finds an instance: its socket, or its handler behind the adapter.
pub fn instance_addr(endpoint: &Endpoint) -> InstanceAddr {
    match endpoint {
        Endpoint::Socket(addr) => InstanceAddr::Socket(*addr),
        Endpoint::InProcess(handler) => InstanceAddr::InProcess(Arc::new(WholeBodies(handler.clone()))),
    }
}

/// Reads the request body whole (bounded), calls the runtime's handler, answers its body.
struct WholeBodies(Arc<dyn InProcessHandler>);

impl InstanceHandler for WholeBodies {
    fn call(
        &self,
        req: http::Request<ProxyBody>,
    ) -> BoxFuture<'static, Result<http::Response<GatewayBody>, GatewayError>> {
        let handler = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| GatewayError::BadRequest(format!("request body: {e} (limit {MAX_BODY} bytes)")))?
                .to_bytes();
            let answer = handler.call(http::Request::from_parts(parts, body)).await;
            Ok(answer.map(|body: Bytes| Full::new(body).map_err(|never| match never {}).boxed()))
        })
    }
}
