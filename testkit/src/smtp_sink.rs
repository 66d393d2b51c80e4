//! A tiny in-process SMTP server for the integration tests and the pipeline benchmark.
//!
//! `SmtpSink` binds `127.0.0.1:0`, speaks just enough plain ESMTP for lettre
//! (PIPELINING like Postfix, no STARTTLS, no AUTH), records every command line,
//! which commands arrived grouped, and every accepted message, and can inject
//! faults (rejected recipients, rejected DATA, dropped connections, refused
//! greetings, no PIPELINING). The server runs in tokio tasks that are aborted
//! when the sink is dropped.
//!
//! The pipeline benchmark uses it as its built-in sink, started with
//! [`SmtpSink::start_counting`]: a million messages kept in memory would be gigabytes, so that
//! mode counts messages and bytes and keeps neither them nor the command lines.
//!
//! A relay that is down, then back on the same address: [`ClosedPort`] holds a port bound and
//! not listening (connections refused, and no other process can take it), then hands it over to
//! a sink with [`ClosedPort::open`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A message accepted by the sink (250 after DATA).
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Message content as received (CRLF preserved), dot-stuffing undone, terminator removed.
    pub data: Vec<u8>,
    /// 1-based id of the TCP connection that delivered the message.
    pub connection: u64,
    /// When the message was accepted.
    pub at: std::time::Instant,
}

impl Received {
    /// The message content as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// First top-level header called `name` (case-insensitive), unfolded and trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                break; // end of the top-level header block
            }
            if line.starts_with([' ', '\t']) {
                if let Some((_, v)) = headers.last_mut() {
                    *v = format!("{} {}", v.trim_end(), line.trim());
                }
            } else if let Some((n, v)) = line.split_once(':') {
                headers.push((n.trim().to_string(), v.to_string()));
            }
        }
        headers
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    }
}

/// Faults the sink can inject.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Reply `code text` to RCPT TO for this recipient address (e.g. 550 "5.1.1 no such user", 451 "4.3.0 try later").
    RejectRcpt {
        address: String,
        code: u16,
        text: String,
    },
    /// Reply `code text` to RCPT TO for every address of this domain, the first `times` times
    /// (counted across connections): a mailbox provider asking to slow down (`421 4.7.28`).
    DeferDomain {
        domain: String,
        code: u16,
        text: String,
        times: u32,
    },
    /// Reply `code text` after the DATA terminator for messages whose RCPT includes this address.
    RejectData {
        address: String,
        code: u16,
        text: String,
    },
    /// Close the TCP connection abruptly (no reply) when MAIL FROM is received, for the first `times` messages (counted across connections).
    DropOnMail { times: u32 },
    /// Reply 421 at greeting and close, for the first `times` connections.
    RefuseGreeting { times: u32 },
    /// Wait this long after the DATA terminator before accepting (a slow relay).
    SlowData { millis: u64 },
    /// Do not offer PIPELINING in the EHLO reply (an older relay).
    NoPipelining,
    /// Offer DSN (RFC 3461) in the EHLO reply; MAIL FROM's parameters are in [`SmtpSink::commands`].
    OfferDsn,
    /// Greet every connection with `code text` and close (a relay that blocks us).
    Greet { code: u16, text: String },
    /// Offer AUTH PLAIN and LOGIN, and answer every AUTH with `code text` (235 accepts).
    Auth { code: u16, text: String },
    /// Reply `code text` to every MAIL FROM.
    RejectMail { code: u16, text: String },
    /// Reply `code text` after the DATA terminator of every message.
    RejectAllData { code: u16, text: String },
    /// Offer STARTTLS, then answer it with bytes that are not TLS (a broken TLS setup).
    OfferStartTls,
    /// Close the connection in the middle of the body of the first `times` messages.
    DropInData { times: u32 },
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    connections: u64,
    commands: Vec<String>,
    /// Commands read while the client's next command was already there (pipelined).
    grouped: Vec<String>,
    drops_left: u32,
    refusals_left: u32,
    data_drops_left: u32,
    defers_left: u32,
    /// Messages accepted (in both modes).
    queued: u64,
    /// Content bytes of the accepted messages, as in [`Received::data`] (in both modes).
    bytes: u64,
}

struct Shared {
    state: Mutex<State>,
    faults: Vec<Fault>,
    /// Counting mode: accepted messages are counted, not kept; commands are not recorded.
    counting: bool,
}

/// The SMTP test server; serves until dropped.
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl SmtpSink {
    /// Binds 127.0.0.1:0 and serves in a tokio task until dropped.
    pub async fn start() -> SmtpSink {
        Self::start_with(Vec::new()).await
    }

    pub async fn start_with(faults: Vec<Fault>) -> SmtpSink {
        Self::serve_on(faults, false).await
    }

    /// A sink for benchmarks: no faults, and memory that does not grow with the messages.
    /// Only [`SmtpSink::accepted`], [`SmtpSink::accepted_bytes`] and [`SmtpSink::connections`]
    /// say what arrived; `received`, `commands` and `grouped` stay empty. Replies go out
    /// without Nagle's delay (`TCP_NODELAY`), as pipelined replies would otherwise wait for
    /// the client's delayed ACK.
    pub async fn start_counting() -> SmtpSink {
        Self::serve_on(Vec::new(), true).await
    }

    async fn serve_on(faults: Vec<Fault>, counting: bool) -> SmtpSink {
        let mut state = State::default();
        for f in &faults {
            match f {
                Fault::DropOnMail { times } => state.drops_left += times,
                Fault::RefuseGreeting { times } => state.refusals_left += times,
                Fault::DropInData { times } => state.data_drops_left += times,
                Fault::DeferDomain { times, .. } => state.defers_left += times,
                _ => {}
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind smtp sink");
        Self::serve_with(listener, state, faults, counting)
    }

    fn serve_with(
        listener: TcpListener,
        state: State,
        faults: Vec<Fault>,
        counting: bool,
    ) -> SmtpSink {
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            faults,
            counting,
        });
        let addr = listener.local_addr().expect("smtp sink local addr");
        let server = shared.clone();
        let task = tokio::spawn(async move {
            // Connection tasks live in the JoinSet: aborting this task aborts them too.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let id = {
                            let mut st = server.state.lock().unwrap();
                            st.connections += 1;
                            st.connections
                        };
                        conns.spawn(serve(stream, id, server.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        SmtpSink { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.addr.port())
    }

    /// Accepted messages only (250 after DATA), in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.state.lock().unwrap().received.clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.state.lock().unwrap().connections
    }

    /// Every command line received: upper-cased verb + rest as sent.
    pub fn commands(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().commands.clone()
    }

    /// Commands (verbs) that arrived with another command already behind them: the client sent
    /// them without waiting for their reply.
    pub fn grouped(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().grouped.clone()
    }

    /// Messages accepted so far (250 after DATA), in either mode.
    pub fn accepted(&self) -> u64 {
        self.shared.state.lock().unwrap().queued
    }

    /// Content bytes of the messages accepted so far (dot-stuffing undone), in either mode.
    pub fn accepted_bytes(&self) -> u64 {
        self.shared.state.lock().unwrap().bytes
    }

    /// How many messages were accepted so far (without copying them).
    pub fn count(&self) -> usize {
        self.accepted() as usize
    }

    /// Waits (polling every 20 ms) until at least `n` messages were received or `timeout` elapses.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Count without copying: the messages can be many and large.
            let count = self.shared.state.lock().unwrap().received.len();
            if count >= n || tokio::time::Instant::now() >= deadline {
                return self.received();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port on 127.0.0.1 bound and not listening: connections to it are refused, as to a relay
/// that is down, and no other process can take it meanwhile.
pub struct ClosedPort {
    socket: TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    pub fn bind() -> ClosedPort {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind a port");
        let addr = socket.local_addr().expect("the bound port");
        ClosedPort { socket, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The relay comes back: a sink listening on this very port (must be called in a runtime).
    pub fn open(self) -> SmtpSink {
        let listener = self.socket.listen(1024).expect("listen on the held port");
        SmtpSink::serve_with(listener, State::default(), Vec::new(), false)
    }
}

/// Extracts the address of `FROM:<x>` / `TO:<x> PARAMS`.
fn path_arg(rest: &str) -> String {
    let after = rest.split_once(':').map(|(_, a)| a).unwrap_or(rest).trim();
    match (after.find('<'), after.find('>')) {
        (Some(a), Some(b)) if a < b => after[a + 1..b].to_string(),
        _ => after.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// Decrements a fault budget; true if it was still positive.
fn take_one(left: &mut u32) -> bool {
    let hit = *left > 0;
    *left = left.saturating_sub(1);
    hit
}

async fn serve(stream: TcpStream, id: u64, shared: Arc<Shared>) {
    // Replies go out at once, as a relay's do: with Nagle on, the replies to a pipelined group
    // wait for the client's delayed ACK, tens of milliseconds per message.
    let _ = stream.set_nodelay(true);
    let _ = session(stream, id, &shared).await;
}

async fn session(stream: TcpStream, id: u64, shared: &Shared) -> std::io::Result<()> {
    if shared.counting {
        stream.set_nodelay(true)?;
    }
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let refuse = take_one(&mut shared.state.lock().unwrap().refusals_left);
    if refuse {
        wr.write_all(b"421 4.3.2 sink not available\r\n").await?;
        return wr.shutdown().await;
    }
    let greet = shared.faults.iter().find_map(|f| match f {
        Fault::Greet { code, text } => Some(format!("{code} {text}\r\n")),
        _ => None,
    });
    if let Some(reply) = greet {
        wr.write_all(reply.as_bytes()).await?;
        return wr.shutdown().await;
    }
    wr.write_all(b"220 sink ESMTP\r\n").await?;
    let has = |wanted: fn(&Fault) -> bool| shared.faults.iter().any(wanted);
    let with_reply = |pick: fn(&Fault) -> Option<(u16, &String)>| {
        shared
            .faults
            .iter()
            .find_map(pick)
            .map(|(code, text)| format!("{code} {text}\r\n"))
    };

    let mut mail_from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if rd.read_until(b'\n', &mut buf).await? == 0 {
            return Ok(());
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\r', '\n']);
        let (verb, rest) = match line.split_once(' ') {
            Some((v, r)) => (v.to_ascii_uppercase(), r.to_string()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        if !shared.counting {
            let recorded = if rest.is_empty() {
                verb.clone()
            } else {
                format!("{verb} {rest}")
            };
            let mut st = shared.state.lock().unwrap();
            st.commands.push(recorded);
            if !rd.buffer().is_empty() {
                st.grouped.push(verb.clone());
            }
        }

        let reply: String = match verb.as_str() {
            "EHLO" => {
                let mut lines = vec!["sink"];
                if !has(|f| matches!(f, Fault::NoPipelining)) {
                    lines.push("PIPELINING");
                }
                if has(|f| matches!(f, Fault::OfferDsn)) {
                    lines.push("DSN");
                }
                if has(|f| matches!(f, Fault::Auth { .. })) {
                    lines.push("AUTH PLAIN LOGIN");
                }
                if has(|f| matches!(f, Fault::OfferStartTls)) {
                    lines.push("STARTTLS");
                }
                lines.push("8BITMIME");
                let last = lines.len() - 1;
                lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
                    .collect()
            }
            "AUTH" => with_reply(|f| match f {
                Fault::Auth { code, text } => Some((*code, text)),
                _ => None,
            })
            .unwrap_or_else(|| "503 5.5.1 AUTH not offered\r\n".into()),
            "STARTTLS" if has(|f| matches!(f, Fault::OfferStartTls)) => {
                wr.write_all(b"220 2.0.0 ready to start TLS\r\nthis is not TLS\r\n")
                    .await?;
                return wr.shutdown().await;
            }
            "HELO" => "250 sink\r\n".into(),
            "NOOP" => "250 2.0.0 OK\r\n".into(),
            "RSET" => {
                mail_from = None;
                rcpts.clear();
                "250 2.0.0 OK\r\n".into()
            }
            "QUIT" => {
                wr.write_all(b"221 2.0.0 bye\r\n").await?;
                return wr.shutdown().await;
            }
            "MAIL" => {
                let drop_it = take_one(&mut shared.state.lock().unwrap().drops_left);
                if drop_it {
                    return Ok(()); // dropping both halves closes the socket without a reply
                }
                let refused = with_reply(|f| match f {
                    Fault::RejectMail { code, text } => Some((*code, text)),
                    _ => None,
                });
                if let Some(reply) = refused {
                    wr.write_all(reply.as_bytes()).await?;
                    continue;
                }
                mail_from = Some(path_arg(&rest));
                rcpts.clear();
                "250 2.1.0 OK\r\n".into()
            }
            "RCPT" if mail_from.is_none() => "503 5.5.1 need MAIL first\r\n".into(),
            "RCPT" => {
                let addr = path_arg(&rest);
                let fault = shared.faults.iter().find_map(|f| match f {
                    Fault::RejectRcpt {
                        address,
                        code,
                        text,
                    } if address.eq_ignore_ascii_case(&addr) => Some(format!("{code} {text}\r\n")),
                    Fault::DeferDomain {
                        domain, code, text, ..
                    } if addr
                        .rsplit_once('@')
                        .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
                        && take_one(&mut shared.state.lock().unwrap().defers_left) =>
                    {
                        Some(format!("{code} {text}\r\n"))
                    }
                    _ => None,
                });
                fault.unwrap_or_else(|| {
                    rcpts.push(addr);
                    "250 2.1.5 OK\r\n".into()
                })
            }
            "DATA" if mail_from.is_none() || rcpts.is_empty() => {
                "503 5.5.1 need RCPT first\r\n".into()
            }
            "DATA" => {
                wr.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let drop_in_data = take_one(&mut shared.state.lock().unwrap().data_drops_left);
                let mut data = Vec::new();
                let mut size = 0;
                loop {
                    buf.clear();
                    if rd.read_until(b'\n', &mut buf).await? == 0 {
                        return Ok(()); // connection lost mid-DATA: message not accepted
                    }
                    if drop_in_data {
                        return Ok(()); // we hang up in the middle of the body
                    }
                    let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
                    let body = body.strip_suffix(b"\r").unwrap_or(body);
                    if body == b"." {
                        break;
                    }
                    let unstuffed = if buf.starts_with(b"..") {
                        &buf[1..]
                    } else {
                        &buf[..]
                    };
                    size += unstuffed.len() as u64;
                    if !shared.counting {
                        data.extend_from_slice(unstuffed);
                    }
                }
                let fault = shared
                    .faults
                    .iter()
                    .find_map(|f| match f {
                        Fault::RejectData {
                            address,
                            code,
                            text,
                        } if rcpts.iter().any(|r| r.eq_ignore_ascii_case(address)) => {
                            Some(format!("{code} {text}\r\n"))
                        }
                        _ => None,
                    })
                    .or_else(|| {
                        with_reply(|f| match f {
                            Fault::RejectAllData { code, text } => Some((*code, text)),
                            _ => None,
                        })
                    });
                let delay = shared.faults.iter().find_map(|f| match f {
                    Fault::SlowData { millis } => Some(*millis),
                    _ => None,
                });
                if let Some(millis) = delay {
                    tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
                }
                let from = mail_from.take().unwrap_or_default();
                let to = std::mem::take(&mut rcpts);
                match fault {
                    Some(reply) => reply,
                    None => {
                        let mut st = shared.state.lock().unwrap();
                        st.queued += 1;
                        st.bytes += size;
                        let n = st.queued;
                        if !shared.counting {
                            st.received.push(Received {
                                mail_from: from,
                                rcpt_to: to,
                                data,
                                connection: id,
                                at: std::time::Instant::now(),
                            });
                        }
                        format!("250 2.0.0 queued as {n}\r\n")
                    }
                }
            }
            _ => "502 5.5.2 command not recognized\r\n".into(),
        };
        wr.write_all(reply.as_bytes()).await?;
    }
}

/// How many different Message-IDs the received emails carry (duplicates share one).
pub fn distinct_message_ids(received: &[Received]) -> usize {
    let mut ids: Vec<String> = received
        .iter()
        .map(|r| r.header("Message-ID").unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    ids.len()
}
