"""Instructions per request by layer, from a callgrind dump (used by profile-callgrind.sh).

Usage: callgrind_layers.py REQUESTS NAME=DUMP...
Reads `callgrind_annotate --threshold=100` (self cost per source file and function: with fat LTO
most code is inlined, but callgrind still attributes each instruction to the source line it came
from, so the file says whose code ran) and sums it by layer, first match wins: the file's path,
then, for code inlined from the standard library (drops, moves), the function's name. Prints one
Markdown table, a column per dump.
"""

import re
import subprocess
import sys

# (layer, pattern on the source file, pattern on the function for std code inlined into it)
LAYERS = [
    ("trace layer (tower-http `TraceLayer`, `tracing` spans)", r"/tower-http-[^/]+/src/trace/|/tracing(-core)?-[0-9]", r"tower_http::trace|tracing::span"),
    ("request timeout (tower `Timeout`, axum `HandleError`)", r"/tower-[0-9][^/]*/src/timeout/|/axum-[^/]+/src/error_handling/", r"tower::timeout|HandleError"),
    ("timers (hyper's header-read timer, tokio's timer wheel)", r"/hyper-util-[^/]+/src/rt/tokio\.rs|/tokio-[^/]+/src/(time|runtime/time)/|/src/server/timer\.rs", r"TokioSleep|TokioTimer|TimerEntry|tokio::time|ConnSleep|ConnTimer|runtime::Timer"),
    ("route boxing (axum `Route`, tower boxed services, `Oneshot`, `MapFuture`)", r"/axum-[^/]+/src/routing/route\.rs|/tower-[0-9][^/]*/src/util/|/axum-[^/]+/src/util\.rs", r"BoxCloneSync|oneshot|MapFuture|MapIntoResponse|RouteFuture|map_err"),
    ("body limit", r"default_body_limit", r"DefaultBodyLimit"),
    ("routing (matchit, axum's path router and URL parameters)", r"/matchit-|/axum-[^/]+/src/routing/|/axum-[^/]+/src/extract/(raw_path|path|matched_path)", r"matchit|UrlParams|url_params|path_router|MatchedPath"),
    ("auth (`Reader`)", r"/src/http/auth\.rs", r"auth::Reader"),
    ("latency histogram and counters", r"/src/telemetry\.rs|/metrics-[0-9]|/metrics-exporter", r"telemetry|LatencyHistogram"),
    ("evaluation (snapshot, MD5, the answer's JSON)", r"/src/(snapshot|app|domain)/|/src/snapshot\.rs|/md-5-|/md5|/foldhash-|/serde_json-|/serde-|/serde_core-|/benches/reference/", r"md5::|snapshot|FlagView|serde"),
    ("handler and extractors (axum handler, path extractor)", r"/src/http/|/axum-[^/]+/src/(handler|extract|json|response)|/axum-core-[^/]+/src/extract", r"handler|from_request_parts|EvalPath|RawPathParams"),
    ("response building (axum-core, http headers and extensions, bytes, bodies)", r"/axum-core-|/http-[0-9][^/]*/src/|/bytes-|/http-body", r"into_response|HeaderMap|Extensions|http::"),
    ("HTTP/1 parsing and writing (hyper, httparse)", r"/hyper-[0-9][^/]*/src/|/httparse-", r"hyper::"),
    ("accept loop and connection I/O (ours, hyper-util)", r"/src/server/|/hyper-util-", r"accept::|ConnIo|Edge|Answer"),
    ("tokio runtime and socket I/O", r"/tokio-[^/]+/src/|/mio-", r"tokio::"),
    ("allocator (mimalloc), all layers", r"mimalloc", r"mi_"),
    ("libc (memcpy, clock_gettime, syscall wrappers)", r"sysdeps|/usr/lib|^\./|glibc|libc", r"__memcpy|clock_gettime|syscall"),
]
LINE = re.compile(r"^\s*([0-9,]+) \([ 0-9.]+%\)\s+(.*?):(.*?)(?: \[[^\]]*\])?$")


def layers_of(dump):
    command = ["callgrind_annotate", "--threshold=100", "--auto=no", dump]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    sums, total = {}, 0
    # The table of functions: from its header to the first blank line after it.
    body = out.stdout.split("file:function", 1)[1].split("\n", 2)[2].split("\n\n", 1)[0]
    for line in body.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        ir, path, function = int(m.group(1).replace(",", "")), m.group(2), m.group(3)
        total += ir
        layer = next((name for name, by_file, _ in LAYERS if re.search(by_file, path)), None)
        if layer is None:
            layer = next((name for name, _, by_fn in LAYERS if re.search(by_fn, function)), "other (std code inlined, unattributed)")
        sums[layer] = sums.get(layer, 0) + ir
    return sums, total


def main():
    requests = int(sys.argv[1])
    columns = [arg.split("=", 1) for arg in sys.argv[2:]]
    results = [layers_of(dump) for _, dump in columns]
    names = [name for name, _, _ in LAYERS] + ["other (std code inlined, unattributed)"]
    print("| layer | " + " | ".join(name for name, _ in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for layer in names:
        cells = [sums.get(layer, 0) / requests for sums, _ in results]
        if any(round(c) for c in cells):
            print(f"| {layer} | " + " | ".join(f"{c:,.0f}" for c in cells) + " |")
    print("| **total** | " + " | ".join(f"**{total / requests:,.0f}**" for _, total in results) + " |")


main()
