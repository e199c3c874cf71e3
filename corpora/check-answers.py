#!/usr/bin/env python3
"""Checks corpora/queries/debian-answers.jsonl against the corpus it is about.

Usage: corpora/check-answers.py [SET.jsonl] [CORPUS_DIR]   (needs pdftotext;
the corpus from corpora/fetch-debian-pdfs.sh)

For every answerable line: extract the listed PHYSICAL pages with
`pdftotext -layout -f N -l N`, NFKC-normalise + lowercase both page text and
facts, collapse whitespace, and require one alternative of every fact to occur.
Also: JSON validity, unique ids, schema, lang, 1-2 pages, 1-3 facts, at least
one fact not already contained in the question, and for unanswerable lines
that their key terms occur in no document of the corpus (full-text grep).
"""
import json, os, re, subprocess, sys, unicodedata
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
QF = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, 'queries/debian-answers.jsonl')
CORPUS = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, 'debian')
NA_TERMS = os.path.splitext(QF)[0] + '.na-terms.json'

def norm(s):
    s = unicodedata.normalize('NFKC', s).lower()
    return re.sub(r'\s+', ' ', s).strip()

files = {}
for sub in ('en', 'cjk'):
    for fn in os.listdir(os.path.join(CORPUS, sub)):
        files[fn] = os.path.join(CORPUS, sub, fn)

def page_text(path, n):
    r = subprocess.run(['pdftotext', '-layout', '-enc', 'UTF-8', '-f', str(n), '-l', str(n), path, '-'],
                       capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f'pdftotext failed on {path} p{n}')
    return r.stdout.decode('utf-8', 'replace')

errors, ok = [], 0
ids = Counter()
rows = []
for ln, line in enumerate(open(QF, encoding='utf-8'), 1):
    try:
        o = json.loads(line)
    except Exception as e:
        errors.append(f'line {ln}: invalid JSON: {e}'); continue
    rows.append(o)
    ids[o.get('id')] += 1
    if o.get('lang') not in ('en', 'ja', 'zh'):
        errors.append(f"{o.get('id')}: bad lang")
    if not o.get('question'):
        errors.append(f"{o.get('id')}: empty question")
    if o.get('answerable') is False:
        if o.get('tags') != ['unanswerable'] or 'doc' in o or 'facts' in o:
            errors.append(f"{o['id']}: bad unanswerable schema")
        continue
    for k in ('id', 'question', 'lang', 'doc', 'pages', 'facts', 'tags'):
        if k not in o:
            errors.append(f"{o.get('id')}: missing {k}")
    doc = o['doc']
    if doc not in files:
        errors.append(f"{o['id']}: unknown doc {doc}"); continue
    pages = o['pages']
    if not (1 <= len(pages) <= 2 and all(isinstance(p, int) and p >= 1 for p in pages)):
        errors.append(f"{o['id']}: bad pages {pages}"); continue
    facts = o['facts']
    if not (1 <= len(facts) <= 3 and all(isinstance(f, list) and f and all(isinstance(a, str) and a.strip() for a in f) for f in facts)):
        errors.append(f"{o['id']}: bad facts {facts}"); continue
    if not (set(o['tags']) & {'copied', 'paraphrase'}):
        errors.append(f"{o['id']}: tags need copied/paraphrase")
    text = norm(''.join(page_text(files[doc], p) for p in pages))
    q = norm(o['question'])
    missing = [f for f in facts if not any(norm(a) in text for a in f)]
    if missing:
        errors.append(f"{o['id']}: facts not on {doc} p{pages}: {missing}"); continue
    if all(any(norm(a) in q for a in f) for f in facts):
        errors.append(f"{o['id']}: every fact is already in the question"); continue
    ok += 1

for i, c in ids.items():
    if c > 1:
        errors.append(f'duplicate id {i}')

# unanswerable: key terms must not occur anywhere in the corpus
na_ok = 0
if os.path.exists(NA_TERMS):
    terms = json.load(open(NA_TERMS, encoding='utf-8'))
    full = {}
    for fn, path in files.items():
        r = subprocess.run(['pdftotext', '-enc', 'UTF-8', path, '-'], capture_output=True)
        full[fn] = norm(r.stdout.decode('utf-8', 'replace'))
    for o in rows:
        if o.get('answerable') is not False:
            continue
        ts = terms.get(o['id'])
        if not ts:
            errors.append(f"{o['id']}: no key terms recorded"); continue
        hits = [(t, fn) for t in ts for fn, tx in full.items() if norm(t) in tx]
        if hits:
            errors.append(f"{o['id']}: key terms found in corpus: {hits[:3]}")
        else:
            na_ok += 1

ans = [o for o in rows if o.get('answerable') is not False]
na = [o for o in rows if o.get('answerable') is False]
print(f'lines: {len(rows)}  answerable: {len(ans)}  unanswerable: {len(na)}')
print('answerable by lang:', dict(Counter(o['lang'] for o in ans)))
print('unanswerable by lang:', dict(Counter(o['lang'] for o in na)))
print('distinct docs:', len({o['doc'] for o in ans}))
print('tags:', dict(Counter(t for o in ans for t in o['tags'])))
print(f'answerable verified: {ok}/{len(ans)}   unanswerable verified absent: {na_ok}/{len(na)}')
for e in errors:
    print('ERROR', e)
print('RESULT:', 'PASS' if not errors else f'FAIL ({len(errors)} errors)')
sys.exit(1 if errors else 0)
