//! Sockets: TCP (plain or TLS) and Unix listeners, each connection served by hyper's HTTP/1 with
//! a header-read deadline (slow clients), at most `max_connections` at once, and a graceful
//! stop that lets requests in flight finish.

mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};

use crate::config::{Limits, Listen, ServeError};

/// A bound listener.
pub(crate) enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Bound {
    /// Binds `at`. A Unix socket path that holds a dead socket is replaced; a live one refused.
    pub(crate) async fn bind(at: &Listen) -> Result<Bound, ServeError> {
        let err = |source| ServeError::Bind {
            at: at.to_string(),
            source,
        };
        match at {
            Listen::Tcp(a) => Ok(Bound::Tcp(TcpListener::bind(a).await.map_err(err)?)),
            Listen::Unix(p) => {
                remove_stale_socket(p).await.map_err(err)?;
                Ok(Bound::Unix(bind_unix(p).map_err(err)?, p.clone()))
            }
        }
    }

    /// Where it listens (the port chosen, for port 0).
    pub(crate) fn local(&self) -> Listen {
        match self {
            Bound::Tcp(l) => match l.local_addr() {
                Ok(a) => Listen::Tcp(a),
                Err(_) => Listen::Tcp(SocketAddr::from(([0, 0, 0, 0], 0))),
            },
            Bound::Unix(_, p) => Listen::Unix(p.clone()),
        }
    }
}

/// Binds a Unix socket at `p` with mode 0660 from its first moment: bound inside a fresh 0700
/// directory beside `p`, given its mode there, then renamed into place (a socket bound at `p`
/// directly would be open to the umask's mode until a `chmod`).
fn bind_unix(p: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // A name nobody can guess and a directory created new (fails if it exists).
    let mut nonce = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| std::io::Error::other("the OS random generator failed"))?;
    let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let private = parent.join(format!(".kluis-bind-{hex}"));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let tmp = private.join("s");
    let bound = UnixListener::bind(&tmp)
        .and_then(|l| set_mode(&tmp, 0o660).map(|()| l))
        .and_then(|l| std::fs::rename(&tmp, p).map(|()| l));
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// Removes a dead socket at `p`; refuses a live one, and anything that is not a socket (a
/// mistyped `--listen unix:` must never delete a file).
async fn remove_stale_socket(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = tokio::fs::symlink_metadata(p).await else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; refusing to replace it",
        ));
    }
    match tokio::net::UnixStream::connect(p).await {
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another server answers on this socket",
        )),
        // Only a socket nobody listens on is stale; anything else (another user's socket we
        // may not connect to) is left alone.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tokio::fs::remove_file(p).await
        }
        Err(e) => Err(e),
    }
}

fn inode(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).ok().map(|m| m.ino())
}

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

/// Serves `router` on every listener until `shutdown` resolves; then stops accepting, lets the
/// requests in flight finish (up to `limits.drain`), and returns.
pub(crate) async fn serve(
    listeners: Vec<Bound>,
    router: Router,
    tls: Option<Arc<tokio_rustls::TlsAcceptor>>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let conn = Conn {
        router,
        tls,
        header_timeout: limits.header_timeout,
        stop: stop_rx,
    };
    let sockets: Vec<(PathBuf, Option<u64>)> = listeners
        .iter()
        .filter_map(|l| match l {
            Bound::Unix(_, p) => Some((p.clone(), inode(p))),
            Bound::Tcp(_) => None,
        })
        .collect();
    let mut accepting = tokio::task::JoinSet::new();
    for l in listeners {
        accepting.spawn(accept_loop(l, conn.clone(), Arc::clone(&permits)));
    }
    shutdown.await;
    tracing::info!("stopping: no new connections; finishing requests in flight");
    let _ = stop_tx.send(true);
    accepting.abort_all();
    for (p, ino) in sockets {
        // Nobody can connect any more: the path would only mislead the next start's check.
        // Only our own socket: another server may have taken the path meanwhile.
        if ino.is_some() && inode(&p) == ino {
            let _ = tokio::fs::remove_file(&p).await;
        }
    }
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("stopping with requests still in flight after the drain time");
    }
}

/// What each connection needs.
#[derive(Clone)]
struct Conn {
    router: Router,
    tls: Option<Arc<tokio_rustls::TlsAcceptor>>,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
}

async fn accept_loop(l: Bound, conn: Conn, permits: Arc<Semaphore>) {
    loop {
        // Wait for a free slot before accepting: past the limit, clients queue in the backlog.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let c = conn.clone();
        match &l {
            Bound::Tcp(t) => match t.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        c.serve_tcp(s).await;
                        drop(permit);
                    });
                }
                Err(e) => accept_failed(&e).await,
            },
            Bound::Unix(u, _) => match u.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(async move {
                        c.serve_io(s).await;
                        drop(permit);
                    });
                }
                Err(e) => accept_failed(&e).await,
            },
        }
    }
}

/// Out of file descriptors and the like: say so, and back off instead of spinning.
async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

impl Conn {
    async fn serve_tcp(self, s: tokio::net::TcpStream) {
        let Some(tls) = self.tls.clone() else {
            return self.serve_io(s).await;
        };
        // A handshake gets the header deadline too: a client that opens and stalls is dropped.
        match tokio::time::timeout(self.header_timeout, tls.accept(s)).await {
            Ok(Ok(stream)) => self.serve_io(stream).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        }
    }

    async fn serve_io<S>(mut self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let svc = TowerToHyperService::new(self.router.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => log_conn_end(r),
            () = stopped(&mut self.stop) => {
                conn.as_mut().graceful_shutdown();
                log_conn_end(conn.await);
            }
        }
    }
}

/// Resolves once the server is stopping (or its stop signal is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

fn log_conn_end(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        // Clients that hang up or send garbage: not the server's problem, not worth a warning.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
