"""Verifies the DKIM signature of .eml files with dkimpy, an implementation independent of
avvisi's (lettre). The public key is given on the command line and served in place of DNS.

usage: dkim_verify.py ALGORITHM PUBLIC_KEY_BASE64 FILE...
Prints one line per file: "pass FILE", "fail FILE", then for each file the same check on a
copy whose Subject was changed after signing ("tampered-pass" would be a bug).
"""
import sys

import dkim


def main():
    algorithm, public_key, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    record = f"v=DKIM1; k={algorithm}; p={public_key}".encode()

    def dns(name, timeout=5):
        return record

    for path in files:
        with open(path, "rb") as f:
            message = f.read()
        ok = dkim.verify(message, dnsfunc=dns)
        print(("pass " if ok else "fail ") + path)
        head, sep, body = message.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        tampered = b"\r\n".join(
            b"Subject: =?utf-8?b?QWx0cm8gb2dnZXR0bw==?=" if l.lower().startswith(b"subject:") else l
            for l in lines
        ) + sep + body
        ok = dkim.verify(tampered, dnsfunc=dns)
        print(("tampered-pass " if ok else "tampered-fail ") + path)


if __name__ == "__main__":
    main()
