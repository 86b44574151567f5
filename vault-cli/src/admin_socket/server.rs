//! The server side: a Unix socket only the vault's owner can connect to, a thread per connection
//! (at most [`MAX_CONCURRENT`] at once; further connections wait in the accept queue).
//!
//! Who may connect: std has no stable way to read a peer's uid (`UnixStream::peer_cred` is
//! unstable) and this crate forbids `unsafe`, so the control is the file system: the socket is
//! created inside a fresh private directory (0700), set to 0600 there, and only then renamed into
//! place, so at no moment can another user (root aside) connect to it.

use std::fmt;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vault_core::Vault;

use super::protocol::{self, FrameError, MAX_REQUEST};
use super::{run_forwarded, Request, ServerContext};

/// How many forwarded commands run at once.
pub const MAX_CONCURRENT: usize = 4;

/// How long a client may take to send its request, and to take the reply.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the accept loop looks at the shutdown flag (the listener is non-blocking, so that
/// `Drop` never waits on an `accept` nothing will wake).
const POLL: Duration = Duration::from_millis(25);

/// Why [`AdminSocket::bind`] failed.
#[derive(Debug)]
pub enum BindError {
    /// A server already answers on this socket.
    Live {
        /// The socket.
        path: PathBuf,
    },
    /// Something other than a socket is at the path; it is left alone.
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A file-system or socket operation failed.
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::Live { path } => write!(
                f,
                "another server answers on the admin socket {}",
                path.display()
            ),
            BindError::NotASocket { path } => write!(
                f,
                "{} exists and is not a socket; move it away or choose another --admin-socket",
                path.display()
            ),
            BindError::Io { what, path, source } => {
                write!(f, "{what} {}: {}", path.display(), source.kind())
            }
        }
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BindError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BindError + 'a {
    move |source| BindError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The number of connections being served, and a signal when one ends.
type Slots = Arc<(Mutex<usize>, Condvar)>;

/// A listening admin socket. Dropping it stops accepting, waits for the commands running, and
/// removes the socket file.
pub struct AdminSocket {
    path: PathBuf,
    /// The socket file's (device, inode): `Drop` removes the file only if it is still this one.
    id: (u64, u64),
    shutdown: Arc<AtomicBool>,
    slots: Slots,
    accept: Option<JoinHandle<()>>,
}

impl AdminSocket {
    /// Listens on `path` for commands forwarded to `vault` (`ctx`: how the server names it).
    /// Refuses when a server already answers there; replaces a stale socket nobody answers on.
    pub fn bind(
        path: &Path,
        vault: Arc<Vault>,
        ctx: ServerContext,
    ) -> Result<AdminSocket, BindError> {
        clear_stale(path)?;
        let listener = bind_private(path)?;
        listener
            .set_nonblocking(true)
            .map_err(io("cannot configure the admin socket", path))?;
        let meta = std::fs::metadata(path).map_err(io("cannot read the admin socket", path))?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let slots: Slots = Arc::new((Mutex::new(0), Condvar::new()));
        let accept = {
            let (shutdown, slots) = (shutdown.clone(), slots.clone());
            std::thread::Builder::new()
                .name("kluis-admin-socket".into())
                .spawn(move || accept_loop(&listener, &vault, &ctx, &shutdown, &slots))
                .map_err(io("cannot start the admin socket's thread for", path))?
        };
        Ok(AdminSocket {
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
            shutdown,
            slots,
            accept: Some(accept),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes a socket at `path` nobody answers on; refuses a live one and anything not a socket.
fn clear_stale(path: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        r => r.map_err(io("cannot inspect", path))?,
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(BindError::Live {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(io("cannot remove the stale admin socket", path))
        }
        Err(e) => Err(io("cannot check the admin socket", path)(e)),
    }
}

/// Binds in a fresh 0700 directory beside `path`, sets 0600, then renames into place: the socket
/// is never reachable by another user, with no umask change (process-wide, and `unsafe`).
fn bind_private(path: &Path) -> Result<UnixListener, BindError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // tempfile creates the directory with mode 0700.
    let dir = tempfile::Builder::new()
        .prefix(".kluis-admin-")
        .tempdir_in(parent)
        .map_err(io("cannot create a private directory in", parent))?;
    let tmp = dir.path().join("admin.sock");
    let listener = UnixListener::bind(&tmp).map_err(io("cannot bind the admin socket", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(io("cannot restrict the admin socket", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("cannot move the admin socket to", path))?;
    Ok(listener)
}

fn accept_loop(
    listener: &UnixListener,
    vault: &Arc<Vault>,
    ctx: &ServerContext,
    shutdown: &AtomicBool,
    slots: &Slots,
) {
    while !shutdown.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _)) => {
                if !take_slot(slots, shutdown) {
                    return;
                }
                let (vault, ctx, slot) = (vault.clone(), ctx.clone(), Slot(slots.clone()));
                let spawned = std::thread::Builder::new()
                    .name("kluis-admin-command".into())
                    .spawn(move || {
                        let _slot = slot;
                        serve(stream, vault, &ctx);
                    });
                // A thread that could not start drops its closure, and with it the slot.
                drop(spawned);
            }
            // Nothing pending (or a transient failure such as too many open files): look again
            // shortly.
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Waits for a free slot and takes it; `false` if the socket is shutting down meanwhile.
fn take_slot(slots: &Slots, shutdown: &AtomicBool) -> bool {
    let (count, freed) = &**slots;
    let mut n = count
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    while *n >= MAX_CONCURRENT {
        if shutdown.load(Ordering::Acquire) {
            return false;
        }
        n = freed
            .wait_timeout(n, POLL)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
    *n += 1;
    true
}

fn release_slot(slots: &Slots) {
    let (count, freed) = &**slots;
    let mut n = count
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *n = n.saturating_sub(1);
    freed.notify_all();
}

/// Gives its slot back when the connection's thread ends, however it ends.
struct Slot(Slots);

impl Drop for Slot {
    fn drop(&mut self) {
        release_slot(&self.0);
    }
}

/// Serves one connection: one request, one reply.
fn serve(mut stream: UnixStream, vault: Arc<Vault>, ctx: &ServerContext) {
    // Accepted sockets are blocking on Linux, but that is not promised everywhere.
    let configured = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
    if configured.is_err() {
        return;
    }
    let reply = match protocol::read_frame(&mut stream, MAX_REQUEST) {
        Ok(body) => match Request::decode(&body) {
            Some(req) => run_forwarded(vault, ctx, req).encode(),
            None => protocol::encode_error("the request is not a kluis admin request").into(),
        },
        Err(FrameError::TooLarge(n)) => protocol::encode_error(&format!(
            "the request is {n} bytes; the limit is {MAX_REQUEST}"
        ))
        .into(),
        // The client went away or was too slow: nobody to answer.
        Err(FrameError::Io(_)) => return,
    };
    let _ = protocol::write_frame(&mut stream, &reply);
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Release);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        // Let running commands finish: the caller may want the vault to itself next.
        let (count, freed) = &*self.slots;
        let mut n = count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *n > 0 {
            n = freed
                .wait(n)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        drop(n);
        // Only our own socket: another server may have replaced a file it found stale.
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}
