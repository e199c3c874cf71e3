//! Tesseract, run as the `tesseract` program.
//!
//! Why a program and not a linked library: the default build keeps needing
//! no system library; a crash or a runaway page in Tesseract costs one
//! page, never the ingest (rule 5); and pages run in parallel as separate
//! processes, each held to one thread (`OMP_THREAD_LIMIT=1`) so the
//! ingest's pool decides how many run at once. The cost, a process start
//! per page (~20 ms), is small beside the ~1 s Tesseract spends reading a
//! page. The page goes in as a PGM on stdin; words, boxes and confidences
//! come back as TSV on stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ingest::pdf::raster::PageRaster;

/// Longest a page may take before it is given up (a pathological page must
/// not hold an ingest forever).
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(300);

/// Tesseract, looked for the first time a page needs it (so an ingest
/// with no scans never starts a process).
#[derive(Debug, Default)]
pub struct Lazy {
    program: Option<PathBuf>,
    found: std::sync::OnceLock<Option<Tesseract>>,
}

impl Lazy {
    /// Looks for `program` (default: `tesseract` on PATH) when first asked.
    pub fn new(program: Option<PathBuf>) -> Lazy {
        Lazy {
            program,
            found: std::sync::OnceLock::new(),
        }
    }

    /// The engine, found now if not yet looked for.
    pub fn get(&self) -> Option<&Tesseract> {
        self.found
            .get_or_init(|| Tesseract::find(self.program.as_deref()))
            .as_ref()
    }

    /// Whether it was looked for, and what was found.
    pub fn looked(&self) -> Option<Option<&Tesseract>> {
        self.found.get().map(Option::as_ref)
    }
}

/// An installed Tesseract.
#[derive(Debug, Clone)]
pub struct Tesseract {
    program: PathBuf,
    /// "tesseract 5.3.0".
    pub version: String,
    /// Installed language data (`eng`, `jpn`, `jpn_vert`, ...).
    pub languages: Vec<String>,
}

/// One recognised word, in canvas pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    /// Block, paragraph and line numbers (Tesseract's reading order).
    pub block: u32,
    /// Paragraph within the block.
    pub par: u32,
    /// Line within the paragraph.
    pub line: u32,
    /// Left edge.
    pub left: f32,
    /// Top edge.
    pub top: f32,
    /// Width.
    pub width: f32,
    /// Height.
    pub height: f32,
    /// Confidence, 0 to 100.
    pub conf: f32,
    /// The word.
    pub text: String,
}

impl Tesseract {
    /// Finds `program` (default: `tesseract` on PATH) and asks it for its
    /// version and languages. `None` when it cannot be run.
    pub fn find(program: Option<&Path>) -> Option<Tesseract> {
        let program = program.map_or_else(|| PathBuf::from("tesseract"), Path::to_path_buf);
        let out = Command::new(&program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let version = text.lines().next()?.trim().to_string();
        if !version.starts_with("tesseract") {
            return None;
        }
        let langs = Command::new(&program)
            .arg("--list-langs")
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let languages = String::from_utf8_lossy(&langs.stdout)
            .lines()
            .skip(1)
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && l != "osd")
            .collect();
        Some(Tesseract {
            program,
            version,
            languages,
        })
    }

    /// True when the language data `lang` (one of `a+b`) is installed.
    pub fn has(&self, lang: &str) -> bool {
        lang.split('+')
            .all(|l| self.languages.iter().any(|x| x == l))
    }

    fn command(&self, dpi: f32) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.arg("stdin")
            .arg("stdout")
            .arg("--dpi")
            .arg(format!("{}", dpi.round() as u32))
            .env("OMP_THREAD_LIMIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        crate::ingest::isolate::unlimit_child(&mut cmd);
        cmd
    }

    /// Runs `cmd` on the page and returns its stdout.
    fn run(&self, mut cmd: Command, page: &PageRaster) -> Result<String, String> {
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("could not run {}: {e}", self.program.display()))?;
        let pgm = page.to_pgm();
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        // Feed stdin from a thread so a full stdout pipe cannot deadlock.
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&pgm);
        });
        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        let reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stdout, &mut s);
            s
        });
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if started.elapsed() > PAGE_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "Tesseract took over {} s on the page; stopped",
                        PAGE_TIMEOUT.as_secs()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(format!("waiting for Tesseract: {e}")),
            }
        };
        let _ = feeder.join();
        let out = reader.join().unwrap_or_default();
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let why = err
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            return Err(format!("Tesseract failed ({status}): {why}"));
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Reads the page's words in `lang` (`eng`, `jpn+jpn_vert`, ...).
    pub fn read(&self, page: &PageRaster, lang: &str) -> Result<Vec<Word>, String> {
        let mut cmd = self.command(page.dpi);
        cmd.arg("-l").arg(lang).arg("tsv");
        Ok(parse_tsv(&self.run(cmd, page)?))
    }

    /// The script Tesseract's orientation and script detection sees on the
    /// page ("Latin", "Japanese", "Han", "Hangul", ...), if it is sure.
    /// It looks at the page at ~150 dpi: as sure, in half the time.
    pub fn script(&self, page: &PageRaster) -> Option<String> {
        let page = &page.downscaled((page.dpi / 150.0).round().max(1.0) as u32);
        let mut cmd = self.command(page.dpi);
        cmd.arg("--psm").arg("0");
        let out = self.run(cmd, page).ok()?;
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let script = field("Script:")?;
        let conf: f32 = field("Script confidence:")?.parse().ok()?;
        (conf >= 1.0).then_some(script)
    }
}

/// Words of Tesseract's TSV output (level 5 rows with text).
pub fn parse_tsv(tsv: &str) -> Vec<Word> {
    let mut out = Vec::new();
    for line in tsv.lines().skip(1) {
        let f: Vec<&str> = line.splitn(12, '\t').collect();
        if f.len() < 12 || f[0] != "5" {
            continue;
        }
        let text = f[11].trim();
        if text.is_empty() {
            continue;
        }
        let n = |i: usize| f[i].trim().parse::<f32>().unwrap_or(0.0);
        out.push(Word {
            block: n(2) as u32,
            par: n(3) as u32,
            line: n(4) as u32,
            left: n(6),
            top: n(7),
            width: n(8),
            height: n(9),
            conf: n(10),
            text: text.to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_rows_become_words() {
        let tsv = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
                   1\t1\t0\t0\t0\t0\t0\t0\t100\t100\t-1\t\n\
                   5\t1\t1\t1\t1\t1\t10\t20\t30\t12\t96.5\tMinutes\n\
                   5\t1\t1\t1\t1\t2\t45\t20\t10\t12\t91\tof\n\
                   5\t1\t1\t1\t1\t3\t60\t20\t10\t12\t10\t \n";
        let w = parse_tsv(tsv);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].text, "Minutes");
        assert_eq!((w[0].left, w[0].top, w[0].conf), (10.0, 20.0, 96.5));
    }
}
