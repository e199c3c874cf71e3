"""A minimal PDF writer for the benchmarks' hand-made files."""


def write_pdf(path, objs, version=b"1.4"):
    """Writes `objs` (object bodies, numbered from 1; object 1 is the
    catalog) with a classic cross-reference table."""
    out = bytearray(b"%PDF-" + version + b"\n")
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objs) + 1,
        xref,
    )
    with open(path, "wb") as f:
        f.write(out)
