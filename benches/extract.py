#!/usr/bin/env python3
"""Compare shirabe's PDF text extraction with poppler's pdftotext.

Usage:
  benches/extract.py [--shirabe PATH] [--corpus corpora/debian] [--json OUT]
                     [--limit N] [--files-from F] [--timeout SEC]

For every PDF of the corpus (languages from MANIFEST.tsv, or from the en/ and
cjk/ subdirectories) it runs, one process at a time and interleaved file by
file,

    pdftotext -enc UTF-8 FILE -        and        SHIRABE extract FILE

(both print each page's text followed by a form feed), measures each process
(CPU user+sys, peak RSS, wall time) and compares the texts page by page:

  * word F1       multiset of whitespace-separated words
  * word-pair F1  multiset of consecutive word pairs within a page (order)
  * char F1 / char-pair F1 (CJK files): non-whitespace characters and pairs
                  of consecutive non-whitespace characters

Both texts are normalized the same way first: NFKC, then a line ending in
"<letter>-" followed by a line starting with a lowercase letter is joined
without the hyphen. Pages where pdftotext finds no words are skipped. If the
page counts differ, the file is compared as one whole document, which counts
as a single sample, and the mismatch is reported. Files where either tool
fails are left out of the F1 figures and listed.

Measuring: the tools are started by a small helper process ("runner") that
forks, execs and collects the child with os.wait4. A child's ru_maxrss
includes the RSS of the process that forked it (vfork/fork + exec carries the
parent's high-water mark over), so starting the tools from this script, whose
memory grows with the texts it compares, would inflate every figure; the
runner stays at a few MB, and that floor is measured (`true`) and printed.

Options:
  --shirabe PATH   binary to test; default: the first existing of
                   <repo>/target/release/shirabe,
                   $CARGO_TARGET_DIR/release/shirabe,
                   ~/.cache/shirabe/target/release/shirabe
  --corpus DIR     corpus directory (default <repo>/corpora/debian, made by
                   corpora/fetch-debian-pdfs.sh)
  --json OUT       also write every per-file and per-page number to OUT
  --limit N        at most N files per language (in manifest order)
  --files-from F   only these PDFs: one per line, "PATH" or "LANG<TAB>PATH"
                   ('#' comments allowed); the language otherwise comes from
                   the manifest, the en/ or cjk/ parent directory, or the text
  --timeout SEC    CPU-time limit per process (default 600); over it = failure

Exit status: 0 after a run (whatever the numbers), 2 on usage errors.
Standard library only (Python 3.11).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LANGS = ("en", "cjk")

# --------------------------------------------------------------------------
# The runner: a minimal Python process (started with -S -I, imports only os,
# time and resource) that runs one command per request. Its protocol, one line
# each way:
#   request:  NUL-separated fields: stdout path, stderr path, cpu limit, argv...
#   reply:    "status wall_s utime_s stime_s maxrss_kb"
# The child's stdout/stderr go straight to files, so no text passes through
# the runner and its RSS (the floor of every measurement) stays constant.
RUNNER_SRC = r"""
import os, sys, time, resource
inp, out = sys.stdin.buffer, sys.stdout
null = os.open(os.devnull, os.O_RDONLY)
for line in inp:
    fields = line.rstrip(b"\n").split(b"\0")
    cpu, argv = int(fields[2]), fields[3:]
    fo = os.open(fields[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    fe = os.open(fields[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        # As little Python as possible between fork and exec: pages the child
        # touches here would count in its peak RSS.
        try:
            os.dup2(null, 0); os.dup2(fo, 1); os.dup2(fe, 2)
            if cpu > 0:
                resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
            os.execv(argv[0], argv)
        except BaseException as ex:
            try: os.write(2, b"exec failed: " + repr(ex).encode() + b"\n")
            except BaseException: pass
        os._exit(127)
    os.close(fo); os.close(fe)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    out.write("%d %.6f %.6f %.6f %d\n" % (status, wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss))
    out.flush()
"""


@dataclass
class Run:
    """One measured process."""
    status: int = 0          # raw wait status
    wall: float = 0.0        # seconds
    cpu: float = 0.0         # user + sys seconds
    rss_kb: int = 0          # peak RSS (ru_maxrss, KiB on Linux)
    text: str = ""           # stdout, decoded (dropped after comparison)
    err: str = ""            # last line of stderr, for failure reports

    @property
    def ok(self) -> bool:
        return os.WIFEXITED(self.status) and os.WEXITSTATUS(self.status) == 0

    def describe(self) -> str:
        if os.WIFSIGNALED(self.status):
            sig = os.WTERMSIG(self.status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            why = {signal.SIGXCPU: " (CPU time limit)",
                   signal.SIGKILL: " (CPU hard limit or OOM killer?)"}.get(sig, "")
            return f"killed by {name}{why}"
        return f"exit {os.WEXITSTATUS(self.status)}"


class Runner:
    """Starts commands through the runner process and returns their Run."""

    def __init__(self, tmpdir: Path, cpu_limit: int):
        self.tmp = tmpdir
        self.cpu_limit = cpu_limit
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-I", "-c", RUNNER_SRC],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, argv: list[str]) -> Run:
        out, err = self.tmp / "out", self.tmp / "err"
        exe = shutil.which(argv[0]) if os.sep not in argv[0] else argv[0]
        argv = [exe or argv[0], *argv[1:]]
        fields = [str(out), str(err), str(self.cpu_limit), *argv]
        if any("\n" in f or "\0" in f for f in fields):
            raise ValueError(f"argument with newline/NUL not supported: {argv!r}")
        self.proc.stdin.write(b"\0".join(os.fsencode(f) for f in fields) + b"\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().split()
        if len(reply) != 5:
            raise RuntimeError("runner process died")
        r = Run(int(reply[0]), float(reply[1]), float(reply[2]) + float(reply[3]), int(reply[4]))
        r.text = out.read_bytes().decode("utf-8", "replace")
        errs = err.read_bytes().decode("utf-8", "replace").strip().splitlines()
        r.err = errs[-1][:200] if errs else ""
        return r

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


# --------------------------------------------------------------------------
# Text normalization and scores

# "<letter>-" at the end of a line, then a line starting with a letter; the
# join happens only if that letter is lowercase (checked in _dehyph).
_HYPHEN = re.compile(r"([^\W\d_])-[ \t]*\n[ \t]*(?=([^\W\d_]))")


def _dehyph(m: re.Match) -> str:
    return m.group(1) if m.group(2).islower() else m.group(0)


def normalize(page: str) -> str:
    """NFKC, then join hyphenated line breaks (same rule for both tools)."""
    return _HYPHEN.sub(_dehyph, unicodedata.normalize("NFKC", page))


def split_pages(text: str) -> list[str]:
    """Pages of a pdftotext-style output (each page followed by \\f)."""
    pages = text.split("\f")
    if pages and pages[-1].strip() == "":
        pages.pop()          # what follows the last form feed
    return pages


def f1(ref: Counter, got: Counter) -> float | None:
    """F1 of two multisets (None if the reference is empty)."""
    nr, ng = sum(ref.values()), sum(got.values())
    if nr == 0:
        return None
    if ng == 0:
        return 0.0
    inter = sum((ref & got).values())
    return 2 * inter / (nr + ng)


@dataclass
class Feats:
    words: list[str]
    chars: list[str]     # non-whitespace characters (filled only for CJK files)


def feats(page: str, cjk: bool) -> Feats:
    t = normalize(page)
    return Feats(t.split(), [c for c in t if not c.isspace()] if cjk else [])


def pairs(seq: list[str]) -> Counter:
    return Counter(zip(seq, seq[1:]))


def score(ref: Feats, got: Feats, cjk: bool) -> dict:
    s = {
        "words_ref": len(ref.words), "words_got": len(got.words),
        "word_f1": f1(Counter(ref.words), Counter(got.words)),
        "pair_f1": f1(pairs(ref.words), pairs(got.words)),
    }
    if cjk:
        s["char_f1"] = f1(Counter(ref.chars), Counter(got.chars))
        s["cpair_f1"] = f1(pairs(ref.chars), pairs(got.chars))
    return s


def compare(ref_text: str, got_text: str, cjk: bool) -> dict:
    """Per-page scores (or whole-document if the page counts differ)."""
    ref_pages, got_pages = split_pages(ref_text), split_pages(got_text)
    res = {"pages_ref": len(ref_pages), "pages_got": len(got_pages),
           "page_mismatch": len(ref_pages) != len(got_pages)}
    if res["page_mismatch"]:
        ref_pages, got_pages = ["\n".join(ref_pages)], ["\n".join(got_pages)]
    page_scores = []
    words_ref = words_got = 0
    for i, (rp, gp) in enumerate(zip(ref_pages, got_pages), start=1):
        r, g = feats(rp, cjk), feats(gp, cjk)
        words_ref += len(r.words)
        words_got += len(g.words)
        if not r.words:
            continue                # nothing to compare against
        s = score(r, g, cjk)
        s["page"] = 0 if res["page_mismatch"] else i   # 0 = whole document
        page_scores.append(s)
    res.update(words_ref=words_ref, words_got=words_got, pages=page_scores)
    return res


# --------------------------------------------------------------------------
# Corpus

@dataclass
class Doc:
    path: Path
    lang: str
    package: str = ""
    bytes: int = 0
    result: dict = field(default_factory=dict)


def is_cjk_char(c: str) -> bool:
    o = ord(c)
    return (0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF
            or 0xF900 <= o <= 0xFAFF or 0x3000 <= o <= 0x303F or 0xFF00 <= o <= 0xFFEF
            or 0xAC00 <= o <= 0xD7AF or 0x20000 <= o <= 0x2FFFF)


def guess_lang(path: Path) -> str:
    """cjk if >= 30% of pdftotext's non-space characters are CJK, else en."""
    r = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True)
    chars = [c for c in r.stdout.decode("utf-8", "replace") if not c.isspace()]
    n = sum(map(is_cjk_char, chars))
    return "cjk" if chars and n >= 0.3 * len(chars) else "en"


def read_manifest(corpus: Path) -> list[Doc]:
    m = corpus / "MANIFEST.tsv"
    docs = []
    if m.is_file():
        lines = m.read_text(encoding="utf-8").splitlines()
        head = lines[0].split("\t")
        for line in lines[1:]:
            if not line.strip():
                continue
            row = dict(zip(head, line.split("\t")))
            docs.append(Doc(corpus / row["file"], row["lang"], row.get("package", ""),
                            int(row.get("bytes") or 0)))
    else:
        for lang in LANGS:
            for p in sorted((corpus / lang).glob("*.pdf")):
                docs.append(Doc(p, lang))
    return docs


def select_docs(args, parser) -> list[Doc]:
    corpus = Path(args.corpus)
    known = {d.path.resolve(): d for d in read_manifest(corpus)} if corpus.is_dir() else {}
    if args.files_from:
        try:
            lines = Path(args.files_from).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            parser.error(f"--files-from: {e}")
        docs = []
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            lang, _, p = line.rpartition("\t")
            path = Path(p)
            if not path.is_file() and (corpus / p).is_file():
                path = corpus / p
            if not path.is_file():
                parser.error(f"--files-from: no such file: {p}")
            d = known.get(path.resolve())
            if lang:
                if lang not in LANGS:
                    parser.error(f"--files-from: language must be one of {LANGS}: {line!r}")
            elif d:
                lang = d.lang
            elif path.parent.name in LANGS:
                lang = path.parent.name
            else:
                lang = guess_lang(path)
            docs.append(Doc(path, lang, d.package if d else ""))
    else:
        if not corpus.is_dir():
            parser.error(f"corpus {corpus} not found (run corpora/fetch-debian-pdfs.sh)")
        docs = list(known.values())
        if not docs:
            parser.error(f"no PDFs in {corpus} (no MANIFEST.tsv, nothing in en/ or cjk/)")
        missing = [d for d in docs if not d.path.is_file()]
        if missing:
            parser.error(f"{len(missing)} manifest files missing, e.g. {missing[0].path}")
    if args.limit is not None:
        seen = Counter()
        kept = []
        for d in docs:
            seen[d.lang] += 1
            if seen[d.lang] <= args.limit:
                kept.append(d)
        docs = kept
    for d in docs:
        d.bytes = d.path.stat().st_size
    return docs


def find_shirabe(arg: str | None, parser) -> str:
    if arg:
        p = Path(arg)
        if not (p.is_file() and os.access(p, os.X_OK)):
            parser.error(f"--shirabe {arg}: not an executable file")
        return str(p.resolve())
    cands = [REPO / "target/release/shirabe"]
    if os.environ.get("CARGO_TARGET_DIR"):
        cands.append(Path(os.environ["CARGO_TARGET_DIR"]) / "release/shirabe")
    cands.append(Path.home() / ".cache/shirabe/target/release/shirabe")
    for p in cands:
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    parser.error("no shirabe binary found (build with `cargo build --release` or pass --shirabe); "
                 "looked at: " + ", ".join(map(str, cands)))


# --------------------------------------------------------------------------
# Statistics and report

def pct(values: list[float], q: float) -> float | None:
    """q-th percentile (0..100), linear interpolation; None if empty."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def fmt(x, nd=3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def ratio(a, b):
    return a / b if a is not None and b else None


def summarize(lang: str, docs: list[Doc]) -> dict:
    """Aggregate the per-file results of one language."""
    cjk = lang == "cjk"
    ok = [d for d in docs if d.result.get("compared")]
    samples = [(d, s) for d in ok for s in d.result["pages"]]
    metrics = ["word_f1", "pair_f1"] + (["char_f1", "cpair_f1"] if cjk else [])
    quality = {}
    for m in metrics:
        vals = [s[m] for _, s in samples if s.get(m) is not None]
        quality[m] = {"n": len(vals), "median": pct(vals, 50), "p10": pct(vals, 10),
                      "mean": statistics.fmean(vals) if vals else None}
    perf = {}
    ran = [d for d in docs if "pdftotext" in d.result]
    pages = sum(d.result.get("pages_ref", 0) for d in ran)
    mb = sum(d.bytes for d in ran) / 1e6
    for tool in ("pdftotext", "shirabe"):
        runs = [d.result[tool] for d in ran if tool in d.result]
        cpu = sum(r["cpu"] for r in runs)
        wall = sum(r["wall"] for r in runs)
        rss = [r["rss_mb"] for r in runs]
        perf[tool] = {
            "cpu_s": cpu, "wall_s": wall,
            "pages_per_s": pages / wall if wall else None,
            "mb_per_s": mb / wall if wall else None,
            "pages_per_cpu_s": pages / cpu if cpu else None,
            "rss_max_mb": max(rss) if rss else None,
            "rss_median_mb": statistics.median(rss) if rss else None,
        }
    perf["ratio"] = {
        "cpu": ratio(perf["shirabe"]["cpu_s"], perf["pdftotext"]["cpu_s"]),
        "wall": ratio(perf["shirabe"]["wall_s"], perf["pdftotext"]["wall_s"]),
        "rss_max": ratio(perf["shirabe"]["rss_max_mb"], perf["pdftotext"]["rss_max_mb"]),
        "rss_median": ratio(perf["shirabe"]["rss_median_mb"], perf["pdftotext"]["rss_median_mb"]),
    }
    key = "char_f1" if cjk else "word_f1"
    by = lambda m: sorted(((s[m], d, s) for d, s in samples if s.get(m) is not None),
                          key=lambda t: (t[0], str(t[1].path), t[2]["page"]))[:10]
    return {
        "lang": lang,
        "files": len(docs), "pages": pages, "mb": mb,
        "pages_compared": len(samples),
        "failures": [{"file": rel(d.path), "reason": d.result["shirabe_failure"]}
                     for d in docs if d.result.get("shirabe_failure")],
        "pdftotext_failures": [{"file": rel(d.path), "reason": d.result["pdftotext_failure"]}
                               for d in docs if d.result.get("pdftotext_failure")],
        "page_mismatches": [{"file": rel(d.path), "pdftotext": d.result["pages_ref"],
                             "shirabe": d.result["pages_got"]}
                            for d in ok if d.result["page_mismatch"]],
        "few_words": [{"file": rel(d.path), "pdftotext": d.result["words_ref"],
                       "shirabe": d.result["words_got"]}
                      for d in ok if d.result["words_got"] * 2 < d.result["words_ref"]],
        "quality": quality, "perf": perf,
        "worst_word": [page_row(d, s) for _, d, s in by("word_f1")],
        "worst_char": [page_row(d, s) for _, d, s in by(key)] if cjk else [],
    }


def page_row(d: Doc, s: dict) -> dict:
    return {"file": rel(d.path), **s}


def rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def print_report(shirabe: str, floor_mb: float, sums: list[dict], out=sys.stdout):
    w = lambda *a: print(*a, file=out)
    w(f"shirabe: {shirabe}")
    w(f"RSS floor of the measuring runner (`true`): {floor_mb:.1f} MB "
      f"(a peak RSS at this value means 'at most this')")
    names = {"word_f1": "word F1", "pair_f1": "word-pair F1",
             "char_f1": "char F1", "cpair_f1": "char-pair F1"}
    for s in sums:
        w("")
        w(f"== {s['lang']}: {s['files']} files, {s['pages']} pages, {s['mb']:.1f} MB "
          f"({s['pages_compared']} page samples compared) ==")
        w(f"  {'quality (per page)':<28}{'median':>9}{'p10':>9}{'mean':>9}{'n':>8}")
        for m, q in s["quality"].items():
            w(f"  {names[m]:<28}{fmt(q['median']):>9}{fmt(q['p10']):>9}{fmt(q['mean']):>9}{q['n']:>8}")
        p = s["perf"]
        t, sh, r = p["pdftotext"], p["shirabe"], p["ratio"]
        w(f"  {'performance':<28}{'pdftotext':>11}{'shirabe':>11}{'shirabe/pdftotext':>19}")
        rows = [
            ("CPU s (user+sys)", t["cpu_s"], sh["cpu_s"], r["cpu"], 2),
            ("wall s", t["wall_s"], sh["wall_s"], r["wall"], 2),
            ("pages/s (wall)", t["pages_per_s"], sh["pages_per_s"], None, 1),
            ("MB/s (wall)", t["mb_per_s"], sh["mb_per_s"], None, 2),
            ("pages per CPU s", t["pages_per_cpu_s"], sh["pages_per_cpu_s"], None, 1),
            ("peak RSS max MB", t["rss_max_mb"], sh["rss_max_mb"], r["rss_max"], 1),
            ("peak RSS median MB", t["rss_median_mb"], sh["rss_median_mb"], r["rss_median"], 1),
        ]
        for name, a, b, rr, nd in rows:
            w(f"  {name:<28}{fmt(a, nd):>11}{fmt(b, nd):>11}{fmt(rr, 2):>19}")

        def listing(title, items, fmt_item):
            w(f"  {title}: {len(items) if items else 'none'}")
            for it in items:
                w("    " + fmt_item(it))
        listing("shirabe failures", s["failures"], lambda f: f"{f['file']}: {f['reason']}")
        if s["pdftotext_failures"]:
            listing("pdftotext failures (file skipped)", s["pdftotext_failures"],
                    lambda f: f"{f['file']}: {f['reason']}")
        listing("page-count mismatches (compared as whole documents)", s["page_mismatches"],
                lambda f: f"{f['file']}: pdftotext {f['pdftotext']} pages, shirabe {f['shirabe']}")
        listing("files where shirabe got < half of pdftotext's words", s["few_words"],
                lambda f: f"{f['file']}: {f['shirabe']} vs {f['pdftotext']} words")
        cjk = s["lang"] == "cjk"

        def worst(title, rows):
            if not rows:
                return
            w(f"  {title}")
            extra = f"{'char':>6}{'cpair':>6}" if cjk else ""
            w(f"    {'word':>6}{'pair':>6}{extra}{'words':>13}  page  file")
            for x in rows:
                e = f"{fmt(x.get('char_f1'), 2):>6}{fmt(x.get('cpair_f1'), 2):>6}" if cjk else ""
                pg = "all" if x["page"] == 0 else str(x["page"])
                w(f"    {fmt(x['word_f1'], 2):>6}{fmt(x['pair_f1'], 2):>6}{e}"
                  f"{x['words_got']:>6}/{x['words_ref']:<6}  {pg:>4}  {x['file']}")
        worst("10 worst pages by word F1 (words: shirabe/pdftotext):", s["worst_word"])
        if cjk:
            worst("10 worst pages by char F1:", s["worst_char"])


# --------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(
        prog="benches/extract.py",
        description="Compare `shirabe extract` with `pdftotext` on a PDF corpus: "
                    "text agreement per page, CPU time, peak RSS.")
    ap.add_argument("--shirabe", metavar="PATH", help="shirabe binary (default: target/release/shirabe ...)")
    ap.add_argument("--corpus", metavar="DIR", default=str(REPO / "corpora/debian"),
                    help="corpus directory with MANIFEST.tsv or en/ and cjk/ (default: %(default)s)")
    ap.add_argument("--json", metavar="OUT", help="write all numbers (per file and page) to OUT")
    ap.add_argument("--limit", metavar="N", type=int, help="at most N files per language")
    ap.add_argument("--files-from", metavar="F", help="only the PDFs listed in F ('PATH' or 'LANG<TAB>PATH')")
    ap.add_argument("--timeout", metavar="SEC", type=int, default=600,
                    help="CPU seconds allowed per process (default: %(default)s)")
    args = ap.parse_args()
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be >= 1")
    if args.timeout < 1:
        ap.error("--timeout must be >= 1")
    if not shutil.which("pdftotext"):
        ap.error("pdftotext not found (apt-get install poppler-utils)")
    shirabe = find_shirabe(args.shirabe, ap)
    docs = select_docs(args, ap)
    if args.json:
        jp = Path(args.json)
        if jp.parent and not jp.parent.is_dir():
            ap.error(f"--json: directory {jp.parent} does not exist")

    tmp = Path(tempfile.mkdtemp(prefix="shirabe-bench-"))
    runner = Runner(tmp, args.timeout)
    try:
        floor_mb = runner.run(["true"]).rss_kb / 1024
        t_start = time.time()
        for i, d in enumerate(docs, 1):
            d.path.read_bytes()       # warm the page cache for both tools alike
            cmds = {"pdftotext": ["pdftotext", "-enc", "UTF-8", str(d.path), "-"],
                    "shirabe": [shirabe, "extract", str(d.path)]}
            order = ["pdftotext", "shirabe"] if i % 2 else ["shirabe", "pdftotext"]
            runs = {tool: runner.run(cmds[tool]) for tool in order}
            res = d.result
            for tool, r in runs.items():
                res[tool] = {"ok": r.ok, "status": r.describe(), "wall": r.wall, "cpu": r.cpu,
                             "rss_mb": r.rss_kb / 1024}
            ref, got = runs["pdftotext"], runs["shirabe"]
            if not ref.ok:
                res["pdftotext_failure"] = f"{ref.describe()}: {ref.err}"
            if not got.ok:
                res["shirabe_failure"] = f"{got.describe()}" + (f": {got.err}" if got.err else "")
            if ref.ok and got.ok:
                res.update(compare(ref.text, got.text, d.lang == "cjk"), compared=True)
            else:
                res["pages_ref"] = len(split_pages(ref.text)) if ref.ok else 0
            ref.text = got.text = ""  # keep memory flat
            note = ("FAIL " + res["shirabe_failure"]) if not got.ok else (
                "page mismatch" if res.get("page_mismatch") else "")
            print(f"[{i}/{len(docs)}] {d.lang} {rel(d.path)}: {res.get('pages_ref', 0)} p, "
                  f"pdftotext {ref.cpu:.2f}s {ref.rss_kb / 1024:.0f}MB, "
                  f"shirabe {got.cpu:.2f}s {got.rss_kb / 1024:.0f}MB {note}",
                  file=sys.stderr, flush=True)
        elapsed = time.time() - t_start
    finally:
        runner.close()
        shutil.rmtree(tmp, ignore_errors=True)

    sums = [summarize(lang, [d for d in docs if d.lang == lang])
            for lang in LANGS if any(d.lang == lang for d in docs)]
    print_report(shirabe, floor_mb, sums)
    print(f"\n({len(docs)} files in {elapsed:.0f} s)")
    if args.json:
        data = {
            "shirabe": shirabe, "corpus": args.corpus, "rss_floor_mb": floor_mb,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "summary": sums,
            "files": [{"file": rel(d.path), "lang": d.lang, "package": d.package,
                       "bytes": d.bytes, **d.result} for d in docs],
        }
        Path(args.json).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
