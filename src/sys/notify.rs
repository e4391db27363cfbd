//! systemd's readiness protocol (`sd_notify(3)`), without libsystemd: one datagram with
//! `READY=1` or `STOPPING=1` to the Unix socket named by `$NOTIFY_SOCKET`, which is a path or,
//! with a leading `@`, an abstract socket name. Outside systemd the variable is unset and
//! every call does nothing.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to the service manager named by
/// `$NOTIFY_SOCKET`. Returns `Ok(false)` when the variable is unset or empty (not started by
/// systemd with `Type=notify`), `Ok(true)` when the datagram was sent.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let target = target.to_string_lossy().into_owned();
    if target.is_empty() {
        return Ok(false);
    }
    send(&target, state)?;
    Ok(true)
}

/// Sends one datagram to `target`: a filesystem path, or `@name` for an abstract socket.
fn send(target: &str, state: &str) -> io::Result<()> {
    let addr = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(target)?,
    };
    let sock = UnixDatagram::unbound()?;
    let n = sock.send_to_addr(state.as_bytes(), &addr)?;
    if n != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short notify datagram",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_abstract_sockets_receive_the_state() {
        let dir = std::env::temp_dir().join(format!("tapvs-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let rx = UnixDatagram::bind(&dir).unwrap();
        send(dir.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_file(&dir).unwrap();

        let name = format!("tapvs-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn missing_socket_is_an_error() {
        assert!(send("/nonexistent/tapvs-notify.sock", "READY=1").is_err());
    }
}
