"""Helpers of scripts/check-dashboard.sh (Python 3 standard library only).

`load GATEWAY_URL SECONDS`: drives the example gateway with every kind of traffic the dashboard plots: plain and
streamed chats (repeated, so some are cache hits), embeddings, a model whose primary route is dead (fallbacks,
circuit changes), a tenant without budget (budget rejections), a tenant over its rate limit, an unknown model.

`evaluate PROMETHEUS_URL DASHBOARD_JSON`: evaluates every expression of the dashboard (each panel target and
each variable query) through Prometheus's `/api/v1/query` with Grafana's variables substituted; prints a table
and exits 1 if any expression fails to parse or returns no data.
"""

import json
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

# What Grafana would put in place of its variables, for a dashboard looking at the last few minutes.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
}


def post(url, key, body):
    """POSTs JSON; returns the status and the body (read to the end, so streams complete)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def chat(model, text, stream=False, temperature=0.0):
    body = {"model": model, "messages": [{"role": "user", "content": text}], "temperature": temperature}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def load(base, seconds):
    deadline = time.monotonic() + seconds
    statuses = {}
    lock = threading.Lock()

    def note(what, status):
        with lock:
            statuses[(what, status)] = statuses.get((what, status), 0) + 1

    def worker(n):
        i = 0
        while time.monotonic() < deadline:
            i += 1
            # A handful of distinct prompts, so most repeats are cache hits.
            prompt = f"dashboard check {(n * 7 + i) % 5}"
            note("chat", post(f"{base}/chat/completions", "sk-chitty-demo", chat("chitty-mock", prompt))[0])
            note(
                "stream",
                post(f"{base}/chat/completions", "sk-chitty-demo", chat("chitty-mock", f"{prompt} {i}", True, 0.7))[0],
            )
            note("stream-cached", post(f"{base}/chat/completions", "sk-chitty-demo", chat("chitty-mock", prompt, True))[0])
            note("fallback", post(f"{base}/chat/completions", "sk-chitty-demo", chat("chitty-flaky", f"{prompt} {i}"))[0])
            body = {"model": "chitty-mock-embed", "input": prompt}
            note("embed", post(f"{base}/embeddings", "sk-chitty-demo", body)[0])
            note("broke", post(f"{base}/chat/completions", "sk-chitty-broke", chat("chitty-mock", prompt))[0])
            note("busy", post(f"{base}/chat/completions", "sk-chitty-busy", chat("chitty-mock", prompt))[0])
            note("unknown", post(f"{base}/chat/completions", "sk-chitty-demo", chat("no-such-model", prompt))[0])
            time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (what, status), count in sorted(statuses.items()):
        print(f"  load: {what:14} {status}  x{count}")
    expected = {("chat", 200), ("stream", 200), ("fallback", 200), ("embed", 200), ("broke", 429), ("busy", 429),
                ("unknown", 404)}
    missing = sorted(expected - set(statuses))
    if missing:
        print(f"check-dashboard: the load never got {missing}", file=sys.stderr)
        sys.exit(1)


def expressions(dashboard):
    """(where, expression) for every panel target and every query variable, rows' nested panels included."""
    found = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((f"{panel.get('title', '?')} [{target.get('refId', '?')}]", target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        # Grafana's label_values(metric, label) is not PromQL; its PromQL equivalent lists the same values.
        match = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*", query or "")
        if match:
            query = f"count by ({match.group(2)}) ({match.group(1)})"
        found.append((f"variable ${variable['name']}", query))
    return found


def substitute(expr, variables):
    for name, value in SUBSTITUTIONS.items():
        expr = expr.replace("${" + name[1:] + "}", value).replace(name, value)
    for name, value in variables.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    return expr


def evaluate(prometheus, path):
    with open(path) as f:
        dashboard = json.load(f)
    # Multi-value variables with "All" selected: their allValue (a regex matching everything).
    variables = {
        v["name"]: v.get("allValue") or ".*"
        for v in dashboard.get("templating", {}).get("list", [])
        if v.get("type") == "query"
    }
    # Longest names first, so that `$tenant_id` would not be cut by `$tenant`.
    variables = dict(sorted(variables.items(), key=lambda kv: -len(kv[0])))
    rows, failures = [], 0
    for where, expr in expressions(dashboard):
        query = substitute(expr, variables)
        url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as e:
            answer = json.load(e)
        if answer.get("status") != "success":
            verdict = f"FAIL ({answer.get('errorType')}: {answer.get('error')})"
        elif "$" in query:
            verdict = "FAIL (an unsubstituted variable)"
        elif not answer["data"]["result"]:
            verdict = "FAIL (no data)"
        else:
            verdict = "ok"
        result = answer.get("data", {}).get("result", []) or []
        # The first series' value, to eyeball (a vector's samples are [time, "value"]).
        sample = result[0].get("value", [None, ""])[1] if result and isinstance(result[0], dict) else ""
        failures += verdict != "ok"
        rows.append((where, len(result), sample, verdict, query))
    width = max(len(r[0]) for r in rows)
    print(f"{'expression':{width}}  series  {'first value':>14}  verdict")
    for where, n, sample, verdict, query in rows:
        try:
            sample = f"{float(sample):.6g}"
        except ValueError:
            pass
        print(f"{where:{width}}  {n:6}  {sample:>14}  {verdict}")
        if verdict != "ok":
            print(f"{'':{width}}          {query}")
    print(f"check-dashboard: {len(rows) - failures} of {len(rows)} expressions returned data")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "load":
        load(sys.argv[2], float(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "evaluate":
        evaluate(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
