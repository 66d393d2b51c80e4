#!/usr/bin/env python3
"""Generate examples/users.csv, the sample user snapshot shipped with avvisi.

Python 3 standard library only; the output is deterministic (no randomness,
no clock). Running the script rewrites users.csv next to this file, validates
every row (fiscal codes included: surname/name codes, date, place code and
check character are recomputed with the official algorithm) and prints the
number of users in each reminder audience.

    python3 examples/generate_users.py              # rewrite users.csv, print counts
    python3 examples/generate_users.py --markdown   # also print the README table
    python3 examples/generate_users.py --check      # only verify users.csv is up to date
"""

import csv
import io
import re
import sys
import unicodedata
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

HEADER = [
    "user_id", "fiscal_code", "first_name", "last_name", "email",
    "institutional_email", "registration", "enabled", "pending_email",
    "code_regeneration", "province", "updated_at",
]

# Belfiore (cadastral) codes of the birth places used below.
BELFIORE = {
    "Bologna": "A944", "Roma": "H501", "Milano": "F205", "Napoli": "F839",
    "Torino": "L219", "Palermo": "G273", "Firenze": "D612", "Bari": "A662",
    "Catania": "C351", "Venezia": "L736", "Genova": "D969", "Cagliari": "B354",
    "Reggio Calabria": "H224", "Lecce": "E506",
}

PRIVATE_DOMAINS = {"libero.it", "gmail.com", "virgilio.it", "tiscali.it", "alice.it", "outlook.it"}
INSTITUTIONAL_DOMAINS = {"istruzione.it", "posta.istruzione.it"}

# ---------------------------------------------------------------------------
# Codice fiscale (DM 23/12/1976)
# ---------------------------------------------------------------------------
MONTHS = "ABCDEHLMPRST"
VOWELS = set("AEIOU")
ODD = {
    "0": 1, "1": 0, "2": 5, "3": 7, "4": 9, "5": 13, "6": 15, "7": 17, "8": 19, "9": 21,
    "A": 1, "B": 0, "C": 5, "D": 7, "E": 9, "F": 13, "G": 15, "H": 17, "I": 19, "J": 21,
    "K": 2, "L": 4, "M": 18, "N": 20, "O": 11, "P": 3, "Q": 6, "R": 8, "S": 12, "T": 14,
    "U": 16, "V": 10, "W": 22, "X": 25, "Y": 24, "Z": 23,
}
EVEN = {str(d): d for d in range(10)}
EVEN.update({chr(ord("A") + i): i for i in range(26)})
CF_RE = re.compile(r"^[A-Z]{6}[0-9]{2}[ABCDEHLMPRST][0-9]{2}[A-Z][0-9]{3}[A-Z]$")


def letters(name):
    """Upper-case A-Z letters only: accents dropped (ò -> O), spaces and apostrophes removed."""
    decomposed = unicodedata.normalize("NFD", name)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return [c for c in plain.upper() if "A" <= c <= "Z"]


def surname_code(surname):
    ls = letters(surname)
    cons = [c for c in ls if c not in VOWELS]
    vows = [c for c in ls if c in VOWELS]
    return "".join((cons + vows + ["X"] * 3)[:3])


def name_code(name):
    ls = letters(name)
    cons = [c for c in ls if c not in VOWELS]
    vows = [c for c in ls if c in VOWELS]
    if len(cons) >= 4:
        return cons[0] + cons[2] + cons[3]
    return "".join((cons + vows + ["X"] * 3)[:3])


def check_char(first15):
    total = 0
    for i, c in enumerate(first15):
        # positions are 1-based: index 0 is position 1 (odd)
        total += ODD[c] if i % 2 == 0 else EVEN[c]
    return chr(ord("A") + total % 26)


def fiscal_code(last, first, sex, born, place):
    day = born.day + (40 if sex == "F" else 0)
    body = (surname_code(last) + name_code(first) + f"{born.year % 100:02d}"
            + MONTHS[born.month - 1] + f"{day:02d}" + BELFIORE[place])
    return body + check_char(body)


def cf_is_valid(cf):
    return bool(CF_RE.match(cf)) and check_char(cf[:15]) == cf[15]


# ---------------------------------------------------------------------------
# Europe/Rome offset (EU rule: summer time from the last Sunday of March,
# 01:00 UTC, to the last Sunday of October, 01:00 UTC), so updated_at carries
# the right offset without depending on the system tz database.
# ---------------------------------------------------------------------------
def _last_sunday(year, month):
    d = date(year, month + 1, 1) - timedelta(days=1)
    return d - timedelta(days=(d.weekday() - 6) % 7)


def rome(local):
    """'2026-11-20 14:03' (Rome wall clock) -> RFC 3339 with the right offset."""
    naive = datetime.strptime(local, "%Y-%m-%d %H:%M")
    y = naive.year
    start = datetime.combine(_last_sunday(y, 3), datetime.min.time()) + timedelta(hours=2)  # 02:00 CET
    end = datetime.combine(_last_sunday(y, 10), datetime.min.time()) + timedelta(hours=3)   # 03:00 CEST
    hours = 2 if start <= naive < end else 1
    return naive.replace(tzinfo=timezone(timedelta(hours=hours))).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------
# The users. Flags: S = registration started; C = completed, not enabled;
# E = completed and enabled. code: "started" or "none".
# ---------------------------------------------------------------------------
D = date
USERS = [
    # --- registration started, not completed -------------------------------
    # (first, last, sex, born, birthplace, email, institutional_email, state, pending_email, code, province, updated_at)
    ("Nicolò", "Mancò", "M", D(1991, 3, 14), "Napoli", "nicolo.manco@libero.it", "", "S", "", "none", "NA", "2026-11-18 09:12"),
    ("Ilaria", "D'Angelo", "F", D(1988, 7, 2), "Bari", "ilaria.dangelo@gmail.com", "", "S", "", "none", "BA", "2026-11-02 21:47"),
    ("Gioele", "Dell'Acqua", "M", D(1995, 11, 23), "Genova", "gioele.dellacqua@virgilio.it", "", "S", "", "none", "GE", "2026-10-19 16:30"),
    ("Lucrezia", "Sciarrà", "F", D(1993, 1, 30), "Palermo", "lucrezia.sciarra@tiscali.it", "", "S", "", "none", "PA", ""),
    ("Marco", "Bianchi", "M", D(1979, 5, 9), "Milano", "marco.bianchi79@alice.it", "", "S", "", "none", "MI", "2026-11-20 14:03"),
    ("Francesca", "Romano", "F", D(1984, 9, 17), "Roma", "francesca.romano@istruzione.it", "francesca.romano@istruzione.it", "S", "", "none", "RM", "2026-11-21 08:55"),
    # --- enabled, private email changed and not validated, no institutional mailbox
    ("Giuseppe", "Russo", "M", D(1974, 2, 11), "Torino", "giuseppe.russo@gmail.com", "", "E", "g.russo1974@libero.it", "none", "TO", "2026-11-19 18:20"),
    ("Maria Grazia", "Ferrari", "F", D(1969, 12, 5), "Bologna", "mariagrazia.ferrari@virgilio.it", "", "E", "mariagrazia.ferrari@gmail.com", "none", "BO", "2026-11-12 10:41"),
    ("Alessandro", "Pirrò", "M", D(1982, 6, 28), "Catania", "alessandro.pirro@outlook.it", "", "E", "a.pirro@libero.it", "none", "CT", "2026-10-24 23:15"),
    ("Chiara", "Esposito", "F", D(1990, 4, 3), "Napoli", "chiara.esposito@libero.it", "", "E", "chiara.esposito90@gmail.com", "none", "", "2026-11-21 19:02"),
    ("Carmela", "Messina", "F", D(1977, 8, 21), "Catania", "carmela.messina@virgilio.it", "", "E", "carmela.messina@gmail.com", "none", "ME", "2026-10-26 07:58"),
    # --- enabled, private email not validated, WITH an institutional mailbox -
    ("Gian Luca", "Cantù", "M", D(1975, 10, 12), "Milano", "gianluca.cantu@gmail.com", "gianluca.cantu@istruzione.it", "E", "gianluca.cantu@libero.it", "none", "MI", "2026-11-16 12:00"),
    ("Anna", "Colombo", "F", D(1986, 3, 8), "Venezia", "anna.colombo@posta.istruzione.it", "anna.colombo@posta.istruzione.it", "E", "anna.colombo@gmail.com", "none", "VE", "2026-11-09 17:25"),
    ("Roberto", "Fantò", "M", D(1966, 1, 19), "Reggio Calabria", "r.fanto@alice.it", "roberto.fanto@posta.istruzione.it", "E", "roberto.fanto@outlook.it", "none", "RC", "2026-10-05 11:11"),
    # --- enabled, personal code regeneration started (several states at once)
    ("Paola", "Barbarà", "F", D(1971, 7, 31), "Cagliari", "paola.barbara@tiscali.it", "", "E", "paola.barbara@gmail.com", "started", "CA", "2026-11-20 22:40"),
    ("Salvatore", "D'Amico", "M", D(1963, 5, 24), "Catania", "salvatore.damico@libero.it", "s.damico@istruzione.it", "E", "salvatore.damico@gmail.com", "started", "CT", "2026-11-17 08:05"),
    ("Noè", "Marino", "M", D(1997, 2, 14), "Lecce", "noe.marino@virgilio.it", "", "E", "noe.marino@outlook.it", "started", "LE", "2026-11-13 15:36"),
    ("Rita", "Marchetti", "F", D(1968, 9, 9), "Palermo", "rita.marchetti@libero.it", "", "E", "rita.marchetti@alice.it", "started", "PA", "2026-11-22 06:45"),
    ("Elena", "Greco", "F", D(1980, 11, 1), "Firenze", "elena.greco@gmail.com", "", "E", "", "started", "FI", "2026-11-03 13:20"),
    ("Luca", "Bruno", "M", D(1978, 12, 22), "Roma", "luca.bruno@istruzione.it", "luca.bruno@istruzione.it", "E", "", "started", "RM", "2026-11-15 10:10"),
    ("Federica", "Gallo", "F", D(1985, 6, 6), "Torino", "federica.gallo@posta.istruzione.it", "federica.gallo@posta.istruzione.it", "E", "", "started", "TO", "2026-10-30 09:30"),
    ("Anna Maria", "De Luca", "F", D(1965, 4, 27), "Bari", "annamaria.deluca@istruzione.it", "annamaria.deluca@istruzione.it", "E", "annamaria.deluca@gmail.com", "started", "BA", "2026-11-21 20:14"),
    # --- enabled, private registration email, nothing else pending ----------
    ("Antonio", "Conti", "M", D(1970, 3, 2), "Roma", "antonio.conti@libero.it", "", "E", "", "none", "RM", "2026-09-14 10:00"),
    ("Silvia", "Ricci", "F", D(1987, 10, 15), "Bologna", "silvia.ricci@gmail.com", "", "E", "", "none", "BO", "2026-11-07 18:48"),
    ("Niccolò", "De Santis Della Valle", "M", D(1983, 8, 4), "Firenze", "niccolo.desantisdellavalle@outlook.it", "", "E", "", "none", "FI", "2026-11-11 11:22"),
    ("Sara", "Lombardi", "F", D(1992, 5, 19), "Palermo", "sara.lombardi@alice.it", "", "E", "", "none", "", "2026-10-21 17:03"),
    ("GIUSEPPE", "ESPOSITO", "M", D(1961, 1, 7), "Napoli", "GIUSEPPE.ESPOSITO@LIBERO.IT", "", "E", "", "none", "NA", "2026-11-04 09:00"),
    ("Francesco", "Moretti", "M", D(1976, 2, 29), "Bari", "francesco.moretti@gmail.com", "f.moretti@istruzione.it", "E", "", "none", "BA", "2026-11-10 16:16"),
    ("Vincenzo", "Sanna", "M", D(1973, 11, 30), "Cagliari", "vincenzo.sanna@tiscali.it", "", "E", "", "none", "CA", "2026-11-06 08:37"),
    ("Giulia", "Serra", "F", D(1994, 12, 12), "Cagliari", "giulia.serra@gmail.com", "giulia.serra@posta.istruzione.it", "E", "", "none", "CA", "2026-11-19 12:52"),
    # --- enabled, registered with an @istruzione mailbox, nothing pending: NOTHING
    ("Mario", "Rossi", "M", D(1972, 4, 18), "Roma", "Mario.Rossi@Istruzione.IT", "mario.rossi@istruzione.it", "E", "", "none", "RM", "2026-11-14 10:30"),
    ("Laura", "Costa", "F", D(1981, 1, 25), "Genova", "laura.costa@posta.istruzione.it", "laura.costa@posta.istruzione.it", "E", "", "none", "GE", "2026-11-08 09:45"),
    ("Stefano", "Giordano", "M", D(1967, 7, 13), "Torino", "stefano.giordano@istruzione.it", "stefano.giordano@istruzione.it", "E", "", "none", "TO", "2026-10-12 14:27"),
    ("Valentina", "Rinaldi", "F", D(1989, 9, 3), "Cagliari", "valentina.rinaldi@posta.istruzione.it", "valentina.rinaldi@istruzione.it", "E", "", "none", "CA", "2026-11-01 19:19"),
    ("Davide", "Caruso", "M", D(1979, 3, 26), "Reggio Calabria", "d.caruso@istruzione.it", "d.caruso@istruzione.it", "E", "", "none", "RC", ""),
    ("Rosaria", "Amato", "F", D(1964, 10, 10), "Lecce", "Rosaria.Amato@Posta.Istruzione.It", "rosaria.amato@posta.istruzione.it", "E", "", "none", "LE", "2026-11-05 07:30"),
    # --- completed, not yet identified in person, nothing pending: NOTHING ---
    ("Giovanni", "Fontana", "M", D(1996, 6, 20), "Venezia", "giovanni.fontana@gmail.com", "", "C", "", "none", "VE", "2026-11-18 15:00"),
    ("Martina", "Mancini", "F", D(1998, 2, 2), "Milano", "martina.mancini@istruzione.it", "martina.mancini@istruzione.it", "C", "", "none", "MI", "2026-11-20 10:05"),
    ("Emanuele", "Lombardo", "M", D(1990, 12, 31), "Napoli", "emanuele.lombardo@virgilio.it", "", "C", "", "none", "", ""),
    ("Ludovica", "Fabbri", "F", D(1995, 8, 8), "Bologna", "ludovica.fabbri@outlook.it", "", "C", "", "none", "BO", "2026-10-25 02:30"),
]

AUDIENCES = [
    "registration_incomplete",
    "email_unvalidated",
    "code_regeneration_pending",
    "credential_recovery_advice",
]


def domain(addr):
    return addr.rsplit("@", 1)[1].lower()


def is_istruzione(addr):
    d = domain(addr)
    return d == "istruzione.it" or d.endswith(".istruzione.it")


def audiences(row):
    enabled = row["enabled"] == "true"
    out = []
    if row["registration"] == "started":
        out.append("registration_incomplete")
    if enabled and row["pending_email"]:
        out.append("email_unvalidated")
    if enabled and row["code_regeneration"] == "started":
        out.append("code_regeneration_pending")
    if enabled and not is_istruzione(row["email"]):
        out.append("credential_recovery_advice")
    return out


def build_rows():
    rows = []
    for i, (first, last, sex, born, place, email, inst, state, pending, code, prov, upd) in enumerate(USERS, 1):
        rows.append({
            "user_id": f"U{i:04d}",
            "fiscal_code": fiscal_code(last, first, sex, born, place),
            "first_name": first,
            "last_name": last,
            "email": email,
            "institutional_email": inst,
            "registration": "started" if state == "S" else "completed",
            "enabled": "true" if state == "E" else "false",
            "pending_email": pending,
            "code_regeneration": code,
            "province": prov,
            "updated_at": rome(upd) if upd else "",
            "_sex": sex, "_born": born, "_place": place,
        })
    return rows


EMAIL_RE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+$")
PROVINCES = {"BO", "RM", "MI", "NA", "TO", "PA", "FI", "BA", "CT", "VE", "GE", "CA", "RC", "LE", "ME"}
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")


def validate(rows):
    errors = []

    def err(row, msg):
        errors.append(f"{row['user_id']}: {msg}")

    seen_ids, seen_cf, seen_email = set(), set(), set()
    for r in rows:
        if not re.fullmatch(r"U\d{4}", r["user_id"]) or r["user_id"] in seen_ids:
            err(r, "bad or duplicate user_id")
        seen_ids.add(r["user_id"])
        cf = r["fiscal_code"]
        if not cf_is_valid(cf):
            err(r, f"invalid fiscal code {cf}")
        if cf in seen_cf:
            err(r, "duplicate fiscal code")
        seen_cf.add(cf)
        # independent re-derivation of every part of the code
        born = r["_born"]
        if cf[:3] != surname_code(r["last_name"]) or cf[3:6] != name_code(r["first_name"]):
            err(r, "surname/name code mismatch")
        if int(cf[6:8]) != born.year % 100 or MONTHS.index(cf[8]) + 1 != born.month:
            err(r, "year/month mismatch")
        day = int(cf[9:11])
        if (day > 40) != (r["_sex"] == "F") or day % 40 != born.day:
            err(r, "day/sex mismatch")
        if cf[11:15] != BELFIORE[r["_place"]]:
            err(r, "place code mismatch")
        for f in ("first_name", "last_name"):
            v = r[f]
            if not v or any(c in v for c in "\r\n<>&\",;") or v != v.strip():
                err(r, f"awkward characters in {f}")
        for f in ("email", "institutional_email", "pending_email"):
            v = r[f]
            if not v:
                continue
            if not v.isascii() or not EMAIL_RE.match(v):
                err(r, f"{f} not a plain ASCII address: {v}")
                continue
            if domain(v) not in PRIVATE_DOMAINS | INSTITUTIONAL_DOMAINS:
                err(r, f"{f} domain not allowed: {v}")
        if r["email"].lower() in seen_email:
            err(r, "duplicate email")
        seen_email.add(r["email"].lower())
        if r["institutional_email"] and domain(r["institutional_email"]) not in INSTITUTIONAL_DOMAINS:
            err(r, "institutional_email not @istruzione")
        if is_istruzione(r["email"]) and not r["institutional_email"]:
            err(r, "registered with @istruzione but institutional_email empty")
        if r["pending_email"]:
            if is_istruzione(r["pending_email"]):
                err(r, "pending_email must be private")
            if r["pending_email"].lower() == r["email"].lower():
                err(r, "pending_email equals email")
        enabled = r["enabled"] == "true"
        if r["registration"] not in ("started", "completed"):
            err(r, "bad registration")
        if r["enabled"] not in ("true", "false"):
            err(r, "bad enabled")
        if r["code_regeneration"] not in ("none", "started"):
            err(r, "bad code_regeneration")
        if enabled and r["registration"] != "completed":
            err(r, "enabled but registration not completed")
        if not enabled and (r["pending_email"] or r["code_regeneration"] != "none"):
            err(r, "pending procedure on a user that is not enabled")
        if r["province"] and r["province"] not in PROVINCES:
            err(r, "unknown province")
        if r["updated_at"]:
            if not RFC3339_RE.match(r["updated_at"]):
                err(r, "updated_at not RFC 3339")
            else:
                datetime.fromisoformat(r["updated_at"])
    return errors


def render_csv(rows):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HEADER, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def markdown(rows):
    lines = ["| user_id | name | " + " | ".join(AUDIENCES) + " |",
             "|---|---|" + "---|" * len(AUDIENCES)]
    totals = {a: 0 for a in AUDIENCES}
    for r in rows:
        aud = audiences(r)
        for a in aud:
            totals[a] += 1
        cells = ["x" if a in aud else "" for a in AUDIENCES]
        lines.append(f"| {r['user_id']} | {r['first_name']} {r['last_name']} | " + " | ".join(cells) + " |")
    lines.append("| **total** | | " + " | ".join(str(totals[a]) for a in AUDIENCES) + " |")
    return "\n".join(lines)


def main(argv):
    # Sanity check of the check-character algorithm on a known valid code.
    assert cf_is_valid("RSSMRA85T10A562S"), "check character algorithm is wrong"
    assert check_char("RSSMRA85T10A562") == "S"
    assert not cf_is_valid("RSSMRA85T10A562T")

    rows = build_rows()
    errors = validate(rows)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    text = render_csv(rows)
    out = Path(__file__).resolve().with_name("users.csv")
    if "--check" in argv:
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            print(f"{out} is out of date: rerun {Path(__file__).name}", file=sys.stderr)
            return 1
    else:
        out.write_text(text, encoding="utf-8", newline="")

    # Re-read what was written and compute the audiences from the file itself.
    with out.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == HEADER
        parsed = list(reader)
    assert len(parsed) == len(rows)
    for r in parsed:
        assert cf_is_valid(r["fiscal_code"]), r["user_id"]

    counts = {a: 0 for a in AUDIENCES}
    nothing = []
    for r in parsed:
        aud = audiences(r)
        for a in aud:
            counts[a] += 1
        if not aud:
            nothing.append(r["user_id"])
    print(f"users: {len(parsed)}")
    for a in AUDIENCES:
        print(f"{a}: {counts[a]}")
    print(f"nothing: {len(nothing)} ({', '.join(nothing)})")
    if "--markdown" in argv:
        print()
        print(markdown(parsed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
