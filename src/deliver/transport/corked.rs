//! A socket that sends a message's body and its final dot in one segment.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that holds what is written until the other side must answer.
///
/// lettre writes the message body and the final `.` as two writes; each would be its own
/// segment (and the relay's own read). SMTP always reads the reply to what it wrote, so the
/// buffered bytes go out, in one `send`, when lettre next reads, or when it closes.
#[derive(Debug)]
pub(super) struct Corked {
    tcp: TcpStream,
    out: Vec<u8>,
    /// How much of `out` is already on the socket.
    sent: usize,
}

/// Buffered bytes beyond this are written at once, without waiting for a read.
const CORK_LIMIT: usize = 256 * 1024;

impl Corked {
    pub(super) fn new(tcp: TcpStream) -> Corked {
        Corked {
            tcp,
            out: Vec::new(),
            sent: 0,
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Corked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Corked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= CORK_LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Deliberately lazy: the bytes leave with the next read (see the type's note).
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

impl lettre::transport::smtp::client::AsyncTokioStream for Corked {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.tcp.peer_addr()
    }
}
