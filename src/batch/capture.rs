//! Capturing one output stream of a job: in memory up to a threshold, then
//! spilled to a temporary file; or, with an output directory, straight to
//! its file. Neither a full pipe nor a huge output can deadlock or exhaust
//! memory: the pump always reads, and memory never holds more than the
//! threshold per stream.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// A captured stream, as a job's result holds it.
#[derive(Debug)]
pub enum Output {
    /// All of it, in memory.
    Memory(Vec<u8>),
    /// Spilled to a temporary file, deleted when this is dropped.
    Spilled {
        /// The file.
        file: tempfile::TempPath,
        /// Its size in bytes.
        len: u64,
    },
    /// Written to a file of the output directory (kept).
    File {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        len: u64,
    },
}

impl Output {
    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Output::Memory(v) => v.len() as u64,
            Output::Spilled { len, .. } | Output::File { len, .. } => *len,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All of it, read into memory (for outputs known to be small).
    pub fn bytes(&self) -> io::Result<Vec<u8>> {
        match self {
            Output::Memory(v) => Ok(v.clone()),
            Output::Spilled { file, .. } => std::fs::read(file),
            Output::File { path, .. } => std::fs::read(path),
        }
    }

    /// All of it as text, invalid UTF-8 replaced with U+FFFD (read into
    /// memory: for outputs known to be small). An output file that cannot
    /// be read gives the reason.
    pub fn text_lossy(&self) -> io::Result<String> {
        match self {
            Output::Memory(v) => Ok(String::from_utf8_lossy(v).into_owned()),
            _ => self
                .bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
        }
    }

    /// The file it is in, if it is in one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Output::Memory(_) => None,
            Output::Spilled { file, .. } => Some(file),
            Output::File { path, .. } => Some(path),
        }
    }

    /// Writes it as the contents of a JSON string (no quotes), streaming
    /// from its file if it has one. Invalid UTF-8 becomes U+FFFD.
    pub fn write_json_contents(&self, out: &mut impl Write) -> io::Result<()> {
        match self {
            Output::Memory(v) => escape(&String::from_utf8_lossy(v), out),
            Output::Spilled { file, .. } => stream_escaped(File::open(file)?, out),
            Output::File { path, .. } => stream_escaped(File::open(path)?, out),
        }
    }
}

impl Output {
    /// Whether it is valid UTF-8 (read through once if it is in a file).
    pub fn is_utf8(&self) -> io::Result<bool> {
        let mut file = match self {
            Output::Memory(v) => return Ok(std::str::from_utf8(v).is_ok()),
            Output::Spilled { file, .. } => File::open(file)?,
            Output::File { path, .. } => File::open(path)?,
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(carry.is_empty()); // a character cut off at the end is not UTF-8
            }
            carry.extend_from_slice(&buf[..n]);
            match std::str::from_utf8(&carry) {
                Ok(_) => carry.clear(),
                Err(e) if e.error_len().is_some() => return Ok(false),
                // An incomplete character at the end: keep it for the next read.
                Err(e) => {
                    carry.drain(..e.valid_up_to());
                }
            }
        }
    }

    /// Writes it base64-encoded (standard alphabet, padded) as the
    /// contents of a JSON string, streaming from its file if it has one.
    pub fn write_base64_contents(&self, out: &mut impl Write) -> io::Result<()> {
        let mut encoder =
            base64::write::EncoderWriter::new(out, &base64::engine::general_purpose::STANDARD);
        match self {
            Output::Memory(v) => encoder.write_all(v)?,
            Output::Spilled { file, .. } => {
                io::copy(&mut File::open(file)?, &mut encoder)?;
            }
            Output::File { path, .. } => {
                io::copy(&mut File::open(path)?, &mut encoder)?;
            }
        }
        encoder.finish()?;
        Ok(())
    }
}

fn stream_escaped(mut file: File, out: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            if !carry.is_empty() {
                escape(&String::from_utf8_lossy(&carry), out)?;
            }
            return Ok(());
        }
        carry.extend_from_slice(&buf[..n]);
        // Keep an incomplete character at the end for the next read.
        let keep = match std::str::from_utf8(&carry) {
            Ok(_) => 0,
            Err(e) if e.error_len().is_none() => carry.len() - e.valid_up_to(),
            Err(_) => 0,
        };
        let upto = carry.len() - keep;
        escape(&String::from_utf8_lossy(&carry[..upto]), out)?;
        carry.drain(..upto);
    }
}

/// JSON string escaping of `text` (without the quotes).
fn escape(text: &str, out: &mut impl Write) -> io::Result<()> {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.write_all(&bytes[start..i])?;
        match escaped {
            Some(e) => out.write_all(e)?,
            None => write!(out, "\\u{:04x}", b)?,
        }
        start = i + 1;
    }
    out.write_all(&bytes[start..])
}

/// A stream being captured.
pub(crate) enum Capture {
    Memory {
        buf: Vec<u8>,
        threshold: usize,
    },
    Spilling {
        file: BufWriter<File>,
        path: tempfile::TempPath,
        len: u64,
    },
    ToFile {
        file: BufWriter<File>,
        path: PathBuf,
        len: u64,
    },
    /// The job writes into the file itself (see [`Capture::hand_over`]).
    Direct {
        path: PathBuf,
    },
}

impl Capture {
    pub fn memory(threshold: usize) -> Capture {
        Capture::Memory {
            buf: Vec::new(),
            threshold,
        }
    }

    /// Writes into `path`, created or truncated. Never through a symlink
    /// (`O_NOFOLLOW`: an existing `DIR/KEY.stdout` link pointing outside the
    /// directory is an error, not a way to overwrite what it points at), and
    /// only into a regular file.
    pub fn to_file(path: PathBuf) -> io::Result<Capture> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(nix::libc::ELOOP) => io::Error::other(format!(
                    "{} is a symbolic link: refusing to write through it",
                    path.display()
                )),
                _ => e,
            })?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        // Truncated only once it is known to be ours, and only if there is
        // something to cut: ext4 treats a file truncated to nothing as one
        // being replaced and flushes it as it is closed, which made writing
        // a new file 2-3 times slower (see BENCHMARKS.md, output-dir).
        if meta.len() > 0 {
            file.set_len(0)?;
        }
        let file = BufWriter::with_capacity(256 * 1024, file);
        Ok(Capture::ToFile { file, path, len: 0 })
    }

    /// The output file itself, for the job to write into directly (its
    /// stdout or stderr *is* the file: no pipe, no copy); `None` unless
    /// this writes to an output file and nothing was written yet. The
    /// length is the file's own once the job (and what escaped it) ended.
    pub fn hand_over(&mut self) -> Option<File> {
        let Capture::ToFile { len: 0, path, .. } = self else {
            return None;
        };
        let path = path.clone();
        match std::mem::replace(self, Capture::Direct { path }) {
            Capture::ToFile { file, .. } => file.into_inner().ok(),
            _ => unreachable!("matched above"),
        }
    }

    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        match self {
            Capture::Memory { buf, threshold } if buf.len() + chunk.len() <= *threshold => {
                buf.extend_from_slice(chunk);
            }
            Capture::Memory { buf, .. } => {
                let (file, path) =
                    tempfile::NamedTempFile::with_prefix("procession-")?.into_parts();
                let mut file = BufWriter::with_capacity(256 * 1024, file);
                file.write_all(buf)?;
                file.write_all(chunk)?;
                let len = (buf.len() + chunk.len()) as u64;
                *self = Capture::Spilling { file, path, len };
            }
            Capture::Spilling { file, len, .. } | Capture::ToFile { file, len, .. } => {
                file.write_all(chunk)?;
                *len += chunk.len() as u64;
            }
            Capture::Direct { path } => {
                return Err(io::Error::other(format!(
                    "{} is written by the job itself",
                    path.display()
                )))
            }
        }
        Ok(())
    }

    pub fn finish(self) -> io::Result<Output> {
        Ok(match self {
            Capture::Memory { buf, .. } => Output::Memory(buf),
            Capture::Spilling {
                mut file,
                path,
                len,
            } => {
                file.flush()?;
                Output::Spilled { file: path, len }
            }
            Capture::ToFile {
                mut file,
                path,
                len,
            } => {
                file.flush()?;
                Output::File { path, len }
            }
            Capture::Direct { path } => {
                let len = std::fs::metadata(&path)?.len();
                Output::File { path, len }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(output: &Output) -> String {
        let mut out = Vec::new();
        output.write_json_contents(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn small_output_stays_in_memory_and_large_output_spills() {
        let mut c = Capture::memory(8);
        c.write(b"abc").unwrap();
        c.write(b"def").unwrap();
        let out = c.finish().unwrap();
        assert!(matches!(out, Output::Memory(ref v) if v == b"abcdef"));

        let mut c = Capture::memory(8);
        c.write(b"abcdef").unwrap();
        c.write(b"ghijkl").unwrap();
        c.write(b"mn").unwrap();
        let out = c.finish().unwrap();
        assert!(matches!(out, Output::Spilled { len: 14, .. }));
        assert_eq!(out.bytes().unwrap(), b"abcdefghijklmn");
        let path = out.path().unwrap().to_path_buf();
        drop(out);
        assert!(!path.exists(), "a spill file goes with its result");
    }

    #[test]
    fn json_escaping_is_exact_and_streams_across_utf8_boundaries() {
        let text = "line \"one\"\n\ttab \\ é\u{1}";
        assert_eq!(
            json(&Output::Memory(text.as_bytes().to_vec())),
            r#"line \"one\"\n\ttab \\ é\u0001"#
        );
        // A spilled file whose 64 KiB reads split a two-byte character.
        let mut c = Capture::memory(0);
        let mut big = "x".repeat(64 * 1024 - 1);
        big.push('é');
        big.push_str("end\n");
        c.write(big.as_bytes()).unwrap();
        c.write(b"\xff").unwrap();
        let out = c.finish().unwrap();
        let got = json(&out);
        assert!(
            got.ends_with("xéend\\n\u{fffd}"),
            "{}",
            &got[got.len() - 20..]
        );
    }
}
