//! What a terminal child prints, made into text: ANSI escape sequences (CSI,
//! OSC and the other ESC sequences) removed and `\r\n` turned into `\n`
//! (also `\r\r\n`: a program that writes `\r\n` itself gets a second `\r`
//! from the terminal),
//! before framing, matching and events. The parsing is `vte`'s (the
//! terminal parser of alacritty): a sequence split across reads is still
//! one sequence.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read from the terminal per call.
const CHUNK: usize = 16 * 1024;
/// Bytes the parser may take without any text coming out before it is
/// reset: a stray `ESC ]` (in binary output, say) starts a string that only
/// BEL or `ESC \` ends, and would swallow everything after it.
const SILENT_LIMIT: usize = 64 * 1024;

/// Reads `inner` and yields its text without escape sequences.
pub(crate) struct Clean<R> {
    inner: R,
    parser: vte::Parser,
    text: Text,
    /// Raw bytes read from `inner`.
    raw: Box<[u8]>,
    /// How much of `text.out` was handed out already.
    pos: usize,
    eof: bool,
    /// Bytes parsed since the parser last produced text.
    silent: usize,
}

impl<R> Clean<R> {
    pub fn new(inner: R) -> Clean<R> {
        Clean {
            inner,
            parser: vte::Parser::new(),
            text: Text::default(),
            raw: vec![0; CHUNK].into_boxed_slice(),
            pos: 0,
            eof: false,
            silent: 0,
        }
    }
}

/// The printable side of the parser's output.
#[derive(Default)]
struct Text {
    out: Vec<u8>,
    /// `\r`s that wait to see whether `\n` follows.
    cr: usize,
}

impl Text {
    fn flush_cr(&mut self) {
        let n = std::mem::take(&mut self.cr);
        self.out.extend(std::iter::repeat_n(b'\r', n));
    }
}

impl vte::Perform for Text {
    fn print(&mut self, c: char) {
        self.flush_cr();
        let mut utf8 = [0; 4];
        self.out
            .extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' => {
                self.cr = 0; // `\r\n` is `\n`
                self.out.push(b'\n');
            }
            b'\r' => self.cr += 1,
            // C1 controls (0x80..=0x9F) come through as bytes; alone they
            // are not UTF-8, and no text needs them.
            0x80.. => {}
            _ => {
                self.flush_cr();
                self.out.push(byte);
            }
        }
    }
    // Escape sequences (csi_dispatch, esc_dispatch, osc_dispatch, hooks)
    // are dropped: the default methods do nothing.
}

impl<R: AsyncRead + Unpin> AsyncRead for Clean<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.pos < this.text.out.len() {
                let n = (this.text.out.len() - this.pos).min(buf.remaining());
                buf.put_slice(&this.text.out[this.pos..this.pos + n]);
                this.pos += n;
                if this.pos == this.text.out.len() {
                    this.text.out.clear();
                    this.pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut raw = ReadBuf::new(&mut this.raw);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut raw))?;
            let n = raw.filled().len();
            if n == 0 {
                this.eof = true;
                this.text.flush_cr();
                continue;
            }
            this.parser.advance(&mut this.text, &this.raw[..n]);
            if this.text.out.is_empty() {
                this.silent += n;
                if this.silent > SILENT_LIMIT {
                    this.parser = vte::Parser::new();
                    this.silent = 0;
                }
            } else {
                this.silent = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn clean(chunks: &[&[u8]]) -> String {
        let reader = Chunks(chunks.iter().map(|c| c.to_vec()).collect(), 0);
        let mut out = String::new();
        Clean::new(reader).read_to_string(&mut out).await.unwrap();
        out
    }

    /// A reader that yields `chunks` one read at a time, then end of file.
    struct Chunks(Vec<Vec<u8>>, usize);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let i = self.1;
            if let Some(chunk) = self.0.get(i) {
                buf.put_slice(chunk);
                self.1 += 1;
            }
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn colours_titles_and_cursor_moves_are_removed_and_crlf_is_a_newline() {
        let out = clean(&[b"\x1b[1;32mok\x1b[0m\r\n\x1b]0;title\x07\x1b[2J\x1b[Hdone\r\n"]).await;
        assert_eq!(out, "ok\ndone\n");
    }

    #[tokio::test]
    async fn a_sequence_or_a_crlf_split_across_reads_is_still_one() {
        let out = clean(&[b"a\x1b[3", b"1mb\r", b"\nc\x1b", b"]0;t\x1b\\d\r\r", b"\n"]).await;
        assert_eq!(out, "ab\ncd\n");
    }

    #[tokio::test]
    async fn an_unterminated_string_sequence_swallows_a_bounded_amount() {
        let mut garbage = b"before\n\x1b]".to_vec();
        garbage.extend(std::iter::repeat_n(b'x', 2 * SILENT_LIMIT));
        garbage.extend_from_slice(b"\nafter\n");
        let chunks: Vec<&[u8]> = garbage.chunks(CHUNK).collect();
        let out = clean(&chunks).await;
        assert!(
            out.starts_with("before\n"),
            "{:?}",
            &out[..20.min(out.len())]
        );
        assert!(out.ends_with("after\n"), "the output goes on");
        assert!(
            out.len() < 2 * SILENT_LIMIT,
            "some was swallowed, not all kept: {}",
            out.len()
        );
    }

    #[tokio::test]
    async fn a_lone_carriage_return_tabs_and_utf8_stay() {
        let out = clean(&[b"50%\r100%\tdone \xc3\xa9\r"]).await;
        assert_eq!(out, "50%\r100%\tdone \u{e9}\r");
    }
}
