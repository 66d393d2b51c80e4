"""Verifies the DKIM signature of messages as a relay delivered them, with dkimpy (independent of
avvisi's signer, lettre), then checks that the signature covers each header it names and the
body: a copy with one of them changed must fail. The public key is given on the command line and
served in place of DNS.

usage: dkim_relayed.py ALGORITHM PUBLIC_KEY_BASE64 FILE...
Prints, per file: "pass FILE" or "fail FILE"; "signed N FILE" with N the headers named in h=;
then one line per change, "tampered-fail WHAT FILE" ("tampered-pass" would be a hole), WHAT
being a header name from h= or "body".
"""
import re
import sys

import dkim


def fields(head):
    """The header fields of a header block, each with its continuation lines."""
    out = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] += b"\r\n" + line
        else:
            out.append(line)
    return out


def name_of(field):
    return field.split(b":", 1)[0].strip().lower()


def signed_headers(fs):
    signature = next(f for f in fs if name_of(f) == b"dkim-signature")
    value = re.sub(rb"\s+", b"", signature.split(b":", 1)[1])
    tags = dict(t.split(b"=", 1) for t in value.split(b";") if b"=" in t)
    names = []
    for n in tags[b"h"].split(b":"):
        if n.lower() not in names:
            names.append(n.lower())
    return names


def with_header_changed(fs, name):
    """The fields with the last `name` field's value changed (a verifier takes the last one
    first), or with such a field added when there is none (its absence was signed)."""
    fs = list(fs)
    at = [i for i, f in enumerate(fs) if name_of(f) == name]
    if at:
        field = fs[at[-1]]
        key, value = field.split(b":", 1)
        fs[at[-1]] = key + b": changed" + value.lstrip(b" ")
    else:
        fs.insert(1, name + b": added")
    return fs


def with_body_changed(body):
    """The body with its first letter's case flipped: a change no canonicalization undoes."""
    for i, c in enumerate(body):
        if chr(c).isalpha():
            return body[:i] + bytes([ord(chr(c).swapcase())]) + body[i + 1 :]
    return body + b"changed\r\n"


def main():
    algorithm, public_key, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    record = f"v=DKIM1; k={algorithm}; p={public_key}".encode()

    def dns(name, timeout=5):
        return record

    def verdict(message):
        return dkim.verify(message, dnsfunc=dns)

    for path in files:
        with open(path, "rb") as f:
            message = f.read()
        print(("pass " if verdict(message) else "fail ") + path)
        head, sep, body = message.partition(b"\r\n\r\n")
        fs = fields(head)
        names = signed_headers(fs)
        print(f"signed {len(names)} {path}")
        for name in names:
            changed = b"\r\n".join(with_header_changed(fs, name)) + sep + body
            outcome = "tampered-pass" if verdict(changed) else "tampered-fail"
            print(f"{outcome} {name.decode()} {path}")
        changed = head + sep + with_body_changed(body)
        outcome = "tampered-pass" if verdict(changed) else "tampered-fail"
        print(f"{outcome} body {path}")


if __name__ == "__main__":
    main()
