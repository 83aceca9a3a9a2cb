//! The gateway's listeners and accept loops: one thread per core, each with its own
//! listener, runtime and connections to instances. Every client connection starts on the
//! HTTP/1.1 relay ([`crate::relay`]) and goes over to the hyper path ([`crate::proxy`])
//! when a request needs it; the two paths never call each other.

use std::sync::Arc;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::listen::{ConnectionCap, ConnectionLimits};
use crate::proxy::{self, HyperUpstreams};
use crate::relay::{self, InstanceConns};
use crate::router::Gateway;

/// Binds the gateway's listening socket with `SO_REUSEPORT`, so that [`serve`] can give each
/// gateway thread a listener of its own on the same port and the kernel spreads new
/// connections evenly over the threads. (Threads sharing one listener race for accepts:
/// the first to wake takes a whole burst of connections and leaves the others idle.)
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves the gateway on `threads` threads, each with its own single-threaded runtime, its
/// own accept loop and its own connections to instances: a proxied request is read,
/// forwarded and answered on one thread, with no cross-thread hand-offs (the layout nginx
/// uses). Each thread but the first listens on a socket of its own bound to the same
/// address when `listener` came from [`bind`]; otherwise the threads share `listener`.
/// Returns once `shutdown` resolved and open connections finished their requests (at most
/// 10 s).
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    threads: usize,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let addr = listener.local_addr();
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("gateway listener unusable: {e}");
            return;
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // One cap for the listener, whichever thread accepts.
    let cap = ConnectionCap::new(&limits);
    let mut workers = Vec::new();
    for n in 0..threads.max(1) {
        let (shared, gateway, stop, cap) = match listener.try_clone() {
            Ok(l) => (l, gateway.clone(), stop_rx.clone(), cap.clone()),
            Err(e) => {
                tracing::error!("gateway listener cannot be shared: {e}");
                break;
            }
        };
        let own_address = addr.as_ref().ok().copied().filter(|_| n > 0);
        let spawned = std::thread::Builder::new().name(format!("serval-gateway-{n}")).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return tracing::error!("gateway thread runtime: {e}"),
            };
            runtime.block_on(async move {
                let own = own_address.map(bind).transpose().unwrap_or_else(|e| {
                    tracing::debug!("gateway thread {n} shares the first listener: {e}");
                    None
                });
                let listener = match own {
                    Some(own) => {
                        drop(shared);
                        Ok(own)
                    }
                    None => TcpListener::from_std(shared),
                };
                match listener {
                    Ok(listener) => accept_loop(listener, gateway, cap, limits, stop).await,
                    Err(e) => tracing::error!("gateway listener: {e}"),
                }
            });
        });
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(e) => tracing::error!("gateway thread: {e}"),
        }
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
    })
    .await;
}

/// One thread's accept loop until `stop` turns true, then lets open connections (of every
/// thread) finish their requests (at most 10 s). Each connection starts on the HTTP/1.1 relay and goes
/// over to hyper (HTTP/1 and h2c) when a request needs it.
async fn accept_loop(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    cap: ConnectionCap,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    // Instance connections of the two paths: hyper's, and the relay's own.
    let upstreams = HyperUpstreams::default();
    let relay_conns = InstanceConns::default();
    // Every request arms a timer for its deadline (its revision's timeout). Tokio wakes its
    // own driver (an eventfd write and one more epoll round) whenever a new timer is due
    // before the driver's next planned wake-up; a heartbeat due within the second keeps
    // that wake-up near, so request deadlines (≥ 1 s away) are armed without a syscall.
    tokio::spawn(async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    });
    let hyper = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let connection_stop = stop.clone();
    loop {
        tokio::select! {
            (stream, peer, permit) = cap.accept(&listener, "gateway") => {
                let _ = stream.set_nodelay(true);
                let (gateway, upstreams, relay_conns) = (gateway.clone(), upstreams.clone(), relay_conns.clone());
                let (hyper, mut stop) = (hyper.clone(), connection_stop.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let forwarded_for = peer.ip().to_string();
                    let handed_off = relay::serve(&gateway, &relay_conns, stream, &forwarded_for, &limits, &mut stop).await;
                    if let Some(rest) = handed_off {
                        proxy::serve(rest, gateway, upstreams, &forwarded_for, &hyper, limits, stop).await;
                    }
                });
            }
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
    }
    // The permits count every connection of the listener, this thread's among them.
    cap.all_closed(std::time::Duration::from_secs(10)).await;
}
