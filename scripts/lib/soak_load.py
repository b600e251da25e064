"""Mixed gateway traffic for scripts/soak.sh: plain and streamed chat, streamed legacy completions and
embeddings, with a share of streams the client abandons after the first event, at a steady rate.

    python3 soak_load.py --port 8080 --key sk-... --seconds 300 --rate 200 --report out.json

Each request opens its own connection (Connection: close), so the soak also exercises accept and close.
Prompts come from a fixed set, so a deterministic cache fills once and then stays the same size; sampled
requests (temperature 0.7) are never cached. Prints nothing; writes counts per kind and status to --report.
"""

import argparse
import asyncio
import json
import random
import time

PROMPTS = [f"soak prompt number {i}: tell me something about the number {i}" for i in range(200)]


def chat_body(stream, sampled):
    body = {"model": "chitty-mock", "messages": [{"role": "user", "content": random.choice(PROMPTS)}]}
    body["temperature"] = 0.7 if sampled else 0
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def completion_body():
    return {"model": "chitty-mock", "prompt": random.choice(PROMPTS), "max_tokens": 24, "stream": True,
            "temperature": 0}


def embedding_body():
    i = random.randrange(len(PROMPTS))
    return {"model": "chitty-mock-embed", "input": [PROMPTS[i], PROMPTS[(i + 1) % len(PROMPTS)]]}


# (kind, weight, path, body factory, streamed, abandon after the first event)
KINDS = [
    ("chat", 25, "/v1/chat/completions", lambda: chat_body(False, random.random() < 0.3), False, False),
    ("chat_stream", 25, "/v1/chat/completions", lambda: chat_body(True, random.random() < 0.3), True, False),
    ("chat_stream_abandoned", 20, "/v1/chat/completions", lambda: chat_body(True, True), True, True),
    ("completion_stream", 15, "/v1/completions", completion_body, True, False),
    ("completion_stream_abandoned", 5, "/v1/completions", completion_body, True, True),
    ("embeddings", 10, "/v1/embeddings", embedding_body, False, False),
]


async def one(port, key, kind, counts):
    name, _, path, make_body, streamed, abandon = kind
    payload = json.dumps(make_body()).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\nconnection: close\r\n\r\n"
    ).encode()
    status = "error"
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        writer.write(head + payload)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 30)
        parts = line.split()
        status = parts[1].decode() if len(parts) > 1 else "error"
        if abandon and status == "200":
            # Read up to the first event, then go away mid-stream.
            await asyncio.wait_for(reader.readuntil(b"data: "), 30)
        else:
            body = await asyncio.wait_for(reader.read(), 60)
            if streamed and status == "200" and b"data: [DONE]" not in body:
                status = "200-truncated"
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        status = "error"
    finally:
        if writer is not None:
            writer.close()
    key_name = f"{name}:{status}"
    counts[key_name] = counts.get(key_name, 0) + 1


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--report", required=True)
    args = parser.parse_args()
    weights = [k[1] for k in KINDS]
    counts = {}
    tasks = set()
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < args.seconds:
        due = int((time.monotonic() - start) * args.rate)
        while sent < due:
            kind = random.choices(KINDS, weights)[0]
            task = asyncio.create_task(one(args.port, args.key, kind, counts))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(0.005)
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    with open(args.report, "w") as out:
        json.dump({"sent": sent, "seconds": time.monotonic() - start, "counts": counts}, out, indent=1,
                  sort_keys=True)


if __name__ == "__main__":
    asyncio.run(main())
