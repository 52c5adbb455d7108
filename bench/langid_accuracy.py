"""Compare language identifiers on labelled news text: accuracy, speed, size, confidence.

Run by hand; it prints tables and asserts nothing. The samples (bench/langid_samples.json) are
headlines ("short", 4-10 words) and paragraphs ("long", 40-80 words) of news in en, de, fr, es,
fa, ps, ar and ur.

    .venv/bin/python bench/langid_accuracy.py                # py3langid only (the project's)

    .venv/bin/python bench/langid_accuracy.py --rules        # only the hub's filing rules

`--rules` (also part of the full run) files every sample of both sample files the way the hub
does when nothing declares a language, by the rule before issue 12 and by today's
(feedhub.enrich), and prints % filed right per category and how many went to a feed nobody set
up. bench/langid_odd_samples.json adds what news feeds also carry: image captions, one-line
teasers, titles without a body, code and key blocks (labelled with the language of the source
that posted them), mixed scripts, and short items in another language than their source's.

langdetect and lingua are measured only when importable. Never install them into the project's
venv; use a throwaway one, with nothing of ours on the path:

    python3 -m venv /tmp/langvenv
    /tmp/langvenv/bin/pip install -q py3langid langdetect lingua-language-detector
    PYTHONPATH= /tmp/langvenv/bin/python bench/langid_accuracy.py

Identifiers:
  py3langid            the module-level `py3langid.classify` (default model, every language)
  py3langid/norm       the same model with norm_probs=True: same answers, confidence in [0, 1]
  py3langid/norm/16    norm_probs=True and set_languages() to the 8 languages + 8 likely confusers
  py3langid/fallback   py3langid/norm when sure enough, else py3langid/norm/16 when sure enough
  langdetect           detect_langs() with DetectorFactory.seed = 0 (deterministic)
  lingua               every language, high-accuracy mode, models preloaded
  lingua/16            lingua restricted to those of the 16 languages it knows
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import math
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLES = HERE / "langid_samples.json"
ODD_SAMPLES = HERE / "langid_odd_samples.json"

TARGET = ["en", "de", "fr", "es", "fa", "ps", "ar", "ur"]
# Languages a news hub may also meet, and that the targets are confused with.
EXTRA = ["it", "pt", "nl", "ru", "tr", "hi", "pl", "sv"]
RESTRICTED = TARGET + EXTRA
# Regional labels folded into the language the hub publishes them under.
FOLD = {"arz": "ar", "ary": "ar", "pes": "fa", "prs": "fa", "pbt": "ps", "pbu": "ps"}

# Short texts in none of the 16 languages, and text with no language: what a hub must not file
# under one of its languages with confidence. Not in the samples file, which holds the 8 only.
OUT_OF_SET = [
    ("id", "Pemerintah menaikkan harga bahan bakar mulai pekan depan"),
    ("sw", "Serikali imetangaza mpango mpya wa kupambana na mfumuko wa bei"),
    ("ro", "Guvernul a aprobat creșterea salariului minim de la anul viitor"),
    ("cs", "Vláda schválila zvýšení minimální mzdy od příštího roku"),
    ("ca", "El Govern aprova la pujada del salari mínim"),
    ("vi", "Chính phủ tăng lương tối thiểu từ năm sau"),
    ("tg", "Ҳукумат маоши ҳадди ақалро зиёд кард"),
    ("ku", "Hikûmetê biryara zêdekirina mûçeyan da"),
    ("ckb", "حکومەت بڕیاری زیادکردنی مووچەی دا"),
    ("sd", "حڪومت گهٽ ۾ گهٽ اجرت وڌائڻ جو اعلان ڪيو"),
    ("ug", "ھۆكۈمەت ئەڭ تۆۋەن مائاشنى ئۆستۈرۈشنى ئېلان قىلدى"),
    ("-", "Real Madrid 2-1 Barcelona"),
    ("-", "Photo: Reuters / AFP"),
]

# py3langid/fallback: the all-language answer when it is at least FALLBACK_ALL sure; else the
# restricted model's answer when that is at least FALLBACK_RESTRICTED sure; else no answer.
FALLBACK_ALL = 0.30
FALLBACK_RESTRICTED = 0.35

BUCKETS = [0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.000001]
THRESHOLDS = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
WRONG_COST = 3  # a mis-filed item is worse than one left to a fallback (feed or page language)


@dataclass
class Identifier:
    name: str
    packages: tuple[str, ...]  # import names whose directories make the install size
    build: Callable[[], Callable[[str], tuple[str | None, float | None]]]
    note: str = ""
    classify: Callable[[str], tuple[str | None, float | None]] | None = None
    load_s: float = 0.0
    rss_mb: float = 0.0
    results: list[tuple[str | None, float | None]] = field(default_factory=list)
    ms_per_1000: dict[str, float] = field(default_factory=dict)


# --- identifiers ------------------------------------------------------------------------------


def _py3langid_norm(langs: list[str] | None):
    from py3langid import langid

    # 0.4 spells it from_model_file; older releases from_pickled_model.
    cls = langid.LanguageIdentifier
    load = cls.from_model_file if hasattr(cls, "from_model_file") else cls.from_pickled_model
    ident = load(langid.MODEL_FILE, norm_probs=True)
    if langs:
        ident.set_languages([lang for lang in langs if lang in set(ident.labels)])
    return ident


def build_py3langid_default():
    import py3langid

    py3langid.classify("warm up")  # the module loads its model lazily

    def classify(text: str):
        lang, _score = py3langid.classify(text)  # raw log-probability, not a confidence
        return lang, None

    return classify


def build_py3langid_norm(langs: list[str] | None):
    def build():
        ident = _py3langid_norm(langs)

        def classify(text: str):
            lang, conf = ident.classify(text)
            return lang, float(conf)

        return classify

    return build


def build_py3langid_fallback():
    full = _py3langid_norm(None)
    restricted = _py3langid_norm(RESTRICTED)

    def classify(text: str):
        lang, conf = full.classify(text)
        if conf >= FALLBACK_ALL:
            return lang, float(conf)
        lang, conf = restricted.classify(text)
        if conf >= FALLBACK_RESTRICTED:
            return lang, float(conf)
        return None, float(conf)

    return classify


def build_langdetect():
    from langdetect import DetectorFactory, detect_langs
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0
    detect_langs("warm up")  # loads the profiles

    def classify(text: str):
        try:
            best = detect_langs(text)[0]
        except LangDetectException:
            return None, None
        return best.lang, float(best.prob)

    return classify


def _lingua_code(language) -> str:
    return language.iso_code_639_1.name.lower()


def build_lingua(langs: list[str] | None):
    def build():
        from lingua import IsoCode639_1, LanguageDetectorBuilder

        if langs:
            codes = [getattr(IsoCode639_1, c.upper()) for c in langs if hasattr(IsoCode639_1, c.upper())]
            builder = LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
        else:
            builder = LanguageDetectorBuilder.from_all_languages()
        detector = builder.with_preloaded_language_models().build()

        def classify(text: str):
            values = detector.compute_language_confidence_values(text)
            if not values or values[0].value == 0.0:
                return None, None
            return _lingua_code(values[0].language), float(values[0].value)

        return classify

    return build


def lingua_missing(langs: list[str]) -> list[str]:
    from lingua import IsoCode639_1

    return [c for c in langs if not hasattr(IsoCode639_1, c.upper())]


def langdetect_missing(langs: list[str]) -> list[str]:
    import langdetect

    profiles = Path(langdetect.__file__).parent / "profiles"
    have = {p.name for p in profiles.iterdir()}
    return [c for c in langs if c not in have]


def identifiers() -> list[Identifier]:
    out: list[Identifier] = []
    if importable("py3langid"):
        out += [
            Identifier("py3langid", ("py3langid",), build_py3langid_default, "default model, all languages"),
            Identifier("py3langid/norm", ("py3langid",), build_py3langid_norm(None), "norm_probs=True"),
            Identifier(
                "py3langid/norm/16",
                ("py3langid",),
                build_py3langid_norm(RESTRICTED),
                "set_languages(" + ",".join(RESTRICTED) + ")",
            ),
            Identifier(
                "py3langid/fallback",
                ("py3langid",),
                build_py3langid_fallback,
                f"all if >= {FALLBACK_ALL}, else /16 if >= {FALLBACK_RESTRICTED}, else none",
            ),
        ]
    if importable("langdetect"):
        missing = langdetect_missing(TARGET)
        out.append(
            Identifier(
                "langdetect",
                ("langdetect", "six"),
                build_langdetect,
                "no profile for " + ",".join(missing) if missing else "",
            )
        )
    if importable("lingua"):
        missing = lingua_missing(RESTRICTED)
        note = "does not know " + ",".join(missing) if missing else ""
        out += [
            Identifier("lingua", ("lingua",), build_lingua(None), note),
            Identifier(
                "lingua/16",
                ("lingua",),
                build_lingua(RESTRICTED),
                "; ".join(filter(None, [note, "load: models already in memory from lingua"])),
            ),
        ]
    return out


# --- helpers ----------------------------------------------------------------------------------


def rss_mb() -> float:
    """This process's resident memory (Linux), 0 where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def package_dirs(name: str) -> list[Path]:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [Path(p) for p in spec.submodule_search_locations]
    return [Path(spec.origin)] if spec.origin else []


def disk_usage(path: Path) -> int:
    """Bytes on disk, as du counts them (allocated blocks)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total


def human(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.1f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return str(n)


def fold(lang: str | None) -> str | None:
    return FOLD.get(lang, lang) if lang else lang


def pct(num: int, den: int) -> str:
    return f"{100.0 * num / den:5.1f}" if den else "    -"


def table(header: list[str], rows: list[list[str]], align_left: int = 1) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row):
        return "  ".join(
            str(c).ljust(w) if i < align_left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    lines = [fmt(header), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    v = sorted(values)

    def q(p):
        return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]

    return f"min {v[0]:.3f}  p10 {q(0.10):.3f}  median {q(0.5):.3f}  max {v[-1]:.3f}"


# --- measurement ------------------------------------------------------------------------------


def run(ident: Identifier, samples: list[dict], repeat: int) -> None:
    rss0 = rss_mb()
    t0 = time.perf_counter()
    ident.classify = ident.build()
    ident.load_s = time.perf_counter() - t0
    ident.rss_mb = rss_mb() - rss0
    ident.results = [ident.classify(s["text"]) for s in samples]  # also warms caches
    for kind in ("short", "long", "all"):
        texts = [s["text"] for s in samples if kind == "all" or s["kind"] == kind]
        t0 = time.perf_counter()
        for _ in range(repeat):
            for text in texts:
                ident.classify(text)
        elapsed = time.perf_counter() - t0
        ident.ms_per_1000[kind] = 1000.0 * elapsed / (repeat * len(texts)) * 1000.0


def accuracy_table(idents: list[Identifier], samples: list[dict]) -> str:
    header = ["lang/kind", "n", *[i.name for i in idents]]
    rows = []
    groups = [(lang, kind) for lang in TARGET for kind in ("short", "long")]
    groups += [("ALL", "short"), ("ALL", "long"), ("ALL", "all")]
    for lang, kind in groups:
        idx = [
            n
            for n, s in enumerate(samples)
            if (lang == "ALL" or s["lang"] == lang) and (kind == "all" or s["kind"] == kind)
        ]
        row = [f"{lang} {kind}", str(len(idx))]
        for ident in idents:
            ok = sum(1 for n in idx if fold(ident.results[n][0]) == samples[n]["lang"])
            row.append(pct(ok, len(idx)))
        rows.append(row)
    return table(header, rows, align_left=1)


def speed_table(idents: list[Identifier]) -> str:
    header = ["identifier", "load s", "+RSS MB", "ms/1k short", "ms/1k long", "ms/1k all", "install", "note"]
    rows = []
    for ident in idents:
        size = sum(disk_usage(d) for p in ident.packages for d in package_dirs(p))
        rows.append(
            [
                ident.name,
                f"{ident.load_s:.2f}",
                f"{ident.rss_mb:.0f}",
                f"{ident.ms_per_1000['short']:.0f}",
                f"{ident.ms_per_1000['long']:.0f}",
                f"{ident.ms_per_1000['all']:.0f}",
                human(size),
                ident.note,
            ]
        )
    return table(header, rows, align_left=1)


def confusions(ident: Identifier, samples: list[dict]) -> str:
    lines = []
    for s, (lang, conf) in zip(samples, ident.results, strict=True):
        if fold(lang) != s["lang"]:
            text = s["text"] if len(s["text"]) <= 60 else s["text"][:57] + "..."
            shown = "-" if conf is None else f"{conf:.3f}"
            lines.append(f"  {s['lang']:>2} {s['kind']:<5} -> {lang} ({shown}): {text}")
    return "\n".join(lines) if lines else "  (none)"


def confidence_report(ident: Identifier, samples: list[dict]) -> tuple[str, float]:
    """Histogram of confidence for right and wrong answers, and a threshold table."""
    pairs = [
        (s["kind"], conf, fold(lang) == s["lang"])
        for s, (lang, conf) in zip(samples, ident.results, strict=True)
        if conf is not None
    ]
    lines = []
    header = ["confidence", "right short", "right long", "wrong short", "wrong long"]
    rows = []
    for lo, hi in itertools.pairwise(BUCKETS):
        label = f"[{lo:.2f}, {min(hi, 1.0):.2f}{']' if hi > 1 else ')'}"
        counts = [
            sum(1 for k, c, ok in pairs if k == kind and ok is right and lo <= c < hi)
            for right in (True, False)
            for kind in ("short", "long")
        ]
        rows.append([label, *map(str, counts)])
    lines.append(table(header, rows))
    for right in (True, False):
        for kind in ("short", "long"):
            vals = [c for k, c, ok in pairs if k == kind and ok is right]
            lines.append(f"  {'right' if right else 'wrong'} {kind:<5} ({len(vals):3d}): {quantiles(vals)}")

    header = ["accept if conf >=", "kept right", "kept wrong", "precision", "recall"]
    header += ["short kept", "long kept"]
    rows = []
    best_t, best_score = 0.0, -math.inf
    n_right = sum(1 for _k, _c, ok in pairs if ok)
    n_short = sum(1 for k, _c, _ok in pairs if k == "short")
    n_long = len(pairs) - n_short
    for t in THRESHOLDS:
        kept = [(k, ok) for k, c, ok in pairs if c >= t]
        right = sum(1 for _k, ok in kept if ok)
        wrong = len(kept) - right
        score = right - WRONG_COST * wrong
        if score > best_score:
            best_t, best_score = t, score
        rows.append(
            [
                f"{t:.2f}",
                str(right),
                str(wrong),
                pct(right, len(kept)),
                pct(right, n_right),
                pct(sum(1 for k, _ok in kept if k == "short"), n_short),
                pct(sum(1 for k, _ok in kept if k == "long"), n_long),
            ]
        )
    lines.append("")
    lines.append(table(header, rows))
    return "\n".join(lines), best_t


# --- the hub's filing rules (issue 12) ---------------------------------------------------------

# The hub the rules are measured for: config.toml as shipped.
RULES_DEFAULT = "en"
RULES_CONFIGURED = frozenset({"en", "de", "fr", "es", "fa", "ps"})
CATEGORIES = {"short": "headline", "long": "paragraph"}  # langid_samples.json's kinds
OLD_CONFIDENCE = 0.30  # enrich.resolve_language before issue 12: detected if this sure


def hub_text(sample: str) -> str:
    """The text the hub gives the detector: title, newline, text, each with its
    whitespace collapsed (enrich.plain_text); a sample's first line is its title."""
    title, _, body = sample.partition("\n")
    return f"{' '.join(title.split())}\n{' '.join(body.split())}".strip()


def old_detector() -> Callable[[str], tuple[str, float]]:
    """enrich.detect_language as it was before issue 12, frozen here so that "old" stays the
    old code's answer: the full model when >= 0.30, else the best of enrich.DETECTABLE
    renormalised over them when >= 0.35 (confidence 0.0 when not)."""
    from feedhub.enrich import DETECTABLE

    ident = _py3langid_norm(None)

    def detect(text: str) -> tuple[str, float]:
        ranked = ident.rank(text[:2000])
        language, confidence = ranked[0]
        if confidence >= 0.30:
            return language, float(confidence)
        restricted = [(lang, p) for lang, p in ranked if lang in DETECTABLE]
        total = sum(p for _, p in restricted) or 1.0
        language, probability = restricted[0]
        confidence = probability / total
        return language, float(confidence if confidence >= 0.35 else 0.0)

    return detect


def file_by_rules(samples: list[dict]) -> list[dict]:
    """Each sample filed by the old rule (detected if confidence >= 0.30, else the default); by
    today's with the source's usual language known (the sample's `source`, else its label); and by
    today's in the first poll of a new source whose items are the samples of one category from one
    source (a caption-only or headline-only feed: nothing stored, no long text to lean on)."""
    from feedhub.enrich import Detection, decide, detect_language, poll_majority
    from feedhub.models import LanguageContext

    before = old_detector()
    rows = []
    for s in samples:
        text = hub_text(s["text"])
        language, confidence = detect_language(text)
        old_language, old_confidence = before(text)
        rows.append({
            "kind": CATEGORIES.get(s["kind"], s["kind"]), "lang": s["lang"],
            "source": s.get("source", s["lang"]), "text": text, "detected": language,
            "confidence": confidence, "detection": Detection(language, confidence, len(text)),
            "old": old_language if old_confidence >= OLD_CONFIDENCE else RULES_DEFAULT,
        })
    polls: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        polls[row["kind"], row["source"]].append(row)
        usual = LanguageContext(RULES_DEFAULT, RULES_CONFIGURED, row["source"])
        row["new"] = decide(row["detection"], usual)[0]
    for poll in polls.values():
        fresh = LanguageContext(RULES_DEFAULT, RULES_CONFIGURED)
        majority = poll_majority([None] * len(poll), [row["detection"] for row in poll], fresh)
        for row in poll:
            row["new source"] = decide(row["detection"], LanguageContext(
                RULES_DEFAULT, RULES_CONFIGURED, majority))[0]
    return rows


RULES = ("old", "new", "new source")


def rules_table(rows: list[dict]) -> str:
    """% filed under the sample's language, and how many went to a feed that neither the config
    nor the sample's source has (pcm, zxx, sv ...: "stray")."""
    header = ["category", "n"] + [f"{r} % right" for r in RULES] + [f"{r} stray" for r in RULES]
    kinds = list(dict.fromkeys(row["kind"] for row in rows))
    table_rows = []
    for kind in [*kinds, "ALL"]:
        group = [row for row in rows if kind in ("ALL", row["kind"])]
        line = [kind, str(len(group))]
        line += [pct(sum(fold(row[r]) == row["lang"] for row in group), len(group)) for r in RULES]
        line += [str(sum(fold(row[r]) not in RULES_CONFIGURED | {row["source"]} for row in group))
                 for r in RULES]
        table_rows.append(line)
    return table(header, table_rows, align_left=1)


def rules_report(samples: list[dict]) -> str:
    rows = file_by_rules(samples)
    lines = [
        f"hub: default_language = {RULES_DEFAULT!r}, [languages] "
        + " ".join(sorted(RULES_CONFIGURED)),
        "old: detected if confidence >= 0.30 (full model, else restricted >= 0.35), else default",
        "new: today's enrich.decide, the source's usual language known (the sample's source)",
        "new source: today's rules, first poll of a source whose items are one category's "
        "samples from one source",
        "",
        rules_table(rows),
        "",
        "filed wrong by the new rule (label <- source: answer; detector said):",
    ]
    for row in rows:
        if fold(row["new"]) != row["lang"]:
            text = row["text"].replace("\n", " / ")
            text = text if len(text) <= 50 else text[:47] + "..."
            lines.append(f"  {row['kind']:<9} {row['lang']} <- {row['source']}: {row['new']}; "
                         f"{row['detected']} {row['confidence']:.2f}  {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=Path, default=SAMPLES)
    ap.add_argument("--repeat", type=int, default=5, help="timing passes over the samples (default 5)")
    ap.add_argument("--only", help="comma-separated identifier names")
    ap.add_argument("--odd-samples", type=Path, default=ODD_SAMPLES)
    ap.add_argument("--rules", action="store_true", help="only the hub's filing rules, old and new")
    args = ap.parse_args(argv)

    samples = json.loads(args.samples.read_text(encoding="utf-8"))
    odd = json.loads(args.odd_samples.read_text(encoding="utf-8"))
    if args.rules:
        print(f"== the hub's filing rules: {len(samples)} + {len(odd)} samples")
        print(rules_report(samples + odd))
        return 0
    kinds = Counter((s["lang"], s["kind"]) for s in samples)
    idents = identifiers()
    if args.only:
        wanted = set(args.only.split(","))
        idents = [i for i in idents if i.name in wanted]
    if not idents:
        print("no identifier importable (py3langid, langdetect, lingua)")
        return 0

    print(f"python {sys.version.split()[0]} at {sys.prefix}")
    print(
        f"{len(samples)} samples: "
        + ", ".join(f"{lang} {kinds[(lang, 'short')]}s+{kinds[(lang, 'long')]}l" for lang in TARGET)
    )
    skipped = [n for n in ("langdetect", "lingua") if not importable(n)]
    if skipped:
        print("not importable here, skipped:", ", ".join(skipped))
    for ident in idents:
        run(ident, samples, args.repeat)

    print("\n== accuracy, % right (" + ", ".join(f"{k}->{v}" for k, v in FOLD.items()) + " count as right)")
    print(accuracy_table(idents, samples))

    print(f"\n== speed (ms per 1,000 texts, mean of {args.repeat} passes) and install size (du)")
    print(speed_table(idents))
    if importable("numpy") and any(i.name.startswith("py3langid") for i in idents):
        size = sum(disk_usage(d) for d in package_dirs("numpy"))
        print(f"  py3langid also needs numpy: {human(size)}")

    default = next((i for i in idents if i.name == "py3langid"), None)
    norm = next((i for i in idents if i.name == "py3langid/norm"), None)
    if default and norm:
        differ = sum(1 for a, b in zip(default.results, norm.results, strict=True) if a[0] != b[0])
        print(f"  py3langid and py3langid/norm disagree on {differ} of {len(samples)} samples")

    print("\n== wrong answers")
    for ident in idents:
        print(f"{ident.name}:")
        print(confusions(ident, samples))

    print("\n== text in none of the 16 languages, or in no language: answer (confidence)")
    header = ["lang", "text", *[i.name for i in idents]]
    rows = []
    for lang, text in OUT_OF_SET:
        row = [lang, text if len(text) <= 28 else text[:25] + "..."]
        for ident in idents:
            got, conf = ident.classify(text)
            row.append(f"{got or '-'} {'' if conf is None else f'{conf:.2f}'}".strip())
        rows.append(row)
    print(table(header, rows, align_left=2))

    suggestions: list[tuple[Identifier, float]] = []
    for ident in idents:
        if ident.name not in ("py3langid/norm", "py3langid/norm/16"):
            continue
        print(f"\n== confidence of {ident.name} for right and wrong answers")
        text, best = confidence_report(ident, samples)
        print(text)
        suggestions.append((ident, best))
        print(f"  best threshold here (maximises right - {WRONG_COST} x wrong among the kept): {best:.2f}")
        if all(fold(lang) == s["lang"] for s, (lang, _c) in zip(samples, ident.results, strict=True)):
            print("  (no wrong answer here, so nothing bounds the threshold from below)")

    by_script: dict[str, list[float]] = defaultdict(list)
    if norm:
        for s, (_lang, conf) in zip(samples, norm.results, strict=True):
            if conf is not None:
                by_script["latin" if s["lang"] in ("en", "de", "fr", "es") else "arabic"].append(conf)
        print("\n== py3langid/norm confidence by script (all answers)")
        for script, vals in by_script.items():
            print(f"  {script:<7} {quantiles(vals)}")
    if suggestions:
        print("\n== at the best threshold")
        for ident, t in suggestions:
            kept = [
                (fold(lang) == s["lang"])
                for s, (lang, conf) in zip(samples, ident.results, strict=True)
                if conf is not None and conf >= t
            ]
            assert ident.classify is not None
            answers = [ident.classify(text) for _lang, text in OUT_OF_SET]
            misfiled = sum(1 for lang, conf in answers if lang in TARGET and conf is not None and conf >= t)
            print(
                f"  {ident.name} min_confidence={t:.2f}: keeps {sum(kept)} right and "
                f"{len(kept) - sum(kept)} wrong of {len(samples)}; files {misfiled} of {len(OUT_OF_SET)} "
                "out-of-set texts under one of the 8 languages"
            )
    if importable("py3langid") and importable("feedhub"):
        print(f"\n== the hub's filing rules: {len(samples)} + {len(odd)} samples")
        print(rules_report(samples + odd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
