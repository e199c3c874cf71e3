#!/usr/bin/env python3
"""Which Japanese analysis finds more: CJK bigrams (shirabe's index) or a
morphological analyser with a bundled IPADIC dictionary?

lindera (the Rust analyser the issue names) downloads its dictionary while it
builds, which this project's machines cannot do, so the morphological side is
janome (pure Python, IPADIC bundled; `pip install janome`), which segments as
lindera-IPADIC does.

Documents are the pages of the Japanese PDFs of the fetched Debian corpus, as
`shirabe extract` sees them. Queries are drawn from those pages, typed as a
user would (no spaces):
  * words:     two consecutive content words of a page, by the analyser
               (a query shaped to suit the morphological side)
  * substring: four consecutive CJK characters of a page (a term inside a
               compound, a name, a partial phrase)
A query is kept when its exact string appears on 1-3 pages; those pages are
its relevant set. Both sides rank with the same BM25 (k1 1.2, b 0.75), free
terms OR-ed, as shirabe does. Reported: Recall@1, Recall@10 and MRR@10.

Usage: benches/ja_analyzers.py [--shirabe BIN] [--corpus corpora/debian] [--queries N]
"""
import argparse, collections, json, math, os, random, re, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")


def bigrams(text):
    out, run = [], []
    def flush():
        if len(run) == 1:
            out.append(run[0])
        out.extend(a + b for a, b in zip(run, run[1:]))
        run.clear()
    for word in re.findall(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]+|\w+", text):
        if CJK.match(word):
            run.extend(word)
            flush()
        else:
            out.append(word.lower())
    return out


class Morph:
    def __init__(self):
        from janome.tokenizer import Tokenizer
        self.t = Tokenizer()

    def terms(self, text):
        return [t.surface.lower() for t in self.t.tokenize(text) if t.surface.strip() and re.search(r"\w", t.surface)]

    def content_words(self, text):
        return [t.surface for t in self.t.tokenize(text)
                if t.part_of_speech.split(",")[0] in ("名詞", "動詞", "形容詞") and CJK.search(t.surface)]


class BM25:
    def __init__(self, docs):
        self.tf = [collections.Counter(d) for d in docs]
        self.len = [len(d) for d in docs]
        self.avg = sum(self.len) / max(1, len(docs))
        self.df = collections.Counter(t for c in self.tf for t in c)
        self.n = len(docs)
        self.postings = collections.defaultdict(list)
        for i, c in enumerate(self.tf):
            for t in c:
                self.postings[t].append(i)

    def search(self, terms, k=10):
        scores = collections.Counter()
        for t in set(terms):
            if t not in self.df:
                continue
            idf = math.log(1 + (self.n - self.df[t] + 0.5) / (self.df[t] + 0.5))
            for i in self.postings[t]:
                f = self.tf[i][t]
                scores[i] += idf * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * self.len[i] / self.avg))
        return [i for i, _ in scores.most_common(k)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shirabe", default=os.path.expanduser("~/.cache/shirabe/target/release/shirabe"))
    ap.add_argument("--corpus", default=os.path.join(ROOT, "corpora", "debian"))
    ap.add_argument("--queries", type=int, default=300)
    a = ap.parse_args()
    files = []
    with open(os.path.join(a.corpus, "MANIFEST.tsv")) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            row = dict(zip(header, line.rstrip("\n").split("\t")))
            if row.get("lang") == "cjk" and row.get("script", "").startswith("ja"):
                files.append(os.path.join(a.corpus, row["file"]) if not os.path.isabs(row["file"]) else row["file"])
    pages = []
    for path in files:
        if not os.path.exists(path):
            path = os.path.join(ROOT, path)
        out = subprocess.run([a.shirabe, "extract", "--json", path], capture_output=True, check=True)
        for p in json.loads(out.stdout)["pages"]:
            if len(CJK.findall(p["text"])) >= 50:
                pages.append(p["text"])
    morph = Morph()
    print(f"{len(files)} Japanese PDFs, {len(pages)} pages with Japanese text; analysing...", file=sys.stderr)
    index_b = BM25([bigrams(p) for p in pages])
    index_m = BM25([morph.terms(p) for p in pages])
    rng = random.Random(7)
    queries = {"words": [], "substring": []}
    tries = 0
    while min(len(v) for v in queries.values()) < a.queries and tries < 50 * a.queries:
        tries += 1
        i = rng.randrange(len(pages))
        kind = "words" if tries % 2 else "substring"
        if len(queries[kind]) >= a.queries:
            continue
        if kind == "words":
            words = morph.content_words(pages[i])
            if len(words) < 2:
                continue
            j = rng.randrange(len(words) - 1)
            q = words[j] + words[j + 1]
            if q not in pages[i]:
                continue
        else:
            runs = [m.group() for m in re.finditer(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]{4,}", pages[i])]
            if not runs:
                continue
            run = rng.choice(runs)
            j = rng.randrange(len(run) - 3)
            q = run[j:j + 4]
        relevant = {n for n, p in enumerate(pages) if q in p}
        if 1 <= len(relevant) <= 3:
            queries[kind].append((q, relevant))
    print(f"{'queries':12} {'n':>4}  {'analysis':22} {'R@1':>6} {'R@10':>6} {'MRR@10':>7}")
    for kind, qs in queries.items():
        for name, index, analyse in (("CJK bigrams", index_b, bigrams), ("morphological (IPADIC)", index_m, morph.terms)):
            r1 = r10 = mrr = 0.0
            for q, rel in qs:
                hits = index.search(analyse(q), 10)
                r1 += bool(hits[:1] and hits[0] in rel)
                r10 += bool(set(hits) & rel)
                mrr += next((1 / (k + 1) for k, h in enumerate(hits) if h in rel), 0)
            n = max(1, len(qs))
            print(f"{kind:12} {len(qs):4}  {name:22} {r1 / n:6.3f} {r10 / n:6.3f} {mrr / n:7.3f}")
    print(f"distinct terms: bigrams {len(index_b.df)}, morphological {len(index_m.df)}")


if __name__ == "__main__":
    main()
