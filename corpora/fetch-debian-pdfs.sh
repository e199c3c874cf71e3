#!/usr/bin/env bash
# Fetches a corpus of real PDFs from Debian documentation packages for the
# extraction benchmark (benches/extract.py): mostly English TeX-made manuals
# plus Japanese and Chinese ones, into corpora/debian/ (git-ignored).
#
# Usage: corpora/fetch-debian-pdfs.sh [DEST_DIR]      (default: corpora/debian)
#
# Only `apt-get download` + `dpkg -x` touch the network (Debian mirrors); no
# package is installed except poppler-utils (pdftotext/pdfinfo) if missing.
#
# Layout produced:
#   DEST/en/<package>__<name>.pdf    English PDFs
#   DEST/cjk/<package>__<name>.pdf   Japanese / Chinese PDFs
#   DEST/MANIFEST.tsv                lang, file, package, bytes, pages, script, source
#   DEST/SKIPPED.tsv                 package, source, reason (pdftotext/pdfinfo failed, too big)
#   DEST/.cache/debs/*.deb           downloaded packages (kept so re-runs need no network)
#   DEST/.cache/state/<pkg>.tsv      per-package result; its presence = package done
#
# Selection is deterministic: a fixed package list (below), and within a
# package the PDFs that pass the filters are sorted by (pages desc, path) and
# QUOTA of them are picked at evenly spaced positions, so each package gives
# its largest eligible manual, its smallest, and a spread in between.
# Language is decided from the text pdftotext extracts:
#   cjk: >= CJK_MIN of the non-space characters are Han/kana/CJK punctuation
#   en:  < 1% CJK and >= EN_MIN of the words are common English function words
#        (this rejects German/French/Welsh docs that ship in the same packages)
# Anything else is ignored. Re-running skips packages already done; to redo a
# package delete its state file (or the whole DEST). Changing its line in the
# table below also redoes it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-$here/debian}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

# package                        lang  quota   (deb sizes: bookworm, ~283 MB total)
PACKAGES="
texlive-latex-base-doc           en    12
texlive-latex-recommended-doc    en    12
texlive-fonts-recommended-doc    en    3
asymptote-doc                    en    2
gnuplot-doc                      en    1
octave-doc                       en    2
texlive-lang-japanese            cjk   12
texlive-lang-chinese             cjk   10
texlive-lang-cjk                 cjk   1
"

# Filters (exported for the Python selector below).
export MAX_BYTES=$((30 * 1024 * 1024))  # skip PDFs larger than this
export MAX_PAGES=1300                   # skip monsters (source3.pdf, lwarp.pdf: 1300-1600 pages)
export MIN_PAGES=2                      # one-page figures/samples are noise
export MIN_CHARS_PER_PAGE=300           # skip slides/figure collections with little text
export CJK_MIN=0.30                     # share of CJK characters for "cjk"
export EN_MIN=0.12                      # share of English function words for "en"

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools ------------------------------------------------------------------
for t in apt-get dpkg python3; do
  command -v "$t" >/dev/null || die "$t is needed (this script targets Debian/Ubuntu)"
done
if ! command -v pdftotext >/dev/null || ! command -v pdfinfo >/dev/null; then
  [ "$(id -u)" = 0 ] || die "pdftotext/pdfinfo missing: run 'sudo apt-get install poppler-utils'"
  log "installing poppler-utils (pdftotext, pdfinfo)..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q poppler-utils >/dev/null \
    || die "could not install poppler-utils (try 'apt-get update' first)"
fi
apt_opts=()
# As root, apt drops to the _apt user to download, which cannot write our dir.
[ "$(id -u)" = 0 ] && apt_opts=(-o APT::Sandbox::User=root)

debs=$dest/.cache/debs
state=$dest/.cache/state
mkdir -p "$debs" "$state" "$dest/en" "$dest/cjk"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

start=$(date +%s)

# --- per package: download, extract, select, copy ---------------------------
while read -r pkg lang quota <&3; do
  [ -n "$pkg" ] || continue
  spec="# spec: $pkg $lang $quota max_bytes=$MAX_BYTES max_pages=$MAX_PAGES min_pages=$MIN_PAGES min_cpp=$MIN_CHARS_PER_PAGE cjk_min=$CJK_MIN en_min=$EN_MIN"
  st=$state/$pkg.tsv
  if [ -f "$st" ] && [ "$(head -n1 "$st")" = "$spec" ]; then
    log "== $pkg: already done, skipping"
    continue
  fi
  # A previous run with another spec: forget its files.
  if [ -f "$st" ]; then
    log "== $pkg: selection parameters changed, redoing"
    tail -n +2 "$st" | awk -F'\t' -v d="$dest" '$1!="skip"{print d"/"$2}' | while read -r f; do rm -f "$f"; done
    rm -f "$st"
  fi

  deb=$(find "$debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n1)
  if [ -z "$deb" ]; then
    log "== $pkg: downloading"
    (cd "$debs" && apt-get "${apt_opts[@]}" download -q "$pkg" >/dev/null) \
      || die "apt-get download $pkg failed (run 'apt-get update'? package renamed?)"
    deb=$(find "$debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n1)
    [ -n "$deb" ] || die "apt-get download $pkg produced no .deb"
  else
    log "== $pkg: using cached $(basename "$deb")"
  fi
  x=$work/$pkg
  rm -rf "$x"; mkdir -p "$x"
  dpkg -x "$deb" "$x" || die "dpkg -x $deb failed"

  log "   classifying PDFs (pdftotext) and picking $quota for '$lang'..."
  nice -n 10 python3 - "$x" "$pkg" "$lang" "$quota" "$dest" > "$st.tmp" <<'PY' || die "selection failed for $pkg"
import hashlib, os, re, shutil, subprocess, sys

root, pkg, want, quota, dest = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
E = os.environ
MAX_BYTES, MAX_PAGES, MIN_PAGES = int(E["MAX_BYTES"]), int(E["MAX_PAGES"]), int(E["MIN_PAGES"])
MIN_CPP, CJK_MIN, EN_MIN = int(E["MIN_CHARS_PER_PAGE"]), float(E["CJK_MIN"]), float(E["EN_MIN"])
# Common English function words: a German or French manual rarely has > 8% of these.
EN_WORDS = set("the of and to a in is for that this with as be it by are on or can not an if "
               "which you from at will use used".split())
WORD = re.compile(r"[^\W\d_]+")

def is_cjk(c):
    o = ord(c)
    return (0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF
            or 0xF900 <= o <= 0xFAFF or 0x3000 <= o <= 0x303F or 0xFF00 <= o <= 0xFFEF
            or 0xAC00 <= o <= 0xD7AF or 0x20000 <= o <= 0x2FFFF)

def is_kana(c):
    return 0x3040 <= ord(c) <= 0x30FF

out = []        # rows for the state file
cands = []      # (pages, relpath, abspath, size, script)
seen = set()    # text hashes, to drop duplicates (e.g. letter and A4 builds of one doc)
for dp, dns, fns in os.walk(root):
    dns.sort()
    for fn in sorted(fns):
        p = os.path.join(dp, fn)
        if not fn.lower().endswith(".pdf") or os.path.islink(p) or not os.path.isfile(p):
            continue
        rel = os.path.relpath(p, root)
        size = os.path.getsize(p)
        if size > MAX_BYTES:
            out.append(("skip", rel, f"too-large {size} bytes"))
            continue
        try:
            info = subprocess.run(["pdfinfo", p], capture_output=True, timeout=60)
            m = re.search(rb"^Pages:\s+(\d+)", info.stdout, re.M)
            if info.returncode != 0 or not m:
                out.append(("skip", rel, "pdfinfo-failed"))
                continue
            pages = int(m.group(1))
            if pages < MIN_PAGES or pages > MAX_PAGES:
                continue            # not an error, just out of range
            r = subprocess.run(["pdftotext", "-enc", "UTF-8", p, "-"], capture_output=True, timeout=300)
        except subprocess.TimeoutExpired:
            out.append(("skip", rel, "pdftotext-timeout"))
            continue
        if r.returncode != 0:
            out.append(("skip", rel, f"pdftotext-failed rc={r.returncode}"))
            continue
        text = r.stdout.decode("utf-8", "replace")
        chars = [c for c in text if not c.isspace()]
        if len(chars) < MIN_CPP * pages:
            continue
        h = hashlib.sha1(text.encode()).hexdigest()
        if h in seen:
            continue
        seen.add(h)
        cjk = [c for c in chars if is_cjk(c)]
        share = len(cjk) / len(chars)
        if share >= CJK_MIN:
            lang = "cjk"
            script = "ja" if sum(map(is_kana, cjk)) >= 0.1 * len(cjk) else "zh"
        elif share < 0.01:
            words = WORD.findall(text.lower())
            en = sum(w in EN_WORDS for w in words) / max(1, len(words))
            if en < EN_MIN:
                continue
            lang, script = "en", "latin"
        else:
            continue
        if lang == want:
            cands.append((pages, rel, p, size, script))

# Evenly spaced picks over (pages desc, path): largest, smallest, and between.
cands.sort(key=lambda c: (-c[0], c[1]))
n = len(cands)
if n <= quota:
    picks = list(range(n))
elif quota == 1:
    picks = [0]
else:
    picks = sorted({round(i * (n - 1) / (quota - 1)) for i in range(quota)})
used = set()
for i in picks:
    pages, rel, p, size, script = cands[i]
    base = os.path.basename(rel)
    name = f"{pkg}__{base}"
    if name in used:    # same file name in two directories: add the parent
        name = f"{pkg}__{os.path.basename(os.path.dirname(rel))}__{base}"
    used.add(name)
    shutil.copyfile(p, os.path.join(dest, want, name))
    out.append((want, f"{want}/{name}", str(size), str(pages), script, rel))
print(f"   {n} eligible '{want}' PDFs, picked {len(picks)}", file=sys.stderr)
for row in out:
    print("\t".join(row))
PY
  { echo "$spec"; cat "$st.tmp"; } > "$st"
  rm -f "$st.tmp"
  rm -rf "$x"
done 3<<< "$PACKAGES"

# --- manifest, skipped list, summary ----------------------------------------
# Only packages in the current table count (state of removed packages is ignored).
manifest=$dest/MANIFEST.tsv
skipped=$dest/SKIPPED.tsv
printf 'lang\tfile\tpackage\tbytes\tpages\tscript\tsource\n' > "$manifest"
printf 'package\tsource\treason\n' > "$skipped"
while read -r pkg _ _; do
  [ -n "$pkg" ] || continue
  tail -n +2 "$state/$pkg.tsv" | awk -F'\t' -v OFS='\t' -v p="$pkg" '
    $1 == "skip" { print p, $2, $3 >> "'"$skipped"'"; next }
    { print $1, $2, p, $3, $4, $5, $6 }'
done <<< "$PACKAGES" | sort -t$'\t' -k1,1 -k2,2 >> "$manifest"

# Sanity: every manifest entry exists with the recorded size.
tail -n +2 "$manifest" | while IFS=$'\t' read -r _ file _ bytes _; do
  [ -f "$dest/$file" ] || die "manifest lists $file but it is missing (delete $state to redo)"
  [ "$(stat -c %s "$dest/$file")" = "$bytes" ] || die "$file has changed size"
done

echo
echo "Corpus: $dest  ($(( $(date +%s) - start )) s)"
printf '%-5s %6s %7s %9s\n' lang files pages MB
tail -n +2 "$manifest" | awk -F'\t' '
  { f[$1]++; p[$1] += $5; b[$1] += $4; F++; P += $5; B += $4 }
  END {
    for (l in f) printf "%-5s %6d %7d %9.1f\n", l, f[l], p[l], b[l] / 1e6
    printf "%-5s %6d %7d %9.1f\n", "all", F, P, B / 1e6
  }' | sort
echo
echo "By package:"
tail -n +2 "$manifest" | awk -F'\t' '
  { k = $3 " (" $1 ")"; f[k]++; p[k] += $5 }
  END { for (k in f) printf "  %-42s %3d files %6d pages\n", k, f[k], p[k] }' | sort
echo "CJK scripts: $(tail -n +2 "$manifest" | awk -F'\t' '$1=="cjk"{print $6}' | sort | uniq -c | awk '{printf "%s %s  ", $2, $1}')"
echo "Largest: $(tail -n +2 "$manifest" | sort -t$'\t' -k5,5nr | awk -F'\t' 'NR <= 5 {printf "%s (%d p)  ", $2, $5}')"
nskip=$(($(wc -l < "$skipped") - 1))
echo "Skipped (pdftotext/pdfinfo failed or > $((MAX_BYTES / 1048576)) MB): $nskip, see $skipped"
echo "Downloaded .debs: $(du -sm "$debs" | cut -f1) MB in $debs"
